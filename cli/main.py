"""The ``infogan`` command: train, evaluate and draw pictures."""

import typer

app = typer.Typer(no_args_is_help=True, add_completion=False,
                  help="Train InfoGAN models and inspect what their latent codes learned.")


@app.callback()
def main() -> None:
    """Train InfoGAN models and inspect what their latent codes learned."""


def run() -> None:
    """Console-script entry point."""
    app()
