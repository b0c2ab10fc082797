"""The ``infogan-export`` command: encoder to ONNX, features to HDF5."""

import typer

app = typer.Typer(no_args_is_help=True, add_completion=False,
                  help="Export a trained InfoGAN encoder to ONNX or dataset features to HDF5.")


@app.callback()
def main() -> None:
    """Export a trained InfoGAN encoder to ONNX or dataset features to HDF5."""


def run() -> None:
    """Console-script entry point."""
    app()
