"""The design's import rules: models are plain GANs, the plug-in stands alone, nothing imports the CLI."""

import ast

import pytest

from conftest import ROOT


def _imports(path):
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def _files(*folders):
    return [p for folder in folders for p in (ROOT / folder).rglob("*.py")]


@pytest.mark.parametrize("path", _files("torch_infogan/models"), ids=str)
def test_models_know_nothing_of_codes_or_the_regularizer(path):
    assert not {n for n in _imports(path) if n.startswith(("torch_infogan.codes", "torch_infogan.regularizer",
                                                           "torch_infogan.qhead"))}


@pytest.mark.parametrize("name", ["codes.py", "regularizer.py", "qhead.py", "following.py", "heads.py", "latent.py",
                                  "losses.py"])
def test_plugin_imports_no_trainer_data_or_cli(name):
    banned = ("torch_infogan.training", "torch_infogan.data", "torch_infogan.cli", "torch_infogan.checkpoint",
              "torch_infogan.exporters", "torch_infogan.models")
    assert not {n for n in _imports(ROOT / "torch_infogan" / name) if n.startswith(banned)}


@pytest.mark.parametrize("path", _files("torch_infogan", "exporters"), ids=str)
def test_nothing_imports_the_cli(path):
    assert not {n for n in _imports(path) if n.startswith(("torch_infogan.cli", "typer", "click"))}


@pytest.mark.parametrize("path", _files("exporters"), ids=str)
def test_exporters_need_no_trainer(path):
    assert "torch_infogan.training" not in _imports(path)


# The trainer's modules, each importing only those after it in this list (training -> ... -> config).
TRAINER_LAYERS = ["training", "report", "trainer", "loop", "objective", "guard", "augment", "runtime", "config"]


@pytest.mark.parametrize("index", range(len(TRAINER_LAYERS)), ids=TRAINER_LAYERS)
def test_trainer_modules_import_in_one_direction(index):
    name = TRAINER_LAYERS[index]
    above = {f"torch_infogan.{n}" for n in TRAINER_LAYERS[:index + 1]}
    imported = {n for n in _imports(ROOT / "torch_infogan" / f"{name}.py") if n.startswith("torch_infogan.")}
    assert not imported & (above - {f"torch_infogan.{name}"}), f"{name}.py imports a module above it"


COMMANDS_WITHOUT_TRAINER = r'''
import sys
from pathlib import Path
from typer.testing import CliRunner
from torch_infogan.cli.main import app
from torch_infogan.cli.export import app as export_app
from torch_infogan.exporters.web import RUNTIME_FILES, Explorer

ckpt, out = sys.argv[1], sys.argv[2]
runtime = Path(out) / "ort-dist"  # stand-ins for onnxruntime-web's files: the export only copies them
runtime.mkdir()
for name in RUNTIME_FILES:
    (runtime / name).write_text("")
Explorer.wait = lambda self: (_ for _ in ()).throw(KeyboardInterrupt)  # Ctrl-C as soon as the page is served
web = ["--runtime", str(runtime), "--bounds-samples", "10"]
runs = [(app, ["evaluate", ckpt]), (app, ["rank", ckpt]), (app, ["sample", ckpt, "-o", out + "/s.png", "-n", "4"]),
        (app, ["traverse", ckpt, "-o", out + "/t"]), (export_app, ["weights", ckpt, "-o", out + "/w.safetensors"]),
        (export_app, ["hdf5", ckpt, "-o", out + "/f.h5", "--quiet"]), (export_app, ["web", ckpt, "-o", out + "/site", *web]),
        (app, ["explore", ckpt, "--port", "0", "--no-browser", *web])]
for command, args in runs:
    result = CliRunner().invoke(command, args)
    assert result.exit_code == 0, (args, result.output)
print(sorted(m for m in sys.modules if m in ("torch_infogan.trainer", "torch_infogan.training", "torch_infogan.report")))
'''


def test_commands_that_need_only_a_device_do_not_import_the_trainer(tiny_checkpoint, tmp_path):
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", COMMANDS_WITHOUT_TRAINER, str(tiny_checkpoint), str(tmp_path)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-1] == "[]"


# The plug-in's modules, each importing only those after it (regularizer -> its parts -> codes).
PLUGIN_LAYERS = [["regularizer"], ["latent", "following", "heads", "losses", "qhead"], ["codes"], ["errors"]]


@pytest.mark.parametrize("level", range(len(PLUGIN_LAYERS)), ids=["/".join(names) for names in PLUGIN_LAYERS])
def test_plugin_modules_import_in_one_direction(level):
    above = {f"torch_infogan.{n}" for names in PLUGIN_LAYERS[:level + 1] for n in names}
    for name in PLUGIN_LAYERS[level]:
        imported = {n for n in _imports(ROOT / "torch_infogan" / f"{name}.py") if n.startswith("torch_infogan.")}
        assert not imported & above, f"{name}.py imports a module at or above its own level"
