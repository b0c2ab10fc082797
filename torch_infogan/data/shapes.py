"""Procedural dSprites: three binary shapes rendered over the full grid of scale, orientation and position."""

from __future__ import annotations

import math
import zipfile
import zlib
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from torch_infogan.errors import InfoGANError

if TYPE_CHECKING:
    from torch_infogan.data import ImageData

FACTOR_NAMES = ("shape", "scale", "orientation", "pos_x", "pos_y")
FACTOR_SIZES = (3, 6, 40, 32, 32)
NUM_IMAGES = math.prod(FACTOR_SIZES)  # 737,280 as dSprites
SHAPES = ("square", "ellipse", "heart")
IMAGE_SIZE = 64

SCALES = np.linspace(0.5, 1.0, FACTOR_SIZES[1])
ORIENTATIONS = 2 * np.pi * np.arange(FACTOR_SIZES[2]) / FACTOR_SIZES[2]
POSITIONS = np.linspace(0.0, 1.0, FACTOR_SIZES[3])

# Geometry. A shape's frame has _UNIT px per unit at scale 1: the square is [-1, 1]^2 (20 px), the
# ellipse has semi-axes 1 and 0.5 (20 x 10 px), the heart is a square standing on a corner with half
# diagonal _HEART_SIZE and two half discs on its upper sides (22 x 20 px), turned about its centroid.
# Position class k puts the centre at _FIRST_CENTRE + k px (pos 0 -> 16, pos 1 -> 47): a position step
# is an exact one-pixel shift, and no shape at scale 1 reaches further than 14.2 px from its centre, so
# it stays clear of the border rows and columns (15.5 px away at least) in any orientation.
_UNIT = 10.0
_FIRST_CENTRE = 16.0
_ELLIPSE_AXES = (1.0, 0.5)
_HEART_SIZE = 0.9
_HEART_CENTROID = (np.pi / 4 + 1 / 3) / (2 + np.pi / 2)  # above the square's centre, in half diagonals
_CANVAS = IMAGE_SIZE + FACTOR_SIZES[3] - 1  # 95 px: holds the 64 x 64 window of every position


def factor_values(factors) -> np.ndarray:
    """Factor classes ``[N, 5]`` to their values ``float64 [N, 5]``: shape stays its class index,
    scale in [0.5, 1], orientation in radians in [0, 2 pi), positions in [0, 1]."""
    factors = _check_factors(factors)
    values = factors.astype(np.float64)
    values[:, 1] = SCALES[factors[:, 1]]
    values[:, 2] = ORIENTATIONS[factors[:, 2]]
    values[:, 3] = POSITIONS[factors[:, 3]]
    values[:, 4] = POSITIONS[factors[:, 4]]
    return values


def index_to_factors(index) -> np.ndarray:
    """Image indices ``[N]`` to factor classes ``int64 [N, 5]`` (mixed radix over FACTOR_SIZES, pos_y fastest)."""
    index = np.atleast_1d(np.asarray(index))
    if index.ndim != 1 or not np.issubdtype(index.dtype, np.integer):
        raise InfoGANError(f"image indices must be a 1-D integer array, got {index.dtype} {index.shape}")
    if index.size and (index.min() < 0 or index.max() >= NUM_IMAGES):
        raise InfoGANError(f"image index out of range [0, {NUM_IMAGES}): min {index.min()}, max {index.max()}")
    return np.stack(np.unravel_index(index, FACTOR_SIZES), axis=1).astype(np.int64)


def factors_to_index(factors) -> np.ndarray:
    """Factor classes ``[N, 5]`` to image indices ``int64 [N]``, the inverse of :func:`index_to_factors`."""
    factors = _check_factors(factors)
    return np.ravel_multi_index(tuple(factors.T), FACTOR_SIZES).astype(np.int64)


def render(factors) -> torch.Tensor:
    """Draw the images of factor classes ``[N, 5]`` as binary ``uint8 [N, 1, 64, 64]`` (0 or 255).

    Each pixel centre is moved into the shape's frame (minus the centre, turned by -orientation, divided
    by scale) and tested against the shape's implicit function. A position step is an exact one-pixel
    shift, so each distinct (shape, scale, orientation) is drawn once, on a 95 x 95 canvas, and an image
    is the 64 x 64 window of its canvas at its position: the same pixels as drawing it directly, and
    the whole grid in seconds. Orientation turns a shape clockwise on screen (rows go down); pos_x
    moves it right, pos_y down. Deterministic: the same factors give the same bytes in any batch.
    """
    factors = _check_factors(factors)
    if len(factors) == 0:
        return torch.zeros((0, 1, IMAGE_SIZE, IMAGE_SIZE), dtype=torch.uint8)
    kinds, kind = np.unique(factors[:, :3], axis=0, return_inverse=True)
    canvases = _draw(kinds)
    steps = FACTOR_SIZES[3]
    windows = canvases.as_strided((len(kinds), steps, steps, IMAGE_SIZE, IMAGE_SIZE),
                                  (_CANVAS * _CANVAS, _CANVAS, 1, _CANVAS, 1))  # [k, i, j] = canvas k[i:i+64, j:j+64]
    rows = torch.from_numpy(steps - 1 - factors[:, 4])
    cols = torch.from_numpy(steps - 1 - factors[:, 3])
    return windows[torch.from_numpy(kind.reshape(-1)), rows, cols].unsqueeze(1)


def load_shapes(n: int | None = None, seed: int = 0) -> ImageData:
    """The procedural dSprites grid as ``ImageData`` with factor classes, labels the shape class.

    ``n=None``: all 737,280 images in index order (about 3 GB); otherwise ``n`` distinct images drawn
    uniformly with ``np.random.default_rng(seed)``, sorted by index.
    """
    if n is None:
        index = np.arange(NUM_IMAGES)
        name = "shapes"
    else:
        if not 1 <= n <= NUM_IMAGES:
            raise InfoGANError(f"shapes: n must be in [1, {NUM_IMAGES}], got {n}")
        index = np.sort(np.random.default_rng(seed).choice(NUM_IMAGES, size=n, replace=False))
        name = f"shapes:{n}"
    factors = index_to_factors(index)
    return _image_data(render(factors), factors, name)


def load_dsprites(path: str | Path) -> ImageData:
    """The original ``dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz`` as ``ImageData`` (0/255 images,
    factors its latents_classes without the constant colour column)."""
    path = Path(path)
    if not path.is_file():
        raise InfoGANError(f"dSprites file not found: {path}")
    try:
        archive = np.load(path)
        if not isinstance(archive, np.lib.npyio.NpzFile):
            raise InfoGANError(f"{path}: a single array, not the dSprites npz archive")
        with archive:
            missing = [key for key in ("imgs", "latents_classes") if key not in archive.files]
            if missing:
                raise InfoGANError(f"{path}: no {' or '.join(missing)} array (is it the dSprites npz?)")
            images, classes = np.asarray(archive["imgs"], dtype=np.uint8), archive["latents_classes"]
    except InfoGANError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile, zlib.error) as exc:
        raise InfoGANError(f"cannot read dSprites file {path}: {exc}") from exc
    if images.ndim != 3 or classes.shape != (len(images), 1 + len(FACTOR_NAMES)):
        raise InfoGANError(f"{path}: expected imgs [N, H, W] and latents_classes [N, 6], "
                           f"got {images.shape} and {classes.shape}")
    if images.size and images.max() > 1:
        raise InfoGANError(f"{path}: expected 0/1 pixels in imgs, found {images.max()}")
    factors = _check_factors(classes[:, 1:])
    return _image_data(torch.from_numpy(images).mul_(255).unsqueeze(1), factors, f"dsprites:{path}")


def _image_data(images: torch.Tensor, factors: np.ndarray, name: str) -> ImageData:
    from torch_infogan.data import ImageData

    factors = torch.from_numpy(np.ascontiguousarray(factors, dtype=np.int64))
    return ImageData(images, factors[:, 0].clone(), name, "all", factors=factors, factor_names=FACTOR_NAMES)


def _check_factors(factors) -> np.ndarray:
    factors = np.asarray(factors)
    if factors.ndim != 2 or factors.shape[1] != len(FACTOR_SIZES) or not np.issubdtype(factors.dtype, np.integer):
        raise InfoGANError(f"factor classes must be an integer array [N, {len(FACTOR_SIZES)}], "
                           f"got {factors.dtype} {factors.shape}")
    bad = (factors < 0) | (factors >= np.array(FACTOR_SIZES))
    if bad.any():
        column = int(np.flatnonzero(bad.any(axis=0))[0])
        raise InfoGANError(f"factor {FACTOR_NAMES[column]} out of range [0, {FACTOR_SIZES[column]}): "
                           f"{factors[bad.any(axis=1), column][0]}")
    return factors.astype(np.int64, copy=False)


def _draw(kinds: np.ndarray) -> torch.Tensor:
    """Canvases ``uint8 [K, 95, 95]`` of (shape, scale, orientation) classes ``[K, 3]``, centred at the last position."""
    canvases = torch.empty((len(kinds), _CANVAS, _CANVAS), dtype=torch.uint8)
    for shape, inside in enumerate((_square, _ellipse, _heart)):
        rows = np.flatnonzero(kinds[:, 0] == shape)
        if rows.size:
            canvases[torch.from_numpy(rows)] = inside(*_frame(kinds[rows])).to(torch.uint8) * 255
    return canvases


def _frame(kinds: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Coordinates ``u, v [K, 95, 95]`` of every canvas pixel centre in each shape's frame (x right, y down)."""
    angle = ORIENTATIONS[kinds[:, 2]]
    size = _UNIT * SCALES[kinds[:, 1]]
    cos = torch.from_numpy(np.cos(angle) / size).float()[:, None, None]
    sin = torch.from_numpy(np.sin(angle) / size).float()[:, None, None]
    offset = torch.arange(_CANVAS, dtype=torch.float32) + 0.5 - (_FIRST_CENTRE + FACTOR_SIZES[3] - 1)
    dx, dy = offset[None, None, :], offset[None, :, None]
    return cos * dx + sin * dy, cos * dy - sin * dx


def _square(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return torch.maximum(u.abs_(), v.abs_()) <= 1


def _ellipse(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    a, b = _ELLIPSE_AXES
    return (u.div_(a).square_() + v.div_(b).square_()) <= 1


def _heart(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Square |x| + |y| <= 1 and discs of radius sqrt(1/2) at (+-1/2, 1/2), y up: the point down at orientation 0."""
    x = u.abs_().div_(_HEART_SIZE)
    y = v.div_(-_HEART_SIZE).add_(_HEART_CENTROID)
    square = (x + y.abs()) <= 1
    return square | ((x - 0.5).square_() + (y - 0.5).square_() <= 0.5)
