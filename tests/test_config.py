"""The configuration: one source of defaults, checked where it is made."""

import re
from dataclasses import asdict

import pytest

from torch_infogan.config import PRESETS, ConfigError, TrainConfig, preset_config
from torch_infogan.errors import InfoGANError
from torch_infogan.trainer import TrainingStopped


def test_the_defaults_are_the_mnist_preset():
    assert asdict(TrainConfig()) == asdict(preset_config("mnist"))


def test_paper_mnist_is_the_papers_recipe():
    paper = preset_config("paper-mnist")
    assert (paper.iterations, paper.precision, paper.translate) == (5000, "fp32", 0)
    assert (paper.batch_size, paper.lr_g, paper.lr_d, paper.beta1, paper.noise_dim, paper.codes) == \
        (128, 1e-3, 2e-4, 0.5, 62, "cat:10,unif:2")
    changed = {k for k, v in asdict(paper).items() if v != asdict(TrainConfig())[k]}
    assert changed == set(PRESETS["paper-mnist"]) | {"preset"}


@pytest.mark.parametrize("field, value, fragment", [
    ("batch_size", 1, "batch_size must be >= 2"),
    ("iterations", 0, "iterations must be >= 1"),
    ("lr_d", -1.0, "lr_d must be > 0"),
    ("beta1", 1.0, "beta1 must be in [0, 1)"),
    ("precision", "fp16", "precision must be auto, fp32 or bf16"),
    ("updates", "sometimes", "updates must be simultaneous or alternating"),
    ("translate", -2, "translate must be >= 0 pixels"),
    ("epochs", 0.0, "epochs must be > 0"),
    ("consistency", -1.0, "consistency must be >= 0"),
    ("iic", -1.0, "iic must be >= 0"),
    ("pair_shear", 1.5, "pair_shear must be between 0 and 1"),
    ("invariance", -0.5, "invariance must be >= 0"),
])
def test_a_bad_value_is_refused_where_the_configuration_is_made(field, value, fragment):
    with pytest.raises(ConfigError, match=re.escape(fragment)) as made:
        TrainConfig(**{field: value})
    assert made.value.option == field
    with pytest.raises(ConfigError, match=re.escape(fragment)):
        preset_config("mnist", **{field: value})
    config = TrainConfig()
    with pytest.raises(ConfigError, match=re.escape(fragment)):
        config.update(**{field: value})


def test_messages_do_not_name_command_line_flags():
    with pytest.raises(ConfigError) as bad:
        TrainConfig(batch_size=1)
    assert "--" not in str(bad.value)


def test_training_stopped_is_not_a_value_error():
    assert not issubclass(TrainingStopped, (ValueError, InfoGANError))


def test_a_run_saved_before_a_field_existed_resumes_with_the_recipe_it_started_with(tiny_checkpoint, tmp_path):
    import json

    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    from torch_infogan.config import ADDED_FIELDS, resume_config

    with safe_open(str(tiny_checkpoint), "pt") as handle:
        metadata = handle.metadata()
    config = json.loads(metadata["config"])
    assert config["train"]["pair_intensity"] == 0.7  # today's default is stored with the run
    assert resume_config(tiny_checkpoint.parent).pair_intensity == 0.7
    for name in ADDED_FIELDS:
        del config["train"][name]
    save_file(load_file(str(tiny_checkpoint)), str(tmp_path / "checkpoint.safetensors"),
              metadata={**metadata, "config": json.dumps(config)})
    old = resume_config(tmp_path)
    assert {name: getattr(old, name) for name in ADDED_FIELDS} == ADDED_FIELDS
    assert resume_config(tmp_path, pair_intensity=0.5).pair_intensity == 0.5
