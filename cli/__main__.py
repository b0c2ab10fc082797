"""``python -m torch_infogan.cli`` runs the ``infogan`` command (also under torchrun)."""

from torch_infogan.cli.main import run

run()
