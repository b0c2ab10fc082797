"""Datasets: the embedded digits, IDX folders in both layouts, torchvision's MNIST files, clear errors."""

import gzip
import shutil

import pytest
import torch

from conftest import MNIST_10K
from torch_infogan import InfoGANError
from torch_infogan.data import load_data


def test_embedded_digits():
    data = load_data()
    assert data.images.shape == (10000, 1, 28, 28) and data.images.dtype == torch.uint8
    assert torch.bincount(data.labels).tolist() == [1001, 1127, 991, 1032, 980, 863, 1014, 1070, 944, 978]


def test_idx_folder_with_one_pair_gzip_or_not(tmp_path):
    shutil.copy(MNIST_10K / "images-idx3-ubyte.gz", tmp_path)
    (tmp_path / "labels-idx1-ubyte").write_bytes(gzip.decompress((MNIST_10K / "labels-idx1-ubyte.gz").read_bytes()))
    data = load_data(f"idx:{tmp_path}")
    assert len(data) == 10000 and torch.equal(data.labels, load_data().labels)


def test_idx_folder_with_standard_train_and_test_files(tmp_path):
    embedded = load_data()
    for split, prefix in (("train", "train"), ("test", "t10k")):
        shutil.copy(MNIST_10K / "images-idx3-ubyte.gz", tmp_path / f"{prefix}-images-idx3-ubyte.gz")
        shutil.copy(MNIST_10K / "labels-idx1-ubyte.gz", tmp_path / f"{prefix}-labels-idx1-ubyte.gz")
    data = load_data(f"idx:{tmp_path}", split="test")
    assert data.split == "test" and torch.equal(data.images, embedded.images)


def test_torchvision_mnist_files_under_data_root(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for prefix in ("train", "t10k"):
        for kind, name in (("images", "idx3"), ("labels", "idx1")):
            data = gzip.decompress((MNIST_10K / f"{kind}-{name}-ubyte.gz").read_bytes())
            (raw / f"{prefix}-{kind}-{name}-ubyte").write_bytes(data)
    data = load_data("mnist", root=tmp_path)
    assert data.images.shape == (10000, 1, 28, 28) and torch.equal(data.labels, load_data().labels)


@pytest.mark.parametrize("spec, root, message", [
    ("mnist", None, "needs --data-root"),
    ("fashion-mnist", "EMPTY", "not found under"),
    ("idx:/no/such/folder", None, "IDX folder not found"),
    ("folder:/no/such/folder", None, "image folder not found"),
    ("cifar", None, "unknown dataset 'cifar'"),
])
def test_missing_data_is_a_clear_error(tmp_path, spec, root, message):
    with pytest.raises(InfoGANError, match=message):
        load_data(spec, root=tmp_path if root == "EMPTY" else root)


def test_idx_folder_without_images(tmp_path):
    (tmp_path / "notes.txt").write_text("nothing here")
    with pytest.raises(InfoGANError, match="expected one images file"):
        load_data(f"idx:{tmp_path}")
