"""The trainer: the DCGAN reference plus InfoRegularizer, attached the way a user attaches it to their GAN."""

from __future__ import annotations

import gc
import math
from dataclasses import asdict
from pathlib import Path
from typing import Callable

import torch
import torch.distributed as dist
from torch import nn

from torch_infogan.augment import random_rotate, random_translate
from torch_infogan.checkpoint import check_resumable, load_checkpoint, save_checkpoint
from torch_infogan.config import TrainConfig
from torch_infogan.contrastive import ContrastiveRegularizer
from torch_infogan.data import ImageData, load_data, normalize
from torch_infogan.errors import InfoGANError
from torch_infogan.guard import StepGuard
from torch_infogan.labelled import choose_labelled
from torch_infogan.loop import FitResult, TrainingStopped, fit  # noqa: F401  (TrainingStopped: read from here)
from torch_infogan.models import TAP_LAYERS, build_models
from torch_infogan.objective import D, G, StepBatch, build_terms
from torch_infogan.regularizer import InfoRegularizer
from torch_infogan.runtime import Runtime


def training_data(config: TrainConfig) -> ImageData:
    """The images a run trains on (before ``limit``): ``config.data`` at ``image_size`` and ``channels`` (their
    own where unset), and the unbalanced subset of ``imbalance`` and ``imbalance_seed`` where asked."""
    data = load_data(config.data, config.data_root, "train", config.download, config.image_size, config.channels)
    if config.imbalance is not None:
        data = data.imbalanced(config.imbalance, config.imbalance_seed)
    return data


def build_networks(config: TrainConfig, example: torch.Tensor, device: torch.device
                   ) -> tuple[InfoRegularizer, dict, nn.Module, nn.Module, ContrastiveRegularizer | None]:
    """The regularizer, the model configuration, G and D for ``config`` and images like ``example`` (two of them,
    float), with Q attached to D the way a user attaches it, and InfoGAN-CR's pair classifier where configured."""
    info = InfoRegularizer(config.codes, noise_dim=config.noise_dim, noise=config.noise, q_hidden=config.q_hidden,
                           q_batchnorm=config.q_batchnorm, q_negative_slope=config.negative_slope,
                           train_trunk=config.train_trunk, overcluster=config.overcluster if config.iic > 0 else 0)
    shape = list(example.shape[1:])
    model_config = {"builder": config.model, "latent_dim": info.latent_dim, "image_shape": shape,
                    "negative_slope": config.negative_slope}
    if config.model == "dcgan":
        model_config.update(widths=config.widths, fc_dim=config.fc_dim, output="sigmoid")
    generator, discriminator = build_models(model_config)
    generator.to(device)
    discriminator.to(device)
    info.attach(discriminator, TAP_LAYERS[config.model], example=example)  # the user's two lines
    contrastive = None
    if config.contrastive > 0:
        contrastive = ContrastiveRegularizer(info, config.contrastive, config.contrastive_start,
                                             config.contrastive_gap).attach(discriminator, tuple(shape))
    return info, model_config, generator, discriminator, contrastive


class _PairForward(nn.Module):
    """Runs D on the real and the generated batch in one call, so DDP sees one forward per backward."""

    def __init__(self, discriminator: nn.Module):
        super().__init__()
        self.discriminator = discriminator

    def forward(self, real: torch.Tensor, fake: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.discriminator(real), self.discriminator(fake)


class Trainer:
    """Holds G, D (with Q), the regularizer, optimizers and the data, and runs training steps.

    The caller owns the process group: under torchrun, initialize it first (``Runtime.setup``); the trainer
    then wraps G and D+Q in DistributedDataParallel, each rank takes its own slice of every data
    permutation and samples its own codes.
    """

    def __init__(self, config: TrainConfig, data: ImageData | None = None, runtime: Runtime | None = None):
        config.validate()
        self.config = config
        self.runtime = runtime if runtime is not None else Runtime.resolve(config.device, config.precision)
        self.rank, self.world = self.runtime.rank, self.runtime.world
        self.device, self.precision = self.runtime.device, self.runtime.precision
        if config.sync_bn and self.device.type != "cuda":
            raise InfoGANError("sync_bn needs CUDA devices (SyncBatchNorm runs only on GPUs); leave it off on CPUs")
        # The networks' initial weights come from torch's global generator, seeded here and put back afterwards:
        # the caller's random state is left as it was (the steps draw from the trainer's own generators).
        devices = [self.device.index or 0] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(config.seed)
            self._build(config, data)

    def _build(self, config: TrainConfig, data: ImageData | None) -> None:
        data = data if data is not None else training_data(config)
        self.full_data = data  # evaluation uses every image, as `infogan evaluate --data ...` does
        if config.limit:
            data = data.subset(config.limit)
        if len(data) < config.batch_size * self.world:
            raise InfoGANError(f"dataset {data.name!r} has {len(data)} images, fewer than one batch "
                               f"({config.batch_size} x {self.world} processes)")
        self.data = data
        self.images = data.images.to(self.device)  # uint8, resident on the device
        self.info, self.model_config, self.generator, self.discriminator, self.contrastive = build_networks(
            config, normalize(self.images[:2], "unit"), self.device)
        self.labelled = choose_labelled(data, self.full_data, self.info, config.labels, config.labels_file,
                                        config.labels_seed, config.label_code)  # None without --labels
        if config.sync_bn and self.world > 1:
            self.generator = nn.SyncBatchNorm.convert_sync_batchnorm(self.generator)
            self.discriminator = nn.SyncBatchNorm.convert_sync_batchnorm(self.discriminator)
        # Fused Adam (one kernel over all parameters) runs on CUDA and on the CPU; on the CPU it is about
        # 4x faster than foreach for the ~13M parameters of the MNIST networks (benchmarks.md).
        fused = {"fused": True} if self.device.type in ("cuda", "cpu") else {"foreach": True}
        betas = (config.beta1, config.beta2)
        self.opt_d = torch.optim.Adam(self.discriminator.parameters(), lr=config.lr_d, betas=betas, **fused)
        # A learned categorical prior (``cat:10:prior=learned``) is trained by G's side, as in Elastic-InfoGAN.
        self.opt_g = torch.optim.Adam([*self.generator.parameters(), *self.info.prior_parameters()], lr=config.lr_g,
                                      betas=betas, **fused)
        self.iterations = self._iterations()
        self.step_index = 0
        self.skipped = 0
        self.data_gen = torch.Generator(device=self.device).manual_seed(config.seed)
        self.code_gen = torch.Generator(device=self.device).manual_seed(config.seed * 1000 + 1 + self.rank)
        self._order = torch.empty(0, dtype=torch.long, device=self.device)
        self._cursor = 0
        self._d_params = list(self.discriminator.parameters())
        self._prior_params = self.info.prior_parameters()
        self._g_params = [*self.generator.parameters(), *self._prior_params]
        self.g_forward, self.d_forward = self.generator, _PairForward(self.discriminator)
        if self.world > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.g_forward = nn.parallel.DistributedDataParallel(self.g_forward, device_ids=ids)
            self.d_forward = nn.parallel.DistributedDataParallel(self.d_forward, device_ids=ids)
        self.terms = build_terms(config, self.info, self.contrastive, self.generator, self.labelled, self.images,
                                 self.iterations)
        #: The names of the scalars ``step`` returns, in a fixed order: each term's loss per player, then the totals.
        self.scalar_names = [f"{player}/{term.name}" for player in (D, G) for term in self.terms
                             if player in term.players] + ["d/total", "g/total"]
        self.last_skipped = False
        self.guard = StepGuard([self.generator, self.discriminator], self._d_params, self.opt_d, self.world)
        self._compile_phases(config.compile)

    def _compile_phases(self, compile: bool) -> None:
        self._d_fn = torch.compile(self._d_phase) if compile else self._d_phase
        self._g_fn = torch.compile(self._g_phase) if compile else self._g_phase

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

    def _total(self, player: str, batch: StepBatch, scalars: dict) -> torch.Tensor:
        """Sum the weighted losses of the terms ``player`` trains, recording each term's loss in ``scalars``."""
        total = torch.zeros((), device=batch.real.device)
        for term in self.terms:
            if player in term.players:
                value = term.loss(player, batch)
                scalars[f"{player}/{term.name}"] = value.detach().float()
                total = total + term.weight * value
        scalars[f"{player}/total"] = total.detach()
        return total

    def _d_phase(self, real: torch.Tensor) -> tuple[StepBatch, dict]:
        """Draw the step's latents, run G and D on both batches, and back-propagate D's total into D's parameters."""
        info, config = self.info, self.config
        alternating = config.updates == "alternating"
        scalars: dict[str, torch.Tensor] = {}
        with self.runtime.autocast():
            clean = real  # the batch as drawn, before noise and shifts: the real-image terms' input
            latent, codes = info.sample(real.shape[0], generator=self.code_gen)
            fake = generated = self.g_forward(latent)
            sigma = config.instance_noise * max(0.0, 1.0 - self.step_index / self.iterations)
            if sigma > 0:
                real = real + sigma * torch.randn(real.shape, generator=self.code_gen, device=real.device)
                fake = fake + sigma * torch.randn(fake.shape, generator=self.code_gen, device=fake.device)
            real = random_rotate(random_translate(real, config.translate, self.code_gen), config.rotate, self.code_gen)
            fake = random_rotate(random_translate(fake, config.translate, self.code_gen), config.rotate, self.code_gen)
            d_real, d_fake = self.d_forward(real, fake)
            batch = StepBatch(clean, real, generated, fake, latent, codes, d_real, d_fake, self.step_index,
                              alternating, self.code_gen, d_fake_g=None if alternating else d_fake)
            total_d = self._total(D, batch, scalars)
        self.opt_d.zero_grad(set_to_none=True)
        self.opt_g.zero_grad(set_to_none=True)
        total_d.backward(inputs=self._d_params, retain_graph=not alternating)
        return batch, scalars

    def _g_phase(self, batch: StepBatch, scalars: dict) -> None:
        """G's total (after D's step when updates alternate: from a fresh forward of the stepped D), and its
        backward into G's parameters (and a learned prior's logits)."""
        with self.runtime.autocast():
            if batch.alternating:
                batch.d_fake_g = self.discriminator(batch.fake)
            total_g = self._total(G, batch, scalars)
        total_g.backward(inputs=self._g_params)

    def step(self) -> dict[str, torch.Tensor]:
        """One training step. Returns the named scalars on the device (no host sync unless skipping): each
        term's unweighted loss for each player it trains (``"d/gan"``, ``"g/mi"``, ...) and each player's
        weighted total (``"d/total"``, ``"g/total"``).

        With ``on_nonfinite="skip"`` the total each optimizer is about to step on is checked first; a step with a
        non-finite total leaves both players' parameters, optimizer state and batch-norm buffers as they were
        (when updates alternate and D has stepped before G's total turns out bad, D is rolled back)."""
        config = self.config
        factor = self._lr_factor()
        for opt, lr in ((self.opt_d, config.lr_d), (self.opt_g, config.lr_g)):
            for group in opt.param_groups:
                group["lr"] = lr * factor
        skip_mode = config.on_nonfinite == "skip"
        alternating = config.updates == "alternating"
        self.last_skipped = False
        if skip_mode:
            self.guard.begin()
        batch, scalars = self._d_fn(self.next_batch())
        if alternating:
            if skip_mode and not self.guard.all_finite(scalars["d/total"]):
                return self._skipped(scalars)
            if skip_mode:
                self.guard.keep_d()
            self.opt_d.step()
        self._g_fn(batch, scalars)
        if skip_mode and not self.guard.all_finite(scalars["d/total"], scalars["g/total"]):
            return self._skipped(scalars)
        if not alternating:
            self.opt_d.step()
        if self.world > 1:  # a learned prior lives outside G's DistributedDataParallel: average its gradient
            for logits in self._prior_params:
                if logits.grad is not None:
                    dist.all_reduce(logits.grad)
                    logits.grad /= self.world
        self.opt_g.step()
        self.step_index += 1
        return scalars

    def _skipped(self, scalars: dict) -> dict[str, torch.Tensor]:
        """Undo a step whose totals are not finite; its scalars, NaN where a term did not run."""
        self.guard.undo(self.opt_d, self.opt_g)
        self.skipped += 1
        self.last_skipped = True
        self.step_index += 1
        nan = torch.full((), float("nan"), device=self.device)
        return {name: scalars.get(name, nan) for name in self.scalar_names}

    def close(self) -> None:
        """Drops the DistributedDataParallel wrappers, which hold the process group, so it can be destroyed.

        The trainer keeps working on one process afterwards (``step`` no longer synchronizes ranks).
        """
        if isinstance(self.g_forward, nn.parallel.DistributedDataParallel):
            self.g_forward, self.d_forward = self.g_forward.module, self.d_forward.module
            self._compile_phases(False)
            gc.collect()  # DDP's reducer may sit in a reference cycle; free it now, not at interpreter exit

    def checkpoint_config(self) -> dict:
        c, h, w = self.data.image_shape
        config = {"model": self.model_config, "image_shape": [c, h, w], "normalization": "unit",
                  "value_range": [0.0, 1.0], "dataset": self.data.name, "train": asdict(self.config),
                  "class_counts": self.data.class_counts(),
                  "cursor": self._cursor, "skipped": self.skipped}
        if self.contrastive is not None:
            config["contrastive"] = self.contrastive.config()
        if self.labelled is not None:
            config["labelled"] = self.labelled.to_config()
        return config

    def save(self, path: str | Path) -> Path:
        """Write a checkpoint with everything ``resume`` needs (optimizers, random streams, data order)."""
        extra = {"data_gen": self.data_gen.get_state(), "code_gen": self.code_gen.get_state(),
                 "order": self._order}
        return save_checkpoint(path, self.generator, self.discriminator, self.info, self.checkpoint_config(),
                               self.step_index, {"d": self.opt_d, "g": self.opt_g}, extra)

    def resume(self, path: str | Path) -> None:
        """Continue from a checkpoint written by ``save``: weights, optimizer state, step, random streams."""
        ckpt = load_checkpoint(path, self.device)
        check_resumable(ckpt, self.info.spec, self.model_config, self.contrastive is not None, self.labelled)
        try:
            self.generator.load_state_dict(ckpt.generator.state_dict())
            self.discriminator.load_state_dict(ckpt.discriminator.state_dict())
        except RuntimeError as exc:
            raise InfoGANError(f"{path} does not fit this run's networks: {str(exc).splitlines()[0]}") from exc
        for name, opt in (("d", self.opt_d), ("g", self.opt_g)):
            opt.load_state_dict(ckpt.optimizer_state[name])
        try:
            self.data_gen.set_state(ckpt.extra["data_gen"])
            self.code_gen.set_state(ckpt.extra["code_gen"])
            self._order = ckpt.extra["order"].to(self.device)
        except (KeyError, RuntimeError) as exc:
            raise InfoGANError(f"{path} holds no usable random-stream state ({exc})") from exc
        self._cursor = int(ckpt.config.get("cursor", 0))
        self.skipped = int(ckpt.config.get("skipped", 0))
        self.step_index = ckpt.step
        self.generator.train()
        self.discriminator.train()

    def fit(self, out: str | Path, progress: Callable[[int, int, dict], None] | None = None) -> FitResult:
        """Run the remaining steps, writing ``out/metrics.jsonl`` and ``out/checkpoint.safetensors``: ``loop.fit``."""
        return fit(self, out, progress)
