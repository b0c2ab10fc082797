"""Random translation of the images D sees (DiffAugment's translation)."""

import pytest
import torch

from torch_infogan.errors import InfoGANError
from torch_infogan.augment import random_translate
from torch_infogan.config import preset_config
from torch_infogan.trainer import Trainer


def _shifted(image: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """``image`` [C, H, W] moved down by ``dy`` and right by ``dx`` pixels, zero fill."""
    out = torch.zeros_like(image)
    h, w = image.shape[1:]
    out[:, max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = \
        image[:, max(-dy, 0):h - max(dy, 0), max(-dx, 0):w - max(dx, 0)]
    return out


def test_each_image_is_a_whole_pixel_shift_within_the_limit():
    images = torch.rand(64, 1, 28, 28) + 0.1  # no zeros inside, so the fill shows where it came from
    out = random_translate(images, 2, torch.Generator().manual_seed(0))
    seen = set()
    for image, moved in zip(images, out):
        matches = [(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3) if torch.equal(moved, _shifted(image, dy, dx))]
        assert len(matches) == 1
        seen.add(matches[0])
    assert len(seen) > 10  # offsets vary from image to image


def test_zero_shift_is_the_identity_and_gradients_flow():
    images = (torch.rand(4, 3, 32, 32) + 0.1).requires_grad_()
    assert random_translate(images, 0) is images
    out = random_translate(images, 3, torch.Generator().manual_seed(1))
    out.sum().backward()
    # every input pixel that stays inside the frame gets gradient 1, the ones pushed out get 0
    assert set(images.grad.unique().tolist()) <= {0.0, 1.0}
    assert images.grad.sum() == (out != 0).sum()


def test_negative_translate_is_refused():
    with pytest.raises(InfoGANError, match="translate"):
        Trainer(preset_config("mnist", translate=-1, limit=256, device="cpu"))
