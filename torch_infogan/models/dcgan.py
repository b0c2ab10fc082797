"""DCGAN reference generator and discriminator from InfoGAN's Appendix C, for 28, 32 and 64 pixel images."""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from torch_infogan.errors import InfoGANError

# Conv widths per image size: the paper's MNIST networks for 28x28; deeper stacks for larger images.
DEFAULT_WIDTHS = {28: (64, 128), 32: (64, 128, 256), 64: (64, 128, 256, 512)}


def default_widths(image_size: int) -> tuple[int, ...]:
    """The conv widths for ``image_size``: the table above, else 64, 128, ... doubling, with the fewest halvings
    (at least two, at most five) that bring the image down to 7 pixels or fewer."""
    if image_size in DEFAULT_WIDTHS:
        return DEFAULT_WIDTHS[image_size]
    for halvings in range(2, 6):
        if image_size % 2 ** halvings:
            break
        if image_size // 2 ** halvings <= 7:
            return tuple(64 * 2 ** i for i in range(halvings))
    raise InfoGANError(f"no default DCGAN widths for {image_size}px images (the size must halve at least twice "
                       f"down to 7 pixels or fewer, e.g. 28, 32, 48, 64, 96, 128); resize them "
                       f"(--image-size) or pass widths=...")


def _widths(image_size: int, widths) -> tuple[int, ...]:
    if widths is None:
        widths = default_widths(image_size)
    widths = tuple(int(w) for w in widths)
    if not widths or min(widths) < 1:
        raise InfoGANError(f"widths must be one or more positive channel counts, got {list(widths)}")
    if image_size % (2 ** len(widths)):
        raise InfoGANError(f"image size {image_size} is not divisible by 2**{len(widths)} (one halving per conv)")
    return widths


class Generator(nn.Module):
    """G: ``FC fc_dim BN ReLU -> FC base*base*widths[-1] BN ReLU -> deconvs 4x4/2 BN ReLU -> deconv to image``."""

    def __init__(self, latent_dim: int, image_shape=(1, 28, 28), widths=None, fc_dim: int = 1024,
                 output: str = "sigmoid"):
        super().__init__()
        channels, size, _ = image_shape
        widths = _widths(size, widths)
        self.base = size // 2 ** len(widths)
        self.top = widths[-1]
        self.fc = nn.Sequential(
            nn.Linear(latent_dim, fc_dim, bias=False), nn.BatchNorm1d(fc_dim), nn.ReLU(inplace=True),
            nn.Linear(fc_dim, self.top * self.base * self.base, bias=False),
            nn.BatchNorm1d(self.top * self.base * self.base), nn.ReLU(inplace=True),
        )
        layers: list[nn.Module] = []
        for w_in, w_out in zip(widths[::-1], widths[::-1][1:]):
            layers += [nn.ConvTranspose2d(w_in, w_out, 4, 2, 1, bias=False), nn.BatchNorm2d(w_out), nn.ReLU(inplace=True)]
        layers.append(nn.ConvTranspose2d(widths[0], channels, 4, 2, 1))
        if output == "sigmoid":
            layers.append(nn.Sigmoid())
        elif output == "tanh":
            layers.append(nn.Tanh())
        else:
            raise InfoGANError(f"generator output must be 'sigmoid' or 'tanh', got {output!r}")
        self.deconv = nn.Sequential(*layers)

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        h = self.fc(latent.flatten(1))
        return self.deconv(h.view(-1, self.top, self.base, self.base))


class Discriminator(nn.Module):
    """D: ``conv 4x4/2 lReLU -> (conv 4x4/2 BN lReLU)... -> FC fc_dim BN lReLU -> FC 1`` (logit).

    The layer named ``"features"`` (the activation after the FC layer) is where InfoGAN's Q head taps.
    """

    def __init__(self, image_shape=(1, 28, 28), widths=None, fc_dim: int = 1024, negative_slope: float = 0.1):
        super().__init__()
        channels, size, _ = image_shape
        widths = _widths(size, widths)
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        w_in = channels
        for i, w in enumerate(widths):
            layers[f"conv{i}"] = nn.Conv2d(w_in, w, 4, 2, 1, bias=(i == 0))
            if i > 0:
                layers[f"bn{i}"] = nn.BatchNorm2d(w)
            layers[f"act{i}"] = nn.LeakyReLU(negative_slope, inplace=True)
            w_in = w
        base = size // 2 ** len(widths)
        layers["flatten"] = nn.Flatten()
        layers["fc"] = nn.Linear(widths[-1] * base * base, fc_dim, bias=False)
        layers["bn_fc"] = nn.BatchNorm1d(fc_dim)
        layers["features"] = nn.LeakyReLU(negative_slope, inplace=True)
        self.trunk = nn.Sequential(layers)
        self.head = nn.Linear(fc_dim, 1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.trunk(images)).view(-1)


def build_dcgan(latent_dim: int, image_shape=(1, 28, 28), widths=None, fc_dim: int = 1024,
                negative_slope: float = 0.1, output: str = "sigmoid") -> tuple[Generator, Discriminator]:
    """The DCGAN reference pair for ``image_shape`` (C, H, W) with square H = W in {28, 32, 64} by default."""
    image_shape = tuple(int(s) for s in image_shape)
    if len(image_shape) != 3 or image_shape[1] != image_shape[2]:
        raise InfoGANError(f"the DCGAN reference needs a square (C, H, W) image shape, got {image_shape}")
    generator = Generator(latent_dim, image_shape, widths, fc_dim, output)
    discriminator = Discriminator(image_shape, widths, fc_dim, negative_slope)
    return generator, discriminator


#: Name of the discriminator layer the reference taps for Q.
DCGAN_TAP = "trunk.features"
