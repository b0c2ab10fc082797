"""Differentiable augmentation (DiffAugment, Zhao et al. 2020) on a small GAN for 28x28 digits, as an InfoGAN.

Random translation and cutout, differentiable with respect to the images, applied to the real and the
generated batch before every D forward, in the D step and in the G step; non-saturating loss. Every
line marked ``# InfoGAN`` is the plug-in; the rest is the plain GAN.

    python examples/diffaugment.py --steps 600
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


def rand_translation(x, ratio=0.125):
    """Shift each image by up to ``ratio`` of its size in each direction, filling with the background (-1)."""
    n, c, h, w = x.shape
    sy, sx = int(h * ratio + 0.5), int(w * ratio + 0.5)
    dy = torch.randint(-sy, sy + 1, (n, 1, 1), device=x.device)
    dx = torch.randint(-sx, sx + 1, (n, 1, 1), device=x.device)
    # Source row/column of every output pixel in a padded copy; out-of-range sources land on the padding.
    rows = (torch.arange(h, device=x.device).view(1, h, 1) - dy + sy).expand(n, h, w)
    cols = (torch.arange(w, device=x.device).view(1, 1, w) - dx + sx).expand(n, h, w)
    padded = F.pad(x, (sx, sx, sy, sy), value=-1.0)
    flat = padded.flatten(2)                                            # [n, c, (h+2sy)(w+2sx)]
    index = (rows * (w + 2 * sx) + cols).flatten(1).unsqueeze(1).expand(n, c, h * w)
    return flat.gather(2, index).view(n, c, h, w)


def rand_cutout(x, ratio=0.5):
    """Zero a square of side ``ratio`` of the image size, centred anywhere in the image (it may hang over an edge)."""
    n, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    cy = torch.randint(0, h, (n, 1, 1), device=x.device)
    cx = torch.randint(0, w, (n, 1, 1), device=x.device)
    ys = torch.arange(h, device=x.device).view(1, h, 1)
    xs = torch.arange(w, device=x.device).view(1, 1, w)
    inside = ((ys - cy).abs() * 2 < ch) & ((xs - cx).abs() * 2 < cw)
    return x * (~inside).unsqueeze(1).to(x.dtype)


def DiffAugment(x):
    return rand_cutout(rand_translation(x))


class Generator(nn.Module):
    def __init__(self, nz):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(nz, 128 * 7 * 7), nn.BatchNorm1d(128 * 7 * 7), nn.ReLU(True), nn.Unflatten(1, (128, 7, 7)),
            nn.ConvTranspose2d(128, 64, 4, 2, 1), nn.BatchNorm2d(64), nn.ReLU(True),    # 14 x 14
            nn.ConvTranspose2d(64, 1, 4, 2, 1), nn.Tanh(),                             # 28 x 28
        )

    def forward(self, z):
        return self.net(z)


class Discriminator(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(1, 32, 4, 2, 1), nn.LeakyReLU(0.2, True),                       # 14 x 14
            nn.Conv2d(32, 64, 4, 2, 1), nn.BatchNorm2d(64), nn.LeakyReLU(0.2, True),  # 7 x 7
        )
        self.fc = nn.Linear(64 * 7 * 7, 1)

    def forward(self, x):
        return self.fc(self.conv(x).flatten(1)).view(-1)


def endless(loader):
    while True:
        yield from loader


def main(steps: int = 600, batch_size: int = 64, seed: int = 0, log=print) -> dict:
    start = time.time()
    torch.set_num_threads(2)
    torch.manual_seed(seed)

    data = load_data("mnist-10k")
    reals = data.images[:5000].float().div(127.5).sub(1)  # [-1, 1]
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(reals), batch_size=batch_size,
                                         shuffle=True, drop_last=True)

    D = Discriminator()
    # InfoGAN: weight=4 on the categorical code: with D (and so Q) seeing only shifted, cut-out images, G has to
    # encode the category in shapes that survive the augmentation, which takes longer at weight 1.
    info = InfoRegularizer("cat:10:weight=4,unif:2", noise_dim=NZ).attach(D, layer="conv.4", example=reals[:2])  # InfoGAN
    G = Generator(info.latent_dim)  # InfoGAN (was: G = Generator(NZ))
    optD = torch.optim.Adam(D.parameters(), lr=2e-4, betas=(0.5, 0.999))  # after attach: includes Q
    optG = torch.optim.Adam(G.parameters(), lr=1e-3, betas=(0.5, 0.999))

    bounds = []  # InfoGAN
    for it, (real,) in zip(range(steps), endless(loader)):
        z, codes = info.sample(real.size(0))  # InfoGAN (was: z = torch.randn(real.size(0), NZ))
        fake = G(z)

        # D step: D sees only augmented images.
        d_real = D(DiffAugment(real))
        # InfoGAN: augment `fake`, not `fake.detach()`: DiffAugment(fake.detach()) is a new tensor with no link
        # to the latent, so the plug-in could not tell it is the generated batch; `inputs=` below keeps G out.
        d_fake = D(DiffAugment(fake))  # InfoGAN (was: d_fake = D(DiffAugment(fake.detach())))
        loss_d = F.softplus(-d_real).mean() + F.softplus(d_fake).mean()
        loss_d = loss_d + info.loss(codes)  # InfoGAN
        optD.zero_grad()
        loss_d.backward(inputs=list(D.parameters()))  # InfoGAN (was: loss_d.backward())
        optD.step()

        # G step: a fresh augmentation of the same generated batch.
        d_fake = D(DiffAugment(fake))
        loss_g = F.softplus(-d_fake).mean()
        loss_g = loss_g + info.loss(codes)  # InfoGAN
        optG.zero_grad()
        loss_g.backward()
        optG.step()
        bounds.append(info.bounds()["cat0"])  # InfoGAN

        if it % 100 == 0 or it == steps - 1:
            log(f"it {it}: loss_d {loss_d.item():.4f} loss_g {loss_g.item():.4f} cat0 bound {bounds[-1]:.3f}")

    late = bounds[-50:]
    return {"bound": sum(late) / len(late), "seconds": time.time() - start, "steps": steps, "batch_size": batch_size}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, help="training steps (default: main's)")
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--seed", type=int)
    args = {k: v for k, v in vars(parser.parse_args()).items() if v is not None}
    print(json.dumps(main(**args)))
