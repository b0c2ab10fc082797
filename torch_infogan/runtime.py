"""Where a run computes: the device, the precision, the process group under torchrun, and the worker processes
of the benchmarks that train several runs at once."""

from __future__ import annotations

import concurrent.futures
import contextlib
import ctypes
import multiprocessing
import os
import signal
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist

from torch_infogan.errors import InfoGANError


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when available, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise InfoGANError(f"unknown device {name!r}") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InfoGANError(f"device {name!r} was asked for but no CUDA device is available")
    return device


def cpu_has_native_bf16() -> bool:
    """Whether this CPU multiplies bf16 matrices in hardware: AMX tiles (Intel) or AVX512_BF16 (Intel, AMD)."""
    init_amx = getattr(torch._C._cpu, "_init_amx", None)
    if init_amx is not None and init_amx():
        return True
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.is_file():
        return False
    for line in cpuinfo.read_text().splitlines():
        if line.startswith("flags"):
            return "avx512_bf16" in line.split()
    return False


def resolve_precision(name: str, device: torch.device) -> str:
    """``auto`` picks bf16 autocast where the hardware computes bf16 natively (CUDA GPUs with bf16 support,
    CPUs with AMX or AVX512_BF16), fp32 elsewhere; ``fp32`` and ``bf16`` are taken as given."""
    if name not in ("auto", "fp32", "bf16"):
        raise InfoGANError(f"precision must be auto, fp32 or bf16, got {name!r}")
    if name != "auto":
        return name
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if device.type == "cpu" and cpu_has_native_bf16() else "fp32"


def launched_by_torchrun() -> bool:
    """Whether this process is one of several that torchrun started."""
    return "RANK" in os.environ and int(os.environ.get("WORLD_SIZE", "1")) > 1


@dataclass
class Runtime:
    """The device and precision of a run, and this process's place in the process group (if any)."""

    device: torch.device
    precision: str
    rank: int = 0
    world: int = 1
    owns_group: bool = False

    @classmethod
    def resolve(cls, device: str = "auto", precision: str = "auto") -> "Runtime":
        """The runtime of this process: joins a process group the caller initialized, never starts one."""
        rank, world = 0, 1
        if dist.is_available() and dist.is_initialized():
            rank, world = dist.get_rank(), dist.get_world_size()
        resolved = resolve_device(device)
        if resolved.type == "cuda" and world > 1:
            if resolved.index is None:
                resolved = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
            torch.cuda.set_device(resolved)
        return cls(resolved, resolve_precision(precision, resolved), rank, world)

    @classmethod
    def setup(cls, device: str = "auto", precision: str = "auto") -> "Runtime":
        """Like ``resolve``, but under torchrun first initializes the process group (NCCL on CUDA, else
        gloo) if nobody has; ``close()`` then destroys it (timm's ``init_distributed_device``)."""
        owns = False
        if launched_by_torchrun() and not dist.is_initialized():
            wants_cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
            dist.init_process_group("nccl" if wants_cuda else "gloo")
            owns = True
        try:
            runtime = cls.resolve(device, precision)
        except BaseException:
            if owns:
                dist.destroy_process_group()
            raise
        runtime.owns_group = owns
        return runtime

    @property
    def main(self) -> bool:
        """Whether this is the process that writes files (rank 0)."""
        return self.rank == 0

    def autocast(self):
        """bf16 autocast on this device when the precision is bf16, else a no-op context."""
        if self.precision == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def close(self) -> None:
        """Destroy the process group if ``setup`` created it."""
        if self.owns_group and dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
        self.owns_group = False


def _end_with_parent(parent: int) -> None:
    """In a worker process: ask Linux to send it SIGTERM when the process that started it ends (prctl's
    PR_SET_PDEATHSIG), so that a benchmark stopped by ``kill`` or ``timeout`` leaves no training behind."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG = 1
        if os.getppid() != parent:  # the parent ended before the request was made
            os._exit(1)


def process_pool(jobs: int) -> concurrent.futures.ProcessPoolExecutor:
    """``jobs`` fresh worker processes (spawned, so each sets its own thread count) that end with the process
    that started them, for the benchmarks that train several runs side by side."""
    return concurrent.futures.ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"),
                                                  initializer=_end_with_parent, initargs=(os.getpid(),))
