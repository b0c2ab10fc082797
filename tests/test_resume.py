"""Crash safety: SIGKILL then --resume continues the run exactly; SIGINT saves and exits 130; divergence stops."""

import json
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from torch_infogan.checkpoint import read_metadata
from torch_infogan.config import preset_config
from torch_infogan.trainer import TrainingStopped
from torch_infogan.training import train

ARGS = ["--batch-size", "32", "--iterations", "40", "--checkpoint-every", "10", "--log-every", "5", "--quiet"]


def _train(out, data):
    return [sys.executable, "-m", "torch_infogan.cli", "train", "--out", str(out), "--data", f"idx:{data}", *ARGS]


def _wait_for_checkpoint(proc, path, min_step, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, "training ended before it could be interrupted"
        if path.is_file():
            try:
                if int(read_metadata(path)["step"]) >= min_step:
                    return
            except Exception:
                pass
        time.sleep(0.05)
    raise AssertionError("no checkpoint appeared")


def _steps(out):
    return [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_sigkill_then_resume_matches_an_uninterrupted_run(tmp_path, digits_512):
    whole, crashed = tmp_path / "whole", tmp_path / "crashed"
    subprocess.run(_train(whole, digits_512), check=True, capture_output=True)

    proc = subprocess.Popen(_train(crashed, digits_512), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait_for_checkpoint(proc, crashed / "checkpoint.safetensors", 10)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = int(read_metadata(crashed / "checkpoint.safetensors")["step"])
    assert 10 <= killed_at < 40

    resumed = subprocess.run([sys.executable, "-m", "torch_infogan.cli", "train", "--resume", str(crashed), "--quiet"],
                             capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert int(read_metadata(crashed / "checkpoint.safetensors")["step"]) == 40
    assert _steps(crashed) == list(range(5, 41, 5)) == _steps(whole)  # continues, no restart from 0

    a, b = load_file(str(whole / "checkpoint.safetensors")), load_file(str(crashed / "checkpoint.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6, msg=key)
    curve_a = [json.loads(l)["loss_d"] for l in (whole / "metrics.jsonl").read_text().splitlines()]
    curve_b = [json.loads(l)["loss_d"] for l in (crashed / "metrics.jsonl").read_text().splitlines()]
    assert curve_a == pytest.approx(curve_b, rel=1e-4, abs=1e-5)


@pytest.mark.parametrize("sig, status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_saves_a_checkpoint_and_exits(tmp_path, digits_512, sig, status):
    out = tmp_path / "run"
    proc = subprocess.Popen(_train(out, digits_512), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for_checkpoint(proc, out / "checkpoint.safetensors", 10)
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == status, stderr
    assert "checkpoint saved" in stderr and "Traceback" not in stderr
    assert f"infogan train --resume {out}" in stderr  # the hint names the option as the CLI takes it
    step = int(read_metadata(out / "checkpoint.safetensors")["step"])
    assert 10 <= step < 40
    assert _steps(out)[-1] <= step + 5


def test_divergence_stops_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    from torch_infogan import trainer as training

    config = preset_config("mnist", limit=256, batch_size=32, iterations=30, checkpoint_every=10, log_every=5)
    original = training.Trainer._d_phase

    def blow_up(self, real):
        if self.step_index == 13:  # the 14th step goes wrong
            with torch.no_grad():
                next(self.generator.parameters()).fill_(float("inf"))
        return original(self, real)

    monkeypatch.setattr(training.Trainer, "_d_phase", blow_up)
    with pytest.raises(TrainingStopped, match=r"non-finite loss or parameters at step 14;") as stopped:
        train(config, tmp_path)
    assert stopped.value.signum is None and stopped.value.step == 14
    path = tmp_path / "checkpoint.safetensors"
    assert int(read_metadata(path)["step"]) == 10  # the last good one, untouched
    assert all(torch.isfinite(t).all() for t in load_file(str(path)).values() if t.is_floating_point())


def test_skip_mode_survives_a_bad_step(tmp_path, monkeypatch):
    from torch_infogan import trainer as training

    config = preset_config("mnist", limit=256, batch_size=32, iterations=12, log_every=4, checkpoint_every=12,
                           on_nonfinite="skip")
    original = training.Trainer._g_phase

    def poisoned(self, batch, scalars):
        original(self, batch, scalars)
        if self.step_index == 5:
            for p in self.generator.parameters():
                p.grad = torch.full_like(p, float("nan"))
            scalars["g/total"] = scalars["g/total"] * float("nan")

    monkeypatch.setattr(training.Trainer, "_g_phase", poisoned)
    result = train(config, tmp_path)
    assert result.steps == 12
    assert all(torch.isfinite(t).all() for t in load_file(str(tmp_path / "checkpoint.safetensors")).values()
               if t.is_floating_point())
    assert json.loads(read_metadata(tmp_path / "checkpoint.safetensors")["config"])["skipped"] == 1


def test_skip_mode_skips_a_bad_real_batch_for_both_players(tmp_path, monkeypatch):
    from torch_infogan import trainer as training

    config = preset_config("mnist", limit=256, batch_size=32, iterations=8, log_every=4, checkpoint_every=8,
                           on_nonfinite="skip")
    original = training.Trainer.next_batch

    def poisoned(self):
        batch = original(self)
        return torch.full_like(batch, float("nan")) if self.step_index == 3 else batch

    monkeypatch.setattr(training.Trainer, "next_batch", poisoned)
    result = train(config, tmp_path)
    assert result.steps == 8
    tensors = load_file(str(tmp_path / "checkpoint.safetensors"))
    assert all(torch.isfinite(t).all() for t in tensors.values() if t.is_floating_point())
    assert json.loads(read_metadata(tmp_path / "checkpoint.safetensors")["config"])["skipped"] == 1
