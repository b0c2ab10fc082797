"""Train the MNIST recipe for several seeds on mnist-10k; print accuracy (mean, std, min), NMI, ARI, merges, time,
and the label-free scores of Q's categories on the real images (``real_mi``: usage - E[H(Q(c|x))]; ``agreement``:
the share of each digit's 10 nearest neighbours in pixel space that Q puts in the same category).

    python benchmarks/mnist_accuracy.py --seeds 0 1 2 3 4 [--preset mnist] [--device cuda] [--eval-every 500]

``--jobs N`` trains N seeds at once, each in its own process (one GPU is mostly idle under a single run of
these small networks: launching kernels from Python is the bound); rows print as runs finish.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import statistics
import time
from pathlib import Path

import torch

from torch_infogan.evaluation import evaluate
from torch_infogan.config import PRESETS, preset_config
from torch_infogan.runtime import process_pool
from torch_infogan.trainer import Trainer


def curve_point(step: int, scores: dict) -> tuple:
    """(iteration, accuracy, real MI, agreement) of the categorical code at one evaluation."""
    return step, round(scores["accuracy"], 4), round(scores["real_mi"], 3), round(scores["agreement"], 4)


def run(preset: str, seed: int, device: str, eval_every: int, overrides: dict, save: str | None = None) -> dict:
    trainer = Trainer(preset_config(preset, seed=seed, device=device, **overrides))
    start = time.perf_counter()
    curve = []
    for step in range(1, trainer.iterations + 1):
        trainer.step()
        if eval_every and (step % eval_every == 0) and step != trainer.iterations:
            scores = evaluate(trainer.generator, trainer.info, trainer.data, trained_labels=trainer.labelled)["codes"]["cat0"]
            curve.append(curve_point(step, scores))
            trainer.generator.train(); trainer.discriminator.train()
    seconds = time.perf_counter() - start
    if save:
        trainer.save(Path(save) / f"seed{seed}.safetensors")
    result = evaluate(trainer.generator, trainer.info, trainer.data, trained_labels=trainer.labelled)
    scores = result["codes"]["cat0"]
    curve.append(curve_point(trainer.iterations, scores))
    return {"seed": seed, "accuracy": scores["accuracy"], "nmi": scores["nmi"], "ari": scores["ari"],
            "merged": scores["merged"], "real_mi": scores["real_mi"], "agreement": scores["agreement"],
            "usage": scores["usage"],
            "confidence": scores["confidence"], "seconds": seconds, "curve": curve}


def _run_in_worker(threads: int | None, *args) -> dict:
    if threads:
        torch.set_num_threads(threads)
    return run(*args)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="mnist", choices=list(PRESETS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--eval-every", type=int, default=0)
    parser.add_argument("--iterations", type=int)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--threads", type=int)
    parser.add_argument("--jobs", type=int, default=1, help="seeds trained at once, each in its own process")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=JSON",
                        help="override any TrainConfig field, e.g. --set instance_noise=0.1")
    parser.add_argument("--json", help="also write the per-seed results to this file")
    parser.add_argument("--save", metavar="DIR", help="also keep each seed's final checkpoint as DIR/seedN.safetensors")
    args = parser.parse_args()
    if args.save:
        Path(args.save).mkdir(parents=True, exist_ok=True)
    overrides = {"iterations": args.iterations, "batch_size": args.batch_size}
    for item in args.set:
        key, _, value = item.partition("=")
        overrides[key] = json.loads(value)
    rows = []
    print(f"preset {args.preset}, overrides {({k: v for k, v in overrides.items() if v is not None})}", flush=True)
    print(f"{'seed':>4} {'accuracy':>9} {'NMI':>7} {'ARI':>7} {'real MI':>8} {'agreement':>9} {'seconds':>8}  merged  "
          "curve (iteration, accuracy, real MI, agreement)", flush=True)
    with process_pool(args.jobs) as pool:
        futures = [pool.submit(_run_in_worker, args.threads, args.preset, seed, args.device, args.eval_every,
                               overrides, args.save) for seed in args.seeds]
        for future in concurrent.futures.as_completed(futures):
            rows.append(future.result())
            _print_row(rows[-1])
    rows.sort(key=lambda r: args.seeds.index(r["seed"]))
    accs = [r["accuracy"] for r in rows]
    print(f"accuracy: median {statistics.median(accs):.4f}, mean {statistics.mean(accs):.4f}, "
          f"std {statistics.pstdev(accs):.4f}, min {min(accs):.4f}, max {max(accs):.4f}; "
          f"NMI mean {statistics.mean(r['nmi'] for r in rows):.4f}, ARI mean {statistics.mean(r['ari'] for r in rows):.4f}; "
          f"{statistics.mean(r['seconds'] for r in rows):.0f} s per run")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(rows, handle, indent=2)


def _print_row(row: dict) -> None:
    merged = " ".join("/".join(map(str, g)) for g in row["merged"]) or "-"
    print(f"{row['seed']:>4} {row['accuracy']:>9.4f} {row['nmi']:>7.4f} {row['ari']:>7.4f} {row['real_mi']:>8.3f} "
          f"{row['agreement']:>9.4f} {row['seconds']:>8.0f}  {merged}  {row['curve']}", flush=True)


if __name__ == "__main__":
    main()
