"""Training throughput of the MNIST recipe (images/s): torch-infogan's step beside the naive one, same run,
with the step's FLOPs and the share of this machine's measured matmul rate it reaches.

    python benchmarks/throughput.py [--device auto] [--batch-size 128] [--steps 30] [--rounds 3] [--bf16] [--default]
                                    [--natsu PATH]

The torch-infogan rows run the paper's recipe (the `paper-mnist` preset), the step the naive one also takes;
``--default`` adds the default `mnist` preset's step, which also shifts D's images and adds the IIC and invariance
terms, in the precision `--precision auto` picks on this machine (the row says which).
``--natsu PATH`` adds the training step of Natsu6767/InfoGAN-PyTorch run from a checkout of it at PATH (its own
networks, initialization, losses and data pipeline: PIL images through torchvision transforms and a DataLoader), the
reference the "vs" column is then taken against.
The naive step is the way most reimplementations write it: per-sample torchvision transforms through a
DataLoader, FC layers as 7x7 convolutions, three discriminator passes per step, `.item()` every step.
FLOPs are counted by `torch.utils.flop_counter.FlopCounterMode` over one step of each variant (matrix
multiplies and convolutions, forward and backward); the matmul rate is the best of a few 2048^3 products
in float32 and in bf16, measured in the same run.
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
from torch_infogan.runtime import resolve_device, resolve_precision
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


def natsu_loop(path, images, batch_size, device):
    """One training step of Natsu6767/InfoGAN-PyTorch's train.py (MNIST settings), with its modules from ``path``."""
    import importlib
    import sys

    import numpy as np

    sys.path.insert(0, str(path))
    try:
        model = importlib.import_module("models.mnist_model")
        utils = importlib.import_module("utils")
    finally:
        sys.path.remove(str(path))
    transform = transforms.Compose([transforms.Resize(28), transforms.CenterCrop(28), transforms.ToTensor()])
    pixels = images.numpy()

    class Data(torch.utils.data.Dataset):
        def __len__(self):
            return len(pixels)

        def __getitem__(self, i):
            return transform(Image.fromarray(pixels[i, 0], mode="L")), 0

    loader = torch.utils.data.DataLoader(Data(), batch_size=batch_size, shuffle=True)
    netG, trunk, netD, netQ = (cls().to(device) for cls in (model.Generator, model.Discriminator, model.DHead,
                                                             model.QHead))
    for net in (netG, trunk, netD, netQ):
        net.apply(utils.weights_init)
    bce, ce, normal_nll = nn.BCELoss(), nn.CrossEntropyLoss(), utils.NormalNLLLoss()
    opt_d = torch.optim.Adam([*trunk.parameters(), *netD.parameters()], lr=2e-4, betas=(0.5, 0.999))
    opt_g = torch.optim.Adam([*netG.parameters(), *netQ.parameters()], lr=2e-4, betas=(0.5, 0.999))
    stream = iter(())

    def step():
        nonlocal stream
        try:
            real, _ = next(stream)
        except StopIteration:
            stream = iter(loader)
            real, _ = next(stream)
        real = real.to(device)
        n = real.shape[0]
        opt_d.zero_grad()
        label = torch.full((n,), 1.0, device=device)
        loss_real = bce(netD(trunk(real)).view(-1), label)
        loss_real.backward()
        label.fill_(0.0)
        noise, idx = utils.noise_sample(1, 10, 2, 62, n, device)
        fake = netG(noise)
        loss_fake = bce(netD(trunk(fake.detach())).view(-1), label)
        loss_fake.backward()
        opt_d.step()
        opt_g.zero_grad()
        features = trunk(fake)
        label.fill_(1.0)
        q_logits, q_mu, q_var = netQ(features)
        target = torch.as_tensor(np.asarray(idx), dtype=torch.long, device=device)
        loss_g = bce(netD(features).view(-1), label) + ce(q_logits, target[0]) \
            + 0.1 * normal_nll(noise[:, 72:].view(-1, 2), q_mu, q_var)
        loss_g.backward()
        opt_g.step()
        return (loss_real + loss_fake).item(), loss_g.item()

    return step


def ours(data, batch_size, device, precision="fp32", compile=False, preset="paper-mnist"):
    trainer = Trainer(preset_config(preset, batch_size=batch_size, device=str(device), precision=precision,
                                    compile=compile), data)
    return trainer.step


def step_flops(step) -> float:
    """FLOPs of one call of ``step`` (matrix multiplies and convolutions, forward and backward)."""
    from torch.utils.flop_counter import FlopCounterMode

    step()  # warm: the first step may differ (lazy state)
    with FlopCounterMode(display=False) as counter:
        step()
    return float(counter.get_total_flops())


def matmul_rate(device, dtype, size=2048, repeats=5) -> float:
    """Best FLOP/s of ``size``^3 products in ``dtype`` on ``device``."""
    a = torch.randn(size, size, device=device).to(dtype)
    b = torch.randn(size, size, device=device).to(dtype)
    best = 0.0
    for _ in range(repeats + 2):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        a @ b
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = max(best, 2 * size ** 3 / (time.perf_counter() - start))
    return best


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
    parser.add_argument("--compile", action="store_true", help="also measure torch.compile (in bf16 with --bf16)")
    parser.add_argument("--default", action="store_true",
                        help="also measure the default mnist preset's step (shifts, the IIC and invariance terms; bf16 with --bf16)")
    parser.add_argument("--natsu", metavar="PATH", help="a checkout of Natsu6767/InfoGAN-PyTorch: add its training step")
    args = parser.parse_args()
    device = resolve_device(args.device)
    data = load_data()
    # name: (step, precision its matmuls run in)
    variants = {}
    if args.natsu:
        variants["Natsu6767/InfoGAN-PyTorch"] = (natsu_loop(args.natsu, data.images, args.batch_size, device), "fp32")
    variants["naive"] = (naive_loop(data.images, args.batch_size, device), "fp32")
    variants["torch-infogan"] = (ours(data, args.batch_size, device), "fp32")
    if args.bf16:
        variants["torch-infogan bf16 autocast"] = (ours(data, args.batch_size, device, "bf16"), "bf16")
    if args.compile:  # compiled in bf16 autocast when --bf16 is given, else in float32
        precision = "bf16" if args.bf16 else "fp32"
        variants[f"torch-infogan compile {precision}"] = (ours(data, args.batch_size, device, precision, compile=True),
                                                         precision)
    if args.default:  # in the precision `--precision auto` takes here
        precision = resolve_precision("auto", device)
        variants[f"default (mnist), auto={precision}"] = (ours(data, args.batch_size, device, precision,
                                                                preset="mnist"), precision)
    flops = {name: step_flops(step) / args.batch_size for name, (step, _) in variants.items()}
    best = {name: 0.0 for name in variants}
    rates = {"fp32": 0.0, "bf16": 0.0}
    for _ in range(args.rounds):  # interleaved rounds, best of each: the machine is shared and noisy
        for name, (step, _) in variants.items():
            best[name] = max(best[name], measure(step, args.steps, device, args.batch_size))
        rates["fp32"] = max(rates["fp32"], matmul_rate(device, torch.float32))
        rates["bf16"] = max(rates["bf16"], matmul_rate(device, torch.bfloat16))
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{_cpu_name()}, {torch.get_num_threads()} threads"
    print(f"device: {device} ({name}); torch {torch.__version__}; batch {args.batch_size}; "
          f"best of {args.rounds} rounds of {args.steps} steps")
    print(f"measured 2048^3 matmul: float32 {rates['fp32'] / 1e9:.0f} GFLOP/s, bf16 {rates['bf16'] / 1e9:.0f} GFLOP/s")
    reference = next(iter(best))
    print(f"`--precision auto` takes {resolve_precision('auto', device)} here")
    vs = "vs " + ("Natsu" if args.natsu else "naive")
    print(f"{'step':<34}{'images/s':>10}{vs:>10}{'GFLOP/image':>13}{'GFLOP/s':>9}{'of matmul rate':>16}")
    for key, value in best.items():
        achieved = value * flops[key]
        precision = variants[key][1]
        print(f"{key:<34}{value:>10.0f}{value / best[reference]:>9.2f}x{flops[key] / 1e9:>13.3f}{achieved / 1e9:>9.0f}"
              f"{achieved / rates[precision]:>10.0%} {precision:>5}")


def _cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "cpu"


if __name__ == "__main__":
    main()
