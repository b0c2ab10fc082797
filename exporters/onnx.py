"""Export the trained encoder (or generator) to one self-contained ONNX file and check it against torch."""

from __future__ import annotations

import hashlib
import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from torch_infogan.atomic import atomic_path
from torch_infogan.checkpoint import Checkpoint, load_checkpoint
from torch_infogan.errors import InfoGANError
from torch_infogan.evaluation import learned_priors
from torch_infogan.exporters.encoder import Encoder, GeneratorExport, output_names


@dataclass
class OnnxReport:
    """Where the model went and how closely onnxruntime matched torch."""

    path: Path
    max_abs_diff: float
    provider: str
    outputs: list[str]


def sha256(path: str | Path) -> str:
    """Hex sha256 of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def onnx_providers() -> list[str]:
    """onnxruntime execution providers, CUDA first when onnxruntime-gpu and a GPU are present."""
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise InfoGANError("onnxruntime is not installed: pip install 'torch-infogan[cpu]' "
                           "(or '[gpu]' for onnxruntime-gpu)") from exc
    available = ort.get_available_providers()
    wanted = ["CUDAExecutionProvider"] if torch.cuda.is_available() else []
    return [p for p in wanted if p in available] + ["CPUExecutionProvider"]


def export_onnx(checkpoint: str | Path | Checkpoint, out: str | Path, part: str = "encoder",
                tolerance: float = 1e-4, check_batch: int = 16, opset: int | None = None) -> OnnxReport:
    """Write ``part`` (``encoder`` or ``generator``) of a checkpoint to ``out`` as one ONNX file.

    The file has a dynamic batch axis, named inputs/outputs and metadata properties (input shape, value
    range, normalization, codes spec, checkpoint sha256). After writing, ``onnx.checker`` validates it and
    onnxruntime's outputs are compared with torch's on a batch; a difference above ``tolerance`` is an error
    and no file is left behind.
    """
    import onnx

    out = Path(out)
    if part not in ("encoder", "generator"):
        raise InfoGANError(f"--part must be encoder or generator, got {part!r}")
    ckpt = checkpoint if isinstance(checkpoint, Checkpoint) else load_checkpoint(checkpoint)
    info, config = ckpt.info, ckpt.config
    if part == "encoder":
        module = Encoder(info).eval()
        example = torch.rand(2, *config["image_shape"])
        input_name, names = "images", output_names(info)
    else:
        module = GeneratorExport(ckpt.generator).eval()
        example, _ = info.draw(2, generator=torch.Generator().manual_seed(0))
        input_name, names = "latent", ["images"]
    ckpt.generator.eval()
    ckpt.discriminator.eval()
    batch = torch.export.Dim("batch", min=1)
    with atomic_path(out) as tmp:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(module, (example,), dynamo=True, input_names=[input_name],
                                        output_names=names, dynamic_shapes=({0: batch},),
                                        opset_version=opset, verbose=False)
        model = program.model_proto
        meta = {
            "torch_infogan.part": part,
            "torch_infogan.codes": info.spec,
            "torch_infogan.input_shape": str(["batch", *config["image_shape"]]) if part == "encoder"
            else str(["batch", info.latent_dim]),
            "torch_infogan.value_range": str(config.get("value_range", [0.0, 1.0])),
            "torch_infogan.normalization": "uint8 / 255" if config.get("normalization", "unit") == "unit"
            else "uint8 / 127.5 - 1",
            "torch_infogan.outputs": ",".join(names),
            "torch_infogan.checkpoint_sha256": sha256(ckpt.path) if ckpt.path else "",
        }
        priors = learned_priors(info)
        if priors:  # JSON: {code key: [class probabilities]}
            meta["torch_infogan.priors"] = json.dumps(priors)
        for key, value in meta.items():
            prop = model.metadata_props.add()
            prop.key, prop.value = key, value
        onnx.save_model(model, tmp, save_as_external_data=False)
        onnx.checker.check_model(tmp, full_check=True)
        diff, provider = _compare(module, tmp, input_name, info, config, part, check_batch)
        if not diff <= tolerance:
            raise InfoGANError(f"onnxruntime and torch disagree by {diff:.3g} (> tolerance {tolerance:g}); "
                               "nothing written")
    return OnnxReport(out, diff, provider, names)


def _compare(module, path, input_name, info, config, part, n) -> tuple[float, str]:
    import onnxruntime as ort

    providers = onnx_providers()
    session = ort.InferenceSession(str(path), providers=providers)
    gen = torch.Generator().manual_seed(1)
    if part == "encoder":
        x = torch.rand(n, *config["image_shape"], generator=gen)
    else:
        x = info.draw(n, generator=gen)[0]
    with torch.no_grad():
        expected = module(x)
    expected = expected if isinstance(expected, tuple) else (expected,)
    got = session.run(None, {input_name: x.numpy()})
    diff = max(float(np.max(np.abs(e.numpy() - g))) for e, g in zip(expected, got))
    return diff, session.get_providers()[0]
