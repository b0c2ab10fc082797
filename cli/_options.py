"""Option aliases shared by the typer apps, and the one way they report a user's mistake."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from torch_infogan.errors import InfoGANError

Data = Annotated[str, typer.Option("--data", help="mnist-10k (embedded), idx:PATH, folder:PATH, mnist, fashion-mnist, svhn or celeba.")]
DataRoot = Annotated[Optional[Path], typer.Option("--data-root", help="Folder holding torchvision's dataset files.")]
Split = Annotated[str, typer.Option("--split", help="Dataset split: train or test.")]
Device = Annotated[str, typer.Option("--device", help="auto, cpu, cuda or cuda:N.")]
Seed = Annotated[int, typer.Option("--seed", help="Random seed.")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")]
Checkpoint = Annotated[Path, typer.Argument(help="A checkpoint.safetensors written by `infogan train`.")]


Debug = Annotated[bool, typer.Option("--debug", envvar="INFOGAN_DEBUG",
                                      help="Show the full traceback of an error instead of a one-line message.")]

#: Set by the apps' ``--debug`` option (or INFOGAN_DEBUG=1): errors keep their traceback.
debug = False


def set_debug(value: bool) -> None:
    global debug
    debug = value


@contextlib.contextmanager
def user_errors():
    """Turn ``InfoGANError`` (a user's mistake or a bad file) into a one-line message and exit status 2;
    with ``--debug`` the exception propagates with its traceback."""
    try:
        yield
    except InfoGANError as exc:
        if debug:
            raise
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        raise typer.Exit(130) from None


def progress_bar(total: int, quiet: bool, desc: str, initial: int = 0):
    """A tqdm bar on stderr that starts at ``initial``, or ``None`` when quiet."""
    if quiet:
        return None
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit="it", file=sys.stderr, dynamic_ncols=True)
