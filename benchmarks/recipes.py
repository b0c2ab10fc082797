"""The compatibility matrix: every GAN style in examples/ at its default length, per seed, as a table.

    python benchmarks/recipes.py [--seeds 0 1] [--rows dcgan wgan_gp ...]

Each row is a user-style script with the two InfoGAN lines added (docs/recipes.md); the table gives the
categorical MI bound (nats, mean over the last 50 steps; ln 10 = 2.303 at most) and the wall time of
``main``. ``ddp_autocast`` runs under ``torchrun --standalone --nproc-per-node 2`` (gloo, 1 thread each).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import torch

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
ROWS = ["dcgan", "wgan_gp", "sngan_hinge", "lsgan", "r1_stylegan2", "diffaugment", "conditional_projection",
        "ddp_autocast", "compiled_d"]


def run_row(name: str, seed: int) -> dict:
    if name == "ddp_autocast":
        torchrun = os.path.join(os.path.dirname(sys.executable), "torchrun")
        proc = subprocess.run([torchrun, "--standalone", "--nproc-per-node", "2", str(EXAMPLES / f"{name}.py"),
                               "--seed", str(seed)], capture_output=True, text=True,
                              env=dict(os.environ, OMP_NUM_THREADS="1"))
        if proc.returncode != 0:
            raise SystemExit(proc.stderr[-3000:])
        line = next(line for line in proc.stdout.splitlines() if line.startswith("RESULT "))
        return json.loads(line[len("RESULT "):])
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main(seed=seed, log=lambda *a, **k: None)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--rows", nargs="+", default=ROWS, choices=ROWS)
    args = parser.parse_args()
    print(f"machine: {platform.processor() or platform.machine()}, torch {torch.__version__}; "
          f"command: python benchmarks/recipes.py --seeds {' '.join(map(str, args.seeds))}")
    print("| row | steps | batch | " + " | ".join(f"bound seed {s}" for s in args.seeds)
          + " | " + " | ".join(f"seconds seed {s}" for s in args.seeds) + " |")
    print("| --- | ---: | ---: | " + " | ".join("---:" for _ in args.seeds * 2) + " |")
    for name in args.rows:
        results = [run_row(name, seed) for seed in args.seeds]
        print(f"| `{name}` | {results[0]['steps']} | {results[0]['batch_size']} | "
              + " | ".join(f"{r['bound']:.3f}" for r in results) + " | "
              + " | ".join(f"{r['seconds']:.1f}" for r in results) + " |", flush=True)


if __name__ == "__main__":
    main()
