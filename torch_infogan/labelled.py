"""A few labelled training images for a semi-supervised run: drawing them, reading a user's list of them, and
telling which rows of an evaluated dataset they are, so that no score counts them."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from torch_infogan.data import ImageData
from torch_infogan.errors import InfoGANError


@dataclass(eq=False)
class LabelledSet:
    """The training images whose labels a run trained on: ``indices`` into the run's training data (``dataset``,
    its ``split``, ``n`` images: the data before ``limit``, as the run evaluates it) and their ``labels``; ``code``
    is the key of the categorical code they name (category k of that code means label k)."""

    indices: np.ndarray
    labels: np.ndarray
    code: str
    dataset: str
    split: str
    n: int

    def __len__(self) -> int:
        return len(self.indices)

    def __eq__(self, other) -> bool:
        return isinstance(other, LabelledSet) and np.array_equal(self.indices, other.indices) \
            and np.array_equal(self.labels, other.labels) and (self.code, self.dataset, self.split, self.n) == \
            (other.code, other.dataset, other.split, other.n)

    __hash__ = None

    def to_config(self) -> dict:
        """A JSON-ready record, kept in the checkpoint's configuration as ``labelled``."""
        return {"code": self.code, "dataset": self.dataset, "split": self.split, "n": self.n,
                "indices": self.indices.tolist(), "labels": self.labels.tolist()}

    @classmethod
    def from_config(cls, record: dict | None) -> "LabelledSet | None":
        if not record:
            return None
        return cls(np.asarray(record["indices"], dtype=np.int64), np.asarray(record["labels"], dtype=np.int64),
                   str(record["code"]), str(record["dataset"]), str(record["split"]), int(record["n"]))

    def rows_in(self, data: ImageData) -> np.ndarray:
        """The rows of ``data`` that were trained on with their labels: these indices on the run's own training
        data, none on any other data (another split or dataset). Raises ``InfoGANError`` when ``data`` has the
        training data's name and split but another number of images, so that the rows cannot be told."""
        if data.split != self.split or data.name != self.dataset:
            return np.zeros(0, dtype=np.int64)
        if len(data) != self.n:
            raise InfoGANError(f"this run trained on the labels of {len(self)} images of {self.dataset!r} "
                               f"({self.n:,} images); the data given has {len(data):,}, so they cannot be left "
                               "out: evaluate on the data the run trained on, or on another split")
        return self.indices


def choose_labelled(data: ImageData, full_data: ImageData, info, per_class: int | None, labels_file: str | None,
                    seed: int = 0, code: str | None = None) -> LabelledSet | None:
    """The labelled images of a run on ``data`` (``full_data`` before ``limit``): ``per_class`` of each label drawn
    with ``seed``, or a user's ``labels_file`` (None without either); naming the categorical ``code`` of the
    regularizer ``info`` (its first categorical code when None), which must have a category for every label."""
    if per_class is None and labels_file is None:
        return None
    if per_class is not None:
        indices, labels = draw_labelled(data, per_class, seed)
    else:
        indices, labels = read_labels_file(labels_file, len(data))
    key = code or info.keys[info.categorical_indices("label_loss")[0]]
    k = info.codes[info.keys.index(key)].num_clusters
    if labels.max() >= k:
        raise InfoGANError(f"the labels run to {labels.max()}, but {key} has {k} categories: give it at least "
                           f"{labels.max() + 1} (--codes cat:{labels.max() + 1},...)")
    return LabelledSet(indices, labels, key, full_data.name, full_data.split, len(full_data))


def draw_labelled(data: ImageData, per_class: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``per_class`` images of each label of ``data``, drawn at random with ``seed``: their indices (sorted) and
    labels."""
    if data.labels is None:
        raise InfoGANError(f"dataset {data.name!r} has no labels to draw {per_class} per class from; give your "
                           "own with --labels-file")
    labels = data.labels.numpy()
    rng = np.random.default_rng(seed)
    rows = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        if len(members) < per_class:
            raise InfoGANError(f"label {label} of {data.name!r} has {len(members)} images, fewer than the "
                               f"{per_class} per class asked for")
        rows.append(rng.choice(members, size=per_class, replace=False))
    indices = np.sort(np.concatenate(rows))
    return indices, labels[indices]


def read_labels_file(path: str | Path, n: int) -> tuple[np.ndarray, np.ndarray]:
    """A user's labelled images: a CSV file of ``index,label`` rows (a header row is allowed), indices into the
    training data of ``n`` images, labels whole numbers from 0. Returns the indices (sorted) and labels."""
    path = Path(path)
    if not path.is_file():
        raise InfoGANError(f"labels file not found: {path}")
    indices, labels = [], []
    with open(path, newline="") as handle:
        for line, row in enumerate(csv.reader(handle), 1):
            if not row or all(not cell.strip() for cell in row):
                continue
            try:
                index, label = (int(cell) for cell in row)
            except ValueError:
                if line == 1:
                    continue  # a header
                raise InfoGANError(f"{path}, line {line}: expected 'index,label' (two whole numbers), got "
                                   f"{','.join(row)!r}") from None
            indices.append(index)
            labels.append(label)
    if not indices:
        raise InfoGANError(f"{path} lists no labelled images (expected 'index,label' rows)")
    indices, labels = np.asarray(indices, dtype=np.int64), np.asarray(labels, dtype=np.int64)
    if indices.min() < 0 or indices.max() >= n:
        raise InfoGANError(f"{path}: indices must lie in [0, {n}) for the {n:,} training images, got "
                           f"{indices.min()} to {indices.max()}")
    if labels.min() < 0:
        raise InfoGANError(f"{path}: labels must be >= 0, got {labels.min()}")
    if len(np.unique(indices)) != len(indices):
        raise InfoGANError(f"{path} lists an image more than once")
    order = np.argsort(indices)
    return indices[order], labels[order]
