"""The latent explorer: a static web page that runs the generator in the browser with onnxruntime-web."""

from __future__ import annotations

import contextlib
import errno
import functools
import json
import os
import re
import shutil
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from importlib.resources import as_file, files
from pathlib import Path
from typing import Iterator

import torch

from torch_infogan.checkpoint import Checkpoint, load_checkpoint
from torch_infogan.errors import InfoGANError
from torch_infogan.evaluation import estimate_bound_pair
from torch_infogan.exporters.onnx import export_onnx, sha256

FORMAT = "torch-infogan.web"
FORMAT_VERSION = "1"
#: The npm package whose WebAssembly backend runs the page, and the version the page is tested with
#: (package.json at the repository root pins the same).
RUNTIME_PACKAGE = "onnxruntime-web"
RUNTIME_VERSION = "1.30.0"
#: What the wasm backend loads from ``node_modules/onnxruntime-web/dist``: the API, the module that
#: instantiates the WebAssembly binary, and the binary.
RUNTIME_FILES = ("ort.wasm.min.mjs", "ort-wasm-simd-threaded.mjs", "ort-wasm-simd-threaded.wasm")
#: An environment variable naming a ``dist`` folder of onnxruntime-web, used when ``runtime_dir`` is not given.
RUNTIME_ENV = "INFOGAN_ORT_WEB_DIR"
#: The repository root when this module runs from a checkout (an editable install); its package.json pins the runtime.
_CHECKOUT = Path(__file__).resolve().parents[1]
PAGE_FILES = ("index.html", "explorer.mjs", "style.css")
MODEL_FILE = "generator.onnx"
METADATA_FILE = "model.json"


@dataclass
class WebReport:
    """What ``export_web`` wrote: the folder, its files and their weight, and where the runtime came from."""

    path: Path
    files: list[str]
    model_bytes: int
    runtime_bytes: int
    page_bytes: int
    runtime_dir: Path
    runtime_version: str
    max_abs_diff: float
    bounds: dict[str, float] = field(default_factory=dict)
    bounds_fitted: dict[str, float] = field(default_factory=dict)

    @property
    def total_bytes(self) -> int:
        """Everything a browser downloads to show the page."""
        return self.model_bytes + self.runtime_bytes + self.page_bytes


def find_runtime(runtime_dir: str | Path | None = None) -> Path:
    """The ``dist`` folder of onnxruntime-web to copy the wasm runtime from.

    Looked for in this order: ``runtime_dir`` (a ``dist`` folder or the package folder above it), the
    ``INFOGAN_ORT_WEB_DIR`` environment variable, ``node_modules/onnxruntime-web/dist`` in the current folder,
    then in the torch-infogan checkout this module is installed from (after ``npm ci`` there). A folder that
    is named explicitly but lacks the runtime's files is an error, not a reason to look elsewhere.
    """
    named = runtime_dir if runtime_dir is not None else os.environ.get(RUNTIME_ENV) or None
    if named is not None:
        source = "--runtime" if runtime_dir is not None else RUNTIME_ENV
        folder = Path(named).expanduser()
        for candidate in (folder, folder / "dist"):
            if all((candidate / name).is_file() for name in RUNTIME_FILES):
                return candidate.resolve()
        missing = next(name for name in RUNTIME_FILES if not (folder / name).is_file())
        raise InfoGANError(f"{source} {folder} is not onnxruntime-web's dist folder (no {missing}); it is "
                           f"node_modules/{RUNTIME_PACKAGE}/dist after `npm install {RUNTIME_PACKAGE}@{RUNTIME_VERSION}`")
    for root in (Path.cwd(), _CHECKOUT):
        candidate = root / "node_modules" / RUNTIME_PACKAGE / "dist"
        if all((candidate / name).is_file() for name in RUNTIME_FILES):
            return candidate.resolve()
    raise InfoGANError(f"onnxruntime-web's runtime not found: run `npm ci` in the torch-infogan checkout, or "
                       f"`npm install {RUNTIME_PACKAGE}@{RUNTIME_VERSION}` here, or pass --runtime DIR "
                       f"(or set {RUNTIME_ENV}) to a node_modules/{RUNTIME_PACKAGE}/dist folder")


def runtime_version(dist: str | Path) -> str:
    """The onnxruntime-web version of a ``dist`` folder: from its package.json, else its script's banner."""
    dist = Path(dist)
    with contextlib.suppress(OSError, ValueError, AttributeError):
        package = json.loads((dist.parent / "package.json").read_text())
        if package.get("name") == RUNTIME_PACKAGE:
            return str(package["version"])
    with contextlib.suppress(OSError):
        banner = (dist / RUNTIME_FILES[0]).read_text(errors="replace")[:400]
        match = re.search(r"ONNX Runtime Web v(\S+)", banner)
        if match:
            return match.group(1)
    return "unknown"


def _label(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def _identity_encoded(code, probe: torch.Tensor) -> bool:
    encoded = code.encode(probe)
    return encoded.shape == probe.shape and torch.equal(encoded, probe.float())


def _code_entry(key: str, code, offset: int, columns: int) -> dict:
    """How the page steers one code: a choice among its classes, a slider per dimension, or a few values per
    dimension; what it writes at ``offset`` of the latent for each setting."""
    spec = code.spec()
    probe = code.sample(4, generator=torch.Generator().manual_seed(0))
    entry: dict = {"key": key, "spec": spec, "offset": offset, "width": code.input_dim}
    if code.has_enumerate_support and probe.dim() == 1:
        support = code.enumerate_support()
        encodings = code.encode(support).float()
        entry.update(kind="choice", labels=[_label(float(v)) for v in support], default=0,
                     encodings=encodings.tolist(), description=f"{len(support)} categories ({spec})")
        if getattr(code, "learned", False):  # the page shows each category's share and starts at the largest
            prior = code.probs
            entry.update(prior=prior.tolist(), default=int(prior.argmax()),
                         description=f"{len(support)} categories, learned prior ({spec})")
        return entry
    if probe.dim() != 2 or not _identity_encoded(code, probe):
        raise InfoGANError(f"code {key} ({spec}) cannot be steered on the page: the generator's input for it is not "
                           "its value (only categorical codes may encode their value)")
    dims = probe.shape[1]
    if code.has_enumerate_support:
        support = [float(v) for v in code.enumerate_support()]
        plural = "s" if dims > 1 else ""
        entry.update(kind="values", values=support, default=[support[0]] * dims,
                     description=f"{dims} dimension{plural} of {', '.join(map(_label, support))} ({spec})")
        return entry
    sweep = code.traversal(columns).float()
    low, high = float(sweep.min()), float(sweep.max())
    prior = [float(code.low), float(code.high)] if hasattr(code, "low") and hasattr(code, "high") else None
    if prior is not None:
        low, high = min(low, prior[0]), max(high, prior[1])
    where = f"prior on [{prior[0]:g}, {prior[1]:g}], " if prior else ""
    entry.update(kind="slider", min=low, max=high, step=(high - low) / 100, prior=prior,
                 default=code.held_value().reshape(-1).float().tolist(), traversal=sweep.tolist(),
                 description=f"continuous, {where}slider {low:g} to {high:g} ({spec})")
    return entry


def page_metadata(checkpoint: Checkpoint, bounds_samples: int = 2000, seed: int = 0, columns: int = 10) -> dict:
    """What the page builds itself from (``model.json``): the latent's layout, one control per code, the
    image shape and value range, each code's MI bound (as trained and with Q's variance fitted, from
    ``estimate_bound_pair`` on ``bounds_samples`` samples; none when 0) and where the model came from."""
    info, config = checkpoint.info, checkpoint.config
    if bounds_samples > 0:
        bounds, fitted = estimate_bound_pair(checkpoint.generator, info, n=bounds_samples, seed=seed)
    else:
        bounds, fitted = {}, {}
    entropies = info.entropies()
    codes, offset = [], info.noise_dim
    for key, code in zip(info.keys, info.codes):
        entry = _code_entry(key, code, offset, columns)
        entry.update(entropy=entropies[key], bound=bounds.get(key), bound_fitted=fitted.get(key))
        codes.append(entry)
        offset += code.input_dim
    tanh = config.get("model", {}).get("output") == "tanh"
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model": {"file": MODEL_FILE, "input": "latent", "output": "images", "latent_dim": info.latent_dim,
                  "image_shape": list(config["image_shape"]),
                  "value_range": [-1.0, 1.0] if tanh else list(config.get("value_range", [0.0, 1.0]))},
        "noise": {"dim": info.noise_dim, "distribution": info.noise, "offset": 0},
        "codes": codes,
        "grid": {"columns": columns},
        "bounds": {"samples": bounds_samples, "seed": seed, "unit": "nats"},
        "checkpoint": {"file": checkpoint.path.name if checkpoint.path else "checkpoint",
                       "sha256": sha256(checkpoint.path) if checkpoint.path else "", "step": checkpoint.step,
                       "dataset": config.get("dataset", "unknown"), "codes": info.spec},
        "runtime": {"package": RUNTIME_PACKAGE, "version": RUNTIME_VERSION},
    }


def _is_export(folder: Path) -> bool:
    with contextlib.suppress(OSError, ValueError, AttributeError):
        return json.loads((folder / METADATA_FILE).read_text()).get("format") == FORMAT
    return False


@contextlib.contextmanager
def _atomic_folder(target: Path) -> Iterator[Path]:
    """Yield an empty temporary folder beside ``target``; on success it takes ``target``'s place (a previous
    export there is replaced), on error it is removed, so no half-written export is ever left."""
    if not target.parent.is_dir():
        raise InfoGANError(f"output folder does not exist: {target.parent}")
    if target.exists() and not target.is_dir():
        raise InfoGANError(f"output path is a file, not a folder: {target}")
    if target.is_dir() and any(target.iterdir()) and not _is_export(target):
        raise InfoGANError(f"{target} holds other files; export into a new or empty folder "
                           "(an earlier export there is replaced)")
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    old = None
    try:
        yield tmp
        for path in tmp.iterdir():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)
        if target.exists():
            old = tmp.with_suffix(".old")
            os.replace(target, old)
        try:
            os.replace(tmp, target)
        except BaseException:
            if old is not None:
                os.replace(old, target)
                old = None
            raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def export_web(checkpoint: str | Path | Checkpoint, out: str | Path, runtime_dir: str | Path | None = None,
               bounds_samples: int = 2000, seed: int = 0, tolerance: float = 1e-4) -> WebReport:
    """Write the latent explorer for a checkpoint into the folder ``out``: a static site any web server can host.

    The folder holds ``index.html``, ``explorer.mjs`` and ``style.css`` (the page), ``model.json`` (see
    ``page_metadata``), the generator as ``generator.onnx`` (checked against torch within ``tolerance``, as
    ``export_onnx`` does) and onnxruntime-web's WebAssembly runtime (``RUNTIME_FILES``, copied from
    ``find_runtime(runtime_dir)``). The page loads nothing from outside its folder. The folder appears whole
    or not at all; an earlier export at ``out`` is replaced, any other non-empty folder is refused.
    """
    out = Path(out)
    if bounds_samples < 0:
        raise InfoGANError(f"--bounds-samples must be >= 0, got {bounds_samples}")
    dist = find_runtime(runtime_dir)
    ckpt = checkpoint if isinstance(checkpoint, Checkpoint) else load_checkpoint(checkpoint)
    with _atomic_folder(out) as tmp:
        onnx_report = export_onnx(ckpt, tmp / MODEL_FILE, part="generator", tolerance=tolerance)
        metadata = page_metadata(ckpt, bounds_samples=bounds_samples, seed=seed)
        metadata["runtime"]["version"] = runtime_version(dist)
        (tmp / METADATA_FILE).write_text(json.dumps(metadata, indent=1) + "\n")
        with as_file(files("torch_infogan.exporters") / "web_page") as assets:
            for name in PAGE_FILES:
                shutil.copyfile(assets / name, tmp / name)
        for name in RUNTIME_FILES:
            shutil.copyfile(dist / name, tmp / name)
        sizes = {p.name: p.stat().st_size for p in tmp.iterdir()}
    return WebReport(
        path=out, files=sorted(sizes), model_bytes=sizes[MODEL_FILE],
        runtime_bytes=sum(sizes[name] for name in RUNTIME_FILES),
        page_bytes=sum(sizes[name] for name in (*PAGE_FILES, METADATA_FILE)),
        runtime_dir=dist, runtime_version=metadata["runtime"]["version"], max_abs_diff=onnx_report.max_abs_diff,
        bounds={c["key"]: c["bound"] for c in metadata["codes"] if c["bound"] is not None},
        bounds_fitted={c["key"]: c["bound_fitted"] for c in metadata["codes"] if c["bound_fitted"] is not None})


class _PageHandler(SimpleHTTPRequestHandler):
    """Serves one folder with the MIME types the page needs (ES modules, WebAssembly), quietly, uncached."""

    extensions_map = {**SimpleHTTPRequestHandler.extensions_map, ".html": "text/html", ".css": "text/css",
                      ".js": "text/javascript", ".mjs": "text/javascript", ".wasm": "application/wasm",
                      ".json": "application/json", ".onnx": "application/octet-stream"}

    def end_headers(self) -> None:
        self.send_header("Cache-Control", "no-store")
        super().end_headers()

    def log_message(self, format: str, *args) -> None:  # noqa: A002 (the base class's name)
        pass


class _PageServer(ThreadingHTTPServer):
    allow_reuse_port = False  # a port another server listens on is an error, never shared
    daemon_threads = True

    def handle_error(self, request, client_address) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):  # a browser that leaves mid-download is no error
            super().handle_error(request, client_address)


def serve(folder: str | Path, port: int = 0, host: str = "127.0.0.1") -> ThreadingHTTPServer:
    """An HTTP server for ``folder`` bound to ``host:port`` (port 0: any free one), not yet serving: call its
    ``serve_forever()``, then ``shutdown()`` and ``server_close()``. A port in use is an ``InfoGANError``."""
    handler = functools.partial(_PageHandler, directory=str(folder))
    try:
        return _PageServer((host, port), handler)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise InfoGANError(f"port {port} on {host} is in use; pick another with --port "
                               "(or --port 0 for any free one)") from exc
        raise InfoGANError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc


@dataclass
class Explorer:
    """A running explorer: the page's address, the folder it is served from and the export's report."""

    url: str
    folder: Path
    report: WebReport
    server: ThreadingHTTPServer
    thread: threading.Thread

    def wait(self) -> None:
        """Block until the server stops (Ctrl-C raises ``KeyboardInterrupt`` here)."""
        while self.thread.is_alive():
            self.thread.join(0.5)


@contextlib.contextmanager
def explore(checkpoint: str | Path | Checkpoint, port: int = 0, host: str = "127.0.0.1",
            runtime_dir: str | Path | None = None, **export_options) -> Iterator[Explorer]:
    """Export the explorer into a temporary folder and serve it on ``host:port`` in a background thread while
    the block runs; on leaving it the server stops and the folder is removed.

    The port is taken before the export, so a port in use fails at once.
    """
    with tempfile.TemporaryDirectory(prefix="infogan-explore-") as tmp:
        folder = Path(tmp) / "site"
        server = serve(folder, port, host)
        thread = None
        try:
            report = export_web(checkpoint, folder, runtime_dir=runtime_dir, **export_options)
            thread = threading.Thread(target=server.serve_forever, name="infogan-explore", daemon=True)
            thread.start()
            bound_host, bound_port = server.server_address[:2]
            yield Explorer(f"http://{bound_host}:{bound_port}/", folder, report, server, thread)
        finally:
            if thread is not None:
                server.shutdown()
            server.server_close()
