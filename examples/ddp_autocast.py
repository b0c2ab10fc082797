"""A DCGAN-style GAN trained with DistributedDataParallel and bf16 autocast, turned into an InfoGAN.

Two CPU processes (gloo), one thread each; G and D wrapped in DistributedDataParallel, their forwards and
losses under ``torch.autocast("cpu", dtype=torch.bfloat16)``. Each rank draws its own real batches and
its own latents; the batch size is per rank. Q is attached before D is wrapped, so it is part of the
replicated module and DDP keeps it in sync. Every line marked ``# InfoGAN`` is the plug-in.

    torchrun --standalone --nproc-per-node 2 examples/ddp_autocast.py --steps 200

Rank 0 prints the result, also as a line ``RESULT {json}``. Called without torchrun, ``main`` runs
as a single process (a one-rank process group).
"""

import argparse
import json
import os
import socket
import time

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

from torch_infogan import InfoRegularizer  # InfoGAN
from torch_infogan.data import load_data

NZ = 62


class Generator(nn.Module):
    def __init__(self, nz):
        super().__init__()
        self.fc = nn.Sequential(nn.Linear(nz, 128 * 7 * 7, bias=False), nn.BatchNorm1d(128 * 7 * 7), nn.ReLU(True))
        self.deconv = nn.Sequential(
            nn.ConvTranspose2d(128, 64, 4, 2, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU(True),   # 14 x 14
            nn.ConvTranspose2d(64, 1, 4, 2, 1), nn.Tanh(),                                        # 28 x 28
        )

    def forward(self, z):
        return self.deconv(self.fc(z).view(-1, 128, 7, 7))


class Discriminator(nn.Module):
    def __init__(self):
        super().__init__()
        self.main = nn.Sequential(
            nn.Conv2d(1, 32, 4, 2, 1), nn.LeakyReLU(0.2, inplace=True),                              # 14 x 14
            nn.Conv2d(32, 64, 4, 2, 1, bias=False), nn.BatchNorm2d(64), nn.LeakyReLU(0.2, inplace=True),  # 7 x 7
        )
        self.head = nn.Linear(64 * 7 * 7, 1)

    def forward(self, x):
        return self.head(self.main(x).flatten(1)).squeeze(1)   # logits


def setup():
    """The process group: from torchrun's environment, or a one-rank group when run directly."""
    if "RANK" in os.environ:
        dist.init_process_group("gloo")
    else:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    return dist.get_rank(), dist.get_world_size()


def main(steps: int = 200, batch_size: int = 64, seed: int = 0, log=print) -> dict:
    start = time.time()
    torch.set_num_threads(1)
    rank, world_size = setup()
    try:
        torch.manual_seed(seed)  # the same initial weights on every rank (DDP also broadcasts rank 0's)
        data = load_data("mnist-10k")
        images = data.images[:5000].float().div(127.5).sub(1)  # [-1, 1]
        sampler = torch.utils.data.distributed.DistributedSampler(torch.utils.data.TensorDataset(images),
                                                                  num_replicas=world_size, rank=rank, seed=seed,
                                                                  drop_last=True)
        loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(images), batch_size=batch_size,
                                             sampler=sampler, drop_last=True)

        netD = Discriminator()
        info = InfoRegularizer("cat:10,unif:2", noise_dim=NZ).attach(netD, layer="main.4", example=images[:2])  # InfoGAN
        netG = Generator(info.latent_dim)  # InfoGAN (was: netG = Generator(NZ))
        netD = DDP(netD)  # after attach: Q is a submodule, so DDP syncs its gradients too
        netG = DDP(netG)
        optD = torch.optim.Adam(netD.parameters(), lr=2e-4, betas=(0.5, 0.999))
        optG = torch.optim.Adam(netG.parameters(), lr=1e-3, betas=(0.5, 0.999))
        torch.manual_seed(seed * 1000 + 1 + rank)  # each rank its own latents

        bounds, step, epoch = [], 0, 0  # InfoGAN (was: step, epoch = 0, 0)
        while step < steps:
            sampler.set_epoch(epoch)
            for (real,) in loader:
                b = real.size(0)
                with torch.autocast("cpu", dtype=torch.bfloat16):
                    latent, codes = info.sample(b)  # InfoGAN (was: latent = torch.randn(b, NZ))
                    fake = netG(latent)
                    # D: one backward for the real and the generated batch (one backward per DDP forward set)
                    d_real = netD(real)
                    d_fake = netD(fake.detach())
                    loss_d = F.binary_cross_entropy_with_logits(d_real, torch.ones_like(d_real)) \
                        + F.binary_cross_entropy_with_logits(d_fake, torch.zeros_like(d_fake))
                    loss_d = loss_d + info.loss(codes)  # InfoGAN
                optD.zero_grad(set_to_none=True)
                loss_d.backward()
                optD.step()

                with torch.autocast("cpu", dtype=torch.bfloat16):
                    d_fake = netD(fake)
                    loss_g = F.binary_cross_entropy_with_logits(d_fake, torch.ones_like(d_fake))
                    loss_g = loss_g + info.loss(codes)  # InfoGAN
                optG.zero_grad(set_to_none=True)
                loss_g.backward()  # D's gradients from this backward are reduced too, and cleared next step
                optG.step()
                bounds.append(info.bounds()["cat0"])  # InfoGAN

                if rank == 0 and (step % 100 == 0 or step == steps - 1):
                    log(f"step {step}: loss_d {loss_d.item():.4f} loss_g {loss_g.item():.4f} "
                        f"cat0 bound {bounds[-1]:.3f}")
                step += 1
                if step == steps:
                    break
            epoch += 1

        late = torch.tensor(sum(bounds[-50:]) / len(bounds[-50:]))
        dist.all_reduce(late)  # the mean over ranks
        return {"bound": float(late) / world_size, "seconds": time.time() - start, "steps": steps,
                "batch_size": batch_size, "world_size": world_size}
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, help="training steps (default: main's)")
    parser.add_argument("--batch-size", type=int, help="per rank")
    parser.add_argument("--seed", type=int)
    args = {k: v for k, v in vars(parser.parse_args()).items() if v is not None}
    rank = int(os.environ.get("RANK", 0))
    result = main(**args, log=print if rank == 0 else (lambda *a: None))
    if rank == 0:
        print(json.dumps(result))
        print("RESULT " + json.dumps(result), flush=True)
