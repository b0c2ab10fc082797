"""A small non-saturating GAN on digits, turned into an InfoGAN that also learns from a few labelled images.

The plain InfoGAN finds categories without labels, but which category is which digit is known only
after matching them to labels. Here ``labels_per_class`` digits of each class keep their label, and
one more term in the discriminator's step, ``info.label_loss(images, labels)``, asks Q to name them:
category k of ``cat0`` then means digit k, and the accuracy below is plain (no matching), on the
digits whose labels were not used. Every line marked ``# InfoGAN`` is the plug-in; ``# labels`` marks
the semi-supervised part.

    python examples/few_labels.py --steps 1000 --labels-per-class 10
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


def generator(latent_dim: int) -> nn.Module:
    return nn.Sequential(
        nn.Linear(latent_dim, 128 * 7 * 7), nn.BatchNorm1d(128 * 7 * 7), nn.ReLU(), nn.Unflatten(1, (128, 7, 7)),
        nn.ConvTranspose2d(128, 64, 4, 2, 1), nn.BatchNorm2d(64), nn.ReLU(),
        nn.ConvTranspose2d(64, 1, 4, 2, 1), nn.Sigmoid())


class Discriminator(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(1, 64, 4, 2, 1), nn.LeakyReLU(0.1),
                                  nn.Conv2d(64, 128, 4, 2, 1), nn.BatchNorm2d(128), nn.LeakyReLU(0.1))
        self.hidden = nn.Sequential(nn.Flatten(), nn.Linear(128 * 7 * 7, 1024), nn.BatchNorm1d(1024))
        self.act = nn.LeakyReLU(0.1)
        self.out = nn.Linear(1024, 1)

    def forward(self, x):
        return self.out(self.act(self.hidden(self.conv(x)))).squeeze(1)


def main(steps: int = 1000, batch_size: int = 64, labels_per_class: int = 10, seed: int = 0, log=print) -> dict:
    start = time.time()
    torch.manual_seed(seed)
    data = load_data("mnist-10k")
    images = data.images.float().div(255)
    digits = data.labels
    # labels: a fixed draw of labels_per_class images of each class; the rest stay unlabelled
    draw = torch.Generator().manual_seed(seed)
    labelled = torch.cat([torch.nonzero(digits == k).flatten()[torch.randperm(int((digits == k).sum()), generator=draw)]
                          [:labels_per_class] for k in range(10)])
    unlabelled = torch.ones(len(digits), dtype=torch.bool)
    unlabelled[labelled] = False

    netD = Discriminator()
    info = InfoRegularizer("cat:10,unif:2", noise_dim=NZ).attach(netD, layer="act", example=images[:2])  # InfoGAN
    netG = generator(info.latent_dim)  # InfoGAN (was: generator(NZ))
    opt_d = torch.optim.Adam(netD.parameters(), lr=2e-4, betas=(0.5, 0.999))  # after attach: includes Q
    opt_g = torch.optim.Adam(netG.parameters(), lr=1e-3, betas=(0.5, 0.999))

    bounds = []  # InfoGAN
    for step in range(steps):
        real = images[torch.randint(0, len(images), (batch_size,))]
        latent, codes = info.sample(batch_size)  # InfoGAN (was: z = torch.rand(batch_size, NZ) * 2 - 1)
        fake = netG(latent)
        rows = labelled[torch.randint(0, len(labelled), (batch_size,))]  # labels: a labelled batch each step

        loss_d = F.softplus(-netD(real)).mean() + F.softplus(netD(fake.detach())).mean()
        loss_d = loss_d + info.loss(codes)  # InfoGAN
        loss_d = loss_d + info.label_loss(images[rows], digits[rows])  # labels: Q names the labelled digits
        opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        opt_d.step()

        loss_g = F.softplus(-netD(fake)).mean() + info.loss(codes)  # InfoGAN
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        opt_g.step()
        bounds.append(info.bounds()["cat0"])  # InfoGAN
        if step % 200 == 0 or step == steps - 1:
            log(f"step {step}: loss_d {loss_d.item():.4f} loss_g {loss_g.item():.4f} cat0 bound {bounds[-1]:.3f}")

    netD.eval()
    with torch.no_grad():  # labels: category k is digit k, so the accuracy needs no matching
        named = torch.cat([info.infer(images[i:i + 1000])["cat0"]["probs"].argmax(1) for i in range(0, len(images), 1000)])
    accuracy = float((named[unlabelled] == digits[unlabelled]).float().mean())
    late = bounds[-50:]
    return {"bound": sum(late) / len(late), "accuracy": accuracy, "labels": len(labelled),
            "seconds": time.time() - start, "steps": steps, "batch_size": batch_size}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, help="training steps (default: main's)")
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--labels-per-class", type=int)
    parser.add_argument("--seed", type=int)
    args = {k: v for k, v in vars(parser.parse_args()).items() if v is not None}
    print(json.dumps(main(**args)))
