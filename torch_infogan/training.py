"""``train``: one training job from configuration to report, what ``infogan train`` runs."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from torch_infogan.config import TrainConfig
from torch_infogan.data import ImageData
from torch_infogan.errors import InfoGANError
from torch_infogan.report import write_report
from torch_infogan.runtime import Runtime
from torch_infogan.trainer import Trainer


class RunExists(InfoGANError):
    """The output folder already holds a run, and neither resuming nor overwriting was asked for."""

    def __init__(self, out: Path):
        super().__init__(f"{out} already holds a run (resume it, or overwrite it)")
        self.out = out


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
    disentanglement: dict | None = None


def train(config: TrainConfig, out: str | Path, progress: Callable[[int, int, dict], None] | None = None,
          data: ImageData | None = None, resume: bool = False, overwrite: bool = False,
          started: Callable[[Trainer], None] | None = None) -> TrainResult:
    """Train, then write checkpoint, metrics, pictures and a report into ``out``.

    ``resume=True`` continues from ``out/checkpoint.safetensors``; a folder that already holds a run is
    refused unless ``resume`` or ``overwrite``. See ``Trainer.fit`` for checkpoints, signals and
    ``progress``; ``started(trainer)`` is called on the main process once the trainer is set up (data loaded,
    checkpoint resumed), before the first step. Under torchrun, a process group that this call initializes (``Runtime.setup``) it also
    destroys when training ends; a caller that needs the group afterwards initializes it first.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InfoGANError(f"the output folder {out} exists and is not a folder")
    checkpoint_path = out / "checkpoint.safetensors"
    if resume and not checkpoint_path.is_file():
        raise InfoGANError(f"nothing to resume: {checkpoint_path} does not exist")
    if not resume and not overwrite and checkpoint_path.is_file():
        raise RunExists(out)
    runtime = Runtime.setup(config.device, config.precision)
    trainer = None
    try:
        trainer = Trainer(config, data, runtime)
        if resume:
            trainer.resume(checkpoint_path)
        if started is not None and runtime.main:
            started(trainer)
        fit = trainer.fit(out, progress)
    finally:
        # Every rank gets here at the same step. The DDP wrappers reference the group: drop them first.
        if trainer is not None:
            trainer.close()
        runtime.close()
    result = TrainResult(out, checkpoint_path, trainer.step_index, fit.seconds, fit.images_per_second, None)
    if not runtime.main:
        return result
    files, result.evaluation, result.disentanglement = write_report(trainer, fit, out)
    result.files = [checkpoint_path, fit.metrics, *files]
    return result
