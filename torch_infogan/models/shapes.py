"""The modified InfoGAN networks of InfoGAN-CR (Lin et al., 2020) for 64x64 dSprites-like shapes."""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from torch_infogan.errors import InfoGANError


class ShapesGenerator(nn.Module):
    """G: ``FC 128 ReLU BN -> FC 4*4*64 ReLU BN -> deconvs 4x4/2 to 64, 32, 32 channels (lReLU BN) -> deconv to
    C channels, sigmoid`` (batch norm after the activation, as InfoGAN-CR's code)."""

    def __init__(self, latent_dim: int, channels: int = 1, negative_slope: float = 0.2):
        super().__init__()
        self.fc = nn.Sequential(
            nn.Linear(latent_dim, 128), nn.ReLU(inplace=True), nn.BatchNorm1d(128),
            nn.Linear(128, 4 * 4 * 64), nn.ReLU(inplace=True), nn.BatchNorm1d(4 * 4 * 64),
        )
        layers: list[nn.Module] = []
        for w_in, w_out in ((64, 64), (64, 32), (32, 32)):
            layers += [nn.ConvTranspose2d(w_in, w_out, 4, 2, 1), nn.LeakyReLU(negative_slope, inplace=True),
                       nn.BatchNorm2d(w_out)]
        layers += [nn.ConvTranspose2d(32, channels, 4, 2, 1), nn.Sigmoid()]
        self.deconv = nn.Sequential(*layers)

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        return self.deconv(self.fc(latent.flatten(1)).view(-1, 64, 4, 4))


class ShapesDiscriminator(nn.Module):
    """D: ``convs 4x4/2 with 32, 32, 64, 64 channels (lReLU) -> FC 128 lReLU -> FC 1`` (logit), every layer
    spectrally normalized, no batch norm. The layer named ``"features"`` (after the FC 128) is where Q taps."""

    def __init__(self, channels: int = 1, negative_slope: float = 0.2):
        super().__init__()
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        w_in = channels
        for i, w in enumerate((32, 32, 64, 64)):
            layers[f"conv{i}"] = spectral_norm(nn.Conv2d(w_in, w, 4, 2, 1))
            layers[f"act{i}"] = nn.LeakyReLU(negative_slope, inplace=True)
            w_in = w
        layers["flatten"] = nn.Flatten()
        layers["fc"] = spectral_norm(nn.Linear(64 * 4 * 4, 128))
        layers["features"] = nn.LeakyReLU(negative_slope, inplace=True)
        self.trunk = nn.Sequential(layers)
        self.head = spectral_norm(nn.Linear(128, 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.trunk(images)).view(-1)


def build_shapes(latent_dim: int, image_shape=(1, 64, 64), negative_slope: float = 0.2
                 ) -> tuple[ShapesGenerator, ShapesDiscriminator]:
    """InfoGAN-CR's dSprites pair for ``(C, 64, 64)`` images."""
    image_shape = tuple(int(s) for s in image_shape)
    if len(image_shape) != 3 or image_shape[1:] != (64, 64):
        raise InfoGANError(f"the shapes networks take (C, 64, 64) images, got {image_shape}")
    return (ShapesGenerator(latent_dim, image_shape[0], negative_slope),
            ShapesDiscriminator(image_shape[0], negative_slope))


#: Name of the discriminator layer the shapes networks tap for Q.
SHAPES_TAP = "trunk.features"
