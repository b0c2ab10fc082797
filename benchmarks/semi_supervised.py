"""A few labels: the label-trained run's own Q, a linear probe on its features, and an unsupervised run's
features and code probed on the same label draws; accuracy on the images whose labels were not used.

    python benchmarks/semi_supervised.py --unsupervised runs/mnist/checkpoint.safetensors \\
        --per-class 1 10 100 --draws 5 [--first-draw 0] --seeds 0 1 [--iterations 3000] [--jobs 2 --threads 1] [--save DIR]

For each number of labels per class, label draw and training seed, a run of the default trains with those
labels (``infogan train --labels N --labels-seed DRAW --seed SEED``). Each draw is the one training uses
(``draw_labelled``: N images of each class of the training data, seeded by the draw), and every score is on
the other images of the data:

- ``own Q``: the label-trained run's categorical code taken as the label (category k is label k, no matching);
- ``probe``: a linear classifier (multinomial logistic regression, L-BFGS) on that run's features, fitted on the
  labelled images;
- ``unsup. probe`` / ``unsup. code``: the same classifier on the unsupervised checkpoint's features and on its
  categorical code's probabilities, fitted on the same labelled images.

``--runs DIR`` scores checkpoints saved earlier by ``--save DIR`` instead of training.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import re
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from torch_infogan.config import preset_config
from torch_infogan.data import load_data
from torch_infogan.evaluation import evaluate
from torch_infogan.exporters import FeatureDataset, export_features
from torch_infogan.labelled import draw_labelled
from torch_infogan.runtime import process_pool
from torch_infogan.trainer import Trainer


def linear_probe(x_train, y_train, x_test, y_test, weight_decay=1e-3, steps=200) -> float:
    """Test accuracy of a multinomial logistic regression fitted on standardized ``x_train``."""
    mean, std = x_train.mean(0, keepdim=True), x_train.std(0, keepdim=True) + 1e-6
    x_train, x_test = (x_train - mean) / std, (x_test - mean) / std
    model = torch.nn.Linear(x_train.shape[1], int(max(y_train.max(), y_test.max())) + 1)
    opt = torch.optim.LBFGS(model.parameters(), lr=1, max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x_train), y_train) + weight_decay * model.weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        return float((model(x_test).argmax(1) == y_test).float().mean())


def run_name(per_class: int, draw: int, seed: int) -> str:
    return f"labels{per_class}_draw{draw}_seed{seed}"


def train_run(per_class: int, draw: int, seed: int, overrides: dict, save: str, threads: int | None) -> dict:
    """Train the default with ``per_class`` labels of draw ``draw``; save its checkpoint; its own plain accuracy."""
    if threads:
        torch.set_num_threads(threads)
    trainer = Trainer(preset_config("mnist", labels=per_class, labels_seed=draw, seed=seed, **overrides))
    start = time.perf_counter()
    for _ in range(trainer.iterations):
        trainer.step()
    seconds = time.perf_counter() - start
    path = Path(save) / f"{run_name(per_class, draw, seed)}.safetensors"
    trainer.save(path)
    scores = evaluate(trainer.generator, trainer.info, trainer.full_data, trained_labels=trainer.labelled)
    return {"per_class": per_class, "draw": draw, "seed": seed, "checkpoint": str(path), "seconds": seconds,
            "matched": scores["codes"]["cat0"]["accuracy"]}


def features_of(checkpoint: str, data) -> tuple[torch.Tensor, torch.Tensor]:
    """The encoder's features and the first categorical code's probabilities for every image, via an HDF5 export."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "features.h5"
        export_features(checkpoint, data, path)
        features, _ = FeatureDataset(path).arrays()
        code, _ = FeatureDataset(path, key="codes/cat0_probs").arrays()
    return torch.from_numpy(features), torch.from_numpy(code)


def score(row: dict, data, unsupervised: tuple | None) -> dict:
    """Every column of the table for one label-trained run, on the images whose labels it did not use."""
    labels = data.labels.numpy()
    picked, _ = draw_labelled(data, row["per_class"], row["draw"])
    rest = np.setdiff1d(np.arange(len(data)), picked)
    y = torch.from_numpy(labels)
    features, code = features_of(row["checkpoint"], data)
    row = dict(row, own_q=float((code[rest].argmax(1) == y[rest]).float().mean()),
               probe=linear_probe(features[picked], y[picked], features[rest], y[rest]))
    if unsupervised is not None:
        u_features, u_code = unsupervised
        row["unsup_probe"] = linear_probe(u_features[picked], y[picked], u_features[rest], y[rest])
        row["unsup_code"] = linear_probe(u_code[picked], y[picked], u_code[rest], y[rest])
    return row


COLUMNS = [("own_q", "own Q"), ("probe", "probe"), ("unsup_probe", "unsup. probe"), ("unsup_code", "unsup. code")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--unsupervised", help="an unsupervised run's checkpoint to probe on the same draws")
    parser.add_argument("--data", default="mnist-10k")
    parser.add_argument("--per-class", type=int, nargs="+", default=[1, 10, 100])
    parser.add_argument("--draws", type=int, default=5, help="label draws per count of labels")
    parser.add_argument("--first-draw", type=int, default=0, help="the draws are FIRST_DRAW ... FIRST_DRAW + DRAWS - 1")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--iterations", type=int)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=JSON",
                        help="override any TrainConfig field, e.g. --set label_weight=2")
    parser.add_argument("--jobs", type=int, default=1, help="runs trained at once, each in its own process")
    parser.add_argument("--threads", type=int)
    parser.add_argument("--save", default="runs/semi_supervised", help="where the label-trained checkpoints go")
    parser.add_argument("--runs", help="score the checkpoints saved in this folder instead of training")
    parser.add_argument("--json", help="also write the rows to this file")
    args = parser.parse_args()
    data = load_data(args.data)
    if data.labels is None:
        parser.error(f"{args.data} has no labels")
    overrides = {"data": args.data, "iterations": args.iterations}
    for item in args.set:
        key, _, value = item.partition("=")
        overrides[key] = json.loads(value)
    if args.runs:
        rows = []
        for path in sorted(Path(args.runs).glob("labels*_draw*_seed*.safetensors")):
            per_class, draw, seed = map(int, re.findall(r"\d+", path.stem)[-3:])
            if per_class in args.per_class:
                rows.append({"per_class": per_class, "draw": draw, "seed": seed, "checkpoint": str(path)})
    else:
        Path(args.save).mkdir(parents=True, exist_ok=True)
        draws = range(args.first_draw, args.first_draw + args.draws)
        jobs = [(n, draw, seed) for n in args.per_class for draw in draws for seed in args.seeds]
        print(f"training {len(jobs)} runs of the default with labels, overrides "
              f"{({k: v for k, v in overrides.items() if v is not None})}", flush=True)
        with process_pool(args.jobs) as pool:
            futures = [pool.submit(train_run, *job, overrides, args.save, args.threads) for job in jobs]
            rows = []
            for future in concurrent.futures.as_completed(futures):
                rows.append(future.result())
                print(f"  trained {run_name(rows[-1]['per_class'], rows[-1]['draw'], rows[-1]['seed'])} in "
                      f"{rows[-1]['seconds']:.0f} s", flush=True)
    unsupervised = features_of(args.unsupervised, data) if args.unsupervised else None
    rows = [score(row, data, unsupervised) for row in sorted(rows, key=lambda r: (r["per_class"], r["draw"], r["seed"]))]
    classes = len(np.unique(data.labels.numpy()))
    columns = [(key, title) for key, title in COLUMNS if key in rows[0]]
    print(f"{'labels':>7} {'draw':>5} {'seed':>5}" + "".join(f"{title:>14}" for _, title in columns))
    for row in rows:
        print(f"{row['per_class'] * classes:>7} {row['draw']:>5} {row['seed']:>5}"
              + "".join(f"{row[key]:>14.4f}" for key, _ in columns))
    print("medians (errors per 10,000 in brackets):")
    for n in sorted({row["per_class"] for row in rows}):
        group = [row for row in rows if row["per_class"] == n]
        cells = "".join(f"{statistics.median(r[key] for r in group):>9.4f} ({round(1e4 * (1 - statistics.median(r[key] for r in group))):>4})"
                        for key, _ in columns)
        print(f"{n * classes:>7} {len(group):>5} runs" + cells)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
