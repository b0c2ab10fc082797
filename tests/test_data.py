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


def _write_folder(root, size=(28, 28), mode="L", per_class=3, mixed=False):
    from PIL import Image

    images = load_data().images[:2 * per_class, 0].numpy()
    for i, pixels in enumerate(images):
        folder = root / f"class{i % 2}"
        folder.mkdir(parents=True, exist_ok=True)
        picture = Image.fromarray(pixels).convert(mode)
        if mixed and i % 2:
            picture = picture.resize((40, 30))
        elif size != (28, 28):
            picture = picture.resize(size)
        picture.save(folder / f"{i}.png")


def test_image_folder_keeps_the_images_own_size_and_grey(tmp_path):
    _write_folder(tmp_path)
    data = load_data(f"folder:{tmp_path}")
    assert data.images.shape == (6, 1, 28, 28) and data.labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert data.note == "" and "6 images, 1x28x28 (grey), 2 classes" in data.describe()
    rgb = tmp_path / "rgb"
    _write_folder(rgb, mode="RGB")  # colour files whose channels are equal are grey images too
    assert load_data(f"folder:{rgb}").image_shape == (1, 28, 28)
    asked = load_data(f"folder:{tmp_path}", image_size=32, channels=3)
    assert asked.image_shape == (3, 32, 32) and "resized from 28x28 to 32x32" in asked.note


def test_image_folder_of_mixed_sizes_is_resized_and_says_so(tmp_path):
    _write_folder(tmp_path, mixed=True)
    data = load_data(f"folder:{tmp_path}")
    assert data.image_shape == (1, 64, 64) and "mixed sizes" in data.describe()
    assert load_data(f"folder:{tmp_path}", image_size=28).image_shape == (1, 28, 28)


def test_conformed_resizes_and_converts_any_dataset():
    data = load_data().subset(10)
    out = data.conformed(image_size=32, channels=3)
    assert out.images.shape == (10, 3, 32, 32) and out.images.dtype == torch.uint8
    assert torch.equal(out.labels, data.labels) and data.conformed() is data
    grey = out.conformed(channels=1)
    assert grey.image_shape == (1, 32, 32) and torch.allclose(grey.images.float(), out.images[:, :1].float(), atol=1)


def test_imbalanced_subset_has_the_asked_ratio_and_is_fixed_by_its_seed():
    data = load_data()
    subset = data.imbalanced(5.0, seed=3)
    counts = subset.class_counts()
    assert max(counts) == min(data.class_counts()) and max(counts) / min(counts) == pytest.approx(5.0, rel=0.02)
    assert sorted(counts, reverse=True)[0] > sorted(counts, reverse=True)[1] > sorted(counts, reverse=True)[-1]
    assert subset.class_counts() == data.imbalanced(5.0, seed=3).class_counts()
    assert torch.equal(subset.images, data.imbalanced(5.0, seed=3).images)
    assert subset.class_counts() != data.imbalanced(5.0, seed=4).class_counts()  # another order of the classes
    assert "largest/smallest class 5" in subset.describe()
    with pytest.raises(InfoGANError, match="labels"):
        load_data().__class__(data.images[:10], None, "x").imbalanced(2.0)


def test_default_widths_follow_the_image_size():
    from torch_infogan.models.dcgan import default_widths

    assert default_widths(28) == (64, 128) and default_widths(48) == (64, 128, 256)
    assert default_widths(128) == (64, 128, 256, 512, 1024)
    with pytest.raises(InfoGANError, match="--image-size"):
        default_widths(30)
