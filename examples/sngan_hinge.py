"""SNGAN (Miyato et al. 2018) with the hinge loss, made small for 28x28 digits, turned into an InfoGAN.

Every layer of D wrapped in ``torch.nn.utils.parametrizations.spectral_norm``, no batch norm in D,
functional leaky ReLUs, the hinge loss. Q taps the second convolution's output (a parametrized module,
before its activation). Every line marked ``# InfoGAN`` is the plug-in; the rest is the plain GAN.

    python examples/sngan_hinge.py --steps 250
"""

import argparse
import json
import time

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from torch_infogan import InfoRegularizer  # InfoGAN
from torch_infogan.data import load_data

Z_DIM = 62


class Generator(nn.Module):
    def __init__(self, z_dim, ch=64):
        super().__init__()
        self.ch = ch
        self.linear = nn.Linear(z_dim, 7 * 7 * 2 * ch)
        self.bn0 = nn.BatchNorm1d(7 * 7 * 2 * ch)
        self.deconv1 = nn.ConvTranspose2d(2 * ch, ch, 4, 2, 1)
        self.bn1 = nn.BatchNorm2d(ch)
        self.deconv2 = nn.ConvTranspose2d(ch, 1, 4, 2, 1)

    def forward(self, z):
        h = F.relu(self.bn0(self.linear(z))).view(-1, 2 * self.ch, 7, 7)
        h = F.relu(self.bn1(self.deconv1(h)))
        return torch.tanh(self.deconv2(h))


class Discriminator(nn.Module):
    def __init__(self, ch=32):
        super().__init__()
        self.conv1 = spectral_norm(nn.Conv2d(1, ch, 4, 2, 1))           # 14 x 14
        self.conv2 = spectral_norm(nn.Conv2d(ch, 2 * ch, 4, 2, 1))      # 7 x 7
        self.linear = spectral_norm(nn.Linear(7 * 7 * 2 * ch, 1))

    def forward(self, x):
        h = F.leaky_relu(self.conv1(x), 0.1)
        h = F.leaky_relu(self.conv2(h), 0.1)
        return self.linear(h.flatten(1)).squeeze(1)


def loop(loader):
    while True:
        yield from loader


def main(steps: int = 250, batch_size: int = 64, seed: int = 0, log=print) -> dict:
    start = time.time()
    torch.set_num_threads(2)
    torch.manual_seed(seed)

    data = load_data("mnist-10k")
    x_train = data.images[:5000].float().div(127.5).sub(1)  # [-1, 1]
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x_train), batch_size=batch_size,
                                         shuffle=True, drop_last=True)

    D = Discriminator()
    info = InfoRegularizer("cat:10,unif:2", noise_dim=Z_DIM).attach(D, layer="conv2", example=x_train[:2])  # InfoGAN
    G = Generator(info.latent_dim)  # InfoGAN (was: G = Generator(Z_DIM))
    optim_d = torch.optim.Adam(D.parameters(), lr=2e-4, betas=(0.5, 0.999))  # after attach: includes Q
    optim_g = torch.optim.Adam(G.parameters(), lr=2e-4, betas=(0.5, 0.999))

    bounds = []  # InfoGAN
    for step, (x_real,) in zip(range(steps), loop(loader)):
        b = x_real.size(0)
        # discriminator: hinge loss
        z, codes = info.sample(b)  # InfoGAN (was: z = torch.randn(b, Z_DIM))
        x_fake = G(z)
        loss_real = F.relu(1.0 - D(x_real)).mean()
        loss_fake = F.relu(1.0 + D(x_fake.detach())).mean()
        loss_d = loss_real + loss_fake
        loss_d = loss_d + info.loss(codes)  # InfoGAN
        optim_d.zero_grad()
        loss_d.backward()
        optim_d.step()

        # generator
        loss_g = -D(x_fake).mean()
        loss_g = loss_g + info.loss(codes)  # InfoGAN
        optim_g.zero_grad()
        loss_g.backward()
        optim_g.step()
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
