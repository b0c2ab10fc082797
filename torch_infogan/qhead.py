"""The auxiliary head Q: maps the discriminator's tapped features to every code's parameters."""

from __future__ import annotations

from torch import nn


class QHead(nn.Module):
    """Paper-shaped Q head: ``Linear -> BatchNorm -> LeakyReLU`` (optional) then one ``Linear`` for all codes.

    ``hidden=0`` gives a single linear layer. The input is the tapped feature map, flattened per sample,
    so batch size 1 keeps its batch axis (no ``squeeze``).
    """

    def __init__(self, in_features: int, out_features: int, hidden: int = 128, batchnorm: bool = True,
                 negative_slope: float = 0.1):
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

    def forward(self, features):
        return self.net(features.flatten(1))
