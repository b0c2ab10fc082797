"""CUDA paths: bf16 autocast with fp32 MI terms, fused Adam, ONNX on the GPU provider. Run with -m gpu."""

import pytest
import torch

from torch_infogan.config import preset_config
from torch_infogan.trainer import Trainer

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


def test_bf16_training_steps_on_cuda():
    trainer = Trainer(preset_config("mnist", device="cuda", precision="bf16", limit=1024, batch_size=64,
                                    iterations=5))
    for _ in range(5):
        scalars = trainer.step()
    assert all(v.device.type == "cuda" and torch.isfinite(v) for v in scalars.values())
    assert trainer.info.bound_tensor().dtype == torch.float32
    assert trainer.opt_d.defaults["fused"]


def test_checkpoint_from_cuda_loads_on_cpu(tmp_path):
    from torch_infogan.checkpoint import load_checkpoint

    trainer = Trainer(preset_config("mnist", device="cuda", limit=512, batch_size=64, iterations=2))
    trainer.step()
    ckpt = load_checkpoint(trainer.save(tmp_path / "c.safetensors"))
    assert next(ckpt.generator.parameters()).device.type == "cpu"
