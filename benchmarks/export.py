"""Feature export: throughput of both engines, and peak memory against the number of rows.

    python benchmarks/export.py CHECKPOINT [--repeats 1 5 20] [--batch-size 512]

Rows beyond 10,000 repeat mnist-10k through the exporter's ``indices`` argument, so the images in
memory stay the same and any growth would come from the export itself. Each measurement runs in its
own process and reports that process's peak resident memory (ru_maxrss).
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = """
import json, resource, sys, numpy as np, torch
from torch_infogan.data import load_data
from torch_infogan.exporters import export_features
ckpt, out, engine, repeats, batch = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
data = load_data()
report = export_features(ckpt, data, out, batch_size=batch, engine=engine, indices=np.tile(np.arange(len(data)), repeats))
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"rows": report.rows, "seconds": report.seconds, "peak_mib": peak}))
"""


def run(checkpoint: str, engine: str, repeats: int, batch: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "features.h5"
        proc = subprocess.run([sys.executable, "-c", CHILD, checkpoint, str(out), engine, str(repeats), str(batch)],
                              capture_output=True, text=True, check=True)
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        result["file_mib"] = out.stat().st_size / 2**20
        return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--repeats", type=int, nargs="+", default=[1, 5, 20])
    parser.add_argument("--batch-size", type=int, default=512)
    args = parser.parse_args()
    import torch

    print(f"machine: {platform.machine()}, {torch.get_num_threads()} threads; torch {torch.__version__}; "
          f"batch {args.batch_size}")
    print(f"{'engine':<8}{'rows':>9}{'images/s':>10}{'peak MiB':>10}{'file MiB':>10}")
    for engine in ("torch", "onnx"):
        for repeats in args.repeats:
            r = run(args.checkpoint, engine, repeats, args.batch_size)
            print(f"{engine:<8}{r['rows']:>9}{r['rows'] / r['seconds']:>10.0f}{r['peak_mib']:>10.0f}{r['file_mib']:>10.1f}",
                  flush=True)


if __name__ == "__main__":
    main()
