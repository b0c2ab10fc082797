"""Datasets as whole tensors: the embedded mnist-10k, IDX folders, torchvision datasets and procedural dSprites."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from torch_infogan.data.idx import parse_idx, read_idx
from torch_infogan.data.shapes import (
    FACTOR_NAMES,
    FACTOR_SIZES,
    factors_to_index,
    index_to_factors,
    load_dsprites,
    load_shapes,
    render,
)
from torch_infogan.errors import InfoGANError

EMBEDDED = "mnist-10k"
TORCHVISION = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST", "svhn": "SVHN", "celeba": "CelebA"}


@dataclass
class ImageData:
    """A dataset held in memory: uint8 images ``[N, C, H, W]``, optional long labels ``[N]``, and for
    datasets of known generative factors (shapes, dsprites) their classes, long ``[N, F]``, and names."""

    images: torch.Tensor
    labels: torch.Tensor | None
    name: str
    split: str = "train"
    factors: torch.Tensor | None = None
    factor_names: tuple[str, ...] | None = None

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.images.shape[1:])

    def subset(self, n: int) -> "ImageData":
        """``n`` images: the first ``n`` (the embedded data is shuffled, so a prefix is balanced), or, for data
        with factor labels (stored in factor order, as the shapes grid), ``n`` drawn at random (seed 0)."""
        if self.factors is not None and n < len(self):
            rows = torch.from_numpy(np.sort(np.random.default_rng(0).choice(len(self), size=n, replace=False)))
        else:
            rows = slice(0, n)
        labels = None if self.labels is None else self.labels[rows]
        factors = None if self.factors is None else self.factors[rows]
        return ImageData(self.images[rows], labels, self.name, self.split, factors, self.factor_names)


def load_data(spec: str = EMBEDDED, root: str | Path | None = None, split: str = "train",
              download: bool = False, image_size: int | None = None) -> ImageData:
    """Load a dataset by spec.

    - ``mnist-10k``: the 10,000 real MNIST digits shipped in the package;
    - ``idx:PATH``: a folder of MNIST-format IDX files (gzip or plain), the standard
      ``train-*``/``t10k-*`` files or one images/labels pair;
    - ``mnist``, ``fashion-mnist``, ``svhn``, ``celeba``: torchvision's datasets under ``root``;
    - ``folder:PATH``: torchvision's ImageFolder (one sub-folder per class);
    - ``shapes``: the procedural dSprites grid, 737,280 binary 64x64 images (about 3 GB);
      ``shapes:N``: a fixed random subset of N of them (seed 0); labels are the shape class,
      ``factors`` the classes of shape, scale, orientation, pos_x, pos_y;
    - ``dsprites:PATH``: the original dSprites ``.npz`` file, with the same labels and factors.
    """
    if spec == EMBEDDED:
        folder = resources.files("torch_infogan.data") / EMBEDDED
        images = read_idx(Path(str(folder / "images-idx3-ubyte.gz")))
        labels = read_idx(Path(str(folder / "labels-idx1-ubyte.gz")))
        return _from_arrays(images, labels, EMBEDDED, "train")
    if spec.startswith("idx:"):
        return _load_idx_folder(Path(spec[4:]), split)
    if spec.startswith("folder:"):
        return _load_image_folder(Path(spec[7:]), image_size)
    if spec in TORCHVISION:
        return _load_torchvision(spec, root, split, download, image_size)
    if spec == "shapes":
        return load_shapes()
    if spec.startswith("shapes:"):
        count = spec[7:]
        if not count.isdigit():
            raise InfoGANError(f"shapes:N needs a whole number of images, got {spec!r}")
        return load_shapes(int(count))
    if spec.startswith("dsprites:"):
        return load_dsprites(spec[9:])
    raise InfoGANError(f"unknown dataset {spec!r}; use {EMBEDDED}, idx:PATH, folder:PATH, shapes, shapes:N, "
                       f"dsprites:PATH or one of {', '.join(TORCHVISION)}")


def _from_arrays(images: np.ndarray, labels: np.ndarray | None, name: str, split: str) -> ImageData:
    if images.ndim == 3:
        images = images[:, None]
    if images.ndim != 4 or images.dtype != np.uint8:
        raise InfoGANError(f"{name}: expected uint8 images [N, H, W] or [N, C, H, W], got {images.dtype} {images.shape}")
    label_tensor = None
    if labels is not None:
        if labels.ndim != 1 or len(labels) != len(images):
            raise InfoGANError(f"{name}: {len(images)} images but labels of shape {labels.shape}")
        label_tensor = torch.from_numpy(labels.astype(np.int64))
    return ImageData(torch.from_numpy(np.ascontiguousarray(images)), label_tensor, name, split)


def _load_idx_folder(folder: Path, split: str) -> ImageData:
    if not folder.is_dir():
        raise InfoGANError(f"IDX folder not found: {folder}")
    files = sorted(p for p in folder.iterdir() if "idx" in p.name and p.is_file())
    prefix = {"train": "train", "test": "t10k"}.get(split, split)
    standard = [p for p in files if p.name.startswith(prefix + "-")]
    candidates = standard or [p for p in files if not p.name.startswith(("train-", "t10k-"))] or files
    image_files = [p for p in candidates if "idx3" in p.name]
    label_files = [p for p in candidates if "idx1" in p.name]
    if len(image_files) != 1:
        found = ", ".join(p.name for p in files) or "no IDX files"
        raise InfoGANError(f"{folder}: expected one images file (*idx3-ubyte[.gz]) for split {split!r}, found: {found}")
    images = read_idx(image_files[0])
    labels = read_idx(label_files[0]) if len(label_files) == 1 else None
    return _from_arrays(images, labels, f"idx:{folder}", split if standard else "all")


def _load_image_folder(folder: Path, image_size: int | None) -> ImageData:
    if not folder.is_dir():
        raise InfoGANError(f"image folder not found: {folder}")
    from torchvision import datasets, transforms

    size = image_size or 64
    transform = transforms.Compose([transforms.Resize(size), transforms.CenterCrop(size), transforms.PILToTensor()])
    try:
        dataset = datasets.ImageFolder(str(folder), transform=transform)
    except (FileNotFoundError, RuntimeError) as exc:
        raise InfoGANError(f"{folder}: {exc}") from exc
    return _stack(dataset, f"folder:{folder}", "all")


def _load_torchvision(name: str, root, split: str, download: bool, image_size: int | None) -> ImageData:
    from torchvision import datasets, transforms

    if root is None:
        raise InfoGANError(f"dataset {name!r} needs --data-root (the folder holding torchvision's {TORCHVISION[name]} files)")
    cls = getattr(datasets, TORCHVISION[name])
    try:
        if name in ("mnist", "fashion-mnist"):
            dataset = cls(str(root), train=(split == "train"), download=download)
            return _from_arrays(dataset.data.numpy(), dataset.targets.numpy(), name, split)
        if name == "svhn":
            dataset = cls(str(root), split=split, download=download)
            return _from_arrays(dataset.data, dataset.labels, name, split)
        size = image_size or 32
        transform = transforms.Compose([transforms.Resize(size), transforms.CenterCrop(size), transforms.PILToTensor()])
        dataset = cls(str(root), split=split, download=download, transform=transform)
        return _stack(dataset, name, split, labels=False)
    except RuntimeError as exc:  # torchvision: "Dataset not found or corrupted. You can use download=True ..."
        hint = "" if download else " (add --download to fetch it, where the network allows)"
        raise InfoGANError(f"dataset {name!r} not found under {root}: {exc}{hint}") from exc


def _stack(dataset, name: str, split: str, labels: bool = True) -> ImageData:
    images, targets = [], []
    for image, target in dataset:
        images.append(image)
        if labels:
            targets.append(int(target))
    return ImageData(torch.stack(images), torch.tensor(targets) if labels else None, name, split)


__all__ = [
    "EMBEDDED",
    "FACTOR_NAMES",
    "FACTOR_SIZES",
    "ImageData",
    "factors_to_index",
    "index_to_factors",
    "load_data",
    "load_dsprites",
    "load_shapes",
    "parse_idx",
    "read_idx",
    "render",
]
