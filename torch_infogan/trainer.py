"""The trainer: the DCGAN reference plus InfoRegularizer, attached the way a user attaches it to their GAN."""

from __future__ import annotations

import copy
import gc
import json
import math
import signal
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from torch_infogan.augment import random_rotate, random_translate
from torch_infogan.checkpoint import load_checkpoint, save_checkpoint
from torch_infogan.config import ConfigError, TrainConfig
from torch_infogan.contrastive import ContrastiveRegularizer
from torch_infogan.data import ImageData, load_data, normalize
from torch_infogan.errors import InfoGANError
from torch_infogan.models import TAP_LAYERS, build_models
from torch_infogan.labelled import LabelledSet, draw_labelled, read_labels_file
from torch_infogan.objective import (D, G, ConsistencyTerm, ContrastiveTerm, GANTerm, IICTerm, InvarianceTerm,
                                     LabelTerm, MITerm, PriorTerm, StepBatch, Term)
from torch_infogan.regularizer import InfoRegularizer
from torch_infogan.runtime import Runtime


def training_data(config: TrainConfig) -> ImageData:
    """The images a run trains on (before ``limit``): ``config.data`` at ``image_size`` and ``channels`` (their
    own where unset), and the unbalanced subset of ``imbalance`` and ``imbalance_seed`` where asked."""
    data = load_data(config.data, config.data_root, "train", config.download, config.image_size, config.channels)
    if config.imbalance is not None:
        data = data.imbalanced(config.imbalance, config.imbalance_seed)
    return data


class TrainingStopped(Exception):
    """Training ended early: a signal (``signum`` set) or non-finite values (``signum`` None).

    ``checkpoint`` is the checkpoint left behind (saved at the stop for a signal; the last good one for
    non-finite values).
    """

    def __init__(self, message: str, step: int, checkpoint: Path, signum: int | None = None):
        super().__init__(message)
        self.step = step
        self.checkpoint = checkpoint
        self.signum = signum


class _PairForward(nn.Module):
    """Runs D on the real and the generated batch in one call, so DDP sees one forward per backward."""

    def __init__(self, discriminator: nn.Module):
        super().__init__()
        self.discriminator = discriminator

    def forward(self, real: torch.Tensor, fake: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.discriminator(real), self.discriminator(fake)


@dataclass
class FitResult:
    """What ``Trainer.fit`` did: the metric records (earlier runs' included on resume) and its pace."""

    checkpoint: Path
    metrics: Path
    records: list[dict]
    steps_run: int
    seconds: float
    images_per_second: float


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
        c, h, w = data.image_shape
        self.info = InfoRegularizer(config.codes, noise_dim=config.noise_dim, noise=config.noise,
                                    q_hidden=config.q_hidden, q_batchnorm=config.q_batchnorm,
                                    q_negative_slope=config.negative_slope, train_trunk=config.train_trunk)
        self.labelled = self._labelled(config, data)
        self.model_config = {"builder": config.model, "latent_dim": self.info.latent_dim, "image_shape": [c, h, w],
                             "negative_slope": config.negative_slope}
        if config.model == "dcgan":
            self.model_config.update(widths=config.widths, fc_dim=config.fc_dim, output="sigmoid")
        self.generator, self.discriminator = build_models(self.model_config)
        self.generator.to(self.device)
        self.discriminator.to(self.device)
        example = normalize(self.images[:2], "unit")
        self.info.attach(self.discriminator, TAP_LAYERS[config.model], example=example)  # the user's two lines
        self.contrastive = None
        if config.contrastive > 0:
            self.contrastive = ContrastiveRegularizer(self.info, config.contrastive, config.contrastive_start,
                                                      config.contrastive_gap).attach(self.discriminator, (c, h, w))
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
        self.terms = self._build_terms()
        #: The names of the scalars ``step`` returns, in a fixed order: each term's loss per player, then the totals.
        self.scalar_names = [f"{player}/{term.name}" for player in (D, G) for term in self.terms
                             if player in term.players] + ["d/total", "g/total"]
        self.last_skipped = False
        self._compile_phases(config.compile)

    def _labelled(self, config: TrainConfig, data: ImageData) -> LabelledSet | None:
        """The labelled training images of ``--labels`` or ``--labels-file``, None without either."""
        if config.labels is None and config.labels_file is None:
            return None
        if config.labels is not None:
            indices, labels = draw_labelled(data, config.labels, config.labels_seed)
        else:
            indices, labels = read_labels_file(config.labels_file, len(data))
        key = config.label_code or next(key for key, code in zip(self.info.keys, self.info.codes)
                                        if code.num_clusters is not None)
        k = self.info.codes[self.info.keys.index(key)].num_clusters
        if labels.max() >= k:
            raise InfoGANError(f"the labels run to {labels.max()}, but {key} has {k} categories: give it at least "
                               f"{labels.max() + 1} (--codes cat:{labels.max() + 1},...)")
        return LabelledSet(indices, labels, key, self.full_data.name, self.full_data.split, len(self.full_data))

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

    def _build_terms(self) -> list[Term]:
        """The objective's terms for this configuration, in the order they are computed."""
        config, info = self.config, self.info
        terms: list[Term] = [GANTerm(), MITerm(info, config.info_weight)]
        if config.consistency > 0:
            terms.append(ConsistencyTerm(info, config.consistency, config.pair_shear))
        if config.iic > 0:
            terms.append(IICTerm(info, config.iic, config.pair_shear))
        if config.invariance > 0:
            terms.append(InvarianceTerm(info, config.invariance, config.pair_shear))
        if self.contrastive is not None:
            terms.append(ContrastiveTerm(self.contrastive, self.generator))
        if self.labelled is not None:
            rows = torch.from_numpy(self.labelled.indices).to(self.device)
            labels = torch.from_numpy(self.labelled.labels).to(self.device)
            terms.append(LabelTerm(info, config.label_weight, self.images[rows], labels, self.labelled.code,
                                   config.batch_size // 2, config.translate))
        if self._prior_params:  # the learned prior follows Q's category frequencies on real images
            terms.append(PriorTerm(info, config.info_weight))
        return terms

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

    def _all_finite(self, *totals: torch.Tensor) -> bool:
        """Whether the totals are finite on every process (one host sync)."""
        finite = torch.stack([torch.isfinite(t) for t in totals]).all().to(torch.int32)
        if self.world > 1:
            dist.all_reduce(finite, op=dist.ReduceOp.MIN)
        return bool(finite)

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
        if skip_mode:  # batch-norm statistics move in the forward: keep a copy to undo a bad step
            buffers = [b for m in (self.generator, self.discriminator) for b in m.buffers()]
            saved_buffers = [b.clone() for b in buffers]
            saved_d = None
        batch, scalars = self._d_fn(self.next_batch())
        if alternating:
            if skip_mode and not self._all_finite(scalars["d/total"]):
                self._undo(buffers, saved_buffers, None)
                return self._skipped(scalars)
            if skip_mode:
                saved_d = ([p.detach().clone() for p in self._d_params], copy.deepcopy(self.opt_d.state_dict()))
            self.opt_d.step()
        self._g_fn(batch, scalars)
        if skip_mode and not self._all_finite(scalars["d/total"], scalars["g/total"]):
            self._undo(buffers, saved_buffers, saved_d)
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

    def _undo(self, buffers: list, saved_buffers: list, saved_d) -> None:
        """Put back what a skipped step changed: the buffers, and D's parameters and optimizer state if it stepped."""
        self.opt_d.zero_grad(set_to_none=True)
        self.opt_g.zero_grad(set_to_none=True)
        with torch.no_grad():
            for buffer, saved in zip(buffers, saved_buffers):
                buffer.copy_(saved)
            if saved_d is not None:
                params, state = saved_d
                for p, saved in zip(self._d_params, params):
                    p.copy_(saved)
                self.opt_d.load_state_dict(state)

    def _skipped(self, scalars: dict) -> dict[str, torch.Tensor]:
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

    def parameters_finite(self) -> bool:
        """Whether every parameter and buffer of G and D (with Q) is finite (one host sync)."""
        tensors = [t for m in (self.generator, self.discriminator) for t in m.state_dict().values()
                   if t.is_floating_point()]
        return bool(torch.stack([torch.isfinite(t).all() for t in tensors]).all())

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
        if ckpt.info.spec != self.info.spec or ckpt.config["model"] != self.model_config:
            raise InfoGANError(f"{path} was trained with codes {ckpt.info.spec!r} and model {ckpt.config['model']}, "
                               f"which differ from this run's")
        if (ckpt.contrastive is None) != (self.contrastive is None):
            raise ConfigError("contrastive", f"differs from the run in {path}, which was trained "
                                             f"{'without' if ckpt.contrastive is None else 'with'} the contrastive "
                                             "regularizer; resume it with the same setting")
        try:
            self.generator.load_state_dict(ckpt.generator.state_dict())
            self.discriminator.load_state_dict(ckpt.discriminator.state_dict())
        except RuntimeError as exc:
            raise InfoGANError(f"{path} does not fit this run's networks: {str(exc).splitlines()[0]}") from exc
        stored = LabelledSet.from_config(ckpt.config.get("labelled"))
        if (stored is None) != (self.labelled is None) or (stored is not None and not (
                np.array_equal(stored.indices, self.labelled.indices)
                and np.array_equal(stored.labels, self.labelled.labels) and stored.code == self.labelled.code)):
            raise InfoGANError(f"{path} was trained on other labelled images than these settings give: resume it "
                               "with the labels it was trained on (its own --labels, --labels-seed, --labels-file "
                               "and that file's contents)")
        for name, opt in (("d", self.opt_d), ("g", self.opt_g)):
            if name not in ckpt.optimizer_state:
                raise InfoGANError(f"{path} holds no optimizer state (a weights-only file): it cannot be resumed")
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
        """Run the remaining steps, writing ``out/metrics.jsonl`` and ``out/checkpoint.safetensors``.

        The checkpoint is written atomically every ``checkpoint_every`` steps and at the end. SIGINT/SIGTERM
        save a checkpoint and raise ``TrainingStopped``; so do non-finite losses or parameters (then
        without saving: the last good checkpoint stays). ``progress(step, total, record)`` is called on the
        main process at every logging step with the latest record: ``loss_d`` and ``loss_g`` (the GAN
        losses alone), ``loss_cr`` (the contrastive classifier's cross-entropy, where configured), ``terms``
        (per player, each term's unweighted loss and the player's weighted ``total``: ``step``'s scalars), ``mi``
        (each code's MI lower bound, Q's std as configured) and ``mi_fitted`` (the bound with Q's variance
        fitted to its error).
        """
        out = Path(out)
        config, info, total, main = self.config, self.info, self.iterations, self.runtime.main
        checkpoint_path, metrics_path = out / "checkpoint.safetensors", out / "metrics.jsonl"
        if main:
            out.mkdir(parents=True, exist_ok=True)
        records = _read_records(metrics_path, self.step_index) if self.step_index else []
        names, n_codes = self.scalar_names, len(info.codes)
        n_scalars = len(names)
        sums = torch.zeros(n_scalars + 2 * n_codes, device=self.device)
        first_bad = torch.zeros((), dtype=torch.long, device=self.device)
        count, start = 0, time.perf_counter()
        last, last_step, first_step = start, self.step_index, self.step_index
        metrics_file = open(metrics_path, "w") if main else None
        try:
            if metrics_file is not None:  # a resumed run keeps its earlier records
                metrics_file.writelines(json.dumps(record) + "\n" for record in records)
            with _StopSignals() as signals:
                while self.step_index < total:
                    scalars = self.step()
                    step = self.step_index
                    if not self.last_skipped:  # a skipped step changed nothing and is left out of the means
                        values = torch.cat([torch.stack([scalars[name] for name in names]), info.bound_tensor(),
                                            info.fitted_bound_tensor()])
                        sums += values
                        bad = ~torch.isfinite(values).all()
                        first_bad = torch.where(bad & (first_bad == 0), torch.full_like(first_bad, step), first_bad)
                        count += 1
                    log_now = step % config.log_every == 0 or step == total
                    save_now = step % config.checkpoint_every == 0 or step == total
                    stop_now = signals.signum is not None
                    if not (log_now or save_now or stop_now):
                        continue
                    if self.world > 1:
                        dist.all_reduce(sums)
                        dist.all_reduce(first_bad, op=dist.ReduceOp.MAX)
                        sums /= self.world
                    if config.on_nonfinite == "stop" and (int(first_bad) or not self.parameters_finite()):
                        bad_step = int(first_bad) or step
                        raise TrainingStopped(f"training diverged: non-finite loss or parameters at step {bad_step}; "
                                              f"the last good checkpoint is kept at {checkpoint_path} (try a lower "
                                              "learning rate, or on_nonfinite='skip')", bad_step, checkpoint_path)
                    if log_now and count:
                        now = time.perf_counter()
                        mean = (sums / count).tolist()  # the one host sync per log interval
                        terms = dict(zip(names, mean[:n_scalars]))
                        record = {"step": step, "loss_d": terms["d/gan"], "loss_g": terms["g/gan"],
                                  "terms": {player: {name.split("/", 1)[1]: value for name, value in terms.items()
                                                     if name.startswith(player + "/")} for player in (D, G)},
                                  "mi": dict(zip(info.keys, mean[n_scalars:n_scalars + n_codes])),
                                  "mi_fitted": dict(zip(info.keys, mean[n_scalars + n_codes:])),
                                  "images_per_s": (step - last_step) * config.batch_size * self.world / (now - last)}
                        if self.contrastive is not None:
                            record["loss_cr"] = terms["d/contrastive"]
                        records.append(record)
                        if main:
                            metrics_file.write(json.dumps(record) + "\n")
                            metrics_file.flush()
                        if progress is not None and main:
                            progress(step, total, record)
                        sums.zero_()
                        count, last, last_step = 0, now, step
                    if (save_now or stop_now) and main:
                        self.save(checkpoint_path)
                    if stop_now:
                        name = signal.Signals(signals.signum).name
                        raise TrainingStopped(f"stopped by {name} at step {step}; checkpoint saved to {checkpoint_path}",
                                              step, checkpoint_path, signals.signum)
        finally:
            if metrics_file is not None:
                metrics_file.close()
        seconds = time.perf_counter() - start
        steps_run = self.step_index - first_step
        return FitResult(checkpoint_path, metrics_path, records, steps_run, seconds,
                         steps_run * config.batch_size * self.world / max(seconds, 1e-9))


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
