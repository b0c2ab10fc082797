"""``--compile``: the compiled step computes what the eager step computes (CPU, inductor). Slow: compiling takes
minutes on two cores."""

import pytest
import torch

from torch_infogan.config import preset_config
from torch_infogan.trainer import Trainer

pytestmark = pytest.mark.slow


def _trainer(compile: bool) -> Trainer:
    return Trainer(preset_config("mnist", limit=256, batch_size=16, device="cpu", precision="fp32", widths=[8, 16],
                                 fc_dim=32, q_hidden=16, iterations=3, compile=compile))


def test_the_compiled_step_matches_the_eager_step():
    eager, compiled = _trainer(False), _trainer(True)
    for _ in range(3):
        expected, got = eager.step(), compiled.step()
        assert expected.keys() == got.keys()
        for name in expected:
            assert torch.allclose(got[name], expected[name], rtol=1e-4, atol=1e-5), name
    for a, b in zip(eager.generator.parameters(), compiled.generator.parameters()):
        assert torch.allclose(a, b, rtol=1e-3, atol=1e-5)
