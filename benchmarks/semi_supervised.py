"""Few-label classification on exported features: 10, 100 and 1,000 labels, beside raw pixels and the code alone.

    python benchmarks/semi_supervised.py CHECKPOINT [--draws 5]

mnist-10k is split into a label pool (first 8,000 digits) and a test set (last 2,000). For each label
budget, a balanced labelled subset is drawn from the pool (``--draws`` times) and a linear classifier
(multinomial logistic regression, L-BFGS, weight decay picked on the labelled subset alone) is trained on
(a) the encoder's features, (b) raw pixels, (c) the categorical code's probabilities. Test accuracy,
mean and std over draws.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import numpy as np
import torch

from torch_infogan.data import load_data
from torch_infogan.exporters import FeatureDataset, export_features


def linear_probe(x_train, y_train, x_test, y_test, weight_decay=1e-3, steps=200) -> float:
    mean, std = x_train.mean(0, keepdim=True), x_train.std(0, keepdim=True) + 1e-6
    x_train, x_test = (x_train - mean) / std, (x_test - mean) / std
    model = torch.nn.Linear(x_train.shape[1], 10)
    opt = torch.optim.LBFGS(model.parameters(), lr=1, max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x_train), y_train) + weight_decay * model.weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        return float((model(x_test).argmax(1) == y_test).float().mean())


def balanced(labels: np.ndarray, per_class: int, rng) -> np.ndarray:
    return np.concatenate([rng.choice(np.flatnonzero(labels == c), per_class, replace=False) for c in range(10)])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--draws", type=int, default=5)
    args = parser.parse_args()
    data = load_data()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "features.h5"
        export_features(args.checkpoint, data, path)
        features, labels = FeatureDataset(path).arrays()
        cat, _ = FeatureDataset(path, key="codes/cat0").arrays()
    inputs = {"InfoGAN features": torch.from_numpy(features), "raw pixels": data.images.flatten(1).float() / 255,
              "categorical code": torch.from_numpy(cat)}
    y = torch.from_numpy(labels)
    pool, test = np.arange(8000), np.arange(8000, 10000)
    print(f"{'labels':>7}  " + "".join(f"{name:>22}" for name in inputs))
    for budget in (10, 100, 1000):
        scores = {name: [] for name in inputs}
        for draw in range(args.draws):
            picked = pool[balanced(labels[pool], budget // 10, np.random.default_rng(draw))]
            for name, x in inputs.items():
                scores[name].append(linear_probe(x[picked], y[picked], x[test], y[test]))
        cells = "".join(f"{statistics.mean(v):>15.3f} ± {statistics.pstdev(v):.3f}" for v in scores.values())
        print(f"{budget:>7}  {cells}", flush=True)


if __name__ == "__main__":
    main()
