"""The auxiliary head Q: maps the discriminator's tapped features to every code's parameters."""

from __future__ import annotations

import torch
from torch import nn


class QHead(nn.Module):
    """Paper-shaped Q head: ``Linear -> BatchNorm -> LeakyReLU`` (optional) then one ``Linear`` for all codes.

    ``hidden=0`` gives a single linear layer. The input is the tapped feature map, flattened per sample,
    so batch size 1 keeps its batch axis (no ``squeeze``). ``overcluster > 0`` adds a second output layer beside
    the codes' one, ``overcluster`` category logits on the same hidden layer that only the IIC term reads (IIC's
    overclustering head, Ji et al. 2019): ``forward(features, overcluster=True)`` returns both outputs.
    """

    def __init__(self, in_features: int, out_features: int, hidden: int = 128, batchnorm: bool = True,
                 negative_slope: float = 0.1, overcluster: int = 0):
        super().__init__()
        layers: list[nn.Module] = []
        width = in_features
        if hidden > 0:
            layers.append(nn.Linear(in_features, hidden, bias=not batchnorm))
            if batchnorm:
                layers.append(nn.BatchNorm1d(hidden))
            layers.append(nn.LeakyReLU(negative_slope))
            width = hidden
        layers.append(nn.Linear(width, out_features))
        self.net = nn.Sequential(*layers)
        self.over = nn.Linear(width, overcluster) if overcluster > 0 else None

    def forward(self, features: torch.Tensor, overcluster: bool = False):
        if not overcluster:
            return self.net(features.flatten(1))
        if self.over is None:
            raise ValueError("this Q head has no overclustering output (overcluster=0)")
        hidden = features.flatten(1)
        for layer in self.net[:-1]:
            hidden = layer(hidden)
        return self.net[-1](hidden), self.over(hidden)
