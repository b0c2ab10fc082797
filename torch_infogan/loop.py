"""The training loop: the steps of a run with their metrics log, checkpoints and stop signals (``Trainer.fit``)."""

from __future__ import annotations

import json
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.distributed as dist

from torch_infogan.guard import parameters_finite
from torch_infogan.objective import D, G


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


@dataclass
class FitResult:
    """What ``Trainer.fit`` did: the metric records (earlier runs' included on resume) and its pace."""

    checkpoint: Path
    metrics: Path
    records: list[dict]
    steps_run: int
    seconds: float
    images_per_second: float


def fit(trainer, out: str | Path, progress: Callable[[int, int, dict], None] | None = None) -> FitResult:
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
    config, info, total, main = trainer.config, trainer.info, trainer.iterations, trainer.runtime.main
    checkpoint_path, metrics_path = out / "checkpoint.safetensors", out / "metrics.jsonl"
    if main:
        out.mkdir(parents=True, exist_ok=True)
    records = _read_records(metrics_path, trainer.step_index) if trainer.step_index else []
    names, n_codes = trainer.scalar_names, len(info.codes)
    learned = [(key, code) for key, code in zip(info.keys, info.codes) if getattr(code, "learned", False)]
    n_scalars = len(names)
    sums = torch.zeros(n_scalars + 2 * n_codes, device=trainer.device)
    first_bad = torch.zeros((), dtype=torch.long, device=trainer.device)
    count, start = 0, time.perf_counter()
    last, last_step, first_step = start, trainer.step_index, trainer.step_index
    metrics_file = open(metrics_path, "w") if main else None
    try:
        if metrics_file is not None:  # a resumed run keeps its earlier records
            metrics_file.writelines(json.dumps(record) + "\n" for record in records)
        with _StopSignals() as signals:
            while trainer.step_index < total:
                scalars = trainer.step()
                step = trainer.step_index
                if not trainer.last_skipped:  # a skipped step changed nothing and is left out of the means
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
                if trainer.world > 1:
                    dist.all_reduce(sums)
                    dist.all_reduce(first_bad, op=dist.ReduceOp.MAX)
                    sums /= trainer.world
                if config.on_nonfinite == "stop" and (int(first_bad) or not parameters_finite(trainer.generator, trainer.discriminator)):
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
                              "images_per_s": (step - last_step) * config.batch_size * trainer.world / (now - last)}
                    if learned:  # the ceiling H(c) of a learned prior's bound moves with the prior
                        record["entropy"] = {key: float(code.entropy()) for key, code in learned}
                    if trainer.contrastive is not None:
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
                    trainer.save(checkpoint_path)
                if stop_now:
                    name = signal.Signals(signals.signum).name
                    raise TrainingStopped(f"stopped by {name} at step {step}; checkpoint saved to {checkpoint_path}",
                                          step, checkpoint_path, signals.signum)
    finally:
        if metrics_file is not None:
            metrics_file.close()
    seconds = time.perf_counter() - start
    steps_run = trainer.step_index - first_step
    return FitResult(checkpoint_path, metrics_path, records, steps_run, seconds,
                     steps_run * config.batch_size * trainer.world / max(seconds, 1e-9))


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
