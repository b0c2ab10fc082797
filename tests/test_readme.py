"""The README's Python examples run as written, and CI runs the README's test command."""

import re

import pytest

from conftest import ROOT

README = (ROOT / "README.md").read_text()


def _blocks(language):
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.S)


def test_readme_python_examples_run():
    blocks = _blocks("python")
    assert len(blocks) >= 2
    for block in blocks:
        exec(compile(block, "README.md", "exec"), {"__name__": "readme"})


@pytest.mark.parametrize("doc", ["api.md", "training.md", "disentanglement.md"])
def test_docs_python_examples_run(doc, tmp_path, monkeypatch):
    from torch_infogan.codes import _REGISTRY

    monkeypatch.chdir(tmp_path)  # examples that write files write them here
    before = set(_REGISTRY)
    try:
        for block in re.findall(r"```python\n(.*?)```", (ROOT / "docs" / doc).read_text(), flags=re.S):
            exec(compile(block, doc, "exec"), {"__name__": "docs"})
    finally:
        for name in set(_REGISTRY) - before:  # codes registered by an example
            _REGISTRY.pop(name)


def test_ci_runs_the_readme_test_command():
    command = next(line for block in _blocks("bash") for line in block.splitlines() if "pytest" in line)
    ci = (ROOT / ".ci" / "run").read_text()
    assert command in ci
