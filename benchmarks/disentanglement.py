"""Train InfoGAN and InfoGAN-CR on the procedural dSprites grid for several seeds; print MIG, DCI, SAP and the
FactorVAE score (mean and std over seeds), run length, seconds, the command and the machine.

    python benchmarks/disentanglement.py --seeds 0 1 2 [--iterations 10000] [--models infogan infogan-cr]
        [--eval-every 2500] [--threads 1] [--json results.json] [--out runs/disentanglement]

``infogan`` is the ``shapes`` preset (InfoGAN-CR's modified InfoGAN), ``infogan-cr`` the ``shapes-cr`` preset
(the same plus the contrastive regularizer from ``--cr-start``, default half-way). The metrics follow
disentanglement_lib's study defaults (``torch_infogan.disentanglement``) on 20,000 images drawn from the grid.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

from torch_infogan.config import preset_config
from torch_infogan.data import load_data
from torch_infogan.evaluation import disentanglement
from torch_infogan.pictures import code_rows_grid, plot_importance
from torch_infogan.trainer import Trainer

MODELS = {"infogan": "shapes", "infogan-cr": "shapes-cr"}
COLUMNS = [("factorvae", "eval_accuracy", "FactorVAE"), ("dci", "disentanglement", "DCI"), ("sap", "sap", "SAP"),
           ("mig", "mig", "MIG")]


def _cpu() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            return next(line.split(":", 1)[1].strip() for line in handle if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.machine()


def _scores(trainer: Trainer, seed: int, metrics=None) -> dict:
    result = disentanglement(trainer.info, trainer.full_data, metrics, seed=seed)
    trainer.generator.train()
    trainer.discriminator.train()
    return result


def run(model: str, seed: int, iterations: int, cr_start: int | None, eval_every: int, data, overrides: dict,
        out: Path | None = None) -> dict:
    extra = dict(overrides)
    if model == "infogan-cr":
        extra["contrastive_start"] = cr_start if cr_start is not None else iterations // 2
    trainer = Trainer(preset_config(MODELS[model], seed=seed, iterations=iterations, **extra), data)
    start = time.perf_counter()
    curve = []
    for step in range(1, trainer.iterations + 1):
        trainer.step()
        if eval_every and step % eval_every == 0 and step != trainer.iterations:
            s = _scores(trainer, seed, ("mig", "factorvae"))  # the curve leaves out DCI, the slowest metric
            curve.append((step, round(s["mig"]["mig"], 3), round(s["factorvae"]["eval_accuracy"], 3)))
    seconds = time.perf_counter() - start
    result = _scores(trainer, seed)
    if out is not None:  # the checkpoint and the pictures a user would look at
        folder = out / f"{model}-seed{seed}"
        folder.mkdir(parents=True, exist_ok=True)
        trainer.save(folder / "checkpoint.safetensors")
        code_rows_grid(trainer.generator, trainer.info, folder / "codes.png")
        plot_importance(result["dci"]["importance"], result["codes"], result["factors"], folder / "dci_importance.png")
    curve.append((trainer.iterations, round(result["mig"]["mig"], 3), round(result["factorvae"]["eval_accuracy"], 3)))
    return {"model": model, "seed": seed, "iterations": iterations, "seconds": seconds, "curve": curve,
            **{label: result[metric][key] for metric, key, label in COLUMNS},
            "importance": result["dci"]["importance"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--iterations", type=int, default=10000)
    parser.add_argument("--cr-start", type=int, help="iteration the contrastive term starts (default: half-way)")
    parser.add_argument("--eval-every", type=int, default=0, help="also score every N iterations (curve: MIG, FactorVAE)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=JSON",
                        help="override any TrainConfig field, e.g. --set precision='\"fp32\"'")
    parser.add_argument("--json", help="also write the per-run results to this file")
    parser.add_argument("--out", type=Path, help="save each run's checkpoint, codes.png and DCI heat map here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    overrides = {"device": args.device}
    for item in args.set:
        key, _, value = item.partition("=")
        overrides[key] = json.loads(value)
    print("command: python " + " ".join(sys.argv))
    print(f"machine: {_cpu()}, {torch.get_num_threads()} threads, torch {torch.__version__}")
    start = time.perf_counter()
    data = load_data("shapes")
    print(f"rendered the grid ({len(data)} images) in {time.perf_counter() - start:.0f} s", flush=True)
    rows = []
    print(f"{'model':<11}{'seed':>5}" + "".join(f"{label:>10}" for *_, label in COLUMNS)
          + f"{'seconds':>9}  curve (iteration, MIG, FactorVAE)", flush=True)
    for model in args.models:
        for seed in args.seeds:
            row = run(model, seed, args.iterations, args.cr_start, args.eval_every, data, overrides, args.out)
            rows.append(row)
            print(f"{model:<11}{seed:>5}" + "".join(f"{row[label]:>10.3f}" for *_, label in COLUMNS)
                  + f"{row['seconds']:>9.0f}  {row['curve']}", flush=True)
    print()
    print(f"mean (std) over seeds {args.seeds}, {args.iterations} iterations of batch 64:")
    print(f"{'model':<11}" + "".join(f"{label:>14}" for *_, label in COLUMNS))
    for model in args.models:
        mine = [r for r in rows if r["model"] == model]
        cells = []
        for *_, label in COLUMNS:
            values = [r[label] for r in mine]
            cells.append(f"{statistics.mean(values):.3f} ({statistics.pstdev(values):.3f})")
        print(f"{model:<11}" + "".join(f"{c:>14}" for c in cells))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(rows, handle, indent=2)


if __name__ == "__main__":
    main()
