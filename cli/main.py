"""The ``infogan`` command: train, evaluate, rank, sample, traverse and explore."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from torch_infogan.cli._options import (Checkpoint, Data, DataRoot, Debug, Device, Quiet, Seed, Split, progress_bar,
                                        set_debug, user_errors)

app = typer.Typer(no_args_is_help=True, add_completion=False,
                  help="Train InfoGAN models and inspect what their latent codes learned.")


@app.callback()
def main(debug: Debug = False) -> None:
    """Train InfoGAN models and inspect what their latent codes learned."""
    set_debug(debug)


@app.command(no_args_is_help=False)
def train(
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder.")] = Path("runs/infogan"),
    preset: Annotated[str, typer.Option(help="mnist (default, tuned), paper-mnist (the paper's exact recipe), shapes (InfoGAN-CR's modified InfoGAN on the procedural dSprites grid), shapes-cr (the same with the contrastive regularizer), svhn, celeba, chairs.")] = "mnist",
    resume: Annotated[Optional[Path], typer.Option("--resume", help="Continue the run in this folder from its checkpoint (its settings are kept; --iterations may extend it).")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Start over in an --out folder that already holds a run.")] = False,
    data: Annotated[Optional[str], typer.Option("--data", help="mnist-10k (embedded), shapes (procedural dSprites grid), shapes:N (N images of it), dsprites:PATH (the original .npz), idx:PATH, folder:PATH, mnist, fashion-mnist, svhn or celeba.")] = None,
    data_root: DataRoot = None,
    download: Annotated[bool, typer.Option(help="Let torchvision download a missing dataset (needs network).")] = False,
    limit: Annotated[Optional[int], typer.Option(help="Use only the first N images.")] = None,
    image_size: Annotated[Optional[int], typer.Option(help="Resize the images to N x N (centre-cropped to a square first; default: their own size, or 64 for a folder of mixed sizes). The networks follow the size.")] = None,
    channels: Annotated[Optional[int], typer.Option(help="1 (grey) or 3 (colour); default: the images' own (a folder whose images are all grey loads as grey).")] = None,
    imbalance: Annotated[Optional[float], typer.Option(help="Train on a class-unbalanced subset of a labelled dataset: class counts falling geometrically, largest over smallest N (e.g. 5).")] = None,
    imbalance_seed: Annotated[Optional[int], typer.Option(help="Seed of the unbalanced subset: which class gets which count, and which images.")] = None,
    labels: Annotated[Optional[int], typer.Option(help="Train with N labelled images per class of the training data (drawn with --labels-seed): category k of the first categorical code then means label k (semi-supervised; evaluation leaves them out).")] = None,
    labels_file: Annotated[Optional[Path], typer.Option(help="Your own labelled images: a CSV file of 'index,label' rows, indices into the training data, labels from 0.")] = None,
    labels_seed: Annotated[Optional[int], typer.Option(help="Seed of the --labels draw.")] = None,
    label_code: Annotated[Optional[str], typer.Option(help="The categorical code the labels name, e.g. cat0 (default: the first).")] = None,
    label_weight: Annotated[Optional[float], typer.Option(help="Weight of the labelled images' cross-entropy in D's loss (default 1).")] = None,
    label_schedule: Annotated[Optional[str], typer.Option(help="When the labelled batch joins D's step: 'every' step (default) or by a 'coin' whose chance falls from 1 to 0.1 over the first half of the run.")] = None,
    codes: Annotated[Optional[str], typer.Option(help="Latent codes, e.g. 'cat:10,unif:2'.")] = None,
    noise_dim: Annotated[Optional[int], typer.Option(help="Width of the noise z.")] = None,
    lr_g: Annotated[Optional[float], typer.Option(help="Generator learning rate.")] = None,
    lr_d: Annotated[Optional[float], typer.Option(help="Discriminator (and Q) learning rate.")] = None,
    batch_size: Annotated[Optional[int], typer.Option(help="Batch size (per process under torchrun).")] = None,
    iterations: Annotated[Optional[int], typer.Option(help="Training iterations.")] = None,
    epochs: Annotated[Optional[float], typer.Option(help="Training length in epochs (overrides --iterations).")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Random seed.")] = None,
    device: Annotated[Optional[str], typer.Option(help="auto, cpu, cuda or cuda:N.")] = None,
    precision: Annotated[Optional[str], typer.Option(help="auto (bf16 on GPUs with bf16 and on CPUs with AMX or AVX512_BF16, else fp32), fp32, or bf16 autocast (MI terms stay fp32).")] = None,
    translate: Annotated[Optional[int], typer.Option(help="Shift the images D sees by up to N pixels (0: off; mnist preset: 2).")] = None,
    rotate: Annotated[Optional[float], typer.Option(help="Turn the images D sees by up to N degrees after the shift (default 0: off).")] = None,
    consistency: Annotated[Optional[float], typer.Option(help="Weight of the term that asks Q to name a real image's category alike before and after a small turn and scaling (default 0: off; measured, not the default).")] = None,
    iic: Annotated[Optional[float], typer.Option(help="Weight of the invariant information clustering term: minus the MI between Q's categories of a real image and of its turned and scaled copy (0: off).")] = None,
    pair_shear: Annotated[Optional[float], typer.Option(help="Largest slant (horizontal shear: each row moves sideways by up to this times its distance from the centre row) of the real images' copies that --iic and --consistency compare (0: none).")] = None,
    pair_intensity: Annotated[Optional[float], typer.Option(help="Tone change of the real images' copies that --iic and --consistency compare: each copy gets its own gamma in [e^-N, e^N] and darkening by up to e^-N (0: none).")] = None,
    pair_flip: Annotated[Optional[bool], typer.Option("--pair-flip/--no-pair-flip", help="Mirror half of the real images' copies that --iic and --consistency compare, left to right (default: off).")] = None,
    overcluster: Annotated[Optional[int], typer.Option(help="Categories of a second output of Q that --iic also clusters the real images into (IIC's overclustering head; 0: none).")] = None,
    invariance: Annotated[Optional[float], typer.Option(help="Weight of the term, in both players' losses, that asks Q to name G's category on copies of G's images turned, scaled and slanted as --iic's copies (0: off).")] = None,
    info_weight: Annotated[Optional[float], typer.Option(help="Weight of the MI term in both players' losses (shapes presets: 0.05).")] = None,
    contrastive: Annotated[Optional[float], typer.Option(help="Weight of InfoGAN-CR's contrastive term for G (0: off; shapes-cr: 2).")] = None,
    contrastive_start: Annotated[Optional[int], typer.Option(help="Iteration from which G is trained on the contrastive term (its classifier learns from the start).")] = None,
    contrastive_gap: Annotated[Optional[float], typer.Option(help="Least difference between a pair's non-shared continuous codes (0: drawn independently).")] = None,
    compile: Annotated[Optional[bool], typer.Option("--compile/--no-compile", help="torch.compile the training step.")] = None,
    log_every: Annotated[Optional[int], typer.Option(help="Log metrics every N iterations.")] = None,
    checkpoint_every: Annotated[Optional[int], typer.Option(help="Write the checkpoint every N iterations.")] = None,
    on_nonfinite: Annotated[Optional[str], typer.Option(help="stop (keep the last good checkpoint) or skip the bad step.")] = None,
    sync_bn: Annotated[Optional[bool], typer.Option("--sync-bn/--no-sync-bn", help="SyncBatchNorm across processes under torchrun.")] = None,
    quiet: Quiet = False,
) -> None:
    """Train the DCGAN reference with InfoGAN codes; write checkpoint, metrics, pictures and a report."""
    overrides = dict(data=data, data_root=str(data_root) if data_root else None, download=download or None,
                     limit=limit, image_size=image_size, channels=channels, imbalance=imbalance,
                     imbalance_seed=imbalance_seed, labels=labels, labels_file=str(labels_file) if labels_file else None,
                     labels_seed=labels_seed, label_code=label_code, label_weight=label_weight,
                     label_schedule=label_schedule, codes=codes, noise_dim=noise_dim, lr_g=lr_g, lr_d=lr_d, batch_size=batch_size,
                     iterations=iterations, epochs=epochs, seed=seed, device=device, precision=precision,
                     translate=translate, rotate=rotate, consistency=consistency, iic=iic, pair_shear=pair_shear, pair_intensity=pair_intensity,
                     pair_flip=pair_flip, overcluster=overcluster, invariance=invariance, info_weight=info_weight,
                     contrastive=contrastive, contrastive_start=contrastive_start, contrastive_gap=contrastive_gap,
                     compile=compile, log_every=log_every, checkpoint_every=checkpoint_every,
                     on_nonfinite=on_nonfinite, sync_bn=sync_bn)
    with user_errors():
        from torch_infogan.config import ConfigError, preset_config, resume_config
        from torch_infogan.errors import InfoGANError
        from torch_infogan.trainer import TrainingStopped
        from torch_infogan.training import RunExists, train as run_training

        try:
            if resume is not None:
                out = resume
                config = resume_config(resume, **overrides)
            else:
                config = preset_config(preset, **overrides)
        except ConfigError as exc:
            raise _flag_error(exc, overrides) from exc
        bar = None
        world = 1
        estimated = False

        def progress(step: int, total: int, record: dict) -> None:
            nonlocal bar, estimated
            if quiet:
                return
            if not estimated:  # after the first timed steps: how long the rest takes, and how to shorten it
                estimated = True
                seconds_per_step = config.batch_size * world / max(record["images_per_s"], 1e-9)
                remaining = (total - step) * seconds_per_step
                if remaining > 15 * 60:
                    fits = max(1, int(15 * 60 / seconds_per_step))
                    typer.echo(f"this run needs about {remaining / 60:.0f} more minutes at "
                               f"{record['images_per_s']:.0f} images/s on this machine; --iterations {fits} "
                               "would take about 15", err=True)
            if bar is None:  # made at the first report, so its rate counts only the steps timed after it
                bar = progress_bar(total, quiet, "train", initial=step)
            bar.update(step - bar.n)
            # The GAN losses, then each code's MI lower bound (Q's variance fitted, in nats; H(c) is its ceiling).
            cr = f" CR {record['loss_cr']:.2f}" if "loss_cr" in record else ""
            bar.set_postfix_str(f"GAN D {record['loss_d']:.2f} G {record['loss_g']:.2f}{cr} | MI "
                                + " ".join(f"{k} {v:.2f}" for k, v in record["mi_fitted"].items()))
            if step == total:  # the report can take a while (pictures, evaluation, DCI on data with factor labels): say so
                bar.close()
                bar = None
                typer.echo("writing pictures, evaluation and report.md ...", err=True)

        def started(trainer) -> None:  # the run is set up: say what it trains on
            nonlocal world
            world = trainer.world
            if not quiet:
                typer.echo(f"data: {trainer.full_data.describe()}", err=True)

        try:
            result = run_training(config, out, progress=progress, resume=resume is not None, overwrite=overwrite,
                                  started=started)
        except ConfigError as exc:  # a value the run cannot use with the rest (e.g. IIC without a categorical code)
            raise _flag_error(exc, overrides) from exc
        except RunExists as exc:
            raise InfoGANError(f"{exc.out} already holds a run; continue it with --resume {exc.out}, "
                               "or start over with --overwrite") from exc
        except TrainingStopped as stopped:
            if bar is not None:
                bar.close()
                bar = None
            if stopped.signum is None:
                message = f"error: {stopped}".replace("on_nonfinite='skip'", "--on-nonfinite skip")
            else:
                message = f"{stopped}; continue with `infogan train --resume {out}`"
            typer.echo(message, err=True)
            raise typer.Exit(1 if stopped.signum is None else 128 + stopped.signum) from None
        finally:
            if bar is not None:
                bar.close()
    if result.steps == 0 or not result.files:
        return
    typer.echo(f"trained to iteration {result.steps} in {result.seconds:.0f} s ({result.images_per_second:.0f} images/s)")
    if result.evaluation:
        for key, scores in result.evaluation["codes"].items():
            if "accuracy" in scores:
                plain = f"plain accuracy {scores['plain_accuracy']:.4f} (labelled images left out)  " \
                    if "plain_accuracy" in scores else ""
                typer.echo(f"{key}: {plain}accuracy {scores['accuracy']:.4f}  NMI {scores['nmi']:.4f}  "
                           f"ARI {scores['ari']:.4f}  agreement {scores['agreement']:.4f}")
            else:
                typer.echo(f"{key}: agreement {scores['agreement']:.4f}  real MI {scores['real_mi']:.4f}  "
                           f"usage {scores['usage']:.3f}  (no labels)")
    typer.echo(f"wrote {result.out}/: {', '.join(p.name for p in result.files)}")
    if result.disentanglement:
        s = result.disentanglement
        typer.echo(f"MIG {s['mig']['mig']:.3f}  DCI {s['dci']['disentanglement']:.3f}  SAP {s['sap']['sap']:.3f}  "
                   f"FactorVAE {s['factorvae']['eval_accuracy']:.3f}")
    metrics = " --metrics all" if result.disentanglement else ""
    typer.echo(f"next: infogan evaluate {result.checkpoint} --data {config.data}{metrics}")


@app.command()
def evaluate(
    checkpoint: Annotated[Path, typer.Argument(help="A checkpoint.safetensors written by `infogan train`, or (with --metrics) an HDF5 features file with factor labels written by `infogan-export hdf5`.")],
    data: Data = "mnist-10k",
    data_root: DataRoot = None,
    split: Split = "train",
    metrics: Annotated[Optional[str], typer.Option("--metrics", help="Disentanglement metrics on data with known factors (--data shapes): any of mig,dci,sap,factorvae, comma-separated, or 'all' (those four); dci_exact is DCI with scikit-learn's exact trees as disentanglement_lib (minutes; dci fits LightGBM's in seconds).")] = None,
    points: Annotated[int, typer.Option(help="With --metrics: images drawn from the data (their codes are the metrics' points).")] = 20000,
    num_train: Annotated[int, typer.Option(help="With --metrics: points for MIG and for fitting DCI's and SAP's classifiers.")] = 10000,
    num_test: Annotated[int, typer.Option(help="With --metrics: held-out points for DCI and SAP.")] = 5000,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object instead of a table.")] = False,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Folder for pictures (confusion matrices; with --metrics the DCI importance heat map).")] = None,
    device: Device = "cpu",
    seed: Seed = 0,
) -> None:
    """Accuracy (Hungarian-matched), NMI and ARI of each categorical code against the labels, and the label-free
    agreement, real MI, usage and confidence (the only scores on data without labels); MI bounds.
    With --metrics: MIG, DCI, SAP and the FactorVAE score against the data's factors."""
    with user_errors():
        if metrics is not None:
            result = _disentanglement(checkpoint, data, data_root, split, metrics, points, num_train, num_test,
                                      out, device, seed)
            if as_json:
                typer.echo(json.dumps(result))
            else:
                from torch_infogan.disentanglement import format_scores

                typer.echo(format_scores(result))
            return
        from torch_infogan.checkpoint import load_checkpoint
        from torch_infogan.evaluation import evaluate as run_evaluation, format_table, load_data_for
        from torch_infogan.pictures import plot_confusions, plot_priors
        from torch_infogan.runtime import resolve_device

        ckpt = load_checkpoint(checkpoint, resolve_device(device))
        dataset = load_data_for(ckpt.config, data, data_root, split)
        result = run_evaluation(ckpt.generator, ckpt.info, dataset, ckpt.config.get("normalization", "unit"), seed=seed,
                                trained_labels=ckpt.trained_labels)
        if out is not None:
            out.mkdir(parents=True, exist_ok=True)
            plot_confusions(result, out)
            plot_priors(result, out)
    if as_json:
        typer.echo(json.dumps(result))
    else:
        typer.echo(format_table(result))


def _disentanglement(path: Path, data: str, data_root, split: str, metrics: str, points: int, num_train: int,
                     num_test: int, out: Optional[Path], device: str, seed: int) -> dict:
    from torch_infogan.disentanglement import METRICS
    from torch_infogan.pictures import plot_importance

    names = list(METRICS) if metrics.strip() == "all" else [m.strip() for m in metrics.split(",") if m.strip()]
    if path.suffix in (".h5", ".hdf5"):
        from torch_infogan.evaluation import scores_of_arrays
        from torch_infogan.exporters.hdf5 import read_codes_and_factors

        codes, code_names, factors, factor_names = read_codes_and_factors(path)
        result = scores_of_arrays(str(path), codes, code_names, factors, factor_names, names, num_train, num_test,
                                  seed)
    else:
        from torch_infogan.checkpoint import load_checkpoint
        from torch_infogan.evaluation import disentanglement, factor_data
        from torch_infogan.runtime import resolve_device

        ckpt = load_checkpoint(path, resolve_device(device))
        dataset = factor_data(data, points, seed, data_root, split)
        result = disentanglement(ckpt.info, dataset, names, points=points, num_train=num_train, num_test=num_test,
                                 seed=seed, normalization=ckpt.config.get("normalization", "unit"),
                                 image_shape=ckpt.config["image_shape"])
    dci = result.get("dci") or result.get("dci_exact")
    if out is not None and dci is not None:
        out.mkdir(parents=True, exist_ok=True)
        plot_importance(dci["importance"], result["codes"], result["factors"], out / "dci_importance.png")
    return result


@app.command()
def rank(
    checkpoints: Annotated[list[Path], typer.Argument(help="Checkpoints of the runs to compare, e.g. runs/seed*/checkpoint.safetensors.")],
    data: Data = "mnist-10k",
    data_root: DataRoot = None,
    split: Split = "train",
    code: Annotated[Optional[str], typer.Option(help="The categorical code to rank by, e.g. cat0 (default: the first).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON list, best first, instead of a table.")] = False,
    device: Device = "cpu",
    seed: Seed = 0,
) -> None:
    """Rank runs by the label-free agreement of a categorical code on the data, best first: how to choose
    among seeds without labels (docs/training.md). Accuracy is shown too where the data has labels."""
    with user_errors():
        from torch_infogan.checkpoint import load_checkpoint
        from torch_infogan.errors import InfoGANError
        from torch_infogan.evaluation import load_data_for, rank_runs, run_score
        from torch_infogan.runtime import resolve_device

        datasets = {}  # by the image size and channels the runs were trained at
        bar = progress_bar(len(checkpoints), len(checkpoints) < 2, "ranking")
        rows = []
        for path in checkpoints:
            ckpt = load_checkpoint(path, resolve_device(device))
            train = ckpt.config.get("train") or {}
            key = (train.get("image_size"), train.get("channels"), tuple(ckpt.config["image_shape"]))
            if key not in datasets:
                datasets[key] = load_data_for(ckpt.config, data, data_root, split)
            dataset = datasets[key]
            try:
                score = run_score(ckpt.info, dataset, ckpt.config.get("normalization", "unit"), code, seed,
                                  ckpt.trained_labels)
            except InfoGANError as exc:
                raise InfoGANError(f"{path}: {exc}") from exc
            rows.append({"checkpoint": str(path), **score})
            if bar is not None:
                bar.update()
        if bar is not None:
            bar.close()
    rows = rank_runs(rows)
    if as_json:
        typer.echo(json.dumps(rows))
        return
    typer.echo(f"{'rank':>4}{'agreement':>11}{'real MI':>9}{'usage':>8}{'accuracy':>10}  checkpoint")
    for i, row in enumerate(rows, 1):
        accuracy = f"{row['accuracy']:>10.4f}" if "accuracy" in row else f"{'-':>10}"
        note = "" if row["informative"] else "  (real MI under half of ln k: agreement not comparable)"
        typer.echo(f"{i:>4}{row['agreement']:>11.4f}{row['real_mi']:>9.3f}{row['usage']:>8.3f}{accuracy}  "
                   f"{row['checkpoint']}{note}")
    typer.echo(f"best without labels: {rows[0]['checkpoint']} ({rows[0]['code']} agreement {rows[0]['agreement']:.4f})")


@app.command()
def sample(
    checkpoint: Checkpoint,
    out: Annotated[Path, typer.Option("--out", "-o", help="PNG file to write.")] = Path("samples.png"),
    n: Annotated[int, typer.Option("-n", help="Number of samples (a square grid).")] = 100,
    seed: Seed = 0,
    device: Device = "cpu",
) -> None:
    """A grid of samples from a checkpoint's generator."""
    with user_errors():
        from torch_infogan.checkpoint import load_checkpoint
        from torch_infogan.pictures import sample_grid
        from torch_infogan.runtime import resolve_device

        _check_folder(out.parent)
        ckpt = load_checkpoint(checkpoint, resolve_device(device))
        sample_grid(ckpt.generator, ckpt.info, out, n=n, seed=seed)
    typer.echo(f"wrote {out}")


@app.command()
def traverse(
    checkpoint: Checkpoint,
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the traversal PNGs.")] = Path("traversals"),
    code: Annotated[Optional[str], typer.Option(help="Code key (e.g. cat0, unif1); all codes when left out.")] = None,
    steps: Annotated[int, typer.Option(help="Values per continuous sweep (-2 to 2).")] = 10,
    seed: Seed = 0,
    device: Device = "cpu",
) -> None:
    """Latent traversals in the paper's Figure 2 form, one PNG per code (and continuous dimension)."""
    with user_errors():
        from torch_infogan.checkpoint import load_checkpoint
        from torch_infogan.errors import InfoGANError
        from torch_infogan.pictures import traversal_grid, traversal_names
        from torch_infogan.runtime import resolve_device

        ckpt = load_checkpoint(checkpoint, resolve_device(device))
        names = traversal_names(ckpt.info)
        if code is not None:
            names = [t for t in names if t[0] == code]
            if not names:
                raise InfoGANError(f"no code {code!r} in this checkpoint; its codes: {', '.join(ckpt.info.keys)}")
        out.mkdir(parents=True, exist_ok=True)
        written = [traversal_grid(ckpt.generator, ckpt.info, key, out / f"{stem}.png", dim=d, steps=steps, seed=seed)
                   for key, d, stem in names]
    typer.echo(f"wrote {', '.join(str(p) for p in written)}")


@app.command()
def explore(
    checkpoint: Checkpoint,
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port on 127.0.0.1 (0: any free one).")] = 8765,
    browser: Annotated[bool, typer.Option("--browser/--no-browser", help="Open the page in the default web browser.")] = True,
    runtime: Annotated[Optional[Path], typer.Option("--runtime", help="onnxruntime-web's dist folder (as for `infogan-export web`).")] = None,
    bounds_samples: Annotated[int, typer.Option(help="Generated samples for the MI bounds shown on the page (0: none).")] = 2000,
) -> None:
    """Serve the latent explorer for a checkpoint on 127.0.0.1 and open it: pick categories, move sliders, see
    the generator's image change. Ctrl-C stops the server and removes its temporary folder."""
    with user_errors():
        from torch_infogan.exporters.web import explore as serve_explorer

        with serve_explorer(checkpoint, port=port, runtime_dir=runtime, bounds_samples=bounds_samples) as site:
            typer.echo(f"serving the latent explorer at {site.url} from {site.folder} (Ctrl-C stops)")
            if browser:
                import webbrowser

                if not webbrowser.open(site.url):
                    typer.echo(f"no browser found: open {site.url}", err=True)
            try:
                site.wait()
            except KeyboardInterrupt:
                pass
    typer.echo("stopped")


def _flag_error(exc, overrides: dict) -> Exception:
    """A training option's ``ConfigError`` worded with the command-line flag where the option has one (else
    the library's own wording, naming the ``TrainConfig`` field)."""
    from torch_infogan.errors import InfoGANError

    if exc.option not in overrides:
        return InfoGANError(str(exc))
    return InfoGANError(f"--{exc.option.replace('_', '-')} {exc.problem}")


def _check_folder(folder: Path) -> None:
    from torch_infogan.errors import InfoGANError

    if not folder.is_dir():
        raise InfoGANError(f"folder does not exist: {folder}")


def run() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    run()
