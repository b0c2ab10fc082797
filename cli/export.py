"""The ``infogan-export`` command: encoder (or generator) to ONNX, features to HDF5, the latent explorer page."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from torch_infogan.cli._options import (Checkpoint, Data, DataRoot, Debug, Device, Quiet, Seed, Split, progress_bar,
                                        set_debug, user_errors)

app = typer.Typer(no_args_is_help=True, add_completion=False,
                  help="Export a trained InfoGAN encoder to ONNX, dataset features to HDF5, the weights alone, or the "
                       "latent explorer web page.")


@app.callback()
def main(debug: Debug = False) -> None:
    """Export a trained InfoGAN encoder to ONNX, dataset features to HDF5, the weights alone, or the latent explorer
    web page."""
    set_debug(debug)


@app.command("onnx")
def onnx_command(
    checkpoint: Checkpoint,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="ONNX file (default: encoder.onnx or generator.onnx).")] = None,
    part: Annotated[str, typer.Option(help="encoder (D trunk + Q) or generator.")] = "encoder",
    tolerance: Annotated[float, typer.Option(help="Largest allowed |onnxruntime - torch| on the check batch.")] = 1e-4,
) -> None:
    """Write the encoder (or generator) as one self-contained ONNX file and check it with onnxruntime."""
    with user_errors():
        from torch_infogan.exporters.onnx import export_onnx

        report = export_onnx(checkpoint, out or Path(f"{part}.onnx"), part=part, tolerance=tolerance)
    typer.echo(f"wrote {report.path} (outputs: {', '.join(report.outputs)})")
    typer.echo(f"onnxruntime ({report.provider}) vs torch: largest difference {report.max_abs_diff:.3g}")


@app.command("hdf5")
def hdf5_command(
    checkpoint: Checkpoint,
    data: Data = "mnist-10k",
    data_root: DataRoot = None,
    split: Split = "train",
    out: Annotated[Path, typer.Option("--out", "-o", help="HDF5 file to write.")] = Path("features.h5"),
    batch_size: Annotated[int, typer.Option(help="Images per encoder batch.")] = 512,
    device: Device = "cpu",
    dtype: Annotated[str, typer.Option(help="float32 or float16 storage.")] = "float32",
    engine: Annotated[str, typer.Option(help="torch or onnx (onnxruntime).")] = "torch",
    quiet: Quiet = False,
) -> None:
    """Run the encoder over a dataset and stream features, code posteriors, labels and index to HDF5."""
    with user_errors():
        from torch_infogan.checkpoint import read_checkpoint_config
        from torch_infogan.evaluation import load_data_for
        from torch_infogan.exporters.hdf5 import export_features
        from torch_infogan.runtime import resolve_device

        dev = resolve_device(device)
        dataset = load_data_for(read_checkpoint_config(checkpoint), data, data_root, split)
        bar = progress_bar(len(dataset), quiet, "export")
        try:
            report = export_features(checkpoint, dataset, out, batch_size=batch_size, device=dev, dtype=dtype,
                                     engine=engine, progress=bar.update if bar else None)
        finally:
            if bar is not None:
                bar.close()
    typer.echo(f"wrote {report.path}: {report.rows} rows x {report.feature_dim} features "
               f"({report.rows / report.seconds:.0f} images/s)")


@app.command("weights")
def weights_command(
    checkpoint: Checkpoint,
    out: Annotated[Path, typer.Option("--out", "-o", help="Weights-only .safetensors file to write.")] = Path("weights.safetensors"),
) -> None:
    """Copy a checkpoint without its optimizer state: G, D and Q weights and the configuration, for sharing
    and export (it loads, evaluates and exports like the checkpoint, but cannot be resumed)."""
    with user_errors():
        from torch_infogan.checkpoint import save_weights_only

        path = save_weights_only(checkpoint, out)
    size, before = path.stat().st_size, checkpoint.stat().st_size
    typer.echo(f"wrote {path} ({size / 2**20:.1f} MiB; the checkpoint is {before / 2**20:.1f} MiB)")


@app.command("web")
def web_command(
    checkpoint: Checkpoint,
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the page (an earlier export there is replaced).")] = Path("explorer"),
    runtime: Annotated[Optional[Path], typer.Option("--runtime", help="onnxruntime-web's dist folder (default: $INFOGAN_ORT_WEB_DIR, else node_modules/onnxruntime-web/dist here or in the torch-infogan checkout).")] = None,
    bounds_samples: Annotated[int, typer.Option(help="Generated samples for the MI bounds shown on the page (0: none).")] = 2000,
    seed: Seed = 0,
) -> None:
    """Write the latent explorer: a static page that runs the generator in the browser (onnxruntime-web,
    WebAssembly), with a control per code. Host the folder on any static web server."""
    with user_errors():
        from torch_infogan.exporters.web import export_web

        report = export_web(checkpoint, out, runtime_dir=runtime, bounds_samples=bounds_samples, seed=seed)
    typer.echo(f"wrote {report.path}/: {', '.join(report.files)}")
    typer.echo(f"page weight: model {report.model_bytes / 1024:,.0f} KB, runtime {report.runtime_bytes / 1024:,.0f} KB "
               f"(onnxruntime-web {report.runtime_version}), page {report.page_bytes / 1024:,.0f} KB")
    typer.echo(f"serve it over http, not file:// (e.g. python -m http.server -d {report.path}), "
               f"or run: infogan explore {checkpoint}")


def run() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    run()
