"""WGAN-GP (Gulrajani et al. 2017) as its MNIST scripts write it, made small for 28x28 digits, turned into an InfoGAN.

A critic without batch norm, 5 critic iterations per generator iteration, Adam(1e-4, betas=(0.5, 0.9)),
a gradient penalty of weight 10 on random interpolates between the real batch and ``fake`` (not
detached: the penalty's forward reaches the latent, and the plug-in must not take it for the forward
on the generated batch). Every line marked ``# InfoGAN`` is the plug-in; the rest is the plain GAN.
One step is one generator iteration.

    python examples/wgan_gp.py --steps 150
"""

import argparse
import json
import time

import torch
from torch import autograd, nn, optim

from torch_infogan import InfoRegularizer  # InfoGAN
from torch_infogan.data import load_data

DIM = 32            # model width
NOISE = 62          # noise dimensions
CRITIC_ITERS = 5    # critic iterations per generator iteration
LAMBDA = 10         # gradient penalty weight
# InfoGAN: the codes, their MI weights (lambda) in the spec
CODES = "cat:10:weight=1,unif:2:weight=1"  # InfoGAN


class Generator(nn.Module):
    def __init__(self, latent_dim):
        super().__init__()
        self.preprocess = nn.Sequential(nn.Linear(latent_dim, 4 * DIM * 7 * 7), nn.BatchNorm1d(4 * DIM * 7 * 7),
                                        nn.ReLU(True))
        self.block = nn.Sequential(nn.ConvTranspose2d(4 * DIM, 2 * DIM, 4, 2, 1), nn.BatchNorm2d(2 * DIM),
                                   nn.ReLU(True))
        self.deconv_out = nn.ConvTranspose2d(2 * DIM, 1, 4, 2, 1)
        self.tanh = nn.Tanh()

    def forward(self, input):
        output = self.preprocess(input).view(-1, 4 * DIM, 7, 7)
        output = self.block(output)                 # 14 x 14
        return self.tanh(self.deconv_out(output))   # 28 x 28


class Discriminator(nn.Module):
    def __init__(self):
        super().__init__()
        self.main = nn.Sequential(
            nn.Conv2d(1, DIM, 5, stride=2, padding=2), nn.ReLU(True),            # 14 x 14
            nn.Conv2d(DIM, 2 * DIM, 5, stride=2, padding=2), nn.ReLU(True),      # 7 x 7
        )
        self.output = nn.Linear(2 * DIM * 7 * 7, 1)

    def forward(self, input):
        out = self.main(input).view(-1, 2 * DIM * 7 * 7)
        return self.output(out).view(-1)


def calc_gradient_penalty(netD, real_data, fake_data):
    alpha = torch.rand(real_data.size(0), 1, 1, 1)
    interpolates = alpha * real_data + (1 - alpha) * fake_data
    interpolates.requires_grad_(True)
    disc_interpolates = netD(interpolates)
    gradients = autograd.grad(outputs=disc_interpolates.sum(), inputs=interpolates, create_graph=True)[0]
    return ((gradients.flatten(1).norm(2, dim=1) - 1) ** 2).mean() * LAMBDA


def inf_train_gen(loader):
    while True:
        for (images,) in loader:
            yield images


def main(steps: int = 150, batch_size: int = 64, seed: int = 0, log=print) -> dict:
    start = time.time()
    torch.set_num_threads(2)
    torch.manual_seed(seed)

    data = load_data("mnist-10k")
    images = data.images[:5000].float().div(127.5).sub(1)  # [-1, 1]
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(images), batch_size=batch_size,
                                         shuffle=True, drop_last=True)
    gen = inf_train_gen(loader)

    netD = Discriminator()
    info = InfoRegularizer(CODES, noise_dim=NOISE).attach(netD, layer="main.3", example=images[:2])  # InfoGAN
    netG = Generator(info.latent_dim)  # InfoGAN (was: netG = Generator(NOISE))

    optimizerD = optim.Adam(netD.parameters(), lr=1e-4, betas=(0.5, 0.9))  # after attach: includes Q
    optimizerG = optim.Adam(netG.parameters(), lr=1e-4, betas=(0.5, 0.9))

    bounds = []  # InfoGAN
    for iteration in range(steps):
        ############################
        # (1) Update D network
        ###########################
        for p in netD.parameters():  # reset requires_grad
            p.requires_grad_(True)   # they are set to False below in netG update
        for _ in range(CRITIC_ITERS):
            real_data = next(gen)
            b = real_data.size(0)
            netD.zero_grad()

            # train with real
            D_real = netD(real_data).mean()

            # train with fake
            latent, codes = info.sample(b)  # InfoGAN (was: noise = torch.randn(b, NOISE))
            fake = netG(latent)  # InfoGAN (was: fake = netG(noise))
            D_fake = netD(fake.detach()).mean()

            # train with gradient penalty (on `fake` itself: this forward reaches the latent too)
            gradient_penalty = calc_gradient_penalty(netD, real_data, fake)

            D_cost = D_fake - D_real + gradient_penalty
            D_cost = D_cost + info.loss(codes)  # InfoGAN: uses D(fake.detach())'s features, not the penalty's
            # Only D's parameters: the penalty's graph reaches G through the interpolates.
            D_cost.backward(inputs=list(netD.parameters()))
            Wasserstein_D = D_real - D_fake
            optimizerD.step()

        ############################
        # (2) Update G network
        ###########################
        for p in netD.parameters():
            p.requires_grad_(False)  # to avoid computation
        netG.zero_grad()
        latent, codes = info.sample(batch_size)  # InfoGAN (was: noise = torch.randn(batch_size, NOISE))
        fake = netG(latent)  # InfoGAN (was: fake = netG(noise))
        G_cost = -netD(fake).mean()
        G_cost = G_cost + info.loss(codes)  # InfoGAN
        G_cost.backward()
        optimizerG.step()
        bounds.append(info.bounds()["cat0"])  # InfoGAN

        if iteration % 50 == 0 or iteration == steps - 1:
            log(f"[{iteration}/{steps}] D_cost: {D_cost.item():.4f} G_cost: {G_cost.item():.4f} "
                f"Wasserstein_D: {Wasserstein_D.item():.4f} cat0 bound: {bounds[-1]:.3f}")

    late = bounds[-50:]
    return {"bound": sum(late) / len(late), "seconds": time.time() - start, "steps": steps, "batch_size": batch_size}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, help="generator iterations (default: main's)")
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--seed", type=int)
    args = {k: v for k, v in vars(parser.parse_args()).items() if v is not None}
    print(json.dumps(main(**args)))
