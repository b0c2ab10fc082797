"""Plain tensor-in, tensors-out modules for export: the encoder (D trunk + Q) and the generator."""

from __future__ import annotations

import torch
from torch import nn

from torch_infogan.codes import split_params
from torch_infogan.errors import InfoGANError
from torch_infogan.regularizer import InfoRegularizer


def output_names(info: InfoRegularizer) -> list[str]:
    """The encoder's outputs: ``features``, then per code ``<key>_<part>`` for each of its ``posterior_parts``
    (``cat0_probs``; ``unif1_mean``, ``unif1_std``)."""
    names = ["features"]
    for key, code in zip(info.keys, info.codes):
        names += [f"{key}_{part}" for part in code.posterior_parts]
    return names


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
        for code, part in zip(self.info.codes, split_params(self.info.codes, params)):
            posterior = code.posterior(part)
            missing = [name for name in code.posterior_parts if name not in posterior]
            if missing:
                raise InfoGANError(f"{type(code).__name__}.posterior() returned {sorted(posterior)}, "
                                   f"not its posterior_parts {list(code.posterior_parts)}")
            outputs += [posterior[name] for name in code.posterior_parts]
        return tuple(outputs)


class GeneratorExport(nn.Module):
    """latent -> image, the generator alone."""

    def __init__(self, generator: nn.Module):
        super().__init__()
        self.generator = generator

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        return self.generator(latent)
