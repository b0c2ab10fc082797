"""LSGAN (Mao et al. 2017): least-squares losses, made small for 28x28 digits, turned into an InfoGAN.

D ends in a linear layer (no sigmoid) and both players minimise a squared error against the
targets 1 (real) and 0 (fake). Every line marked ``# InfoGAN`` is the plug-in; the rest is the plain GAN.

    python examples/lsgan.py --steps 300
"""

import argparse
import json
import time

import torch
from torch import nn

from torch_infogan import InfoRegularizer  # InfoGAN
from torch_infogan.data import load_data

latent_dim = 62


class Generator(nn.Module):
    """Fully connected to 7x7, then two nearest-neighbour upsamplings with 3x3 convolutions."""

    def __init__(self, latent_dim):
        super().__init__()
        self.fc = nn.Sequential(nn.Linear(latent_dim, 64 * 7 * 7), nn.BatchNorm1d(64 * 7 * 7), nn.ReLU())
        self.up = nn.Sequential(
            nn.Upsample(scale_factor=2), nn.Conv2d(64, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
            nn.Upsample(scale_factor=2), nn.Conv2d(32, 1, 3, padding=1), nn.Tanh(),
        )

    def forward(self, z):
        return self.up(self.fc(z).view(-1, 64, 7, 7))


class Discriminator(nn.Module):
    """Two strided convolutions and a linear score: no sigmoid, the squared error works on the raw score."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 32, 4, 2, 1), nn.LeakyReLU(0.2),                       # 14 x 14
            nn.Conv2d(32, 64, 4, 2, 1), nn.BatchNorm2d(64), nn.LeakyReLU(0.2),  # 7 x 7
        )
        self.score = nn.Linear(64 * 7 * 7, 1)

    def forward(self, img):
        return self.score(self.features(img).flatten(1))


def batches(loader):
    while True:
        yield from loader


def main(steps: int = 300, batch_size: int = 64, seed: int = 0, log=print) -> dict:
    start = time.time()
    torch.set_num_threads(2)
    torch.manual_seed(seed)

    data = load_data("mnist-10k")
    imgs_all = data.images[:5000].float().div(127.5).sub(1)  # [-1, 1]
    dataloader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(imgs_all), batch_size=batch_size,
                                             shuffle=True, drop_last=True)

    mse = nn.MSELoss()
    a, b, c = 0.0, 1.0, 1.0  # Mao et al.'s targets: fake, real, and what G wants D to say about fakes
    netD = Discriminator()
    info = InfoRegularizer("cat:10,unif:2", noise_dim=latent_dim).attach(  # InfoGAN
        netD, layer="features.4", example=imgs_all[:2])  # InfoGAN
    netG = Generator(info.latent_dim)  # InfoGAN (was: netG = Generator(latent_dim))

    opt_d = torch.optim.Adam(netD.parameters(), lr=2e-4, betas=(0.5, 0.999))  # after attach: includes Q
    opt_g = torch.optim.Adam(netG.parameters(), lr=2e-4, betas=(0.5, 0.999))

    bounds = []  # InfoGAN
    for i, (x,) in zip(range(steps), batches(dataloader)):
        n = x.size(0)
        z, codes = info.sample(n)  # InfoGAN (was: z = torch.randn(n, latent_dim))
        x_fake = netG(z)

        # D: push D(x) to b and D(G(z)) to a
        score_real = netD(x)
        score_fake = netD(x_fake.detach())
        loss_d = 0.5 * mse(score_real, torch.full_like(score_real, b)) \
            + 0.5 * mse(score_fake, torch.full_like(score_fake, a))
        loss_d = loss_d + info.loss(codes)  # InfoGAN
        opt_d.zero_grad()
        loss_d.backward()
        opt_d.step()

        # G: push D(G(z)) to c
        score_fake = netD(x_fake)
        loss_g = 0.5 * mse(score_fake, torch.full_like(score_fake, c))
        loss_g = loss_g + info.loss(codes)  # InfoGAN
        opt_g.zero_grad()
        loss_g.backward()
        opt_g.step()
        bounds.append(info.bounds()["cat0"])  # InfoGAN

        if i % 100 == 0 or i == steps - 1:
            log(f"step {i}: loss_d {loss_d.item():.4f} loss_g {loss_g.item():.4f} cat0 bound {bounds[-1]:.3f}")

    late = bounds[-50:]
    return {"bound": sum(late) / len(late), "seconds": time.time() - start, "steps": steps, "batch_size": batch_size}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, help="training steps (default: main's)")
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--seed", type=int)
    args = {k: v for k, v in vars(parser.parse_args()).items() if v is not None}
    print(json.dumps(main(**args)))
