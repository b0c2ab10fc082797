"""Training configuration: every knob of a run, the presets built from it, and their validation."""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

from torch_infogan.codes import Categorical, code_keys, parse_codes
from torch_infogan.errors import InfoGANError

#: When the labelled batch joins D's step (``TrainConfig.label_schedule``): ``every`` step, or by a ``coin`` whose
#: chance falls from 1 at the start to ``LABEL_COIN_FLOOR`` at half the run (ss-InfoGAN's growing unlabelled share).
LABEL_SCHEDULES = ("every", "coin")
LABEL_COIN_FLOOR = 0.1


class ConfigError(InfoGANError):
    """A training option holds a value it cannot take; ``option`` names the ``TrainConfig`` field."""

    def __init__(self, option: str, problem: str):
        super().__init__(f"{option} {problem}")
        self.option = option
        self.problem = problem


@dataclass
class TrainConfig:
    """Every knob of a training run. The defaults are the ``mnist`` preset; other presets change a few.

    Values are checked when the configuration is made and on every ``update``.
    """

    data: str = "mnist-10k"
    data_root: str | None = None
    download: bool = False
    limit: int | None = None
    image_size: int | None = None
    channels: int | None = None
    imbalance: float | None = None
    imbalance_seed: int = 0
    labels: int | None = None
    labels_file: str | None = None
    labels_seed: int = 0
    label_code: str | None = None
    label_weight: float = 1.0
    label_schedule: str = "every"
    codes: str = "cat:10,unif:2"
    noise_dim: int = 62
    noise: str = "uniform"
    batch_size: int = 128
    iterations: int = 3000
    epochs: float | None = None
    lr_g: float = 1e-3
    lr_d: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999
    lr_decay: bool = False
    instance_noise: float = 0.0
    translate: int = 2
    rotate: float = 0.0
    consistency: float = 0.0
    iic: float = 1.0
    pair_shear: float = 0.4
    pair_intensity: float = 0.7
    pair_flip: bool = False
    invariance: float = 1.0
    overcluster: int = 0
    updates: str = "alternating"
    info_weight: float = 1.0
    contrastive: float = 0.0
    contrastive_start: int = 0
    contrastive_gap: float = 0.0
    q_hidden: int = 128
    q_batchnorm: bool = True
    train_trunk: bool = True
    model: str = "dcgan"
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

    def __post_init__(self):
        self.validate()

    def update(self, **overrides) -> "TrainConfig":
        """Set the given fields (``None`` values are ignored) and check the result."""
        names = {f.name for f in fields(self)}
        for key, value in overrides.items():
            if key not in names:
                raise InfoGANError(f"unknown training option {key!r}")
            if value is not None:
                setattr(self, key, value)
        self.validate()
        return self

    def validate(self) -> None:
        """Raise ``ConfigError`` naming the first field that holds a value it cannot take."""
        choices = {"updates": ("simultaneous", "alternating"), "on_nonfinite": ("stop", "skip"),
                   "precision": ("auto", "fp32", "bf16"), "noise": ("uniform", "normal"),
                   "model": ("dcgan", "shapes")}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ConfigError(name, f"must be {', '.join(allowed[:-1])} or {allowed[-1]}, "
                                        f"got {getattr(self, name)!r}")
        if self.batch_size < 2:
            raise ConfigError("batch_size", f"must be >= 2 (batch norm needs two samples), got {self.batch_size}")
        if self.noise_dim < 0:
            raise ConfigError("noise_dim", f"must be >= 0, got {self.noise_dim}")
        for name in ("iterations", "log_every", "checkpoint_every", "q_hidden", "fc_dim"):
            if getattr(self, name) < 1:
                raise ConfigError(name, f"must be >= 1, got {getattr(self, name)}")
        for name in ("lr_g", "lr_d"):
            if not getattr(self, name) > 0:
                raise ConfigError(name, f"must be > 0, got {getattr(self, name)}")
        for name in ("beta1", "beta2"):
            if not 0 <= getattr(self, name) < 1:
                raise ConfigError(name, f"must be in [0, 1), got {getattr(self, name)}")
        if self.epochs is not None and not self.epochs > 0:
            raise ConfigError("epochs", f"must be > 0, got {self.epochs}")
        if self.image_size is not None and self.image_size < 4:
            raise ConfigError("image_size", f"must be >= 4 pixels, got {self.image_size}")
        if self.channels not in (None, 1, 3):
            raise ConfigError("channels", f"must be 1 (grey) or 3 (colour), got {self.channels}")
        if self.imbalance is not None and not self.imbalance >= 1:
            raise ConfigError("imbalance", f"must be >= 1 (the largest class over the smallest), got {self.imbalance}")
        if self.limit is not None and self.limit < 1:
            raise ConfigError("limit", f"must be >= 1 image, got {self.limit}")
        if self.translate < 0:
            raise ConfigError("translate", f"must be >= 0 pixels, got {self.translate}")
        if not 0 <= self.rotate <= 180:
            raise ConfigError("rotate", f"must be between 0 and 180 degrees, got {self.rotate}")
        if not 0 <= self.pair_shear <= 1:
            raise ConfigError("pair_shear", f"must be between 0 and 1 (a slant of up to 45 degrees), got {self.pair_shear}")
        if not 0 <= self.pair_intensity <= 2:
            raise ConfigError("pair_intensity", f"must be between 0 and 2 (gamma and darkening of up to e^2), got {self.pair_intensity}")
        for name in ("info_weight", "consistency", "iic", "invariance", "contrastive", "contrastive_gap"):
            if not getattr(self, name) >= 0:
                raise ConfigError(name, f"must be >= 0, got {getattr(self, name)}")
        if self.overcluster < 0:
            raise ConfigError("overcluster", f"must be >= 0 categories (0: no overclustering output), got {self.overcluster}")
        if self.contrastive_start < 0:
            raise ConfigError("contrastive_start", f"must be a step >= 0, got {self.contrastive_start}")
        if self.instance_noise < 0:
            raise ConfigError("instance_noise", f"must be >= 0, got {self.instance_noise}")
        if self.labels is not None and self.labels < 1:
            raise ConfigError("labels", f"must be >= 1 labelled image per class, got {self.labels}")
        if self.labels is not None and self.labels_file is not None:
            raise ConfigError("labels_file", "cannot be combined with a per-class draw (labels): give one of them")
        if not self.label_weight > 0:
            raise ConfigError("label_weight", f"must be > 0, got {self.label_weight}")
        if self.label_schedule not in LABEL_SCHEDULES:
            raise ConfigError("label_schedule", f"must be one of {', '.join(LABEL_SCHEDULES)}, got {self.label_schedule!r}")
        codes = parse_codes(self.codes)
        categorical = [key for key, code in zip(code_keys(codes), codes) if isinstance(code, Categorical)]
        if not categorical:
            for name in ("consistency", "iic", "invariance"):
                if getattr(self, name) > 0:
                    raise ConfigError(name, f"needs a categorical code (it works on Q's categories); "
                                            f"the codes are {self.codes!r} (0 turns it off)")
            for name in ("labels", "labels_file"):
                if getattr(self, name) is not None:
                    raise ConfigError(name, f"needs a categorical code for the labels to name; the codes are "
                                            f"{self.codes!r}")
        if self.label_code is not None and self.label_code not in categorical:
            raise ConfigError("label_code", f"must be the key of a categorical code ({', '.join(categorical) or 'none'}), "
                                            f"got {self.label_code!r}")


#: What the default adds to the paper's recipe (shifts of D's images, IIC, G's categories on moved copies),
#: turned off: the presets other than ``mnist`` start from it.
PLAIN = dict(translate=0, iic=0.0, invariance=0.0)

#: Each preset is the defaults above with a few fields changed.
PRESETS: dict[str, dict] = {
    # The default: the paper's networks, codes and optimiser, plus random shifts of up to 2 pixels of the
    # images D and Q see (mnist-10k is a fifth of the paper's data), the IIC term on the real images against
    # turned, scaled, slanted copies with tones of their own, and G's categories named on turned, scaled and
    # slanted copies (docs/training.md); 3,000 iterations in bf16 where the hardware computes it natively.
    "mnist": {},
    # The paper's MNIST recipe (openai/InfoGAN launchers/run_mnist_exp.py), unchanged.
    "paper-mnist": dict(iterations=5000, precision="fp32", **PLAIN),
    "svhn": dict(data="svhn", codes="cat:10,cat:10,cat:10,cat:10,unif:4", noise_dim=124, iterations=20000,
                 **PLAIN),
    "celeba": dict(data="celeba", codes=",".join(["cat:10"] * 10), noise_dim=128, iterations=20000, **PLAIN),
    # InfoGAN-CR's modified InfoGAN on the procedural dSprites grid (Lin et al., 2020): 5 continuous codes and
    # 5 noise dimensions, spectrally normalized D without batch norm, information weight 0.05 for both players.
    "shapes": dict(data="shapes", model="shapes", codes="unif,unif,unif,unif,unif", noise_dim=5, batch_size=64,
                   lr_g=1e-3, lr_d=2e-3, info_weight=0.05, q_batchnorm=False, negative_slope=0.2, **PLAIN,
                   iterations=10000, checkpoint_every=1000),
    # The same with InfoGAN-CR's contrastive regularizer (weight 2 for G, switched on for the last part of the run).
    "shapes-cr": dict(data="shapes", model="shapes", codes="unif,unif,unif,unif,unif", noise_dim=5, batch_size=64,
                      lr_g=1e-3, lr_d=2e-3, info_weight=0.05, q_batchnorm=False, negative_slope=0.2, **PLAIN,
                      iterations=10000, checkpoint_every=1000, contrastive=2.0, contrastive_start=5000),
    "chairs": dict(data="folder:chairs", codes="cat:20,cat:20,cat:20,unif:1", noise_dim=128, iterations=20000,
                   image_size=64, **PLAIN),
}


def preset_config(name: str = "mnist", **overrides) -> TrainConfig:
    """The named preset with ``overrides`` applied (``None`` values are ignored)."""
    if name not in PRESETS:
        raise InfoGANError(f"unknown preset {name!r}; presets: {', '.join(PRESETS)}")
    return TrainConfig(preset=name, **PRESETS[name]).update(**overrides)


#: Fields added to ``TrainConfig`` after runs were saved without them, with the value that repeats such a run's
#: recipe: a resumed run goes on as it started, whatever today's default.
ADDED_FIELDS: dict[str, object] = {"pair_intensity": 0.0}


def resume_config(out: str | Path, **overrides) -> TrainConfig:
    """The configuration stored in ``out/checkpoint.safetensors``, with ``overrides`` applied. A field the stored
    configuration lacks takes its ``ADDED_FIELDS`` value (the recipe of the time), else today's default."""
    from torch_infogan.checkpoint import read_checkpoint_config

    path = Path(out) / "checkpoint.safetensors"
    try:
        stored = read_checkpoint_config(path)["train"]
        config = TrainConfig(**{**ADDED_FIELDS, **stored})
    except (KeyError, TypeError) as exc:
        raise InfoGANError(f"{path} holds no training configuration to resume from ({exc!r})") from exc
    return config.update(**overrides)
