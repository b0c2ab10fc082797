"""Reader for MNIST's IDX files (gzip or plain), validating header and size before use."""

from __future__ import annotations

import gzip
import math
import zlib
from pathlib import Path

import numpy as np

from torch_infogan.errors import InfoGANError

_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
           0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}
_MAX_BYTES = 1 << 34


def read_idx(path: str | Path) -> np.ndarray:
    """Read one IDX file into a numpy array; raises ``InfoGANError`` for anything malformed."""
    path = Path(path)
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except FileNotFoundError as exc:
        raise InfoGANError(f"IDX file not found: {path}") from exc
    except (OSError, EOFError, zlib.error) as exc:
        raise InfoGANError(f"cannot read IDX file {path}: {exc}") from exc
    return parse_idx(raw, str(path))


def parse_idx(raw: bytes, name: str = "<bytes>") -> np.ndarray:
    """Parse the bytes of an (uncompressed) IDX file."""
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise InfoGANError(f"{name} is not an IDX file (bad magic number)")
    code, ndim = raw[2], raw[3]
    if code not in _DTYPES:
        raise InfoGANError(f"{name}: unknown IDX element type 0x{code:02x}")
    if not 1 <= ndim <= 4:
        raise InfoGANError(f"{name}: IDX files here have 1 to 4 dimensions, header says {ndim}")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise InfoGANError(f"{name}: truncated IDX header")
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_DTYPES[code])
    count = math.prod(shape)
    expected = count * dtype.itemsize
    if expected > _MAX_BYTES:
        raise InfoGANError(f"{name}: IDX header declares an implausible size {shape}")
    if len(raw) - header != expected:
        raise InfoGANError(f"{name}: IDX header declares shape {shape} ({expected} bytes of data) "
                           f"but the file holds {len(raw) - header} bytes")
    return np.frombuffer(raw, dtype=dtype, count=count, offset=header).reshape(shape).astype(dtype.newbyteorder("="))
