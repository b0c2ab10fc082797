"""Train on class-unbalanced subsets of a labelled dataset with the uniform and the learned categorical prior side
by side; print accuracy, NMI and the total-variation distance between each prior and the true class frequencies.

    python benchmarks/imbalanced.py --data mnist-10k --subsets 10 --jobs 2 --threads 1 [--iterations 3000]
    python benchmarks/imbalanced.py --data idx:/usr/share/datasets/fashion-mnist --subsets 10 --jobs 2 --threads 1

Subset ``i`` of ``n`` has largest/smallest class ratio ``2 * 5 ** (i / (n - 1))`` (2 to 10, spread evenly on a log
scale) and ``imbalance_seed = i`` (``ImageData.imbalanced``). Each subset trains once per prior with the same
training seed; the learned prior is the first categorical code's ``prior=learned``, nothing else changes.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import statistics
import time

import numpy as np
import torch

from torch_infogan.config import PRESETS, preset_config
from torch_infogan.evaluation import evaluate, prior_against_labels
from torch_infogan.runtime import process_pool
from torch_infogan.trainer import Trainer


def ratios(n: int) -> list[float]:
    """``n`` largest/smallest class ratios from 2 to 10, evenly spread on a log scale."""
    return [2.0] if n == 1 else [round(2.0 * 5.0 ** (i / (n - 1)), 2) for i in range(n)]


def learned_spec(codes: str) -> str:
    """``codes`` with ``prior=learned`` on its first categorical code."""
    tokens = codes.split(",")
    first = next(i for i, token in enumerate(tokens) if token.split(":")[0] == "cat")
    tokens[first] += ":prior=learned"
    return ",".join(tokens)


def run(preset: str, data: str, subset: int, ratio: float, prior: str, seed: int, overrides: dict,
        threads: int | None) -> dict:
    if threads:
        torch.set_num_threads(threads)
    config = preset_config(preset, data=data, seed=seed, imbalance=ratio, imbalance_seed=subset, **overrides)
    if prior == "learned":
        config.update(codes=learned_spec(config.codes))
    trainer = Trainer(config)
    start = time.perf_counter()
    for _ in range(trainer.iterations):
        trainer.step()
    seconds = time.perf_counter() - start
    result = evaluate(trainer.generator, trainer.info, trainer.full_data, trained_labels=trainer.labelled)
    key = next(iter(result["codes"]))
    scores = result["codes"][key]
    code = trainer.info.codes[trainer.info.keys.index(key)]
    compared = prior_against_labels(code.probs.tolist(), scores["confusion"], scores["mapping"])
    return {"subset": subset, "ratio": ratio, "prior": prior, "seed": seed, "images": len(trainer.full_data),
            "class_counts": trainer.full_data.class_counts(), "accuracy": scores["accuracy"], "nmi": scores["nmi"],
            "prior_tv": compared["prior_tv"], "probs": code.probs.tolist(), "merged": scores["merged"],
            "seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="mnist-10k")
    parser.add_argument("--preset", default="mnist", choices=list(PRESETS))
    parser.add_argument("--subsets", type=int, default=10, help="how many unbalanced subsets (ratios 2 to 10)")
    parser.add_argument("--only", type=int, nargs="+", help="run only these subset indices")
    parser.add_argument("--priors", nargs="+", default=["uniform", "learned"], choices=["uniform", "learned"])
    parser.add_argument("--seed", type=int, default=0, help="the training seed of every run")
    parser.add_argument("--iterations", type=int)
    parser.add_argument("--threads", type=int)
    parser.add_argument("--jobs", type=int, default=1, help="runs trained at once, each in its own process")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=JSON",
                        help="override any TrainConfig field, e.g. --set iic=0")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()
    overrides = {"iterations": args.iterations}
    for item in args.set:
        key, _, value = item.partition("=")
        overrides[key] = json.loads(value)
    overrides = {k: v for k, v in overrides.items() if v is not None}
    subsets = list(enumerate(ratios(args.subsets)))
    if args.only:
        subsets = [subsets[i] for i in args.only]
    print(f"data {args.data}, preset {args.preset}, seed {args.seed}, overrides {overrides}", flush=True)
    print(f"{'subset':>6} {'ratio':>6} {'images':>6} {'prior':>8} {'accuracy':>9} {'NMI':>7} {'TV':>6} {'seconds':>8}"
          "  merged", flush=True)
    rows = []
    with process_pool(args.jobs) as pool:
        futures = [pool.submit(run, args.preset, args.data, i, ratio, prior, args.seed, overrides, args.threads)
                   for i, ratio in subsets for prior in args.priors]
        for future in concurrent.futures.as_completed(futures):
            row = future.result()
            rows.append(row)
            merged = " ".join("/".join(map(str, g)) for g in row["merged"]) or "-"
            print(f"{row['subset']:>6} {row['ratio']:>6.2f} {row['images']:>6} {row['prior']:>8} "
                  f"{row['accuracy']:>9.4f} {row['nmi']:>7.4f} {row['prior_tv']:>6.3f} {row['seconds']:>8.0f}  {merged}",
                  flush=True)
    for prior in args.priors:
        mine = [r for r in rows if r["prior"] == prior]
        if mine:
            print(f"{prior}: accuracy median {statistics.median(r['accuracy'] for r in mine):.4f} "
                  f"(min {min(r['accuracy'] for r in mine):.4f}), NMI median {statistics.median(r['nmi'] for r in mine):.4f}, "
                  f"TV median {statistics.median(r['prior_tv'] for r in mine):.3f} "
                  f"(max {max(r['prior_tv'] for r in mine):.3f}), {len(mine)} subsets", flush=True)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(sorted(rows, key=lambda r: (r["subset"], r["prior"])), handle, indent=2)


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
