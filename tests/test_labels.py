"""Training with a few labels (``--labels``, ``--labels-file``): the draw, the term, what is saved, and that no
score counts the labelled images."""

import json

import h5py
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from torch_infogan.checkpoint import load_checkpoint
from torch_infogan.codes import split_params
from torch_infogan.cli.export import app as export_app
from torch_infogan.cli.main import app
from torch_infogan.config import ConfigError, preset_config
from torch_infogan.data import load_data
from torch_infogan.errors import InfoGANError
from torch_infogan.evaluation import encode
from torch_infogan.labelled import LabelledSet, draw_labelled, read_labels_file
from torch_infogan.trainer import Trainer, training_data

runner = CliRunner()
ARGS = ["--batch-size", "32", "--checkpoint-every", "5", "--log-every", "5", "--quiet"]


def test_a_labels_run_leaves_its_labelled_images_out_of_every_score_and_resumes(tmp_path, digits_512):
    out, data = tmp_path / "run", f"idx:{digits_512}"
    result = runner.invoke(app, ["train", "--out", str(out), "--data", data, "--labels", "2", "--labels-seed", "4",
                                 "--iterations", "10", *ARGS])
    assert result.exit_code == 0, result.output
    assert "plain accuracy" in result.output
    ckpt = load_checkpoint(out / "checkpoint.safetensors")
    trained = ckpt.trained_labels
    dataset = load_data(data)
    expected, labels = draw_labelled(dataset, 2, seed=4)
    assert np.array_equal(trained.indices, expected) and len(trained) == 20 and trained.code == "cat0"
    assert np.array_equal(trained.labels, dataset.labels.numpy()[expected]) and sorted(set(labels)) == list(range(10))
    report = json.loads((out / "evaluation.json").read_text())
    assert report["excluded"] == 20 and report["n"] == 512 - 20

    # The plain accuracy is Q's category taken as the label, on the images whose labels were not used.
    keep = np.setdiff1d(np.arange(512), expected)
    params = split_params(ckpt.info.codes, encode(ckpt.info, dataset.images[torch.from_numpy(keep)]))[0]
    plain = float((params.argmax(1).numpy() == dataset.labels.numpy()[keep]).mean())
    result = runner.invoke(app, ["evaluate", str(out / "checkpoint.safetensors"), "--data", data, "--json"])
    assert result.exit_code == 0, result.output
    evaluated = json.loads(result.output)
    assert evaluated["excluded"] == 20 and evaluated["n"] == 492
    assert evaluated["codes"]["cat0"]["plain_accuracy"] == pytest.approx(plain)
    assert evaluated["label_trained"] == {"code": "cat0", "images": 20}
    result = runner.invoke(app, ["rank", str(out / "checkpoint.safetensors"), "--data", data, "--json"])
    assert result.exit_code == 0, result.output  # rank leaves them out too
    assert json.loads(result.output)[0]["accuracy"] == pytest.approx(evaluated["codes"]["cat0"]["accuracy"])

    # The features file marks the labelled rows.
    h5_path = tmp_path / "features.h5"
    result = runner.invoke(export_app, ["hdf5", str(out / "checkpoint.safetensors"), "--data", data, "--out",
                                        str(h5_path), "--quiet"])
    assert result.exit_code == 0, result.output
    with h5py.File(h5_path, "r") as h5:
        assert np.array_equal(np.flatnonzero(h5["labelled"][:]), expected)
        assert h5["labelled"].attrs["code"] == "cat0"

    # The run resumes with its labels; other labels are refused.
    result = runner.invoke(app, ["train", "--resume", str(out), "--iterations", "15", "--quiet"])
    assert result.exit_code == 0, result.output
    assert load_checkpoint(out / "checkpoint.safetensors").step == 15
    result = runner.invoke(app, ["train", "--resume", str(out), "--iterations", "20", "--labels-seed", "5", "--quiet"])
    assert result.exit_code == 2 and "other labelled images" in result.output


def test_evaluating_other_data_of_the_same_name_and_split_is_refused():
    dataset = load_data("mnist-10k")
    trained = LabelledSet(np.array([0, 5]), np.array([5, 2]), "cat0", "mnist-10k", "train", 10000)
    assert np.array_equal(trained.rows_in(dataset), [0, 5])
    with pytest.raises(InfoGANError, match="cannot be left out"):
        trained.rows_in(dataset.subset(100))
    other = LabelledSet(np.array([0, 5]), np.array([5, 2]), "cat0", "another", "train", 10000)
    assert len(other.rows_in(dataset)) == 0  # none of these images was labelled


def test_a_labels_file_is_read_with_or_without_a_header_and_checked(tmp_path):
    path = tmp_path / "labels.csv"
    path.write_text("index,label\n7,3\n2,1\n\n")
    indices, labels = read_labels_file(path, 10)
    assert indices.tolist() == [2, 7] and labels.tolist() == [1, 3]
    path.write_text("7,3\n2,1\n")
    assert read_labels_file(path, 10)[0].tolist() == [2, 7]
    for text, message in [("7,3\nx,1\n", "line 2"), ("12,3\n", r"\[0, 10\)"), ("1,-1\n", ">= 0"),
                          ("1,2\n1,3\n", "more than once"), ("index,label\n", "no labelled images")]:
        path.write_text(text)
        with pytest.raises(InfoGANError, match=message):
            read_labels_file(path, 10)
    with pytest.raises(InfoGANError, match="not found"):
        read_labels_file(tmp_path / "missing.csv", 10)


def _config(**overrides):
    return preset_config("mnist", limit=128, batch_size=16, device="cpu", precision="fp32", widths=[8, 16],
                         fc_dim=32, q_hidden=16, **overrides)


def test_a_labels_file_trains_the_code_it_names(tmp_path):
    path = tmp_path / "labels.csv"
    path.write_text("0,4\n1,9\n3,11\n")
    config = _config(codes="cat:10,cat:12,unif:1", labels_file=str(path), label_code="cat1")
    data = training_data(config).subset(128)
    trainer = Trainer(config, data=data)
    assert trainer.labelled.code == "cat1" and trainer.labelled.indices.tolist() == [0, 1, 3]
    assert "d/label" in trainer.step()
    with pytest.raises(InfoGANError, match="cat0 has 10 categories"):
        Trainer(_config(codes="cat:10,cat:12,unif:1", labels_file=str(path)), data=data)


def test_the_configuration_refuses_labels_it_cannot_use():
    with pytest.raises(ConfigError, match="labels must be >= 1"):
        _config(labels=0)
    with pytest.raises(ConfigError, match="labels_file cannot be combined"):
        _config(labels=2, labels_file="x.csv")
    with pytest.raises(ConfigError, match="label_code must be the key of a categorical code"):
        _config(labels=2, label_code="unif1")
    with pytest.raises(ConfigError, match="labels needs a categorical code"):
        _config(labels=2, codes="unif:2", iic=0, invariance=0)
    with pytest.raises(ConfigError, match="label_weight must be > 0"):
        _config(labels=2, label_weight=0)
    with pytest.raises(ConfigError, match="label_schedule must be one of every, coin"):
        _config(labels=2, label_schedule="sometimes")


def test_the_coin_schedule_draws_the_labelled_batch_less_often_and_the_same_on_every_run():
    config = _config(labels=2, label_schedule="coin", iterations=400)
    trainer = Trainer(config, data=load_data("mnist-10k").subset(256))
    term = next(term for term in trainer.terms if term.name == "label")
    assert term.chance(0) == 1.0 and term.chance(200) == pytest.approx(0.1) and term.chance(399) == pytest.approx(0.1)
    early = [term.drawn(step) for step in range(0, 40)]
    late = [term.drawn(step) for step in range(200, 400)]
    assert sum(early) >= 30 and 5 <= sum(late) <= 40
    assert late == [term.drawn(step) for step in range(200, 400)]  # a function of the seed and the step alone
    trainer.step_index = 399
    while term.drawn(trainer.step_index):
        trainer.step_index -= 1
    assert trainer.step()["d/label"] == 0  # a step without the labelled batch adds nothing


def test_labels_need_labelled_data_or_a_file():
    unlabelled = load_data("mnist-10k").subset(128)
    unlabelled.labels = None
    with pytest.raises(InfoGANError, match="no labels to draw"):
        Trainer(_config(labels=2), data=unlabelled)
    with pytest.raises(InfoGANError, match="fewer than the 50 per class"):
        Trainer(_config(labels=50), data=load_data("mnist-10k").subset(128))
