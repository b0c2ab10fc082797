"""The examples/ compatibility matrix: every GAN style runs with the plug-in (fast) and learns the categorical code (slow)."""

import importlib.util
import json
import math
import os
import subprocess
import sys

import pytest
import torch

from conftest import ROOT
from torch_infogan import InfoRegularizer

EXAMPLES = ROOT / "examples"

# One user-style script per GAN style; ddp_autocast.py runs under torchrun (below).
ROWS = ["dcgan", "wgan_gp", "sngan_hinge", "lsgan", "r1_stylegan2", "diffaugment", "conditional_projection"]

def _load(name):
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _quiet(*args, **kwargs):
    pass


def _torchrun(timeout, *args):
    torchrun = os.path.join(os.path.dirname(sys.executable), "torchrun")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([torchrun, "--standalone", "--nproc-per-node", "2", str(EXAMPLES / "ddp_autocast.py"),
                           *args], capture_output=True, text=True, env=env, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert len(lines) == 1, proc.stdout[-3000:]  # rank 0 reports, once
    return json.loads(lines[0][len("RESULT "):])


def _check(result, steps):
    assert result["steps"] == steps
    assert math.isfinite(result["bound"]) and result["seconds"] > 0


# -- fast: each row runs a few steps ---------------------------------------------------------------
@pytest.mark.parametrize("name", ROWS)
def test_recipe_runs(name):
    _check(_load(name).main(steps=3, batch_size=16, log=_quiet), 3)


def test_ddp_autocast_recipe_runs_under_torchrun():
    result = _torchrun(300, "--steps", "3", "--batch-size", "16")
    _check(result, 3)
    assert result["world_size"] == 2


def test_compiled_d_recipe_runs():
    _check(_load("compiled_d").main(steps=3, batch_size=16, log=_quiet), 3)


# -- slow: each row at its default steps learns the categorical code ------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("name", ROWS)
def test_recipe_learns_the_categorical_code(name):
    module = _load(name)
    result = module.main(log=_quiet)
    print(name, result)
    assert result["bound"] >= 2.0  # nats; ln 10 = 2.303 is the ceiling


@pytest.mark.slow
def test_ddp_autocast_recipe_learns_the_categorical_code():
    result = _torchrun(900)
    print("ddp_autocast", result)
    assert result["bound"] >= 2.0


@pytest.mark.slow
def test_compiled_d_recipe_learns_the_categorical_code():
    result = _load("compiled_d").main(log=_quiet)
    print("compiled_d", result)
    assert result["bound"] >= 2.0


def test_few_labels_recipe_runs_and_reports_plain_accuracy_on_the_unlabelled_digits():
    result = _load("few_labels").main(steps=3, batch_size=16, labels_per_class=2, log=_quiet)
    _check(result, 3)
    assert result["labels"] == 20 and 0 <= result["accuracy"] <= 1


def test_garbage_collected_during_compilation_does_not_break_the_compiled_d(monkeypatch):
    """Regularizers dropped without ``remove()`` and collected while Dynamo builds its guards (a test run's
    earlier tests leave such garbage): the compiled D still runs, as Dynamo traced no weak reference."""
    import gc

    from torch._dynamo import guards

    example = _load("compiled_d")
    build = guards.CheckFunctionManager.__init__

    def collect_then_build(self, *args, **kwargs):
        gc.collect()
        return build(self, *args, **kwargs)

    monkeypatch.setattr(guards.CheckFunctionManager, "__init__", collect_then_build)
    gc.disable()
    try:
        for _ in range(3):
            D = example.Discriminator()
            InfoRegularizer("cat:10", noise_dim=4).attach(D, layer="act", example=torch.zeros(2, 1, 28, 28))
            del D  # a reference cycle (D's hooks hold the regularizer), left to the collector
        _check(example.main(steps=3, batch_size=16, log=_quiet), 3)
    finally:
        gc.enable()
