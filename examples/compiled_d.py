"""A small non-saturating GAN whose discriminator runs through ``torch.compile``, turned into an InfoGAN.

The regularizer is attached first, then D is compiled (``netD = torch.compile(netD)``); the optimizer
takes the compiled module's parameters (the same tensors, Q included). Every line marked ``# InfoGAN``
is the plug-in; the rest is the plain GAN.

    python examples/compiled_d.py --steps 200
"""

import argparse
import json
import time

import torch
import torch.nn.functional as F
from torch import nn

from torch_infogan import InfoRegularizer  # InfoGAN
from torch_infogan.data import load_data

NZ = 62


class Generator(nn.Module):
    def __init__(self, nz):
        super().__init__()
        self.fc = nn.Sequential(nn.Linear(nz, 128 * 7 * 7), nn.BatchNorm1d(128 * 7 * 7), nn.ReLU())
        self.up = nn.Sequential(
            nn.ConvTranspose2d(128, 64, 4, 2, 1), nn.BatchNorm2d(64), nn.ReLU(),    # 14 x 14
            nn.ConvTranspose2d(64, 1, 4, 2, 1), nn.Tanh(),                         # 28 x 28
        )

    def forward(self, z):
        return self.up(self.fc(z).unflatten(1, (128, 7, 7)))


class Discriminator(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 4, 2, 1)
        self.conv2 = nn.Conv2d(32, 64, 4, 2, 1)
        self.bn2 = nn.BatchNorm2d(64)
        self.act = nn.LeakyReLU(0.2)
        self.fc = nn.Linear(64 * 7 * 7, 1)

    def forward(self, x):
        h = F.leaky_relu(self.conv1(x), 0.2)
        h = self.act(self.bn2(self.conv2(h)))
        return self.fc(h.flatten(1)).squeeze(1)


def cycle(loader):
    while True:
        yield from loader


def main(steps: int = 200, batch_size: int = 64, seed: int = 0, log=print) -> dict:
    start = time.time()
    torch.set_num_threads(2)
    torch.manual_seed(seed)

    data = load_data("mnist-10k")
    train = data.images[:5000].float().div(127.5).sub(1)  # [-1, 1]
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(train), batch_size=batch_size,
                                         shuffle=True, drop_last=True)

    netD = Discriminator()
    info = InfoRegularizer("cat:10,unif:2", noise_dim=NZ).attach(netD, layer="act", example=train[:2])  # InfoGAN
    netG = Generator(info.latent_dim)  # InfoGAN (was: netG = Generator(NZ))
    netD = torch.compile(netD)
    opt_d = torch.optim.Adam(netD.parameters(), lr=2e-4, betas=(0.5, 0.999))  # after attach: includes Q
    opt_g = torch.optim.Adam(netG.parameters(), lr=1e-3, betas=(0.5, 0.999))

    bounds = []  # InfoGAN
    for step, (real,) in zip(range(steps), cycle(loader)):
        z, codes = info.sample(real.size(0))  # InfoGAN (was: z = torch.randn(real.size(0), NZ))
        fake = netG(z)

        d_real = netD(real)
        d_fake = netD(fake.detach())
        loss_d = F.softplus(-d_real).mean() + F.softplus(d_fake).mean()
        loss_d = loss_d + info.loss(codes)  # InfoGAN
        opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        opt_d.step()

        d_fake = netD(fake)
        loss_g = F.softplus(-d_fake).mean()
        loss_g = loss_g + info.loss(codes)  # InfoGAN
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        opt_g.step()
        bounds.append(info.bounds()["cat0"])  # InfoGAN

        if step % 100 == 0 or step == steps - 1:
            log(f"step {step}: loss_d {loss_d.item():.4f} loss_g {loss_g.item():.4f} cat0 bound {bounds[-1]:.3f}")

    late = bounds[-50:]
    return {"bound": sum(late) / len(late), "seconds": time.time() - start, "steps": steps, "batch_size": batch_size}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, help="training steps (default: main's)")
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--seed", type=int)
    args = {k: v for k, v in vars(parser.parse_args()).items() if v is not None}
    print(json.dumps(main(**args)))
