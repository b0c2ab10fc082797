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


@pytest.mark.parametrize("name", ["codes.py", "regularizer.py", "qhead.py"])
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
