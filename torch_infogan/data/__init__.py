"""Datasets as whole tensors: the embedded mnist-10k, IDX folders, torchvision datasets and procedural dSprites."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

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


def normalize(images: torch.Tensor, normalization: str = "unit") -> torch.Tensor:
    """uint8 images to the generator's range: ``unit`` is [0, 1], ``symmetric`` is [-1, 1]."""
    x = images.float().div_(255.0)
    return x.mul_(2).sub_(1) if normalization == "symmetric" else x


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
    #: How the images were changed on loading (resized, made grey), empty when they are as stored.
    note: str = ""

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
        return self._rows(rows)

    def without(self, rows) -> "ImageData":
        """These images but the given rows (indices)."""
        keep = np.ones(len(self), dtype=bool)
        keep[np.asarray(rows, dtype=np.int64)] = False
        return self._rows(torch.from_numpy(keep))

    def _rows(self, rows) -> "ImageData":
        labels = None if self.labels is None else self.labels[rows]
        factors = None if self.factors is None else self.factors[rows]
        return ImageData(self.images[rows], labels, self.name, self.split, factors, self.factor_names, self.note)

    def class_counts(self) -> list[int] | None:
        """Images per label, ``[count of label 0, ...]``; None without labels."""
        if self.labels is None:
            return None
        return torch.bincount(self.labels, minlength=int(self.labels.max()) + 1).tolist()

    def imbalanced(self, ratio: float, seed: int = 0) -> "ImageData":
        """A class-unbalanced subset, drawn with ``seed``: the class counts fall geometrically from the smallest
        class's full count to that count / ``ratio`` (the largest over the smallest class), each class given its
        place in that order at random; the images of each class are drawn at random. Needs labels."""
        counts = self.class_counts()
        if counts is None:
            raise InfoGANError(f"dataset {self.name!r} has no labels: an unbalanced subset needs them")
        if not ratio >= 1:
            raise InfoGANError(f"the largest/smallest class ratio must be >= 1, got {ratio}")
        present = [label for label, count in enumerate(counts) if count > 0]
        rng = np.random.default_rng(seed)
        top = min(counts[label] for label in present)
        places = rng.permutation(len(present))
        steps = max(len(present) - 1, 1)
        wanted = {label: max(1, round(top * ratio ** (-place / steps))) for label, place in zip(present, places)}
        labels = self.labels.numpy()
        rows = np.sort(np.concatenate([rng.choice(np.flatnonzero(labels == label), size=n, replace=False)
                                       for label, n in wanted.items()]))
        subset = self._rows(torch.from_numpy(rows))
        note = f"an unbalanced subset (largest/smallest class {ratio:g}, seed {seed})"
        subset.note = f"{self.note}; {note}" if self.note else note
        return subset

    def describe(self) -> str:
        """One line: what was loaded, its shape and labels, and how it was changed on loading."""
        c, h, w = self.image_shape
        kind = {1: "grey", 3: "colour"}.get(c, f"{c} channels")
        labels = "no labels" if self.labels is None else f"{len(set(self.labels.tolist()))} classes"
        note = f"; {self.note}" if self.note else ""
        return f"{self.name} ({self.split}): {len(self):,} images, {c}x{h}x{w} ({kind}), {labels}{note}"

    def conformed(self, image_size: int | None = None, channels: int | None = None) -> "ImageData":
        """These images resized to ``image_size`` x ``image_size`` (antialiased bilinear; centre-cropped to a
        square first) and converted to ``channels`` (1: grey, by luminance; 3: grey repeated). ``None`` keeps
        what they have."""
        images, notes = self.images, []
        c, h, w = self.image_shape
        if channels is not None and channels != c:
            if channels == 3 and c == 1:
                images = images.expand(-1, 3, -1, -1).contiguous()
            elif channels == 1 and c == 3:
                weights = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
                images = (images.float() * weights).sum(1, keepdim=True).round().clamp(0, 255).to(torch.uint8)
            else:
                raise InfoGANError(f"cannot turn {c}-channel images into {channels} channels (1: grey, 3: colour)")
            notes.append(f"converted from {c} to {channels} channels")
        if image_size is not None and (h, w) != (image_size, image_size):
            if image_size < 4:
                raise InfoGANError(f"an image size must be >= 4 pixels, got {image_size}")
            side = min(h, w)
            top, left = (h - side) // 2, (w - side) // 2
            square = images[:, :, top:top + side, left:left + side].float()
            images = torch.cat([F.interpolate(square[i:i + 1000], size=(image_size, image_size), mode="bilinear",
                                              antialias=True, align_corners=False)
                                for i in range(0, len(square), 1000)]).round().clamp(0, 255).to(torch.uint8)
            notes.append(f"resized from {h}x{w} to {image_size}x{image_size}")
        if not notes:
            return self
        note = "; ".join(([self.note] if self.note else []) + notes)
        return ImageData(images, self.labels, self.name, self.split, self.factors, self.factor_names, note)


def load_data(spec: str = EMBEDDED, root: str | Path | None = None, split: str = "train",
              download: bool = False, image_size: int | None = None, channels: int | None = None) -> ImageData:
    """Load a dataset by spec, the images at their own size and channel count unless ``image_size`` (square,
    centre-cropped) or ``channels`` (1 or 3) ask for others (``ImageData.conformed``).

    - ``mnist-10k``: the 10,000 real MNIST digits shipped in the package;
    - ``idx:PATH``: a folder of MNIST-format IDX files (gzip or plain), the standard
      ``train-*``/``t10k-*`` files or one images/labels pair;
    - ``mnist``, ``fashion-mnist``, ``svhn``, ``celeba``: torchvision's datasets under ``root``;
    - ``folder:PATH``: torchvision's ImageFolder layout (one sub-folder per class): grey when every image is
      grey, colour otherwise; at the images' own size when they share one square size, else 64x64;
    - ``shapes``: the procedural dSprites grid, 737,280 binary 64x64 images (about 3 GB);
      ``shapes:N``: a fixed random subset of N of them (seed 0); labels are the shape class,
      ``factors`` the classes of shape, scale, orientation, pos_x, pos_y;
    - ``dsprites:PATH``: the original dSprites ``.npz`` file, with the same labels and factors.
    """
    if spec.startswith("folder:"):
        return _load_image_folder(Path(spec[7:]), image_size).conformed(channels=channels)
    return _load(spec, root, split, download, image_size).conformed(image_size, channels)


def _load(spec: str, root, split: str, download: bool, image_size: int | None) -> ImageData:
    if spec == EMBEDDED:
        folder = resources.files("torch_infogan.data") / EMBEDDED
        images = read_idx(Path(str(folder / "images-idx3-ubyte.gz")))
        labels = read_idx(Path(str(folder / "labels-idx1-ubyte.gz")))
        return _from_arrays(images, labels, EMBEDDED, "train")
    if spec.startswith("idx:"):
        return _load_idx_folder(Path(spec[4:]), split)
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
    """Every image of an ImageFolder layout, as RGB first; grey (one channel) when every image is; at their own
    size when they share one square size (else ``image_size``, or 64 when none is asked for)."""
    if not folder.is_dir():
        raise InfoGANError(f"image folder not found: {folder}")
    from PIL import Image
    from torchvision import datasets, transforms

    try:
        samples = datasets.ImageFolder(str(folder), loader=lambda path: path).samples
    except (FileNotFoundError, RuntimeError) as exc:
        raise InfoGANError(f"{folder}: {exc}") from exc
    pictures = []
    for path, _ in samples:
        try:
            with Image.open(path) as picture:
                pictures.append(picture.convert("RGB"))
        except OSError as exc:
            raise InfoGANError(f"cannot read image {path}: {exc}") from exc
    sizes = {picture.size for picture in pictures}
    own = next(iter(sizes)) if len(sizes) == 1 else None
    notes = []
    if own is not None and own[0] == own[1] and image_size in (None, own[0]):
        images = torch.stack([transforms.functional.pil_to_tensor(p) for p in pictures])
    else:
        size = image_size or 64
        to_tensor = transforms.Compose([transforms.Resize(size), transforms.CenterCrop(size), transforms.PILToTensor()])
        images = torch.stack([to_tensor(p) for p in pictures])
        shown = f"{own[0]}x{own[1]}" if own else "mixed sizes"
        notes.append(f"resized from {shown} to {size}x{size}" + ("" if image_size else " (--image-size sets it)"))
    if bool((images[:, :1] == images[:, 1:]).all()):
        images = images[:, :1].contiguous()  # every image is grey: one channel
    labels = torch.tensor([target for _, target in samples])
    return ImageData(images, labels, f"folder:{folder}", "all", note="; ".join(notes))


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
