"""Training throughput of the MNIST recipe (images/s): torch-infogan's step beside the naive one, same run.

    python benchmarks/throughput.py [--device auto] [--batch-size 128] [--steps 30] [--rounds 3]

The naive step is the way most reimplementations write it: per-sample torchvision transforms through a
DataLoader, FC layers as 7x7 convolutions, three discriminator passes per step, `.item()` every step.
"""

from __future__ import annotations

import argparse
import platform
import time

import torch
import torch.nn.functional as F
from torch import nn
from torchvision import transforms
from PIL import Image

from torch_infogan.data import load_data
from torch_infogan.config import preset_config
from torch_infogan.runtime import resolve_device
from torch_infogan.trainer import Trainer


class _NaiveMNIST(torch.utils.data.Dataset):
    def __init__(self, images):
        self.images = images.numpy()
        self.transform = transforms.Compose([transforms.ToTensor()])

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return self.transform(Image.fromarray(self.images[i, 0], mode="L"))


class _NaiveG(nn.Module):
    def __init__(self, latent_dim):
        super().__init__()
        self.net = nn.Sequential(
            nn.ConvTranspose2d(latent_dim, 1024, 1), nn.BatchNorm2d(1024), nn.ReLU(),
            nn.ConvTranspose2d(1024, 128, 7), nn.BatchNorm2d(128), nn.ReLU(),
            nn.ConvTranspose2d(128, 64, 4, 2, 1), nn.BatchNorm2d(64), nn.ReLU(),
            nn.ConvTranspose2d(64, 1, 4, 2, 1), nn.Sigmoid())

    def forward(self, z):
        return self.net(z.view(z.shape[0], -1, 1, 1))


class _NaiveD(nn.Module):
    def __init__(self, q_dim):
        super().__init__()
        self.trunk = nn.Sequential(
            nn.Conv2d(1, 64, 4, 2, 1), nn.LeakyReLU(0.1),
            nn.Conv2d(64, 128, 4, 2, 1), nn.BatchNorm2d(128), nn.LeakyReLU(0.1),
            nn.Conv2d(128, 1024, 7), nn.BatchNorm2d(1024), nn.LeakyReLU(0.1))
        self.d = nn.Conv2d(1024, 1, 1)
        self.q = nn.Sequential(nn.Conv2d(1024, 128, 1), nn.BatchNorm2d(128), nn.LeakyReLU(0.1), nn.Conv2d(128, 12, 1))

    def forward(self, x):
        h = self.trunk(x)
        return self.d(h).view(-1), self.q(h).view(x.shape[0], -1)


def naive_loop(images, batch_size, device):
    G, D = _NaiveG(74).to(device), _NaiveD(12).to(device)
    opt_d = torch.optim.Adam(D.parameters(), lr=2e-4, betas=(0.5, 0.999))
    opt_g = torch.optim.Adam(G.parameters(), lr=1e-3, betas=(0.5, 0.999))
    loader = torch.utils.data.DataLoader(_NaiveMNIST(images), batch_size=batch_size, shuffle=True, drop_last=True)

    def batches():
        while True:
            yield from loader

    stream = batches()

    def step():
        real = next(stream).to(device)
        n = real.shape[0]
        z = torch.rand(n, 62, device=device) * 2 - 1
        c_cat = torch.randint(0, 10, (n,), device=device)
        c_cont = torch.rand(n, 2, device=device) * 2 - 1
        fake = G(torch.cat([z, F.one_hot(c_cat, 10).float(), c_cont], 1))
        opt_d.zero_grad()
        d_real, _ = D(real)
        d_fake, _ = D(fake.detach())
        loss_d = F.binary_cross_entropy_with_logits(d_real, torch.ones(n, device=device)) + \
            F.binary_cross_entropy_with_logits(d_fake, torch.zeros(n, device=device))
        loss_d.backward()
        opt_d.step()
        opt_g.zero_grad()
        d_out, q = D(fake)
        mi = F.cross_entropy(q[:, :10], c_cat) + 0.5 * (q[:, 10:] - c_cont).pow(2).sum(1).mean()
        loss_g = F.binary_cross_entropy_with_logits(d_out, torch.ones(n, device=device)) + mi
        loss_g.backward()
        opt_g.step()
        return loss_d.item(), loss_g.item()

    return step


def ours(data, batch_size, device, precision="fp32", compile=False):
    trainer = Trainer(preset_config("paper-mnist", batch_size=batch_size, device=str(device), precision=precision,
                                    compile=compile), data)
    return trainer.step


def measure(step, steps, device, batch_size):
    for _ in range(3):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return steps * batch_size / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--bf16", action="store_true", help="also measure bf16 autocast")
    parser.add_argument("--compile", action="store_true", help="also measure torch.compile")
    args = parser.parse_args()
    device = resolve_device(args.device)
    data = load_data()
    variants = {"naive": naive_loop(data.images, args.batch_size, device),
                "torch-infogan": ours(data, args.batch_size, device)}
    if args.bf16:
        variants["torch-infogan bf16 autocast"] = ours(data, args.batch_size, device, "bf16")
    if args.compile:
        variants["torch-infogan compile"] = ours(data, args.batch_size, device, compile=True)
    best = {name: 0.0 for name in variants}
    for _ in range(args.rounds):  # interleaved rounds, best of each: the machine is shared and noisy
        for name, step in variants.items():
            best[name] = max(best[name], measure(step, args.steps, device, args.batch_size))
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{platform.processor() or 'cpu'}, {torch.get_num_threads()} threads"
    print(f"device: {device} ({name}); torch {torch.__version__}; batch {args.batch_size}; "
          f"best of {args.rounds} rounds of {args.steps} steps")
    print(f"{'step':<30}{'images/s':>10}{'vs naive':>10}")
    for key, value in best.items():
        print(f"{key:<30}{value:>10.0f}{value / best['naive']:>9.2f}x")


if __name__ == "__main__":
    main()
