"""The `infogan` command end to end on a slice of mnist-10k, and its errors."""

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from conftest import MNIST_10K
from torch_infogan.checkpoint import load_checkpoint
from torch_infogan.data import load_data
from torch_infogan.cli.main import app
from torch_infogan.runtime import resolve_precision

runner = CliRunner()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    result = runner.invoke(app, ["train", "--out", str(out), "--limit", "256", "--iterations", "6",
                                 "--batch-size", "32", "--log-every", "3", "--quiet"])
    assert result.exit_code == 0, result.output
    return out, result.output


def test_train_writes_every_output(trained):
    out, output = trained
    for name in ["checkpoint.safetensors", "metrics.jsonl", "samples.png", "traversal_cat0.png",
                 "traversal_unif1_0.png", "traversal_unif1_1.png", "mi_bounds.png", "report.md",
                 "evaluation.json", "confusion_cat0.png"]:
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [3, 6]
    assert set(records[-1]["mi"]) == {"cat0", "unif1"}
    assert "next: infogan evaluate" in output
    report = (out / "report.md").read_text()
    assert "beyond the GAN and its MI term: D's images shifted by up to 2 px, IIC weight 1, their copies slanted by up to 0.4, their copies' tones changed by a gamma of up to e^0.7, G's categories named on turned, scaled and slanted copies (weight 1)\n" in report


def test_train_progress_bar_rates_count_timed_steps_only(tmp_path):
    import re

    result = runner.invoke(app, ["train", "--out", str(tmp_path / "run"), "--limit", "256", "--iterations", "6",
                                 "--batch-size", "32", "--log-every", "3"])
    assert result.exit_code == 0, result.output
    assert "3/6" in result.output and "6/6" in result.output
    rates = [float(rate) for rate in re.findall(r"([0-9.]+)it/s", result.output)]
    rates += [1 / float(seconds) for seconds in re.findall(r"([0-9.]+)s/it", result.output)]  # a slow machine
    # The bar starts at the first report: no rate from steps it did not time (it read millions of it/s).
    assert rates and max(rates) < 1000, result.output


@pytest.mark.parametrize("images_per_s,expected", [(100.0, True), (100000.0, False)])
def test_train_says_how_long_a_long_run_takes_and_how_to_shorten_it(tmp_path, monkeypatch, images_per_s, expected):
    from types import SimpleNamespace

    from torch_infogan import training
    from torch_infogan.errors import InfoGANError

    def fake_train(config, out, progress=None, started=None, **kwargs):
        started(SimpleNamespace(world=1, full_data=SimpleNamespace(describe=lambda: "fake data")))
        progress(100, 3000, {"images_per_s": images_per_s, "loss_d": 1.0, "loss_g": 1.0, "mi_fitted": {}})
        raise InfoGANError("stopped by the test")

    monkeypatch.setattr(training, "train", fake_train)
    result = runner.invoke(app, ["train", "--out", str(tmp_path / "run")])
    assert result.exit_code != 0 and "stopped by the test" in result.output
    # 2,900 steps of 128 images at 100 images/s: about 62 minutes; 15 minutes hold 703 steps.
    assert ("this run needs about 62 more minutes at 100 images/s on this machine; --iterations 703 would take "
            "about 15" in result.output) == expected, result.output


def test_checkpoint_reloads_in_a_fresh_process(trained):
    out, _ = trained
    code = (
        "import sys, torch; from torch_infogan.checkpoint import load_checkpoint\n"
        f"c = load_checkpoint({str(out / 'checkpoint.safetensors')!r})\n"
        "torch.manual_seed(0); z, _ = c.info.sample(4)\n"
        "print(c.step, c.info.spec, float(c.generator(z).detach().sum()))\n"
    )
    fresh = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    ckpt = load_checkpoint(out / "checkpoint.safetensors")
    torch.manual_seed(0)
    z, _ = ckpt.info.sample(4)
    assert fresh == [str(ckpt.step), ckpt.info.spec, str(float(ckpt.generator(z).detach().sum()))]
    assert ckpt.step == 6 and ckpt.info.spec == "cat:10,unif:2"
    assert set(ckpt.optimizer_state) == {"d", "g"}
    assert ckpt.optimizer_state["d"]["state"]


def test_evaluate_matches_the_end_of_training(trained, tmp_path):
    out, _ = trained
    result = runner.invoke(app, ["evaluate", str(out / "checkpoint.safetensors"), "--json"])
    assert result.exit_code == 0, result.output
    evaluated = json.loads(result.output)
    at_training = json.loads((out / "evaluation.json").read_text())
    for key in ("accuracy", "nmi", "ari"):
        assert evaluated["codes"]["cat0"][key] == pytest.approx(at_training["codes"]["cat0"][key], abs=1e-9)
    assert evaluated["bounds"] == pytest.approx(at_training["bounds"], abs=1e-5)
    table = runner.invoke(app, ["evaluate", str(out / "checkpoint.safetensors"), "--out", str(tmp_path / "pictures")])
    assert "accuracy" in table.output and "cat0" in table.output
    assert [p.name for p in (tmp_path / "pictures").iterdir()] == ["confusion_cat0.png"]  # as training drew it


def test_evaluate_data_without_labels_prints_the_label_free_scores(trained, tmp_path):
    out, _ = trained
    shutil.copy(MNIST_10K / "images-idx3-ubyte.gz", tmp_path)  # the images alone: no labels file
    args = ["evaluate", str(out / "checkpoint.safetensors"), "--data", f"idx:{tmp_path}"]
    table = runner.invoke(app, args + ["--out", str(tmp_path / "pictures")])
    assert table.exit_code == 0, table.output
    with_labels = json.loads((out / "evaluation.json").read_text())["codes"]["cat0"]
    row = next(line for line in table.output.splitlines() if line.startswith("cat0"))
    assert row.split() == ["cat0", "-", "-", "-", f"{with_labels['real_mi']:.4f}", f"{with_labels['agreement']:.4f}",
                           "(no", "labels)"]  # the label-free scores as with labels, the label columns empty
    assert not list((tmp_path / "pictures").glob("confusion_*.png"))  # no confusion matrix without labels


def test_rank_orders_runs_by_agreement_and_names_the_best(trained, tiny_checkpoint, tmp_path):
    out, _ = trained
    images = load_data().images[:600].numpy()  # a small IDX folder of real digits, without labels
    header = bytes([0, 0, 8, 3]) + b"".join(n.to_bytes(4, "big") for n in (600, 28, 28))
    (tmp_path / "images-idx3-ubyte").write_bytes(header + images.tobytes())
    runs = [str(tiny_checkpoint), str(out / "checkpoint.safetensors")]
    data = ["--data", f"idx:{tmp_path}"]
    result = runner.invoke(app, ["rank", *runs, *data, "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)  # the progress bar goes to stderr
    assert sorted(row["checkpoint"] for row in rows) == sorted(runs)
    assert [row["agreement"] for row in rows] == sorted((row["agreement"] for row in rows), reverse=True)
    assert all("accuracy" not in row for row in rows)  # no labels here
    for row in rows:  # the same score evaluate prints
        evaluated = json.loads(runner.invoke(app, ["evaluate", row["checkpoint"], *data, "--json"]).output)
        assert row["agreement"] == evaluated["codes"]["cat0"]["agreement"]
    # a few steps in, Q is unsure of every digit: its runs are marked as not comparable by agreement
    assert all(not row["informative"] and row["real_mi"] < 0.5 * math.log(10) for row in rows)
    table = runner.invoke(app, ["rank", *runs, *data])
    assert f"best without labels: {rows[0]['checkpoint']}" in table.output
    assert table.output.count("agreement not comparable") == 2
    bad = runner.invoke(app, ["rank", runs[0], "--code", "unif1", *data])
    assert bad.exit_code != 0 and "no categorical code 'unif1'" in bad.output


def test_sample_and_traverse(trained, tmp_path):
    out, _ = trained
    ckpt = str(out / "checkpoint.safetensors")
    assert runner.invoke(app, ["sample", ckpt, "-o", str(tmp_path / "s.png"), "-n", "16"]).exit_code == 0
    assert (tmp_path / "s.png").is_file()
    result = runner.invoke(app, ["traverse", ckpt, "-o", str(tmp_path / "t"), "--code", "unif1"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "t").iterdir()) == ["traversal_unif1_0.png", "traversal_unif1_1.png"]


def test_auto_precision_follows_the_cpu(trained):
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.is_file():
        pytest.skip("no /proc/cpuinfo to read the CPU's flags from")
    flags = cpuinfo.read_text().split()
    expected = "bf16" if "amx_bf16" in flags or "avx512_bf16" in flags else "fp32"  # AMX or AVX512_BF16
    cpu = torch.device("cpu")
    assert resolve_precision("auto", cpu) == expected
    assert resolve_precision("fp32", cpu) == "fp32" and resolve_precision("bf16", cpu) == "bf16"
    out, _ = trained  # the fixture's run used the default, auto, and the report names what it resolved to
    assert f"precision {expected}:" in (out / "report.md").read_text()


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "torch_infogan.cli", *args], capture_output=True, text=True)


@pytest.mark.parametrize("args, message", [
    (["train", "--data", "nosuchset"], "unknown dataset 'nosuchset'"),
    (["train", "--codes", "cat:10,foo:2"], "bad code spec token 'foo:2'"),
    (["train", "--data", "idx:/no/such/folder"], "IDX folder not found"),
    (["evaluate", "/no/such/checkpoint.safetensors"], "checkpoint not found"),
    (["train", "--preset", "nope"], "unknown preset 'nope'"),
    (["train", "--precision", "fp16"], "precision must be auto, fp32 or bf16"),
    (["train", "--translate", "-1"], "--translate must be >= 0 pixels"),
    (["train", "--rotate", "200"], "--rotate must be between 0 and 180 degrees"),
    (["train", "--consistency", "-1"], "--consistency must be >= 0"),
    (["train", "--iic", "-1"], "--iic must be >= 0"),
    (["train", "--pair-shear", "1.5"], "--pair-shear must be between 0 and 1"),
    (["train", "--pair-intensity", "3"], "--pair-intensity must be between 0 and 2"),
    (["train", "--invariance", "-1"], "--invariance must be >= 0"),
    (["train", "--codes", "unif:2", "--limit", "256"], "--iic needs a categorical code"),
    (["train", "--batch-size", "1"], "--batch-size must be >= 2"),
    (["train", "--lr-g", "0"], "--lr-g must be > 0"),
])
def test_bad_arguments_exit_nonzero_with_one_line(tmp_path, args, message):
    result = runner.invoke(app, [*args, *(["--out", str(tmp_path / "o")] if args[0] == "train" else [])])
    assert result.exit_code == 2 and isinstance(result.exception, SystemExit), result.exception  # no traceback
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert not (tmp_path / "o").exists()  # nothing half-written


def test_a_bad_argument_in_a_real_process_is_one_line(tmp_path):
    proc = _cli("train", "--lr-g", "0", "--out", str(tmp_path / "o"))
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == ["error: --lr-g must be > 0, got 0.0"]
    assert not (tmp_path / "o").exists()


def test_train_refuses_to_overwrite_a_run(trained):
    out, _ = trained
    result = runner.invoke(app, ["train", "--out", str(out), "--iterations", "1", "--quiet"])
    assert result.exit_code == 2
    assert "already holds a run" in result.output and "--resume" in result.output


def test_no_arguments_shows_help():
    proc = _cli()
    assert "train" in proc.stdout + proc.stderr and "evaluate" in proc.stdout + proc.stderr


def test_debug_shows_the_traceback_with_its_chain(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file")
    plain = _cli("evaluate", str(bad))
    assert plain.returncode == 2 and "Traceback" not in plain.stderr
    debug = _cli("--debug", "evaluate", str(bad))
    assert debug.returncode != 0 and "Traceback" in debug.stderr
    assert "InfoGANError" in debug.stderr and "direct cause" in debug.stderr  # the parser's error is kept


def test_weights_only_copy_loads_and_refuses_to_resume(trained, tmp_path):
    from torch_infogan.cli.export import app as export_app
    from torch_infogan.config import TrainConfig
    from torch_infogan.errors import InfoGANError
    from torch_infogan.trainer import Trainer

    out, _ = trained
    source = out / "checkpoint.safetensors"
    target = tmp_path / "weights.safetensors"
    result = runner.invoke(export_app, ["weights", str(source), "-o", str(target)])
    assert result.exit_code == 0, result.output
    assert target.stat().st_size < 0.4 * source.stat().st_size  # Adam keeps two tensors per weight
    full, weights = load_checkpoint(source), load_checkpoint(target)
    assert weights.optimizer_state == {} and weights.extra == {}
    assert weights.step == full.step and weights.info.spec == full.info.spec
    for a, b in zip(full.generator.state_dict().values(), weights.generator.state_dict().values()):
        assert torch.equal(a, b)
    z = torch.rand(4, full.info.latent_dim)
    assert torch.equal(full.generator(z), weights.generator(z))
    trainer = Trainer(TrainConfig(**full.config["train"]))
    with pytest.raises(InfoGANError, match="cannot be resumed"):
        trainer.resume(target)
    same = runner.invoke(export_app, ["weights", str(source), "-o", str(source)])
    assert same.exit_code == 2 and "replace its source" in same.output


def test_train_on_an_unbalanced_grey_folder_says_what_it_loaded(tmp_path):
    from PIL import Image

    images, labels = load_data().images[:400, 0].numpy(), load_data().labels[:400].tolist()
    for i, (pixels, label) in enumerate(zip(images, labels)):
        (tmp_path / "data" / str(label)).mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(tmp_path / "data" / str(label) / f"{i}.png")
    out = tmp_path / "run"
    result = runner.invoke(app, ["train", "--out", str(out), "--data", f"folder:{tmp_path / 'data'}", "--imbalance", "3",
                                 "--iterations", "2", "--batch-size", "16", "--log-every", "1"])
    assert result.exit_code == 0, result.output
    assert "1x28x28 (grey)" in result.output and "largest/smallest class 3" in result.output
    config = load_checkpoint(out / "checkpoint.safetensors").config
    counts = [c for c in config["class_counts"] if c]
    assert max(counts) / min(counts) == pytest.approx(3.0, rel=0.1) and config["train"]["imbalance"] == 3.0
    assert config["image_shape"] == [1, 28, 28]
    bad = runner.invoke(app, ["train", "--out", str(tmp_path / "bad"), "--channels", "2"])
    assert bad.exit_code == 2 and "--channels must be 1 (grey) or 3 (colour)" in bad.output


def test_a_run_trained_at_another_image_size_is_evaluated_ranked_and_exported_at_that_size(tmp_path):
    from torch_infogan.cli.export import app as export_app

    out = tmp_path / "run32"
    result = runner.invoke(app, ["train", "--out", str(out), "--limit", "64", "--iterations", "2", "--batch-size",
                                 "16", "--image-size", "32", "--quiet"])
    assert result.exit_code == 0, result.output
    checkpoint = str(out / "checkpoint.safetensors")
    assert load_checkpoint(checkpoint).config["image_shape"] == [1, 32, 32]
    result = runner.invoke(app, ["evaluate", checkpoint, "--json"])  # mnist-10k, 28x28 on disk
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["n"] == 10000
    result = runner.invoke(app, ["rank", checkpoint, "--json"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(export_app, ["hdf5", checkpoint, "-o", str(tmp_path / "f.h5"), "--quiet"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "f.h5").is_file()
