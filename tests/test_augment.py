"""Random translation and rotation of the images D sees (DiffAugment-style augmentation)."""

import pytest
import torch

from torch_infogan.errors import InfoGANError
from torch_infogan.augment import random_affine, random_flip, random_rotate, random_translate
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


def _turned(image: torch.Tensor, degrees: float) -> torch.Tensor:
    """``image`` [1, H, W] turned counter-clockwise by ``degrees`` about its centre (nearest pixel, zero fill)."""
    h, w = image.shape[1:]
    angle = torch.tensor(degrees * torch.pi / 180)
    y, x = torch.meshgrid(torch.arange(h) - (h - 1) / 2, torch.arange(w) - (w - 1) / 2, indexing="ij")
    src_x = (angle.cos() * x - angle.sin() * y + (w - 1) / 2).round().long()
    src_y = (angle.sin() * x + angle.cos() * y + (h - 1) / 2).round().long()
    inside = (src_x >= 0) & (src_x < w) & (src_y >= 0) & (src_y < h)
    out = torch.zeros_like(image)
    out[:, inside] = image[:, src_y[inside], src_x[inside]]
    return out


def test_each_image_is_turned_by_its_own_angle_within_the_limit():
    bar = torch.zeros(1, 28, 28)
    bar[:, 4:24, 13:15] = 1.0  # an upright stroke: its turn shows in which columns its ends fall
    images = bar.expand(32, 1, 28, 28)
    out = random_rotate(images, 20, torch.Generator().manual_seed(0))
    angles = []
    for moved in out:
        errors = {a: (moved - _turned(bar, a)).abs().sum().item() for a in range(-30, 31)}
        best = min(errors, key=errors.get)
        assert errors[best] < 0.4 * bar.sum()  # the stroke turned (bilinear against nearest: ~0.3), not moved
        angles.append(best)
    assert max(abs(a) for a in angles) <= 21  # within the limit (one degree of matching slack)
    assert len(set(angles)) > 8  # angles vary from image to image
    assert abs(out.sum() / images.sum() - 1) < 0.02  # a bilinear turn keeps the stroke's ink


def test_zero_rotation_is_the_identity_and_gradients_flow():
    images = (torch.rand(4, 1, 28, 28) + 0.1).requires_grad_()
    assert random_rotate(images, 0) is images
    out = random_rotate(images, 15, torch.Generator().manual_seed(1))
    out.sum().backward()
    assert images.grad is not None and images.grad.abs().sum() > 0


def test_rotation_outside_0_to_180_degrees_is_refused():
    for value in (-1.0, 181.0):
        with pytest.raises(InfoGANError, match="rotate must be between 0 and 180 degrees"):
            preset_config("mnist", rotate=value)


def test_affine_scales_each_image_by_its_own_factor_within_the_limit():
    square = torch.zeros(1, 28, 28)
    square[:, 9:19, 9:19] = 1.0  # a centred 10x10 square: its ink grows with the square of the scale
    images = square.expand(64, 1, 28, 28)
    out = random_affine(images, 0, 0.1, torch.Generator().manual_seed(0))
    ratio = out.sum((1, 2, 3)) / square.sum()
    assert float(ratio.min()) > 0.9 ** 2 - 0.02 and float(ratio.max()) < 1.1 ** 2 + 0.02
    assert float(ratio.min()) < 0.9 and float(ratio.max()) > 1.1  # both shrunk and grown copies
    assert len(set(ratio.round(decimals=3).tolist())) > 30  # a factor per image
    assert random_affine(images, 0, 0) is images



def test_affine_shears_each_image_by_its_own_slant_within_the_limit():
    bar = torch.zeros(1, 28, 28)
    bar[:, 4:24, 13:15] = 1.0  # an upright stroke: its slant (x change per row) is the shear applied
    images = bar.expand(64, 1, 28, 28)
    out = random_affine(images, 0, 0, torch.Generator().manual_seed(0), max_shear=0.4)[:, 0]
    rows, cols = torch.meshgrid(torch.arange(28.0), torch.arange(28.0), indexing="ij")
    ink = out.sum((1, 2))
    cy, cx = (out * rows).sum((1, 2)) / ink, (out * cols).sum((1, 2)) / ink
    slant = (out * (rows - cy[:, None, None]) * (cols - cx[:, None, None])).sum((1, 2)) \
        / (out * (rows - cy[:, None, None]) ** 2).sum((1, 2))
    assert float(slant.abs().max()) < 0.42
    assert float(slant.min()) < -0.25 and float(slant.max()) > 0.25  # slanted both ways
    assert len(set(slant.round(decimals=3).tolist())) > 30  # a shear per image
    assert torch.allclose(ink, bar.sum().expand(64), rtol=0.05)  # a shear keeps the area
    assert random_affine(images, 20, 0.1, torch.Generator().manual_seed(1)).equal(
        random_affine(images, 20, 0.1, torch.Generator().manual_seed(1), max_shear=0))  # 0: no draw, no change


def test_intensity_gives_each_image_its_own_gamma_and_darkening_within_the_limit():
    from torch_infogan.augment import random_intensity

    images = torch.rand(64, 1, 8, 8) * 0.9 + 0.05
    images[:, :, 0, 0] = 0.0  # background stays black
    assert random_intensity(images, 0.0) is images
    out = random_intensity(images, 0.7, torch.Generator().manual_seed(0))
    assert torch.all(out[:, :, 0, 0] == 0) and out.min() >= 0 and out.max() <= 1
    # each image is factor * x ** gamma: log(out) is affine in log(x) with slope gamma, intercept log(factor)
    logs_in, logs_out = images[:, 0, 1:, 1:].reshape(64, -1).log(), out[:, 0, 1:, 1:].reshape(64, -1).log()
    slopes = ((logs_out[:, 1:] - logs_out[:, :1]) / (logs_in[:, 1:] - logs_in[:, :1])).median(1).values
    intercepts = (logs_out - slopes[:, None] * logs_in).mean(1)
    assert torch.all((slopes > 0.496) & (slopes < 2.014))  # gamma in [e^-0.7, e^0.7] = [0.497, 2.014]
    assert torch.all((intercepts <= 1e-4) & (intercepts >= -0.7 - 1e-4))
    assert slopes.std() > 0.2  # the gamma varies from image to image


def test_pair_intensity_outside_0_to_2_is_refused():
    with pytest.raises(InfoGANError, match="pair_intensity"):
        preset_config("mnist", pair_intensity=-0.1)


def test_flip_mirrors_about_half_the_images_each_by_its_own_draw():
    images = torch.rand(200, 1, 6, 6)
    out = random_flip(images, torch.Generator().manual_seed(0))
    mirrored = [torch.equal(o, i.flip(-1)) for o, i in zip(out, images)]
    kept = [torch.equal(o, i) for o, i in zip(out, images)]
    assert all(m != k for m, k in zip(mirrored, kept))  # each image is one or the other
    assert 70 < sum(mirrored) < 130
