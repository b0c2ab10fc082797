"""DCGAN as pytorch/examples writes it (dcgan/main.py), made small for 28x28 digits, turned into an InfoGAN.

Sequential G and D, D a bare ``nn.Sequential`` ending in ``Sigmoid``, ``BCELoss``, the D step with one
backward on the real batch and one on ``fake.detach()``. Every line marked ``# InfoGAN`` is the
plug-in; the rest is the plain GAN.

    python examples/dcgan.py --steps 200
"""

import argparse
import json
import time

import torch
import torch.nn as nn
import torch.optim as optim

from torch_infogan import InfoRegularizer  # InfoGAN
from torch_infogan.data import load_data

nz = 62     # size of the noise vector
ngf = 16    # generator width
ndf = 32    # discriminator width
nc = 1      # image channels


def weights_init(m):
    """DCGAN's initialisation: conv weights N(0, 0.02), batch-norm scales N(1, 0.02)."""
    classname = m.__class__.__name__
    if classname.find("Conv") != -1:
        nn.init.normal_(m.weight, 0.0, 0.02)
    elif classname.find("BatchNorm") != -1:
        nn.init.normal_(m.weight, 1.0, 0.02)
        nn.init.zeros_(m.bias)


def forever(loader):
    while True:
        yield from loader


def main(steps: int = 200, batch_size: int = 64, seed: int = 0, log=print) -> dict:
    start = time.time()
    torch.set_num_threads(2)
    torch.manual_seed(seed)

    data = load_data("mnist-10k")
    images = data.images[:5000].float().div(255).sub(0.5).div(0.5)  # transforms.Normalize((0.5,), (0.5,))
    dataloader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(images), batch_size=batch_size,
                                             shuffle=True, drop_last=True)

    netD = nn.Sequential(
        # input is (nc) x 28 x 28
        nn.Conv2d(nc, ndf, 4, 2, 1, bias=False),
        nn.LeakyReLU(0.2, inplace=True),
        # state size. (ndf) x 14 x 14
        nn.Conv2d(ndf, ndf * 2, 4, 2, 1, bias=False),
        nn.BatchNorm2d(ndf * 2),
        nn.LeakyReLU(0.2, inplace=True),
        # state size. (ndf*2) x 7 x 7
        nn.Conv2d(ndf * 2, 1, 7, 1, 0, bias=False),
        nn.Sigmoid(),
    )
    netD.apply(weights_init)
    info = InfoRegularizer("cat:10,unif:2", noise_dim=nz).attach(netD, layer="4", example=images[:2])  # InfoGAN

    netG = nn.Sequential(
        # input is Z, going into a convolution
        nn.ConvTranspose2d(info.latent_dim, ngf * 4, 7, 1, 0, bias=False),  # InfoGAN (was: nn.ConvTranspose2d(nz, ngf * 4, 7, 1, 0, bias=False),)
        nn.BatchNorm2d(ngf * 4),
        nn.ReLU(True),
        # state size. (ngf*4) x 7 x 7
        nn.ConvTranspose2d(ngf * 4, ngf * 2, 4, 2, 1, bias=False),
        nn.BatchNorm2d(ngf * 2),
        nn.ReLU(True),
        # state size. (ngf*2) x 14 x 14
        nn.ConvTranspose2d(ngf * 2, nc, 4, 2, 1, bias=False),
        nn.Tanh(),
        # state size. (nc) x 28 x 28
    )
    netG.apply(weights_init)

    criterion = nn.BCELoss()
    real_label = 1.
    fake_label = 0.

    # setup optimizer (D's after attach: netD.parameters() includes Q)
    optimizerD = optim.Adam(netD.parameters(), lr=2e-4, betas=(0.5, 0.999))
    optimizerG = optim.Adam(netG.parameters(), lr=1e-3, betas=(0.5, 0.999))

    bounds = []  # InfoGAN
    for i, (real_cpu,) in zip(range(steps), forever(dataloader)):
        ############################
        # (1) Update D network: maximize log(D(x)) + log(1 - D(G(z)))
        ###########################
        # train with real
        netD.zero_grad()
        b_size = real_cpu.size(0)
        label = torch.full((b_size,), real_label)
        output = netD(real_cpu).view(-1)
        errD_real = criterion(output, label)
        errD_real.backward()
        D_x = output.mean().item()

        # train with fake
        latent, codes = info.sample(b_size)  # InfoGAN (was: noise = torch.randn(b_size, nz, 1, 1))
        fake = netG(latent.view(b_size, -1, 1, 1))  # InfoGAN (was: fake = netG(noise))
        label.fill_(fake_label)
        output = netD(fake.detach()).view(-1)
        errD_fake = criterion(output, label)
        errD_fake = errD_fake + info.loss(codes)  # InfoGAN
        errD_fake.backward()
        D_G_z1 = output.mean().item()
        errD = errD_real + errD_fake
        optimizerD.step()

        ############################
        # (2) Update G network: maximize log(D(G(z)))
        ###########################
        netG.zero_grad()
        label.fill_(real_label)  # fake labels are real for generator cost
        output = netD(fake).view(-1)
        errG = criterion(output, label)
        errG = errG + info.loss(codes)  # InfoGAN
        errG.backward()
        D_G_z2 = output.mean().item()
        optimizerG.step()
        bounds.append(info.bounds()["cat0"])  # InfoGAN

        if i % 100 == 0 or i == steps - 1:
            log(f"[{i}/{steps}] Loss_D: {errD.item():.4f} Loss_G: {errG.item():.4f} D(x): {D_x:.4f} "
                f"D(G(z)): {D_G_z1:.4f} / {D_G_z2:.4f} cat0 bound: {bounds[-1]:.3f}")

    late = bounds[-50:]
    return {"bound": sum(late) / len(late), "seconds": time.time() - start, "steps": steps, "batch_size": batch_size}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, help="training steps (default: main's)")
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--seed", type=int)
    args = {k: v for k, v in vars(parser.parse_args()).items() if v is not None}
    print(json.dumps(main(**args)))
