"""Differentiable augmentation of the images the discriminator sees."""

from __future__ import annotations

import math

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


def random_rotate(images: torch.Tensor, max_degrees: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Rotate each image about its centre by its own random angle in [-max_degrees, max_degrees].

    Bilinear resampling with zero fill; differentiable in ``images``. The trainer applies it after
    ``random_translate`` to the real and the generated images alike (``TrainConfig.rotate``, off by default).
    """
    return random_affine(images, max_degrees, 0.0, generator)


def random_affine(images: torch.Tensor, max_degrees: float, max_scale: float = 0.0,
                  generator: torch.Generator | None = None, *, max_shear: float = 0.0) -> torch.Tensor:
    """Rotate each image about its centre by its own random angle in [-max_degrees, max_degrees], scale it
    by its own random factor in [1 - max_scale, 1 + max_scale] and slant it by its own horizontal shear in
    [-max_shear, max_shear] (each row moves sideways by that fraction of its distance from the centre row, so
    an upright stroke leans by up to ``atan(max_shear)``). A limit of 0 turns that part off, with no random
    draw for it.

    Bilinear resampling with zero fill; differentiable in ``images``. The trainer's IIC and consistency terms
    compare Q's categories on real images with Q's categories on such copies (``TrainConfig.iic``,
    ``TrainConfig.pair_shear``).
    """
    if max_degrees <= 0 and max_scale <= 0 and max_shear <= 0:
        return images
    b = images.shape[0]
    angle = (torch.rand(b, generator=generator, device=images.device) * 2 - 1) * math.radians(max_degrees)
    cos, sin = angle.cos(), angle.sin()
    if max_scale > 0:
        scale = 1 + (torch.rand(b, generator=generator, device=images.device) * 2 - 1) * max_scale
        cos, sin = cos / scale, sin / scale  # the sampling grid shrinks by the factor: the image grows by it
    zero = torch.zeros_like(angle)
    theta = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)
    if max_shear > 0:
        shear = (torch.rand(b, generator=generator, device=images.device) * 2 - 1) * max_shear
        one = torch.ones_like(angle)
        shear_m = torch.stack([torch.stack([one, shear, zero], 1), torch.stack([zero, one, zero], 1),
                               torch.stack([zero, zero, one], 1)], 1)
        theta = theta @ shear_m
    theta = theta.to(images.dtype)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, align_corners=False, padding_mode="zeros")


def random_flip(images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Mirror each image left to right with probability 1/2 (its own draw)."""
    mirror = torch.rand(images.shape[0], generator=generator, device=images.device) < 0.5
    return torch.where(mirror.view(-1, *([1] * (images.dim() - 1))), images.flip(-1), images)


def random_intensity(images: torch.Tensor, max_log: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Change each image's tones by its own random gamma in [exp(-max_log), exp(max_log)] and darken it by its own
    factor in [exp(-max_log), 1]: ``factor * images ** gamma`` for images in [0, 1] (a black background stays
    black). 0 returns ``images`` with no random draw.

    The IIC pair's copies get it (``TrainConfig.pair_intensity``) so that no category of real images is made of
    how bright or dark an image is: grey garments come in every shade, digits in one.
    """
    if max_log <= 0:
        return images
    shape = (images.shape[0],) + (1,) * (images.dim() - 1)
    gamma = ((torch.rand(shape, generator=generator, device=images.device) * 2 - 1) * max_log).exp()
    factor = (-torch.rand(shape, generator=generator, device=images.device) * max_log).exp()
    return factor.to(images.dtype) * images.clamp(0, 1).pow(gamma.to(images.dtype))
