"""Training: the DCGAN reference plus InfoRegularizer, attached the way a user attaches it to their GAN."""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from torch_infogan.checkpoint import save_checkpoint
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
    q_hidden: int = 128
    train_trunk: bool = True
    widths: list[int] | None = None
    fc_dim: int = 1024
    negative_slope: float = 0.1
    seed: int = 0
    device: str = "auto"
    precision: str = "fp32"
    compile: bool = False
    log_every: int = 100
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
                    lr_g=1e-3, lr_d=2e-4, beta1=0.5)

PRESETS: dict[str, dict] = {
    "paper-mnist": dict(_PAPER_MNIST),
    # The default: the paper's networks and codes, tuned for 10k digits on a small budget (docs/training.md).
    "mnist": dict(_PAPER_MNIST, batch_size=64, iterations=3000, codes="cat:10:weight=1.0,unif:2:weight=0.5",
                  lr_decay=True, instance_noise=0.1),
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


class Trainer:
    """Holds G, D (with Q), the regularizer, optimizers and the data, and runs training steps."""

    def __init__(self, config: TrainConfig, data: ImageData | None = None):
        self.config = config
        self.device = resolve_device(config.device)
        if config.precision not in ("fp32", "bf16"):
            raise InfoGANError(f"precision must be fp32 or bf16, got {config.precision!r}")
        if config.batch_size < 2:
            raise InfoGANError("batch size must be >= 2 (batch norm needs two samples)")
        torch.manual_seed(config.seed)
        data = data if data is not None else load_data(config.data, config.data_root, "train", config.download)
        self.full_data = data  # evaluation uses every image, as `infogan evaluate --data ...` does
        if config.limit:
            data = data.subset(config.limit)
        if len(data) < config.batch_size:
            raise InfoGANError(f"dataset {data.name!r} has {len(data)} images, fewer than one batch ({config.batch_size})")
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
        fused = {"fused": True} if self.device.type == "cuda" else {"foreach": True}
        betas = (config.beta1, config.beta2)
        self.opt_d = torch.optim.Adam(self.discriminator.parameters(), lr=config.lr_d, betas=betas, **fused)
        self.opt_g = torch.optim.Adam(self.generator.parameters(), lr=config.lr_g, betas=betas, **fused)
        self.iterations = self._iterations()
        decay = (lambda s: max(0.0, 1.0 - s / self.iterations) * 0.9 + 0.1) if config.lr_decay else (lambda s: 1.0)
        self.schedulers = [torch.optim.lr_scheduler.LambdaLR(opt, decay) for opt in (self.opt_d, self.opt_g)]
        self.step_index = 0
        self.sampler = torch.Generator(device=self.device).manual_seed(config.seed)
        self._order = torch.empty(0, dtype=torch.long, device=self.device)
        self._cursor = 0
        self._step_fn = torch.compile(self._step) if config.compile else self._step

    def _iterations(self) -> int:
        if self.config.epochs is not None:
            return max(1, math.ceil(self.config.epochs * len(self.data) / self.config.batch_size))
        return int(self.config.iterations)

    def next_batch(self) -> torch.Tensor:
        """The next real batch, float in [0, 1]; a fresh permutation each epoch, no host work per sample."""
        b = self.config.batch_size
        if self._cursor + b > self._order.numel():
            self._order = torch.randperm(self.images.shape[0], generator=self.sampler, device=self.device)
            self._cursor = 0
        index = self._order[self._cursor:self._cursor + b]
        self._cursor += b
        return normalize(self.images[index], "unit")

    def _step(self, real: torch.Tensor) -> torch.Tensor:
        info, G, D = self.info, self.generator, self.discriminator
        autocast = torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.config.precision == "bf16")
        with autocast:
            latent, codes = info.sample(real.shape[0], generator=self.sampler)
            fake = G(latent)
            sigma = self.config.instance_noise * max(0.0, 1.0 - self.step_index / self.iterations)
            if sigma > 0:
                real = real + sigma * torch.randn_like(real)
                fake = fake + sigma * torch.randn_like(fake)
            d_real, d_fake = D(real), D(fake)
            mi = info.loss(codes)
            ones, zeros = torch.ones_like(d_real), torch.zeros_like(d_real)
            gan_d = F.binary_cross_entropy_with_logits(d_real.float(), ones) \
                + F.binary_cross_entropy_with_logits(d_fake.float(), zeros)
            gan_g = F.binary_cross_entropy_with_logits(d_fake.float(), ones)
        # One D forward on the fakes serves both players: each loss reaches only its own parameters.
        self.opt_d.zero_grad(set_to_none=True)
        self.opt_g.zero_grad(set_to_none=True)
        (gan_d + mi).backward(inputs=list(D.parameters()), retain_graph=True)
        (gan_g + mi).backward(inputs=list(G.parameters()))
        self.opt_d.step()
        self.opt_g.step()
        for scheduler in self.schedulers:
            scheduler.step()
        return torch.stack([gan_d.detach() + mi.detach(), gan_g.detach() + mi.detach()])

    def step(self) -> torch.Tensor:
        """One training step; returns ``[loss_d, loss_g]`` on the device (no host sync)."""
        losses = self._step_fn(self.next_batch())
        self.step_index += 1
        return losses

    def checkpoint_config(self) -> dict:
        c, h, w = self.data.image_shape
        return {"model": self.model_config, "image_shape": [c, h, w], "normalization": "unit",
                "value_range": [0.0, 1.0], "dataset": self.data.name, "train": asdict(self.config)}

    def save(self, path: str | Path) -> Path:
        return save_checkpoint(path, self.generator, self.discriminator, self.info, self.checkpoint_config(),
                               self.step_index, {"d": self.opt_d, "g": self.opt_g})


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


def train(config: TrainConfig, out: str | Path, progress: Callable[[int, int, dict], None] | None = None,
          data: ImageData | None = None) -> TrainResult:
    """Train, then write checkpoint, metrics, pictures and a report into ``out``.

    ``progress(step, total, record)`` is called at every logging step with the latest metrics.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InfoGANError(f"--out {out} exists and is not a folder")
    trainer = Trainer(config, data)
    out.mkdir(parents=True, exist_ok=True)
    info, total = trainer.info, trainer.iterations
    records: list[dict] = []
    sums = torch.zeros(2, device=trainer.device)
    bound_sums = torch.zeros(len(info.codes), device=trainer.device)
    count = 0
    start = last = time.perf_counter()
    last_step = 0
    metrics_path = out / "metrics.jsonl"
    with open(metrics_path, "w") as metrics_file:
        for step in range(1, total + 1):
            sums += trainer.step()
            bound_sums += info.bound_tensor()
            count += 1
            if step % config.log_every == 0 or step == total:
                values = (torch.cat([sums, bound_sums]) / count).tolist()  # the one host sync per log interval
                now = time.perf_counter()
                record = {"step": step, "loss_d": values[0], "loss_g": values[1],
                          "mi": dict(zip(info.keys, values[2:])),
                          "images_per_s": (step - last_step) * config.batch_size / (now - last)}
                records.append(record)
                metrics_file.write(json.dumps(record) + "\n")
                metrics_file.flush()
                if progress is not None:
                    progress(step, total, record)
                sums.zero_()
                bound_sums.zero_()
                count, last, last_step = 0, now, step
    seconds = time.perf_counter() - start
    checkpoint = trainer.save(out / "checkpoint.safetensors")
    files = [checkpoint, metrics_path, sample_grid(trainer.generator, info, out / "samples.png")]
    for key, dim, stem in traversal_names(info):
        files.append(traversal_grid(trainer.generator, info, key, out / f"{stem}.png", dim=dim))
    files.append(plot_bounds(records, info.entropies(), out / "mi_bounds.png"))
    evaluation = None
    if trainer.full_data.labels is not None:
        evaluation = evaluate(trainer.generator, info, trainer.full_data)
        (out / "evaluation.json").write_text(json.dumps(evaluation, indent=2))
        files.append(out / "evaluation.json")
        for key, scores in evaluation["codes"].items():
            files.append(plot_confusion(scores["confusion"], out / f"confusion_{key}.png",
                                        f"{key}: accuracy {scores['accuracy']:.3f}"))
    result = TrainResult(out, checkpoint, total, seconds, total * config.batch_size / seconds, evaluation, files)
    report = _report(config, trainer, result, records)
    (out / "report.md").write_text(report)
    result.files.append(out / "report.md")
    return result


def _report(config: TrainConfig, trainer: Trainer, result: TrainResult, records: list[dict]) -> str:
    lines = [f"# InfoGAN training report", "",
             f"- preset `{config.preset}`, data `{trainer.data.name}` ({len(trainer.data)} images, "
             f"{'x'.join(map(str, trainer.data.image_shape))})",
             f"- codes `{trainer.info.spec}`, noise {config.noise_dim}, batch {config.batch_size}, "
             f"{result.steps} iterations, seed {config.seed}",
             f"- device {trainer.device}, precision {config.precision}: {result.seconds:.0f} s, "
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
