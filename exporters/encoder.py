"""Plain tensor-in, tensors-out modules for export: the encoder (D trunk + Q) and the generator."""

from __future__ import annotations

import torch
from torch import nn

from torch_infogan.regularizer import InfoRegularizer


def output_names(info: InfoRegularizer) -> list[str]:
    """The encoder's outputs: ``features``, then per code ``<key>_probs`` or ``<key>_mean``/``<key>_std``."""
    names = ["features"]
    for key, code in zip(info.keys, info.codes):
        names += [f"{key}_{part}" for part in _parts(code)]
    return names


def _parts(code) -> list[str]:
    return ["probs"] if code.discrete() else ["mean", "std"]


class Encoder(nn.Module):
    """images -> (features, per-code posterior tensors): the discriminator up to the tapped layer, then Q."""

    def __init__(self, info: InfoRegularizer):
        super().__init__()
        self.info = info
        self.discriminator = info.discriminator
        self.q = info.q

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        features = self.info.features(images)
        params = self.q(features)
        outputs = [features]
        start = 0
        for code in self.info.codes:
            posterior = code.posterior(params[:, start:start + code.param_dim])
            outputs += [posterior[part] for part in _parts(code)]
            start += code.param_dim
        return tuple(outputs)


class GeneratorExport(nn.Module):
    """latent -> image, the generator alone."""

    def __init__(self, generator: nn.Module):
        super().__init__()
        self.generator = generator

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        return self.generator(latent)
