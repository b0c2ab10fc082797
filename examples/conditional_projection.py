"""A class-conditional GAN with a projection discriminator (Miyato & Koyama 2018), small, turned into an InfoGAN.

D takes ``(x, y)``: ``out = linear(h) + (embed(y) * h).sum(1)`` over globally sum-pooled features ``h``,
spectral norm on every layer, hinge loss. G takes ``(z, y)`` with a label embedding concatenated to ``z``.
Real batches carry the data's labels, fakes random labels. The InfoGAN codes sit in ``z`` beside the
label: since ``y`` already names the digit, the categorical code has to find another factor (style,
width, slant). Every line marked ``# InfoGAN`` is the plug-in; the rest is the plain GAN.

    python examples/conditional_projection.py --steps 400
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

DIM_Z = 62
NUM_CLASSES = 10


class Generator(nn.Module):
    def __init__(self, dim_z, num_classes, ch=64):
        super().__init__()
        self.ch = ch
        self.embed = nn.Embedding(num_classes, 16)
        self.l1 = nn.Linear(dim_z + 16, 2 * ch * 7 * 7)
        self.b1 = nn.BatchNorm1d(2 * ch * 7 * 7)
        self.c2 = nn.ConvTranspose2d(2 * ch, ch, 4, 2, 1)
        self.b2 = nn.BatchNorm2d(ch)
        self.c3 = nn.ConvTranspose2d(ch, 1, 4, 2, 1)

    def forward(self, z, y):
        h = torch.cat([z, self.embed(y)], dim=1)
        h = F.relu(self.b1(self.l1(h))).view(-1, 2 * self.ch, 7, 7)
        h = F.relu(self.b2(self.c2(h)))
        return torch.tanh(self.c3(h))


class ProjectionDiscriminator(nn.Module):
    def __init__(self, num_classes, ch=32):
        super().__init__()
        self.block = nn.Sequential(
            spectral_norm(nn.Conv2d(1, ch, 4, 2, 1)), nn.ReLU(),           # 14 x 14
            spectral_norm(nn.Conv2d(ch, 2 * ch, 4, 2, 1)), nn.ReLU(),      # 7 x 7
        )
        self.l_out = spectral_norm(nn.Linear(2 * ch, 1))
        self.l_y = spectral_norm(nn.Embedding(num_classes, 2 * ch))

    def forward(self, x, y):
        h = self.block(x).sum(dim=(2, 3))              # global sum pooling
        out = self.l_out(h).squeeze(1)
        return out + (self.l_y(y) * h).sum(dim=1)      # the projection term


def infinite(loader):
    while True:
        yield from loader


def main(steps: int = 400, batch_size: int = 64, seed: int = 0, log=print) -> dict:
    start = time.time()
    torch.set_num_threads(2)
    torch.manual_seed(seed)

    data = load_data("mnist-10k")
    x_all = data.images[:5000].float().div(127.5).sub(1)  # [-1, 1]
    y_all = data.labels[:5000]
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x_all, y_all), batch_size=batch_size,
                                         shuffle=True, drop_last=True)

    dis = ProjectionDiscriminator(NUM_CLASSES)
    info = InfoRegularizer("cat:10,unif:2", noise_dim=DIM_Z).attach(  # InfoGAN
        dis, layer="block.3", example=(x_all[:2], y_all[:2]))  # InfoGAN
    gen = Generator(info.latent_dim, NUM_CLASSES)  # InfoGAN (was: gen = Generator(DIM_Z, NUM_CLASSES))
    opt_dis = torch.optim.Adam(dis.parameters(), lr=2e-4, betas=(0.5, 0.999))  # after attach: includes Q
    opt_gen = torch.optim.Adam(gen.parameters(), lr=2e-4, betas=(0.5, 0.999))

    bounds = []  # InfoGAN
    for step, (x_real, y_real) in zip(range(steps), infinite(loader)):
        n = x_real.size(0)
        z, codes = info.sample(n)  # InfoGAN (was: z = torch.randn(n, DIM_Z))
        y_fake = torch.randint(0, NUM_CLASSES, (n,))
        x_fake = gen(z, y_fake)

        # discriminator: hinge loss, conditioned on the labels
        loss_dis = F.relu(1.0 - dis(x_real, y_real)).mean() + F.relu(1.0 + dis(x_fake.detach(), y_fake)).mean()
        loss_dis = loss_dis + info.loss(codes)  # InfoGAN
        opt_dis.zero_grad()
        loss_dis.backward()
        opt_dis.step()

        # generator
        loss_gen = -dis(x_fake, y_fake).mean()
        loss_gen = loss_gen + info.loss(codes)  # InfoGAN
        opt_gen.zero_grad()
        loss_gen.backward()
        opt_gen.step()
        bounds.append(info.bounds()["cat0"])  # InfoGAN

        if step % 100 == 0 or step == steps - 1:
            log(f"step {step}: loss_dis {loss_dis.item():.4f} loss_gen {loss_gen.item():.4f} "
                f"cat0 bound {bounds[-1]:.3f}")

    late = bounds[-50:]
    return {"bound": sum(late) / len(late), "seconds": time.time() - start, "steps": steps, "batch_size": batch_size}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, help="training steps (default: main's)")
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--seed", type=int)
    args = {k: v for k, v in vars(parser.parse_args()).items() if v is not None}
    print(json.dumps(main(**args)))
