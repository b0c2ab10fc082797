"""Stream encoder features of a dataset into an HDF5 file, and read such files back as a torch Dataset."""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from torch_infogan.atomic import atomic_path
from torch_infogan.checkpoint import Checkpoint, load_checkpoint
from torch_infogan.data import ImageData, normalize
from torch_infogan.errors import InfoGANError
from torch_infogan.evaluation import check_image_shape, learned_priors
from torch_infogan.exporters.encoder import Encoder, output_names
from torch_infogan.exporters.onnx import export_onnx, onnx_providers, sha256

FORMAT = "torch-infogan.features"
FORMAT_VERSION = "2"
#: Versions this module reads: 1 stored a code's first posterior part at ``codes/<key>`` (``codes/cat0``), 2 at
#: ``codes/<key>_<part>`` (``codes/cat0_probs``), the ONNX encoder's output names; either name reads either file.
READABLE_VERSIONS = ("1", "2")
CHUNK_BYTES = 1 << 20


@dataclass
class FeatureReport:
    path: Path
    rows: int
    feature_dim: int
    seconds: float


def _chunk_rows(width: int, itemsize: int, rows: int) -> int:
    """Rows per chunk so that a chunk of whole rows is close to 1 MiB."""
    return int(max(1, min(rows, CHUNK_BYTES // max(1, width * itemsize))))


def export_features(checkpoint: str | Path | Checkpoint, data: ImageData, out: str | Path, batch_size: int = 512,
                    device: str | torch.device = "cpu", dtype: str = "float32", engine: str = "torch",
                    indices: np.ndarray | None = None,
                    progress: Callable[[int], None] | None = None) -> FeatureReport:
    """Run the encoder over ``data`` (or over ``data[indices]``) and stream the rows into ``out``.

    Layout: ``features`` [N, F]; ``codes/<key>_<part>`` for each part of each code's posterior, named as the
    ONNX encoder's outputs (``codes/cat0_probs``; ``codes/unif1_mean``, ``codes/unif1_std``); ``labels`` [N] where the data has them; ``index`` [N] into the source dataset; for a
    semi-supervised run (``--labels``), ``labelled`` [N] (bool: the rows whose labels the run trained on; none on
    another split), its ``code`` attribute naming the code the labels trained.
    The file is written under a temporary name and renamed at the end.
    """
    import h5py

    if dtype not in ("float16", "float32"):
        raise InfoGANError(f"dtype must be float16 or float32, got {dtype!r}")
    if engine not in ("torch", "onnx"):
        raise InfoGANError(f"engine must be torch or onnx, got {engine!r}")
    if batch_size < 1:
        raise InfoGANError(f"batch size must be >= 1, got {batch_size}")
    out = Path(out)
    if not out.parent.is_dir():
        raise InfoGANError(f"output folder does not exist: {out.parent}")
    ckpt = checkpoint if isinstance(checkpoint, Checkpoint) else load_checkpoint(checkpoint, device)
    check_image_shape(data, ckpt.config["image_shape"])
    indices = np.arange(len(data)) if indices is None else np.asarray(indices, dtype=np.int64)
    rows = len(indices)
    if rows == 0:
        raise InfoGANError("the dataset is empty: nothing to export")
    normalization = ckpt.config.get("normalization", "unit")
    names = output_names(ckpt.info)
    trained = ckpt.trained_labels
    labelled = np.zeros(len(data), dtype=bool)
    if trained is not None:
        labelled[trained.rows_in(data)] = True
    run, cleanup = _engine(ckpt, engine, device)
    start = time.perf_counter()
    try:
        with atomic_path(out) as tmp, h5py.File(tmp, "w") as h5:
            datasets = None
            for begin in range(0, rows, batch_size):
                index = indices[begin:begin + batch_size]
                images = normalize(data.images[torch.from_numpy(index)], normalization)
                outputs = run(images)
                if datasets is None:
                    datasets = _create(h5, names, outputs, rows, dtype, data, ckpt)
                    feature_dim = int(outputs[0].shape[1])
                for name, value in zip(names, outputs):
                    datasets[name][begin:begin + len(index)] = value.astype(datasets[name].dtype, copy=False)
                datasets["index"][begin:begin + len(index)] = index
                if trained is not None:
                    datasets["labelled"][begin:begin + len(index)] = labelled[index]
                if data.labels is not None:
                    datasets["labels"][begin:begin + len(index)] = data.labels.numpy()[index]
                if data.factors is not None:
                    datasets["factors"][begin:begin + len(index)] = data.factors.numpy()[index]
                if progress is not None:
                    progress(len(index))
    finally:
        cleanup()
    return FeatureReport(out, rows, feature_dim, time.perf_counter() - start)


def _engine(ckpt: Checkpoint, engine: str, device):
    """A function images -> list of numpy outputs, and a cleanup function."""
    if engine == "torch":
        encoder = Encoder(ckpt.info).eval()
        dev = torch.device(device)

        @torch.no_grad()
        def run(images):
            return [o.float().cpu().numpy() for o in encoder(images.to(dev))]

        return run, lambda: None
    providers = onnx_providers()  # a clear error when onnxruntime is missing
    import onnxruntime as ort

    folder = tempfile.mkdtemp(prefix="infogan-onnx-")
    path = Path(folder) / "encoder.onnx"
    export_onnx(ckpt, path)
    session = ort.InferenceSession(str(path), providers=providers)

    def run(images):
        return session.run(None, {"images": images.numpy()})

    def cleanup():
        path.unlink(missing_ok=True)
        os.rmdir(folder)

    return run, cleanup


def _create(h5, names, outputs, rows, dtype, data: ImageData, ckpt: Checkpoint) -> dict:
    import torch_infogan

    datasets = {}
    for name, path, value in zip(names, _dataset_paths(ckpt.info), outputs):
        width = value.shape[1]
        store = np.dtype(dtype)
        datasets[name] = h5.create_dataset(path, shape=(rows, width), maxshape=(None, width), dtype=store,
                                           chunks=(_chunk_rows(width, store.itemsize, rows), width),
                                           compression="gzip", compression_opts=1, shuffle=True)
    datasets["index"] = h5.create_dataset("index", shape=(rows,), dtype=np.int64,
                                          chunks=(_chunk_rows(1, 8, rows),), compression="gzip", shuffle=True)
    trained = ckpt.trained_labels
    if trained is not None:
        datasets["labelled"] = h5.create_dataset("labelled", shape=(rows,), dtype=bool, chunks=(_chunk_rows(1, 1, rows),),
                                                 compression="gzip")
        datasets["labelled"].attrs["code"] = trained.code
    if data.labels is not None:
        datasets["labels"] = h5.create_dataset("labels", shape=(rows,), dtype=np.int64,
                                               chunks=(_chunk_rows(1, 8, rows),), compression="gzip", shuffle=True)
    if data.factors is not None:
        width = data.factors.shape[1]
        datasets["factors"] = h5.create_dataset("factors", shape=(rows, width), dtype=np.int64,
                                                chunks=(_chunk_rows(width, 8, rows), width), compression="gzip",
                                                shuffle=True)
        datasets["factors"].attrs["names"] = list(data.factor_names or [f"factor{i}" for i in range(width)])
    attrs = {"format": FORMAT, "format_version": FORMAT_VERSION, "codes": ckpt.info.spec,
             "checkpoint_sha256": sha256(ckpt.path) if ckpt.path else "", "dataset": data.name,
             "split": data.split, "library_version": torch_infogan.__version__,
             "normalization": ckpt.config.get("normalization", "unit"),
             "image_shape": list(ckpt.config["image_shape"])}
    priors = learned_priors(ckpt.info)
    if priors:  # JSON: {code key: [class probabilities]}
        attrs["priors"] = json.dumps(priors)
    h5.attrs.update(attrs)
    return datasets


def _dataset_paths(info) -> list[str]:
    """Where each encoder output goes: ``features``, then each of ``output_names`` under ``codes/``
    (``codes/cat0_probs``, ``codes/unif1_mean``, ``codes/unif1_std``): one naming for ONNX and HDF5."""
    names = output_names(info)
    return names[:1] + [f"codes/{name}" for name in names[1:]]


def stored_name(h5, name: str) -> str:
    """The dataset ``name`` as this file stores it: a code's first posterior part is ``codes/<key>_<part>``
    (format 2) or ``codes/<key>`` (format 1), and either name finds it in either file."""
    if name in h5 or not name.startswith("codes/"):
        return name
    from torch_infogan.codes import code_keys, parse_codes

    codes = parse_codes(str(h5.attrs.get("codes", "")))
    for key, code in zip(code_keys(codes), codes):
        first = f"codes/{key}_{code.posterior_parts[0]}"
        for a, b in ((f"codes/{key}", first), (first, f"codes/{key}")):
            if name == a and b in h5:
                return b
    return name


def validate_features_file(path: str | Path) -> None:
    """Raise ``InfoGANError`` unless ``path`` is a features file of a supported format version."""
    import h5py

    path = Path(path)
    if not path.is_file():
        raise InfoGANError(f"features file not found: {path}")
    try:
        with h5py.File(path, "r") as h5:
            fmt, version = h5.attrs.get("format"), h5.attrs.get("format_version")
            if not isinstance(fmt, str) or fmt != FORMAT:
                raise InfoGANError(f"{path} is not a torch-infogan features file (format attribute {fmt!r})")
            if not isinstance(version, str) or version not in READABLE_VERSIONS:
                raise InfoGANError(f"{path}: features format_version {version!r} is not supported")
            if not isinstance(h5.get("features"), h5py.Dataset) or h5["features"].ndim != 2:
                raise InfoGANError(f"{path}: no 2-D 'features' dataset")
            n = h5["features"].shape[0]
            for name in ("labels", "index", "labelled"):
                if name in h5 and (not isinstance(h5[name], h5py.Dataset) or h5[name].ndim != 1
                                   or h5[name].shape[0] != n):
                    raise InfoGANError(f"{path}: '{name}' is not a 1-D dataset of {n} rows like features")
            if "factors" in h5 and (not isinstance(h5["factors"], h5py.Dataset) or h5["factors"].ndim != 2
                                    or h5["factors"].shape[0] != n):
                raise InfoGANError(f"{path}: 'factors' is not a 2-D dataset of {n} rows like features")
    except OSError as exc:
        raise InfoGANError(f"{path} is not a readable HDF5 file: {exc}") from exc


class FeatureDataset(torch.utils.data.Dataset):
    """A torch Dataset over a features file: ``(features, label)`` pairs (label -1 where there are none).

    The file is opened lazily in each process that reads it, so DataLoader workers work.
    ``key`` picks another dataset than ``features``, e.g. ``codes/cat0``.
    """

    def __init__(self, path: str | Path, key: str = "features"):
        import h5py

        validate_features_file(path)
        self.path = str(path)
        self.key = key
        with h5py.File(self.path, "r") as h5:
            key = self.key = stored_name(h5, key)
            if key not in h5:
                raise InfoGANError(f"{path} has no dataset {key!r}")
            self._len = int(h5[key].shape[0])
            self.attrs = dict(h5.attrs)
            self.has_labels = "labels" in h5
        self._file = None
        self._pid = None

    def __len__(self) -> int:
        return self._len

    def _h5(self):
        import h5py

        if self._file is None or self._pid != os.getpid():
            self._file = h5py.File(self.path, "r")
            self._pid = os.getpid()
        return self._file

    def __getitem__(self, i: int):
        h5 = self._h5()
        features = torch.from_numpy(np.asarray(h5[self.key][i], dtype=np.float32))
        label = int(h5["labels"][i]) if self.has_labels else -1
        return features, label

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_file"] = None  # never pickle an open handle into a worker
        state["_pid"] = None
        return state

    def arrays(self) -> tuple[np.ndarray, np.ndarray | None]:
        """The whole dataset and labels as numpy arrays (for small files)."""
        h5 = self._h5()
        return np.asarray(h5[self.key][:], dtype=np.float32), (np.asarray(h5["labels"][:]) if self.has_labels else None)


def read_codes_and_factors(path: str | Path) -> tuple[np.ndarray, list[str], np.ndarray, list[str]]:
    """A features file's code representation and factor labels, for disentanglement metrics: ``codes``
    [N, D] (each code's first posterior part side by side: a continuous code's means, a categorical code's
    probabilities), their column names, ``factors`` [N, F] and the factor names. The file must have been
    written from a dataset with factor labels (``--data shapes``, ``dsprites:PATH``)."""
    import h5py

    from torch_infogan.codes import code_keys, parse_codes
    from torch_infogan.evaluation import code_columns

    validate_features_file(path)
    with h5py.File(path, "r") as h5:
        if "factors" not in h5:
            raise InfoGANError(f"{path} holds no factor labels; export it from a dataset that has them "
                               "(--data shapes or dsprites:PATH)")
        codes = parse_codes(str(h5.attrs["codes"]))
        keys = code_keys(codes)
        columns = {}
        for key in keys:
            name = stored_name(h5, f"codes/{key}")
            if name not in h5:
                raise InfoGANError(f"{path} has no dataset codes/{key}")
            columns[key] = np.asarray(h5[name][:], dtype=np.float64)
        factors = np.asarray(h5["factors"][:], dtype=np.int64)
        factor_names = [str(n) for n in h5["factors"].attrs.get("names", [f"factor{i}" for i in range(factors.shape[1])])]
    codes, names = code_columns(columns)
    return codes, names, factors, factor_names
