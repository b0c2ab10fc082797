"""Differentiable augmentation of the images the discriminator sees."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def random_translate(images: torch.Tensor, max_shift: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Shift each image by its own random whole-pixel offset in [-max_shift, max_shift] on both axes.

    Zero fill at the borders; differentiable in ``images`` (the generator learns through it). This is the
    translation of DiffAugment (Zhao et al., 2020): D and Q see real and generated images shifted alike.
    """
    if max_shift <= 0:
        return images
    b, c, h, w = images.shape
    s = max_shift
    padded = F.pad(images, (s, s, s, s))
    dy = torch.randint(0, 2 * s + 1, (b, 1, 1, 1), generator=generator, device=images.device)
    dx = torch.randint(0, 2 * s + 1, (b, 1, 1, 1), generator=generator, device=images.device)
    rows = (torch.arange(h, device=images.device).view(1, 1, h, 1) + dy).expand(b, c, h, w + 2 * s)
    cols = (torch.arange(w, device=images.device).view(1, 1, 1, w) + dx).expand(b, c, h, w)
    return padded.gather(2, rows).gather(3, cols)
