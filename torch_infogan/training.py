"""Training: the DCGAN reference plus InfoRegularizer, attached the way a user attaches it to their GAN."""

from __future__ import annotations

import gc
import json
import math
import os
import signal
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Callable

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from torch_infogan.checkpoint import load_checkpoint, save_checkpoint
from torch_infogan.data import ImageData, load_data
from torch_infogan.errors import InfoGANError
from torch_infogan.evaluation import evaluate, format_table, normalize
from torch_infogan.models import TAP_LAYERS, build_models
from torch_infogan.pictures import plot_bounds, plot_confusion, sample_grid, traversal_grid, traversal_names
from torch_infogan.regularizer import InfoRegularizer


@dataclass
class TrainConfig:
    """Every knob of a training run; presets fill these, the CLI overrides them."""

    data: str = "mnist-10k"
    data_root: str | None = None
    download: bool = False
    limit: int | None = None
    codes: str = "cat:10,unif:2"
    noise_dim: int = 62
    noise: str = "uniform"
    batch_size: int = 128
    iterations: int = 5000
    epochs: float | None = None
    lr_g: float = 1e-3
    lr_d: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999
    lr_decay: bool = False
    instance_noise: float = 0.0
    translate: int = 0
    updates: str = "alternating"
    q_hidden: int = 128
    train_trunk: bool = True
    widths: list[int] | None = None
    fc_dim: int = 1024
    negative_slope: float = 0.1
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"
    compile: bool = False
    log_every: int = 100
    checkpoint_every: int = 500
    on_nonfinite: str = "stop"
    sync_bn: bool = False
    preset: str = "mnist"

    def update(self, **overrides) -> "TrainConfig":
        names = {f.name for f in fields(self)}
        for key, value in overrides.items():
            if key not in names:
                raise InfoGANError(f"unknown training option {key!r}")
            if value is not None:
                setattr(self, key, value)
        return self


# The paper's MNIST recipe (openai/InfoGAN launchers/run_mnist_exp.py), unchanged.
_PAPER_MNIST = dict(data="mnist-10k", codes="cat:10,unif:2", noise_dim=62, batch_size=128, iterations=5000,
                    lr_g=1e-3, lr_d=2e-4, beta1=0.5, precision="fp32")

PRESETS: dict[str, dict] = {
    "paper-mnist": dict(_PAPER_MNIST),
    # The default: the paper's networks, codes and optimiser, plus random shifts of up to 2 pixels of the
    # images D and Q see (mnist-10k is a fifth of the paper's data; docs/training.md); 3,000 iterations in
    # bf16 where the hardware has it natively, which fits the README's 10 minutes on 2 CPU cores.
    "mnist": dict(_PAPER_MNIST, iterations=3000, precision="auto", translate=2),
    "svhn": dict(data="svhn", codes="cat:10,cat:10,cat:10,cat:10,unif:4", noise_dim=124, batch_size=128,
                 iterations=20000, lr_g=1e-3, lr_d=2e-4),
    "celeba": dict(data="celeba", codes=",".join(["cat:10"] * 10), noise_dim=128, batch_size=128,
                   iterations=20000, lr_g=1e-3, lr_d=2e-4),
    "chairs": dict(data="folder:chairs", codes="cat:20,cat:20,cat:20,unif:1", noise_dim=128, batch_size=128,
                   iterations=20000, lr_g=1e-3, lr_d=2e-4),
}


def preset_config(name: str = "mnist", **overrides) -> TrainConfig:
    """The named preset with ``overrides`` applied (``None`` values are ignored)."""
    if name not in PRESETS:
        raise InfoGANError(f"unknown preset {name!r}; presets: {', '.join(PRESETS)}")
    return TrainConfig(preset=name, **PRESETS[name]).update(**overrides)


def resume_config(out: str | Path, **overrides) -> TrainConfig:
    """The configuration stored in ``out/checkpoint.safetensors``, with ``overrides`` applied."""
    from torch_infogan.checkpoint import read_metadata

    path = Path(out) / "checkpoint.safetensors"
    try:
        stored = json.loads(read_metadata(path)["config"])["train"]
        config = TrainConfig(**stored)
    except (KeyError, TypeError, json.JSONDecodeError) as exc:
        raise InfoGANError(f"{path} holds no training configuration to resume from ({exc!r})") from None
    return config.update(**overrides)


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when available, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise InfoGANError(f"unknown device {name!r}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InfoGANError("--device cuda was asked for but no CUDA device is available")
    return device


def _cpu_has_amx() -> bool:
    """Whether this CPU has AMX tiles (native bf16 matrix multiplies) and the OS lets us use them."""
    init_amx = getattr(torch._C._cpu, "_init_amx", None)
    return bool(init_amx()) if init_amx is not None else False


def resolve_precision(name: str, device: torch.device) -> str:
    """``auto`` picks bf16 autocast where the hardware computes bf16 natively (CUDA GPUs with bf16 support,
    CPUs with AMX), fp32 elsewhere; ``fp32`` and ``bf16`` are taken as given."""
    if name not in ("auto", "fp32", "bf16"):
        raise InfoGANError(f"precision must be auto, fp32 or bf16, got {name!r}")
    if name != "auto":
        return name
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if device.type == "cpu" and _cpu_has_amx() else "fp32"


class TrainingStopped(InfoGANError):
    """Training ended early: a signal (``signum`` set) or non-finite values (``signum`` None)."""

    def __init__(self, message: str, step: int, signum: int | None = None):
        super().__init__(message)
        self.step = step
        self.signum = signum


def random_translate(images: torch.Tensor, max_shift: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Shift each image by its own random whole-pixel offset in [-max_shift, max_shift] on both axes.

    Zero fill at the borders; differentiable in ``images`` (the generator learns through it). This is the
    translation of DiffAugment (Zhao et al., 2020): D and Q see real and generated images shifted alike.
    """
    if max_shift <= 0:
        return images
    b, c, h, w = images.shape
    s = max_shift
    padded = F.pad(images, (s, s, s, s))
    dy = torch.randint(0, 2 * s + 1, (b, 1, 1, 1), generator=generator, device=images.device)
    dx = torch.randint(0, 2 * s + 1, (b, 1, 1, 1), generator=generator, device=images.device)
    rows = (torch.arange(h, device=images.device).view(1, 1, h, 1) + dy).expand(b, c, h, w + 2 * s)
    cols = (torch.arange(w, device=images.device).view(1, 1, 1, w) + dx).expand(b, c, h, w)
    return padded.gather(2, rows).gather(3, cols)


class _PairForward(nn.Module):
    """Runs D on the real and the generated batch in one call, so DDP sees one forward per backward."""

    def __init__(self, discriminator: nn.Module):
        super().__init__()
        self.discriminator = discriminator

    def forward(self, real: torch.Tensor, fake: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.discriminator(real), self.discriminator(fake)


def _distributed() -> tuple[int, int]:
    """``(rank, world_size)``: initialises the process group when launched by torchrun."""
    if "RANK" not in os.environ or int(os.environ.get("WORLD_SIZE", "1")) < 2:
        return 0, 1
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend)
    return dist.get_rank(), dist.get_world_size()


class Trainer:
    """Holds G, D (with Q), the regularizer, optimizers and the data, and runs training steps.

    Under torchrun (``WORLD_SIZE`` > 1) G and D+Q are wrapped in DistributedDataParallel: each rank
    takes its own slice of every data permutation and samples its own codes.
    """

    def __init__(self, config: TrainConfig, data: ImageData | None = None):
        self.config = config
        self.rank, self.world = _distributed()
        self.device = resolve_device(config.device)
        if self.device.type == "cuda" and self.world > 1:
            self.device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
            torch.cuda.set_device(self.device)
        self.precision = resolve_precision(config.precision, self.device)
        if config.updates not in ("simultaneous", "alternating"):
            raise InfoGANError(f"updates must be simultaneous or alternating, got {config.updates!r}")
        if config.on_nonfinite not in ("stop", "skip"):
            raise InfoGANError(f"on_nonfinite must be stop or skip, got {config.on_nonfinite!r}")
        if config.batch_size < 2:
            raise InfoGANError("batch size must be >= 2 (batch norm needs two samples)")
        for name in ("iterations", "log_every", "checkpoint_every"):
            if getattr(config, name) < 1:
                raise InfoGANError(f"{name.replace('_', '-')} must be >= 1")
        if config.translate < 0:
            raise InfoGANError(f"translate must be >= 0 pixels, got {config.translate}")
        torch.manual_seed(config.seed)
        data = data if data is not None else load_data(config.data, config.data_root, "train", config.download)
        self.full_data = data  # evaluation uses every image, as `infogan evaluate --data ...` does
        if config.limit:
            data = data.subset(config.limit)
        if len(data) < config.batch_size * self.world:
            raise InfoGANError(f"dataset {data.name!r} has {len(data)} images, fewer than one batch "
                               f"({config.batch_size} x {self.world} processes)")
        self.data = data
        self.images = data.images.to(self.device)  # uint8, resident on the device
        c, h, w = data.image_shape
        self.info = InfoRegularizer(config.codes, noise_dim=config.noise_dim, noise=config.noise,
                                    q_hidden=config.q_hidden, train_trunk=config.train_trunk)
        self.model_config = {"builder": "dcgan", "latent_dim": self.info.latent_dim, "image_shape": [c, h, w],
                             "widths": config.widths, "fc_dim": config.fc_dim,
                             "negative_slope": config.negative_slope, "output": "sigmoid"}
        self.generator, self.discriminator = build_models(self.model_config)
        self.generator.to(self.device)
        self.discriminator.to(self.device)
        example = normalize(self.images[:2], "unit")
        self.info.attach(self.discriminator, TAP_LAYERS["dcgan"], example=example)  # the user's two lines
        if config.sync_bn and self.device.type != "cuda":
            raise InfoGANError("--sync-bn needs CUDA devices (SyncBatchNorm runs only on GPUs); leave it off on CPUs")
        if config.sync_bn and self.world > 1:
            self.generator = nn.SyncBatchNorm.convert_sync_batchnorm(self.generator)
            self.discriminator = nn.SyncBatchNorm.convert_sync_batchnorm(self.discriminator)
        # Fused Adam (one kernel over all parameters) runs on CUDA and on the CPU; on the CPU it is about
        # 4x faster than foreach for the ~13M parameters of the MNIST networks (benchmarks.md).
        fused = {"fused": True} if self.device.type in ("cuda", "cpu") else {"foreach": True}
        betas = (config.beta1, config.beta2)
        self.opt_d = torch.optim.Adam(self.discriminator.parameters(), lr=config.lr_d, betas=betas, **fused)
        self.opt_g = torch.optim.Adam(self.generator.parameters(), lr=config.lr_g, betas=betas, **fused)
        self.iterations = self._iterations()
        self.step_index = 0
        self.skipped = 0
        self.data_gen = torch.Generator(device=self.device).manual_seed(config.seed)
        self.code_gen = torch.Generator(device=self.device).manual_seed(config.seed * 1000 + 1 + self.rank)
        self._order = torch.empty(0, dtype=torch.long, device=self.device)
        self._cursor = 0
        self.g_forward, self.d_forward = self.generator, _PairForward(self.discriminator)
        if self.world > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.g_forward = nn.parallel.DistributedDataParallel(self.g_forward, device_ids=ids)
            self.d_forward = nn.parallel.DistributedDataParallel(self.d_forward, device_ids=ids)
        self._step_fn = torch.compile(self._step) if config.compile else self._step

    def _iterations(self) -> int:
        if self.config.epochs is not None:
            per_step = self.config.batch_size * self.world
            return max(1, math.ceil(self.config.epochs * len(self.data) / per_step))
        return int(self.config.iterations)

    def next_batch(self) -> torch.Tensor:
        """This rank's next real batch, float in [0, 1]; a fresh permutation each epoch, no per-sample work."""
        b = self.config.batch_size
        span = b * self.world
        if self._cursor + span > self._order.numel():
            self._order = torch.randperm(self.images.shape[0], generator=self.data_gen, device=self.device)
            self._cursor = 0
        start = self._cursor + self.rank * b
        index = self._order[start:start + b]
        self._cursor += span
        return normalize(self.images[index], "unit")

    def _lr_factor(self) -> float:
        if not self.config.lr_decay:
            return 1.0
        return 0.1 + 0.9 * max(0.0, 1.0 - self.step_index / self.iterations)

    def _step(self, real: torch.Tensor) -> torch.Tensor:
        """Gradients of one step (the optimizers step in ``step``); returns ``[loss_d, loss_g]``.

        ``simultaneous``: one D forward on the fakes serves both players, each loss reaching only its
        own parameters. ``alternating``: D steps first, then G's loss comes from a fresh forward of the
        updated D (one more D forward; the paper's code does this).
        """
        info = self.info
        autocast = torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16")
        with autocast:
            latent, codes = info.sample(real.shape[0], generator=self.code_gen)
            fake = self.g_forward(latent)
            sigma = self.config.instance_noise * max(0.0, 1.0 - self.step_index / self.iterations)
            if sigma > 0:
                real = real + sigma * torch.randn(real.shape, generator=self.code_gen, device=real.device)
                fake = fake + sigma * torch.randn(fake.shape, generator=self.code_gen, device=fake.device)
            real = random_translate(real, self.config.translate, self.code_gen)
            fake = random_translate(fake, self.config.translate, self.code_gen)
            d_real, d_fake = self.d_forward(real, fake)
            mi = info.loss(codes)
            ones, zeros = torch.ones_like(d_real), torch.zeros_like(d_real)
            gan_d = F.binary_cross_entropy_with_logits(d_real.float(), ones) \
                + F.binary_cross_entropy_with_logits(d_fake.float(), zeros)
        self.opt_d.zero_grad(set_to_none=True)
        self.opt_g.zero_grad(set_to_none=True)
        alternating = self.config.updates == "alternating"
        (gan_d + mi).backward(inputs=list(self.discriminator.parameters()), retain_graph=not alternating)
        if alternating:
            if self.config.on_nonfinite == "skip" and not bool(torch.isfinite(gan_d + mi)):
                return torch.full((2,), float("nan"), device=real.device)  # `step` skips the whole step
            self.opt_d.step()
            with autocast:
                d_fake = self.discriminator(fake)
                mi_g = info.loss(codes)
        else:
            mi_g = mi
        gan_g = F.binary_cross_entropy_with_logits(d_fake.float(), torch.ones_like(d_fake, dtype=torch.float32))
        (gan_g + mi_g).backward(inputs=list(self.generator.parameters()))
        return torch.stack([gan_d.detach() + mi.detach(), gan_g.detach() + mi_g.detach()])

    def step(self) -> torch.Tensor:
        """One training step; returns ``[loss_d, loss_g]`` on the device (no host sync unless skipping)."""
        factor = self._lr_factor()
        for opt, lr in ((self.opt_d, self.config.lr_d), (self.opt_g, self.config.lr_g)):
            for group in opt.param_groups:
                group["lr"] = lr * factor
        skip_mode = self.config.on_nonfinite == "skip"
        if skip_mode:  # batch-norm statistics move in the forward: keep a copy to undo a bad step
            buffers = [b for m in (self.generator, self.discriminator) for b in m.buffers()]
            saved = [b.clone() for b in buffers]
        losses = self._step_fn(self.next_batch())
        if skip_mode and not bool(torch.isfinite(losses).all()):
            self.opt_d.zero_grad(set_to_none=True)
            self.opt_g.zero_grad(set_to_none=True)
            for buffer, copy in zip(buffers, saved):
                buffer.copy_(copy)
            self.skipped += 1
        else:
            if self.config.updates == "simultaneous":
                self.opt_d.step()
            self.opt_g.step()
        self.step_index += 1
        return losses

    def close(self) -> None:
        """Drops the DistributedDataParallel wrappers, which hold the process group, so it can be destroyed.

        The trainer keeps working on one process afterwards (``step`` no longer synchronizes ranks).
        """
        if isinstance(self.g_forward, nn.parallel.DistributedDataParallel):
            self.g_forward, self.d_forward = self.g_forward.module, self.d_forward.module
            self._step_fn = self._step
            gc.collect()  # DDP's reducer may sit in a reference cycle; free it now, not at interpreter exit

    def parameters_finite(self) -> bool:
        """Whether every parameter and buffer of G and D (with Q) is finite (one host sync)."""
        tensors = [t for m in (self.generator, self.discriminator) for t in m.state_dict().values()
                   if t.is_floating_point()]
        return bool(torch.stack([torch.isfinite(t).all() for t in tensors]).all())

    def checkpoint_config(self) -> dict:
        c, h, w = self.data.image_shape
        return {"model": self.model_config, "image_shape": [c, h, w], "normalization": "unit",
                "value_range": [0.0, 1.0], "dataset": self.data.name, "train": asdict(self.config),
                "cursor": self._cursor, "skipped": self.skipped}

    def save(self, path: str | Path) -> Path:
        """Write a checkpoint with everything ``resume`` needs (optimizers, random streams, data order)."""
        extra = {"data_gen": self.data_gen.get_state(), "code_gen": self.code_gen.get_state(),
                 "order": self._order}
        return save_checkpoint(path, self.generator, self.discriminator, self.info, self.checkpoint_config(),
                               self.step_index, {"d": self.opt_d, "g": self.opt_g}, extra)

    def resume(self, path: str | Path) -> None:
        """Continue from a checkpoint written by ``save``: weights, optimizer state, step, random streams."""
        ckpt = load_checkpoint(path, self.device)
        if ckpt.info.spec != self.info.spec or ckpt.config["model"] != self.model_config:
            raise InfoGANError(f"{path} was trained with codes {ckpt.info.spec!r} and model {ckpt.config['model']}, "
                               f"which differ from this run's")
        self.generator.load_state_dict(ckpt.generator.state_dict())
        self.discriminator.load_state_dict(ckpt.discriminator.state_dict())
        for name, opt in (("d", self.opt_d), ("g", self.opt_g)):
            if name not in ckpt.optimizer_state:
                raise InfoGANError(f"{path} holds no optimizer state: it cannot be resumed")
            opt.load_state_dict(ckpt.optimizer_state[name])
        try:
            self.data_gen.set_state(ckpt.extra["data_gen"])
            self.code_gen.set_state(ckpt.extra["code_gen"])
            self._order = ckpt.extra["order"].to(self.device)
        except (KeyError, RuntimeError) as exc:
            raise InfoGANError(f"{path} holds no usable random-stream state ({exc})") from None
        self._cursor = int(ckpt.config.get("cursor", 0))
        self.skipped = int(ckpt.config.get("skipped", 0))
        self.step_index = ckpt.step
        self.generator.train()
        self.discriminator.train()


@dataclass
class TrainResult:
    """What a run left behind."""

    out: Path
    checkpoint: Path
    steps: int
    seconds: float
    images_per_second: float
    evaluation: dict | None
    files: list[Path] = field(default_factory=list)


class _StopSignals:
    """While active, SIGINT and SIGTERM only set a flag; the loop saves a checkpoint and stops."""

    def __init__(self):
        self.signum: int | None = None
        self._previous = {}

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: leave signals alone
                pass
        return self

    def _handle(self, signum, frame):
        self.signum = signum

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def _read_records(path: Path, up_to: int) -> list[dict]:
    """Metric records of an earlier run, cut at the checkpoint's step (later ones are re-done)."""
    if not path.is_file():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            break  # a line cut short by a crash
        if record.get("step", 0) > up_to:
            break
        records.append(record)
    return records


def _release(trainer: Trainer | None, owns_group: bool) -> None:
    """Drop the DDP wrappers, then destroy the process group if ``train`` created it.

    The wrappers reference the group, and a group left to interpreter exit can abort the process.
    """
    if trainer is not None:
        trainer.close()
    if owns_group and dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def train(config: TrainConfig, out: str | Path, progress: Callable[[int, int, dict], None] | None = None,
          data: ImageData | None = None, resume: bool = False, overwrite: bool = False) -> TrainResult:
    """Train, then write checkpoint, metrics, pictures and a report into ``out``.

    A checkpoint is written atomically every ``checkpoint_every`` steps; ``resume=True`` continues from
    ``out/checkpoint.safetensors``. SIGINT/SIGTERM save a checkpoint and raise ``TrainingStopped``; so do
    non-finite losses or parameters (then without saving: the last good checkpoint stays).
    ``progress(step, total, record)`` is called at every logging step with the latest metrics.

    Under torchrun, a process group that this call initializes it also destroys when the training loop
    ends; a caller that needs the group afterwards calls ``dist.init_process_group`` before ``train``.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InfoGANError(f"--out {out} exists and is not a folder")
    checkpoint_path = out / "checkpoint.safetensors"
    if resume and not checkpoint_path.is_file():
        raise InfoGANError(f"nothing to resume: {checkpoint_path} does not exist")
    if not resume and not overwrite and checkpoint_path.is_file():
        raise InfoGANError(f"{out} already holds a run; continue it with --resume {out}, or start over with --overwrite")
    owns_group = not (dist.is_available() and dist.is_initialized())
    trainer = None
    try:
        trainer = Trainer(config, data)
        if resume:
            trainer.resume(checkpoint_path)
    except BaseException:  # e.g. a dataset too small for one batch per rank: release what was set up
        _release(trainer, owns_group)
        raise
    main = trainer.rank == 0
    if main:
        out.mkdir(parents=True, exist_ok=True)
    info, total = trainer.info, trainer.iterations
    metrics_path = out / "metrics.jsonl"
    records = _read_records(metrics_path, trainer.step_index) if resume else []
    sums = torch.zeros(2 + len(info.codes), device=trainer.device)
    first_bad = torch.zeros((), dtype=torch.long, device=trainer.device)
    count, start = 0, time.perf_counter()
    last, last_step, first_step = start, trainer.step_index, trainer.step_index
    metrics_file = open(metrics_path, "w") if main else None
    try:
        for record in records:
            metrics_file.write(json.dumps(record) + "\n")
        with _StopSignals() as signals:
            while trainer.step_index < total:
                losses = trainer.step()
                step = trainer.step_index
                values = torch.cat([losses, info.bound_tensor()])
                sums += values
                bad = ~torch.isfinite(values).all()
                first_bad = torch.where(bad & (first_bad == 0), torch.full_like(first_bad, step), first_bad)
                count += 1
                log_now = step % config.log_every == 0 or step == total
                save_now = step % config.checkpoint_every == 0 or step == total
                stop_now = signals.signum is not None
                if not (log_now or save_now or stop_now):
                    continue
                if trainer.world > 1:
                    dist.all_reduce(sums)
                    dist.all_reduce(first_bad, op=dist.ReduceOp.MAX)
                    sums /= trainer.world
                if config.on_nonfinite == "stop" and (int(first_bad) or not trainer.parameters_finite()):
                    bad_step = int(first_bad) or step
                    raise TrainingStopped(f"training diverged: non-finite loss or parameters at step {bad_step}; "
                                          f"the last good checkpoint is kept at {checkpoint_path} "
                                          "(try a lower learning rate, or --on-nonfinite skip)", bad_step)
                if log_now and count:
                    now = time.perf_counter()
                    mean = (sums / count).tolist()  # the one host sync per log interval
                    record = {"step": step, "loss_d": mean[0], "loss_g": mean[1],
                              "mi": dict(zip(info.keys, mean[2:])),
                              "images_per_s": (step - last_step) * config.batch_size * trainer.world / (now - last)}
                    records.append(record)
                    if main:
                        metrics_file.write(json.dumps(record) + "\n")
                        metrics_file.flush()
                    if progress is not None and main:
                        progress(step, total, record)
                    sums.zero_()
                    count, last, last_step = 0, now, step
                if (save_now or stop_now) and main:
                    trainer.save(checkpoint_path)
                if stop_now:
                    name = signal.Signals(signals.signum).name
                    raise TrainingStopped(f"stopped by {name} at step {step}; checkpoint saved; continue with "
                                          f"`infogan train --resume {out}`", step, signals.signum)
    finally:
        if metrics_file is not None:
            metrics_file.close()
        # Every rank gets here at the same step.
        _release(trainer, owns_group)
    seconds = time.perf_counter() - start
    steps_run = trainer.step_index - first_step
    result = TrainResult(out, checkpoint_path, trainer.step_index, seconds,
                         steps_run * config.batch_size * trainer.world / max(seconds, 1e-9), None)
    if not main:
        return result
    result.files = [checkpoint_path, metrics_path, sample_grid(trainer.generator, info, out / "samples.png")]
    for key, dim, stem in traversal_names(info):
        result.files.append(traversal_grid(trainer.generator, info, key, out / f"{stem}.png", dim=dim))
    result.files.append(plot_bounds(records, info.entropies(), out / "mi_bounds.png"))
    if trainer.full_data.labels is not None:
        result.evaluation = evaluate(trainer.generator, info, trainer.full_data)
        (out / "evaluation.json").write_text(json.dumps(result.evaluation, indent=2))
        result.files.append(out / "evaluation.json")
        for key, scores in result.evaluation["codes"].items():
            result.files.append(plot_confusion(scores["confusion"], out / f"confusion_{key}.png",
                                               f"{key}: accuracy {scores['accuracy']:.3f}", scores["mapping"]))
    (out / "report.md").write_text(_report(config, trainer, result, records))
    result.files.append(out / "report.md")
    return result


def _report(config: TrainConfig, trainer: Trainer, result: TrainResult, records: list[dict]) -> str:
    lines = [f"# InfoGAN training report", "",
             f"- preset `{config.preset}`, data `{trainer.data.name}` ({len(trainer.data)} images, "
             f"{'x'.join(map(str, trainer.data.image_shape))})",
             f"- codes `{trainer.info.spec}`, noise {config.noise_dim}, batch {config.batch_size}, "
             f"{result.steps} iterations, seed {config.seed}",
             f"- device {trainer.device}, precision {trainer.precision}: {result.seconds:.0f} s, "
             f"{result.images_per_second:.0f} images/s", ""]
    if records:
        last = records[-1]
        lines += ["## Final MI lower bounds (nats)", "", "| code | bound | H(c) |", "| --- | --- | --- |"]
        for key, h in trainer.info.entropies().items():
            lines.append(f"| {key} | {last['mi'][key]:.3f} | {h:.3f} |")
        lines.append("")
    if result.evaluation:
        lines += ["## Categorical codes against the labels", "", "```", format_table(result.evaluation), "```", ""]
    lines += ["## Pictures", ""]
    for path in result.files:
        if path.suffix == ".png":
            lines.append(f"![{path.stem}]({path.name})")
    return "\n".join(lines) + "\n"
