"""Fuzzing the readers: every input either loads or raises InfoGANError with a message."""

import gzip
import json
import struct

import h5py
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file, save_file

from torch_infogan import InfoGANError, parse_codes
from torch_infogan.checkpoint import load_checkpoint
from torch_infogan.data.idx import parse_idx, read_idx
from torch_infogan.exporters import FeatureDataset

# derandomize: the same examples on every run, so a test run is reproducible (CI included).
FUZZ = settings(max_examples=150, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture])
FUZZ_CHECKPOINT = settings(max_examples=40, deadline=None, derandomize=True,
                           suppress_health_check=[HealthCheck.function_scoped_fixture])


def _loads_or_says_why(call):
    try:
        call()
    except InfoGANError as exc:
        assert str(exc).strip()


spec_chars = st.text(alphabet="catunifgausbern:,=.-0123456789wegihtlowhstdlearn_ xyz", max_size=40)


@FUZZ
@given(spec_chars)
def test_code_spec_parser(spec):
    _loads_or_says_why(lambda: parse_codes(spec))


@FUZZ
@given(st.lists(st.sampled_from(["cat", "unif", "gauss", "bern"]), min_size=1, max_size=4),
       st.lists(st.integers(-3, 30), min_size=4, max_size=4), st.lists(st.floats(allow_nan=True), min_size=4, max_size=4))
def test_code_spec_parser_structured(names, sizes, weights):
    spec = ",".join(f"{n}:{s}:weight={w}" for n, s, w in zip(names, sizes, weights))
    _loads_or_says_why(lambda: parse_codes(spec))


@FUZZ
@given(st.binary(max_size=2048))
def test_idx_reader_random_bytes(raw):
    _loads_or_says_why(lambda: parse_idx(raw))


@FUZZ
@given(st.sampled_from([0x08, 0x09, 0x0B, 0x0C, 0x0D, 0x0E, 0x07]), st.lists(st.integers(0, 2**32 - 1), min_size=0, max_size=5),
       st.binary(max_size=512))
def test_idx_reader_plausible_headers(code, dims, body):
    raw = bytes([0, 0, code, len(dims)]) + b"".join(struct.pack(">I", d) for d in dims) + body
    _loads_or_says_why(lambda: parse_idx(raw))


@FUZZ
@given(st.binary(max_size=512))
def test_idx_reader_gzip_files(tmp_path, raw):
    path = tmp_path / "x-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(raw) if raw[:1] != b"\x00" else b"\x1f\x8b" + raw)
    _loads_or_says_why(lambda: read_idx(path))


def test_idx_reader_accepts_a_valid_file():
    raw = bytes([0, 0, 8, 3]) + struct.pack(">III", 2, 3, 4) + bytes(range(24))
    assert parse_idx(raw).shape == (2, 3, 4)


@pytest.fixture(scope="module")
def checkpoint_bytes(tiny_checkpoint):
    return tiny_checkpoint.read_bytes()


@FUZZ
@given(st.binary(max_size=4096))
def test_checkpoint_loader_random_bytes(tmp_path, raw):
    path = tmp_path / "random.safetensors"
    path.write_bytes(raw)
    _loads_or_says_why(lambda: load_checkpoint(path))


@FUZZ_CHECKPOINT
@given(st.data())
def test_checkpoint_loader_truncated_and_flipped(tmp_path, checkpoint_bytes, data):
    raw = bytearray(checkpoint_bytes)
    if data.draw(st.booleans()):
        raw = raw[: data.draw(st.integers(0, len(raw) - 1))]
    else:
        header_len = struct.unpack("<Q", bytes(raw[:8]))[0]
        for _ in range(data.draw(st.integers(1, 8))):
            at = data.draw(st.integers(0, min(len(raw) - 1, 8 + header_len)))  # the header and its length
            raw[at] = data.draw(st.integers(0, 255))
    path = tmp_path / "damaged.safetensors"
    path.write_bytes(bytes(raw))
    _loads_or_says_why(lambda: load_checkpoint(path))


def _checkpoint_parts(path):
    """A checkpoint's metadata and tensors, to alter and write back."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        metadata = dict(handle.metadata())
    return metadata, load_file(str(path))


json_values = st.recursive(st.none() | st.booleans() | st.integers(-10**12, 10**12) | st.floats() | st.text(max_size=8),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
                           max_leaves=8)


@FUZZ_CHECKPOINT
@given(st.data())
def test_checkpoint_loader_altered_metadata(tmp_path, tiny_checkpoint, data):
    metadata, tensors = _checkpoint_parts(tiny_checkpoint)
    config = json.loads(metadata["config"])
    section = data.draw(st.sampled_from(["top", "info", "model"]))
    target = config if section == "top" else config[section]
    key = data.draw(st.sampled_from(sorted(target) + ["extra"]))
    target[key] = data.draw(json_values)
    metadata["config"] = json.dumps(config)
    if data.draw(st.booleans()):
        drop = data.draw(st.sampled_from(sorted(metadata)))
        metadata.pop(drop)
    path = tmp_path / "altered.safetensors"
    save_file(tensors, str(path), metadata=metadata)
    _loads_or_says_why(lambda: load_checkpoint(path))


def test_checkpoint_with_a_wrong_tensor_shape_is_refused(tmp_path, tiny_checkpoint):
    metadata, tensors = _checkpoint_parts(tiny_checkpoint)
    tensors["generator.fc.0.weight"] = tensors["generator.fc.0.weight"][:, :5].contiguous()
    path = tmp_path / "shape.safetensors"
    save_file(tensors, str(path), metadata=metadata)
    with pytest.raises(InfoGANError, match="generator.fc.0.weight"):
        load_checkpoint(path)


@FUZZ
@given(st.binary(max_size=4096))
def test_hdf5_reader_random_bytes(tmp_path, raw):
    path = tmp_path / "random.h5"
    path.write_bytes(raw)
    _loads_or_says_why(lambda: FeatureDataset(path))


@FUZZ
@given(st.dictionaries(st.sampled_from(["format", "format_version", "codes"]),
                       # no surrogate code points: HDF5 stores UTF-8, which cannot hold them
                       st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=30) | st.integers(-2**62, 2**62) | st.just("torch-infogan.features") | st.just("1"),
                       max_size=3),
       st.sampled_from(["features", "labels", "index", "other"]),
       st.tuples(st.integers(0, 5), st.integers(0, 3)))
def test_hdf5_reader_altered_files(tmp_path, attrs, name, shape):
    path = tmp_path / "altered.h5"
    with h5py.File(path, "w") as h5:
        h5.attrs.update(attrs)
        h5.create_dataset(name, data=np.zeros(shape, dtype=np.float32))
        if name != "features":
            h5.create_dataset("features", data=np.zeros((shape[0], 2), dtype=np.float32))
    _loads_or_says_why(lambda: FeatureDataset(path))
