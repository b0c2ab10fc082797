"""Checkpoints: one safetensors file holding G, D (with Q), optimizer state and a JSON config."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from torch_infogan.atomic import atomic_path
from torch_infogan.codes import list_codes
from torch_infogan.config import ConfigError
from torch_infogan.contrastive import ContrastiveRegularizer
from torch_infogan.errors import InfoGANError
from torch_infogan.labelled import LabelledSet
from torch_infogan.models import build_models
from torch_infogan.regularizer import InfoRegularizer

FORMAT = "torch-infogan.checkpoint"
FORMAT_VERSION = "1"


@dataclass
class Checkpoint:
    """A loaded checkpoint: rebuilt models (in eval mode), the attached regularizer and the config."""

    generator: nn.Module
    discriminator: nn.Module
    info: InfoRegularizer
    config: dict
    step: int
    optimizer_state: dict[str, dict] = field(default_factory=dict)
    path: Path | None = None
    extra: dict[str, torch.Tensor] = field(default_factory=dict)
    contrastive: ContrastiveRegularizer | None = None

    @property
    def trained_labels(self) -> LabelledSet | None:
        """The labelled images a semi-supervised run (``--labels``) trained on; None for an unsupervised run."""
        return LabelledSet.from_config(self.config.get("labelled"))


def save_checkpoint(path: str | Path, generator: nn.Module, discriminator: nn.Module, info: InfoRegularizer,
                    config: dict, step: int, optimizers: dict[str, torch.optim.Optimizer] | None = None,
                    extra: dict[str, torch.Tensor] | None = None) -> Path:
    """Write a checkpoint atomically (temporary file in the same folder, fsync, rename).

    ``config`` must hold what ``load_checkpoint`` needs to rebuild the models: ``model`` (builder
    config), plus anything else worth keeping (image shape, normalization, dataset, ...).
    """
    path = Path(path)
    tensors: dict[str, torch.Tensor] = {}
    for prefix, module in (("generator", generator), ("discriminator", discriminator)):
        for key, value in module.state_dict().items():
            tensors[f"{prefix}.{key}"] = value.detach().contiguous().cpu()
    for key, code in zip(info.keys, info.codes):  # learned categorical priors
        if getattr(code, "logits", None) is not None:
            tensors[f"prior.{key}"] = code.logits.detach().contiguous().cpu()
    for key, value in (extra or {}).items():
        tensors[f"state.{key}"] = value.detach().contiguous().cpu()
    optim_meta = {}
    for name, optimizer in (optimizers or {}).items():
        state = optimizer.state_dict()
        optim_meta[name] = {"param_groups": state["param_groups"], "scalars": {}}
        for index, entry in state["state"].items():
            for key, value in entry.items():
                if torch.is_tensor(value):
                    tensors[f"optimizer.{name}.{index}.{key}"] = value.detach().contiguous().cpu()
                else:
                    optim_meta[name]["scalars"][f"{index}.{key}"] = value
    full_config = dict(config)
    full_config["info"] = info.config()
    full_config["step"] = int(step)
    metadata = {"format": FORMAT, "format_version": FORMAT_VERSION, "config": json.dumps(full_config),
                "optimizers": json.dumps(optim_meta), "codes": info.spec, "step": str(int(step))}
    with atomic_path(path) as tmp:
        save_file(tensors, tmp, metadata=metadata)
    return path


def read_metadata(path: str | Path) -> dict[str, str]:
    """The checkpoint's metadata, validated (format and version), without loading tensors."""
    path = Path(path)
    if not path.is_file():
        raise InfoGANError(f"checkpoint not found: {path}")
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
    except Exception as exc:  # the parser's own error types vary by version: report them all as one
        raise InfoGANError(f"{path} is not a readable safetensors file: {_first_line(exc)}") from exc
    if metadata.get("format") != FORMAT:
        raise InfoGANError(f"{path} is a safetensors file but not a torch-infogan checkpoint (no format metadata)")
    if metadata.get("format_version") != FORMAT_VERSION:
        raise InfoGANError(f"{path}: checkpoint format_version {metadata.get('format_version')!r} is not supported "
                           f"(this version reads {FORMAT_VERSION})")
    return metadata


def read_checkpoint_config(path: str | Path) -> dict:
    """The checkpoint's configuration (what ``Checkpoint.config`` holds), without loading tensors."""
    try:
        return json.loads(read_metadata(path)["config"])
    except (KeyError, json.JSONDecodeError) as exc:
        raise InfoGANError(f"{path} holds no readable configuration ({exc!r})") from exc


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> Checkpoint:
    """Rebuild G, D and the attached Q from one checkpoint file (no pickle, no other file).

    The metadata is validated first; the models are built on the ``meta`` device and their shapes
    compared with the file's tensors before any memory is allocated for them.
    """
    path = Path(path)
    metadata = read_metadata(path)
    try:
        config = json.loads(metadata["config"])
        optim_meta = json.loads(metadata.get("optimizers", "{}"))
        info_cfg = dict(config["info"])
        model_cfg = dict(config["model"])
        step = int(config["step"])
        if not isinstance(config.get("image_shape"), list) or not isinstance(optim_meta, dict):
            raise ValueError("image_shape or optimizers missing")
    except (KeyError, TypeError, ValueError, json.JSONDecodeError) as exc:
        raise InfoGANError(f"{path}: checkpoint metadata is incomplete or malformed ({_first_line(exc)})") from exc
    _check_codes_registered(path, info_cfg.get("codes"))
    try:
        tensors = load_file(str(path))
    except Exception as exc:  # truncated or corrupted data section
        raise InfoGANError(f"{path}: cannot read checkpoint tensors: {_first_line(exc)}") from exc
    head = tensors.get(f"discriminator.{info_cfg.get('head_name', 'info_q')}.net.0.weight")
    if head is None or head.dim() != 2:
        raise InfoGANError(f"{path}: checkpoint holds no Q head weights")
    try:
        layer = info_cfg.pop("layer", None)
        cr_cfg = config.get("contrastive")
        with torch.device("meta"):
            generator, discriminator, info, _ = _rebuild(model_cfg, info_cfg, layer, int(head.shape[1]), cr_cfg)
        _check_shapes(path, tensors, generator, discriminator)
        generator, discriminator, info, contrastive = _rebuild(model_cfg, info_cfg, layer, int(head.shape[1]), cr_cfg)
    except InfoGANError as exc:
        raise InfoGANError(f"{path}: {exc}") from exc
    except (TypeError, ValueError, RuntimeError, KeyError, AttributeError) as exc:
        raise InfoGANError(f"{path}: checkpoint config does not rebuild the models ({_first_line(exc)})") from exc
    for prefix, module in (("generator", generator), ("discriminator", discriminator)):
        module.load_state_dict({k[len(prefix) + 1:]: v for k, v in tensors.items() if k.startswith(prefix + ".")})
    try:
        optimizer_state = _optimizer_state(optim_meta, tensors)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise InfoGANError(f"{path}: optimizer state is malformed ({_first_line(exc)})") from exc
    for key, code in zip(info.keys, info.codes):
        if getattr(code, "logits", None) is not None:
            stored = tensors.get(f"prior.{key}")
            if stored is None or tuple(stored.shape) != tuple(code.logits.shape):
                raise InfoGANError(f"{path}: code {key} has a learned prior, but the checkpoint holds no logits "
                                   f"of shape {tuple(code.logits.shape)} for it (prior.{key})")
            with torch.no_grad():
                code.logits.copy_(stored)
    extra = {k[len("state."):]: v for k, v in tensors.items() if k.startswith("state.")}
    generator.to(device).eval()
    discriminator.to(device).eval()
    for logits in info.prior_parameters():
        logits.data = logits.data.to(device)
    return Checkpoint(generator, discriminator, info, config, step, optimizer_state, path, extra, contrastive)


def check_resumable(ckpt: Checkpoint, spec: str, model_config: dict, contrastive: bool,
                    labelled: LabelledSet | None) -> None:
    """Refuse to resume ``ckpt`` into a run of other codes (``spec``), networks, contrastive setting or labelled
    images, or from a weights-only file."""
    path = ckpt.path
    if ckpt.info.spec != spec or ckpt.config["model"] != model_config:
        raise InfoGANError(f"{path} was trained with codes {ckpt.info.spec!r} and model {ckpt.config['model']}, "
                           f"which differ from this run's")
    if (ckpt.contrastive is not None) != contrastive:
        raise ConfigError("contrastive", f"differs from the run in {path}, which was trained "
                                         f"{'without' if ckpt.contrastive is None else 'with'} the contrastive "
                                         "regularizer; resume it with the same setting")
    if ckpt.trained_labels != labelled:
        raise InfoGANError(f"{path} was trained on other labelled images than these settings give: resume it "
                           "with the labels it was trained on (its own --labels, --labels-seed, --labels-file "
                           "and that file's contents)")
    if not {"d", "g"} <= set(ckpt.optimizer_state):
        raise InfoGANError(f"{path} holds no optimizer state (a weights-only file): it cannot be resumed")


def save_weights_only(src: str | Path, dst: str | Path) -> Path:
    """Copy checkpoint ``src`` to ``dst`` without the optimizer state and random streams that only resuming
    needs: G, D with Q, and the configuration (about a third of the size). ``dst`` loads with
    ``load_checkpoint``, exports and evaluates like ``src``, but cannot be resumed."""
    src, dst = Path(src), Path(dst)
    if dst.exists() and dst.resolve() == src.resolve():
        raise InfoGANError(f"the weights-only file would replace its source {src}; choose another output path")
    if not dst.parent.is_dir():
        raise InfoGANError(f"folder does not exist: {dst.parent}")
    ckpt = load_checkpoint(src)
    return save_checkpoint(dst, ckpt.generator, ckpt.discriminator, ckpt.info, ckpt.config, ckpt.step)


def _check_codes_registered(path: Path, spec) -> None:
    """Refuse, in one line, a checkpoint whose codes include one not registered in this process."""
    if not isinstance(spec, str):
        return  # a malformed spec is reported by parse_codes when the models are rebuilt
    registered = set(list_codes())
    names = [token.split(":", 1)[0].strip() for token in spec.split(",")]
    missing = list(dict.fromkeys(name for name in names if name and name not in registered))
    if missing:
        name = missing[0]
        others = f" (and {', '.join(map(repr, missing[1:]))})" if len(missing) > 1 else ""
        raise InfoGANError(f"checkpoint {path} uses code {name!r}{others}, which is not registered in this process; "
                           f"import the module that registers it (@register_code({name!r})) before loading")


def _rebuild(model_cfg: dict, info_cfg: dict, layer, in_features: int, cr_cfg: dict | None = None):
    info = InfoRegularizer(**info_cfg)
    generator, discriminator = build_models(model_cfg)
    info.attach(discriminator, layer, in_features=in_features)
    contrastive = None
    if cr_cfg is not None:
        cr_cfg = dict(cr_cfg)
        image_shape = cr_cfg.pop("image_shape")
        contrastive = ContrastiveRegularizer(info, **cr_cfg).attach(discriminator, image_shape)
    return generator, discriminator, info, contrastive


def _check_shapes(path: Path, tensors: dict, generator: nn.Module, discriminator: nn.Module) -> None:
    for prefix, module in (("generator", generator), ("discriminator", discriminator)):
        expected = {f"{prefix}.{k}": tuple(v.shape) for k, v in module.state_dict().items()}
        stored = {k: tuple(v.shape) for k, v in tensors.items() if k.startswith(prefix + ".")}
        missing = sorted(set(expected) - set(stored))
        unexpected = sorted(set(stored) - set(expected))
        wrong = sorted(k for k in set(expected) & set(stored) if expected[k] != stored[k])
        if missing or unexpected or wrong:
            detail = (f"missing {missing[:3]}" if missing else f"unexpected {unexpected[:3]}" if unexpected
                      else f"{wrong[0]} is {stored[wrong[0]]}, the model needs {expected[wrong[0]]}")
            raise InfoGANError(f"{prefix} weights do not match the rebuilt model: {detail}")


def _optimizer_state(optim_meta: dict, tensors: dict) -> dict:
    out = {}
    for name, meta in optim_meta.items():
        state: dict[int, dict] = {}
        for key, value in tensors.items():
            if key.startswith(f"optimizer.{name}."):
                index, item = key[len(f"optimizer.{name}."):].split(".", 1)
                state.setdefault(int(index), {})[item] = value
        for key, value in meta.get("scalars", {}).items():
            index, item = key.split(".", 1)
            state.setdefault(int(index), {})[item] = value
        out[name] = {"state": state, "param_groups": list(meta["param_groups"])}
    return out


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
