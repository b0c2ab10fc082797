"""StyleGAN2's training loop (Karras et al. 2020): non-saturating logistic loss, lazy R1 penalty, made small.

The loss is softplus-based; R1 (gamma 10) runs on its own D forward on the real images (with
``requires_grad_(True)``) every 16 steps, scaled by 16, and Adam's lr and betas are adjusted for the
lazy regularization. Each phase freezes the other network with ``requires_grad``. The networks are small
convolutional ones (no mapping network or modulated convolutions). Every line marked ``# InfoGAN`` is
the plug-in; the rest is the plain GAN.

    python examples/r1_stylegan2.py --steps 200
"""

import argparse
import json
import time

import torch
import torch.nn.functional as F
from torch import autograd, nn

from torch_infogan import InfoRegularizer  # InfoGAN
from torch_infogan.data import load_data

LATENT = 62
R1_GAMMA = 10.0
D_REG_EVERY = 16
LR = 0.002


class Generator(nn.Module):
    def __init__(self, latent):
        super().__init__()
        self.input = nn.Sequential(nn.Linear(latent, 64 * 7 * 7), nn.BatchNorm1d(64 * 7 * 7), nn.LeakyReLU(0.2))
        self.convs = nn.Sequential(
            nn.Upsample(scale_factor=2), nn.Conv2d(64, 32, 3, padding=1), nn.BatchNorm2d(32), nn.LeakyReLU(0.2),
            nn.Upsample(scale_factor=2), nn.Conv2d(32, 16, 3, padding=1), nn.BatchNorm2d(16), nn.LeakyReLU(0.2),
        )
        self.to_rgb = nn.Conv2d(16, 1, 1)

    def forward(self, styles):
        return torch.tanh(self.to_rgb(self.convs(self.input(styles).view(-1, 64, 7, 7))))


class Discriminator(nn.Module):
    """No normalization; strided convolutions, then two fully connected layers (as StyleGAN2's epilogue)."""

    def __init__(self):
        super().__init__()
        self.convs = nn.Sequential(
            nn.Conv2d(1, 32, 4, 2, 1), nn.LeakyReLU(0.2),     # 14 x 14
            nn.Conv2d(32, 64, 4, 2, 1), nn.LeakyReLU(0.2),    # 7 x 7
        )
        self.fc = nn.Linear(64 * 7 * 7, 128)
        self.fc_act = nn.LeakyReLU(0.2)
        self.out = nn.Linear(128, 1)

    def forward(self, input):
        out = self.convs(input).flatten(1)
        return self.out(self.fc_act(self.fc(out)))


def requires_grad(model, flag=True):
    for p in model.parameters():
        p.requires_grad = flag


def d_logistic_loss(real_pred, fake_pred):
    return F.softplus(-real_pred).mean() + F.softplus(fake_pred).mean()


def d_r1_loss(real_pred, real_img):
    (grad_real,) = autograd.grad(outputs=real_pred.sum(), inputs=real_img, create_graph=True)
    return grad_real.pow(2).flatten(1).sum(1).mean()


def g_nonsaturating_loss(fake_pred):
    return F.softplus(-fake_pred).mean()


def sample_data(loader):
    while True:
        for (batch,) in loader:
            yield batch


def main(steps: int = 200, batch_size: int = 64, seed: int = 0, log=print) -> dict:
    start = time.time()
    torch.set_num_threads(2)
    torch.manual_seed(seed)

    data = load_data("mnist-10k")
    images = data.images[:5000].float().div(127.5).sub(1)  # [-1, 1]
    loader = sample_data(torch.utils.data.DataLoader(torch.utils.data.TensorDataset(images), batch_size=batch_size,
                                                     shuffle=True, drop_last=True))

    discriminator = Discriminator()
    info = InfoRegularizer("cat:10,unif:2", noise_dim=LATENT).attach(  # InfoGAN
        discriminator, layer="fc_act", example=images[:2])  # InfoGAN
    generator = Generator(info.latent_dim)  # InfoGAN (was: generator = Generator(LATENT))

    d_reg_ratio = D_REG_EVERY / (D_REG_EVERY + 1)  # lazy regularization: the optimizer sees fewer, bigger steps
    g_optim = torch.optim.Adam(generator.parameters(), lr=LR, betas=(0.0, 0.99))
    d_optim = torch.optim.Adam(discriminator.parameters(), lr=LR * d_reg_ratio,  # after attach: includes Q
                               betas=(0.0 ** d_reg_ratio, 0.99 ** d_reg_ratio))

    bounds = []  # InfoGAN
    for i in range(steps):
        real_img = next(loader)
        n = real_img.size(0)

        # D: logistic loss
        requires_grad(generator, False)
        requires_grad(discriminator, True)
        noise, codes = info.sample(n)  # InfoGAN (was: noise = torch.randn(n, LATENT))
        fake_img = generator(noise)
        fake_pred = discriminator(fake_img)
        real_pred = discriminator(real_img)
        d_loss = d_logistic_loss(real_pred, fake_pred)
        d_loss = d_loss + info.loss(codes)  # InfoGAN
        discriminator.zero_grad()
        d_loss.backward()
        d_optim.step()

        # D: lazy R1 on its own forward on the real images
        if i % D_REG_EVERY == 0:
            real_img.requires_grad_(True)
            real_pred = discriminator(real_img)
            r1_loss = d_r1_loss(real_pred, real_img)
            discriminator.zero_grad()
            (R1_GAMMA / 2 * r1_loss * D_REG_EVERY).backward()
            d_optim.step()

        # G: non-saturating loss
        requires_grad(generator, True)
        requires_grad(discriminator, False)
        noise, codes = info.sample(n)  # InfoGAN (was: noise = torch.randn(n, LATENT))
        fake_img = generator(noise)
        fake_pred = discriminator(fake_img)
        g_loss = g_nonsaturating_loss(fake_pred)
        g_loss = g_loss + info.loss(codes)  # InfoGAN
        generator.zero_grad()
        g_loss.backward()
        g_optim.step()
        bounds.append(info.bounds()["cat0"])  # InfoGAN

        if i % 100 == 0 or i == steps - 1:
            log(f"{i}: d {d_loss.item():.4f} g {g_loss.item():.4f} r1 {r1_loss.item():.4f} cat0 bound {bounds[-1]:.3f}")

    late = bounds[-50:]
    return {"bound": sum(late) / len(late), "seconds": time.time() - start, "steps": steps, "batch_size": batch_size}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, help="training steps (default: main's)")
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--seed", type=int)
    args = {k: v for k, v in vars(parser.parse_args()).items() if v is not None}
    print(json.dumps(main(**args)))
