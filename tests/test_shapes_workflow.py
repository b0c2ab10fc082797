"""The shapes workflow: the shapes preset trains, reports its disentanglement, and the metrics run on a
checkpoint and on an exported HDF5 file through the CLI."""

import json

import h5py
import numpy as np
import pytest
from typer.testing import CliRunner

from torch_infogan.cli.export import app as export_app
from torch_infogan.cli.main import app
from torch_infogan.data import load_data
from torch_infogan.evaluation import disentanglement
from torch_infogan.checkpoint import load_checkpoint

runner = CliRunner()
SMALL = ["--points", "1500", "--num-train", "1000", "--num-test", "500"]


@pytest.fixture(scope="module")
def shapes_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("shapes")
    result = runner.invoke(app, ["train", "--preset", "shapes-cr", "--data", "shapes:300", "--iterations", "4",
                                 "--contrastive-start", "2", "--log-every", "2", "--out", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    return out


def test_shapes_preset_reports_disentanglement_and_draws_one_row_per_code(shapes_run):
    names = {p.name for p in shapes_run.iterdir()}
    assert {"codes.png", "dci_importance.png", "disentanglement.json", "checkpoint.safetensors"} <= names
    assert "evaluation.json" not in names  # no categorical code to match against the labels
    scores = json.loads((shapes_run / "disentanglement.json").read_text())
    assert scores["codes"] == [f"unif{i}" for i in range(5)]
    assert scores["factors"] == ["shape", "scale", "orientation", "pos_x", "pos_y"]
    assert np.array(scores["dci"]["importance"]).shape == (5, 5)
    assert 0 <= scores["mig"]["mig"] <= 1 and 0 <= scores["sap"]["sap"] <= 1
    report = (shapes_run / "report.md").read_text()
    assert "Disentanglement against the data's factors" in report and "loss_cr" in (shapes_run / "metrics.jsonl").read_text()
    from PIL import Image

    width, height = Image.open(shapes_run / "codes.png").size
    assert (height - 1) // 65 == 5 * 3 and (width - 1) // 65 == 10  # 5 codes x 3 noise draws, 10 steps


def test_evaluate_metrics_on_a_checkpoint_as_json(shapes_run, tmp_path):
    result = runner.invoke(app, ["evaluate", str(shapes_run / "checkpoint.safetensors"), "--data", "shapes",
                                 "--metrics", "mig,sap,factorvae", "--json", "--out", str(tmp_path), *SMALL])
    assert result.exit_code == 0, result.output
    scores = json.loads(result.output)
    assert set(scores) >= {"mig", "sap", "factorvae", "codes", "factors", "n"} and "dci" not in scores
    assert scores["n"] == 1500
    # The CLI and the library agree.
    ckpt = load_checkpoint(shapes_run / "checkpoint.safetensors")
    from torch_infogan.evaluation import factor_data

    direct = disentanglement(ckpt.info, factor_data("shapes", 1500), ["mig"], points=1500, num_train=1000,
                             num_test=500)
    assert direct["mig"]["mig"] == pytest.approx(scores["mig"]["mig"])


def test_metrics_on_an_exported_hdf5_file_with_factor_labels(shapes_run, tmp_path):
    features = tmp_path / "features.h5"
    result = runner.invoke(export_app, ["hdf5", str(shapes_run / "checkpoint.safetensors"), "--data", "shapes:1500",
                                        "--out", str(features), "--quiet"])
    assert result.exit_code == 0, result.output
    with h5py.File(features) as h5:
        assert h5["factors"].shape == (1500, 5)
        assert list(h5["factors"].attrs["names"]) == ["shape", "scale", "orientation", "pos_x", "pos_y"]
        assert np.array_equal(h5["factors"][:], load_data("shapes:1500").factors.numpy()[h5["index"][:]])
    result = runner.invoke(app, ["evaluate", str(features), "--metrics", "mig,sap", "--json", *SMALL[2:]])
    assert result.exit_code == 0, result.output
    from_file = json.loads(result.output)
    assert from_file["codes"] == [f"unif{i}" for i in range(5)] and from_file["n"] == 1500
    assert 0 <= from_file["mig"]["mig"] <= 1 and 0 <= from_file["sap"]["sap"] <= 1
    # The file's codes are Q's means on those images, as the checkpoint path computes them.
    from torch_infogan.evaluation import encode, representation
    from torch_infogan.exporters.hdf5 import read_codes_and_factors

    codes, names, factors, _ = read_codes_and_factors(features)
    ckpt = load_checkpoint(shapes_run / "checkpoint.safetensors")
    direct, _ = representation(ckpt.info, encode(ckpt.info, load_data("shapes:1500").images))
    assert names == from_file["codes"] and np.allclose(codes, direct, atol=1e-5)


@pytest.mark.parametrize("args, message", [
    (["--data", "mnist-10k", "--metrics", "mig"], "no factor labels"),
    (["--data", "shapes:600", "--metrics", "mig,bogus"], "unknown metric"),
    (["--data", "shapes:600", "--metrics", "mig", "--points", "600"], "points are needed"),
])
def test_metric_mistakes_are_one_line_errors(shapes_run, args, message):
    result = runner.invoke(app, ["evaluate", str(shapes_run / "checkpoint.safetensors"), *args])
    assert result.exit_code == 2
    assert message in result.output and "Traceback" not in result.output


def test_hdf5_without_factors_is_refused(tiny_checkpoint, tmp_path):
    features = tmp_path / "digits.h5"
    result = runner.invoke(export_app, ["hdf5", str(tiny_checkpoint), "--out", str(features), "--quiet"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["evaluate", str(features), "--metrics", "mig"])
    assert result.exit_code == 2 and "holds no factor labels" in result.output


def test_the_grid_picture_example_runs(tmp_path):
    import subprocess
    import sys

    from conftest import ROOT

    out = tmp_path / "grid.png"
    done = subprocess.run([sys.executable, str(ROOT / "examples" / "shapes_grid.py"), "-o", str(out)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    from PIL import Image

    assert Image.open(out).size == (8 * 66 + 2, 12 * 66 + 2)  # 8 columns; 3 shapes x 4 factors
