from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
MNIST_10K = ROOT / "torch_infogan" / "data" / "mnist-10k"


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def mnist_10k():
    """The embedded real digits as (images float [N,1,28,28] in [0,1], labels long [N])."""
    from torch_infogan.data.idx import read_idx

    images = torch.from_numpy(read_idx(MNIST_10K / "images-idx3-ubyte.gz").copy()).float().div_(255).unsqueeze(1)
    labels = torch.from_numpy(read_idx(MNIST_10K / "labels-idx1-ubyte.gz").copy()).long()
    return images, labels


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    """A checkpoint of the DCGAN reference after a few steps on 256 real digits."""
    from torch_infogan.config import preset_config
    from torch_infogan.trainer import Trainer

    trainer = Trainer(preset_config("mnist", limit=256, batch_size=32, iterations=3))
    for _ in range(3):
        trainer.step()
    return trainer.save(tmp_path_factory.mktemp("ckpt") / "checkpoint.safetensors")


@pytest.fixture(scope="session")
def digits_512(tmp_path_factory):
    """An IDX folder of the first 512 embedded digits and their labels: runs that evaluate at the end evaluate
    512 images, not 10,000."""
    from torch_infogan.data.idx import read_idx

    folder = tmp_path_factory.mktemp("digits512")
    images = read_idx(MNIST_10K / "images-idx3-ubyte.gz")[:512]
    labels = read_idx(MNIST_10K / "labels-idx1-ubyte.gz")[:512]
    shape = b"".join(int(v).to_bytes(4, "big") for v in images.shape)
    (folder / "images-idx3-ubyte").write_bytes(bytes([0, 0, 8, 3]) + shape + images.astype("uint8").tobytes())
    (folder / "labels-idx1-ubyte").write_bytes(bytes([0, 0, 8, 1]) + len(labels).to_bytes(4, "big")
                                               + labels.astype("uint8").tobytes())
    return folder
