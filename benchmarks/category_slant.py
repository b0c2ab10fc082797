"""How the categories of a run that shares digits between categories divide those digits: for each group of
labels that share categories (``merged`` in ``infogan evaluate``), each label's count and mean slant in each
category that holds at least 20% of it, on mnist-10k.

    python benchmarks/category_slant.py runs/mnist/checkpoint.safetensors [more checkpoints]

Slant is the ink's horizontal shift per row, cov(column, row) / var(row): 0 for an upright stroke, negative for
one that leans right (as "/"), positive for one that leans left. Two categories that each hold a share of the
same two digits, with their slants apart, are dividing those digits by slant rather than by identity.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from torch_infogan.checkpoint import load_checkpoint
from torch_infogan.data import load_data
from torch_infogan.evaluation import encode
from torch_infogan.codes import split_params
from torch_infogan.metrics import cluster_scores


def slants(images: torch.Tensor) -> np.ndarray:
    """cov(column, row) / var(row) of each image's ink (uint8 ``[n, 1, h, w]``)."""
    x = images.float()[:, 0]
    rows, cols = torch.meshgrid(torch.arange(x.shape[1], dtype=torch.float32),
                                torch.arange(x.shape[2], dtype=torch.float32), indexing="ij")
    ink = x.sum((1, 2)).clamp_min(1e-6)
    dy = rows - ((x * rows).sum((1, 2)) / ink)[:, None, None]
    dx = cols - ((x * cols).sum((1, 2)) / ink)[:, None, None]
    return ((x * dy * dx).sum((1, 2)) / (x * dy * dy).sum((1, 2)).clamp_min(1e-6)).numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoints", nargs="+")
    args = parser.parse_args()
    data = load_data("mnist-10k", None, "train", False)
    labels = np.asarray(data.labels)
    slant = slants(data.images)
    for path in args.checkpoints:
        checkpoint = load_checkpoint(path)
        info = checkpoint.info
        parts = split_params(info.codes, encode(info, data.images, device="cpu"))
        # The first code that clusters, as `infogan evaluate` finds it (Code.cluster).
        clusters = ((code, code.cluster(part)) for code, part in zip(info.codes, parts))
        code, assigned = next((code, assigned) for code, assigned in clusters if assigned is not None)
        assigned = assigned.long().numpy()
        scores = cluster_scores(assigned, labels, code.num_clusters)
        print(f"{path}: accuracy {scores['accuracy']:.4f}, labels sharing categories "
              f"{' '.join('/'.join(map(str, g)) for g in scores['merged']) or '-'}")
        for group in scores["merged"]:
            for label in group:
                mine = labels == label
                for category in np.unique(assigned[mine]):
                    here = mine & (assigned == category)
                    if here.sum() >= 0.2 * mine.sum():
                        print(f"  digit {label} in category {category}: {int(here.sum()):5d} images, "
                              f"mean slant {slant[here].mean():+.3f}")


if __name__ == "__main__":
    main()
