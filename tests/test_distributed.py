"""torchrun with two CPU processes (gloo): ranks stay identical, only rank 0 writes, the checkpoint loads."""

import json
import os
import subprocess
import sys

import pytest

from torch_infogan.checkpoint import load_checkpoint

CHECK = r'''
import json, os, sys
import torch
import torch.distributed as dist
from torch_infogan import trainer as trainer_module, training
from torch_infogan.config import preset_config

out, report, overrides, data = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), sys.argv[4]
dist.init_process_group("gloo")  # ours, so train() leaves it alive for the all_gather below
config = preset_config("mnist", data=f"idx:{data}", batch_size=16, iterations=6, log_every=3, checkpoint_every=3,
                       device="cpu", **overrides)
trainers = []
original = trainer_module.Trainer.__init__

def keep(self, *args, **kwargs):
    original(self, *args, **kwargs)
    trainers.append(self)

trainer_module.Trainer.__init__ = keep
training.train(config, out)
trainer = trainers[0]
# Parameters, not buffers: with per-rank BatchNorm the running statistics of the last step are each rank's own.
params = [*trainer.generator.parameters(), *trainer.discriminator.parameters(), *trainer.info.prior_parameters()]
flat = torch.cat([p.detach().flatten() for p in params])
gathered = [torch.zeros_like(flat) for _ in range(dist.get_world_size())]
dist.all_gather(gathered, flat)
if dist.get_rank() == 0:
    json.dump({"world": dist.get_world_size(), "max_diff": float((gathered[0] - gathered[1]).abs().max()),
               "step": trainer.step_index}, open(report, "w"))
dist.destroy_process_group()
'''


@pytest.mark.parametrize("overrides", [{}, {"contrastive": 1.0, "contrastive_start": 3},
                                       {"codes": "cat:10:prior=learned,unif:2"}],
                         ids=["infogan", "contrastive", "learned-prior"])
def test_two_cpu_processes_stay_identical_and_rank0_writes_once(tmp_path, digits_512, overrides):
    """With the contrastive term too: its classifier (inside D) gets a gradient in every backward, before
    and after G's term starts, as DistributedDataParallel requires. With a learned prior, whose logits live
    outside G's DistributedDataParallel, the ranks' logits stay identical too."""
    script = tmp_path / "check.py"
    script.write_text(CHECK)
    out, report = tmp_path / "run", tmp_path / "report.json"
    torchrun = os.path.join(os.path.dirname(sys.executable), "torchrun")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([torchrun, "--standalone", "--nproc-per-node", "2", str(script), str(out),
                           str(report), json.dumps(overrides), str(digits_512)], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(report.read_text())
    assert result["world"] == 2 and result["step"] == 6
    assert result["max_diff"] == 0.0  # DDP keeps the replicas bit-identical
    files = sorted(p.name for p in out.iterdir())
    assert files.count("checkpoint.safetensors") == 1
    assert not [f for f in files if f.endswith(".tmp")]
    ckpt = load_checkpoint(out / "checkpoint.safetensors")
    assert ckpt.step == 6
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [3, 6]  # one writer: no duplicated lines
    assert ckpt.config["train"]["batch_size"] == 16
    if "contrastive" in overrides:
        assert ckpt.contrastive is not None
        assert all("loss_cr" in json.loads(line) for line in lines)


def test_torchrun_runs_the_cli_module(tmp_path, digits_512):
    torchrun = os.path.join(os.path.dirname(sys.executable), "torchrun")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([torchrun, "--standalone", "--nproc-per-node", "2", "-m", "torch_infogan.cli",
                           "train", "--out", str(tmp_path / "cli"), "--data", f"idx:{digits_512}", "--batch-size", "16",
                           "--iterations", "4", "--log-every", "2", "--device", "cpu", "--quiet"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("next: infogan evaluate") == 1  # only rank 0 reports
    assert load_checkpoint(tmp_path / "cli" / "checkpoint.safetensors").step == 4


FAILS_EARLY = r'''
import json, os, sys
import torch.distributed as dist
from torch_infogan import training
from torch_infogan.config import preset_config
from torch_infogan.errors import InfoGANError

config = preset_config("mnist", limit=20, batch_size=16, iterations=2, device="cpu")
try:
    training.train(config, sys.argv[1])
except InfoGANError as exc:
    report = f"{sys.argv[2]}.{os.environ['RANK']}.json"
    json.dump({"error": str(exc), "group_alive": dist.is_initialized()}, open(report, "w"))
'''


def test_a_run_that_fails_to_start_releases_the_process_group_it_created(tmp_path):
    script = tmp_path / "fails.py"
    script.write_text(FAILS_EARLY)
    torchrun = os.path.join(os.path.dirname(sys.executable), "torchrun")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([torchrun, "--standalone", "--nproc-per-node", "2", str(script), str(tmp_path / "run"),
                           str(tmp_path / "report")], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for rank in (0, 1):
        result = json.loads((tmp_path / f"report.{rank}.json").read_text())
        assert "fewer than one batch" in result["error"]  # 20 images, 16 per rank x 2 ranks
        assert result["group_alive"] is False
    assert not (tmp_path / "run").exists()
