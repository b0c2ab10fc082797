"""docs/api.md's Laplace code, registered in a user script, goes through training, pictures, evaluation and reload."""

import json
import subprocess
import sys

from conftest import ROOT

SCRIPT = ROOT / "examples" / "laplace_code.py"


def _run(*args):
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=600)


def test_user_code_trains_draws_evaluates_and_reloads(tmp_path):
    out = tmp_path / "run"
    done = _run("--out", str(out), "--iterations", "3", "--limit", "256", "--batch-size", "32")
    assert done.returncode == 0, done.stderr[-2000:]
    assert {p.name for p in out.glob("traversal_*.png")} == {"traversal_cat0.png", "traversal_laplace1_0.png",
                                                             "traversal_laplace1_1.png"}
    evaluation = json.loads((out / "evaluation.json").read_text())
    assert list(evaluation["codes"]) == ["cat0"]                 # accuracy applies to the categorical code
    assert set(evaluation["bounds"]) == {"cat0", "laplace1"}     # the bound applies to every code
    reloaded = _run("--reload", str(out / "checkpoint.safetensors"))
    assert reloaded.returncode == 0, reloaded.stderr[-2000:]
    assert "codes cat:10,laplace:2" in reloaded.stdout
    unregistered = subprocess.run(
        [sys.executable, "-c", f"from torch_infogan import load_checkpoint; load_checkpoint({str(out / 'checkpoint.safetensors')!r})"],
        capture_output=True, text=True, timeout=600)
    assert unregistered.returncode != 0 and "'laplace', which is not registered" in unregistered.stderr
