"""The latent space: the codes, the noise beside them, their keys, and G's input built from code values.

Pure: no module, no hook and no record of earlier calls; ``InfoRegularizer`` adds Q and the bookkeeping.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from torch_infogan.codes import Categorical, Code, code_keys, format_codes, parse_codes
from torch_infogan.errors import InfoGANError


class LatentSpace:
    """G's input: ``noise_dim`` dimensions of ``noise`` (``uniform`` on [-1, 1] or ``normal``) followed by each
    code's input encoding (a one-hot for a categorical code), in spec order. Codes are named by ``keys``
    (``code_keys``)."""

    def __init__(self, codes: str | Sequence[Code], noise_dim: int = 62, noise: str = "uniform"):
        self.codes: list[Code] = parse_codes(codes) if isinstance(codes, str) else list(codes)
        if not self.codes:
            raise InfoGANError("InfoRegularizer needs at least one code")
        if noise not in ("uniform", "normal"):
            raise InfoGANError(f"noise must be 'uniform' or 'normal', got {noise!r}")
        if noise_dim < 0:
            raise InfoGANError(f"noise_dim must be >= 0, got {noise_dim}")
        self.noise_dim = int(noise_dim)
        self.noise = noise
        self.keys = code_keys(self.codes)

    @property
    def spec(self) -> str:
        """The codes as a spec string (round-trips through ``parse_codes``)."""
        return format_codes(self.codes)

    @property
    def latent_dim(self) -> int:
        """Width of G's input: noise plus every code's input width."""
        return self.noise_dim + sum(code.input_dim for code in self.codes)

    @property
    def param_dim(self) -> int:
        """Width of Q's output: every code's parameter width."""
        return sum(code.param_dim for code in self.codes)

    def entropies(self) -> dict[str, float]:
        """H(c) of each code in nats, the ceiling of its MI bound."""
        return {key: float(code.entropy()) for key, code in zip(self.keys, self.codes)}

    def prior_parameters(self) -> list[nn.Parameter]:
        """The learned priors' logits (codes such as ``cat:10:prior=learned``), for the generator's optimizer:
        ``Adam([*netG.parameters(), *info.prior_parameters()])``. Empty when every prior is fixed."""
        return [code.logits for code in self.codes if getattr(code, "logits", None) is not None]

    def categorical_indices(self, method: str) -> list[int]:
        """Positions of the categorical codes, for a method that needs at least one (named in the error)."""
        categorical = [i for i, code in enumerate(self.codes) if isinstance(code, Categorical)]
        if not categorical:
            raise InfoGANError(f"{method}() needs a categorical code; the codes are {self.spec!r}")
        return categorical

    def _device(self) -> torch.device:
        return torch.device("cpu")

    def draw(self, n: int, generator: torch.Generator | None = None, device=None
             ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Draw ``n`` latents and their codes from the prior, with no side effect (for pictures and evaluation)."""
        if n < 1:
            raise InfoGANError(f"the number of latents to draw must be >= 1, got {n}")
        device = self._device() if device is None else torch.device(device)
        codes = {key: code.sample(n, generator=generator, device=device) for key, code in zip(self.keys, self.codes)}
        return self.latent_from(codes, generator=generator), codes

    def draw_relaxed(self, n: int, generator: torch.Generator | None = None, device=None
                     ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``draw`` for training: a learned prior's code enters G's input as its straight-through Gumbel-softmax
        draw, so that the latent is differentiable in the prior's logits. The codes' values are the same kind as
        ``draw``'s."""
        device = self._device() if device is None else torch.device(device)
        codes, inputs = {}, {}
        for key, code in zip(self.keys, self.codes):
            if getattr(code, "learned", False):
                codes[key], inputs[key] = code.rsample(n, generator=generator, device=device)
            else:
                codes[key] = code.sample(n, generator=generator, device=device)
        return self.latent_from(codes, generator=generator, inputs=inputs), codes

    def latent_from(self, codes: dict[str, torch.Tensor], noise: torch.Tensor | None = None,
                    generator: torch.Generator | None = None, inputs: dict[str, torch.Tensor] | None = None
                    ) -> torch.Tensor:
        """G's input for given code values (and noise, drawn from the prior when not given); ``inputs`` gives G's
        input ``[n, input_dim]`` of some codes directly (a learned prior's relaxed draw) instead of their encoding."""
        first = codes[self.keys[0]]
        n, device = first.shape[0], first.device
        if noise is None:
            if self.noise == "uniform":
                noise = torch.rand(n, self.noise_dim, generator=generator, device=device) * 2 - 1
            else:
                noise = torch.randn(n, self.noise_dim, generator=generator, device=device)
        inputs = inputs or {}
        parts = [noise] + [inputs[key] if key in inputs else code.encode(codes[key])
                           for key, code in zip(self.keys, self.codes)]
        return torch.cat(parts, dim=1)
