"""Clustering metrics for categorical codes: Hungarian-matched accuracy, NMI, ARI, confusion matrix."""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment


def contingency(predicted: np.ndarray, labels: np.ndarray, n_pred: int | None = None,
                n_true: int | None = None) -> np.ndarray:
    """Counts ``[n_pred, n_true]``: how often category i co-occurs with label j."""
    predicted = np.asarray(predicted, dtype=np.int64)
    labels = np.asarray(labels, dtype=np.int64)
    n_pred = int(predicted.max()) + 1 if n_pred is None else n_pred
    n_true = int(labels.max()) + 1 if n_true is None else n_true
    table = np.zeros((n_pred, n_true), dtype=np.int64)
    np.add.at(table, (predicted, labels), 1)
    return table


def hungarian_accuracy(table: np.ndarray) -> tuple[float, dict[int, int]]:
    """Best one-to-one matching of categories to labels; returns accuracy and ``{category: label}``."""
    rows, cols = linear_sum_assignment(-table)
    return float(table[rows, cols].sum() / table.sum()), {int(r): int(c) for r, c in zip(rows, cols)}


def nmi(table: np.ndarray) -> float:
    """Normalized mutual information (arithmetic mean of the entropies, as scikit-learn's default)."""
    n = table.sum()
    p = table / n
    pi, pj = p.sum(1), p.sum(0)
    nz = p > 0
    mi = float((p[nz] * np.log(p[nz] / np.outer(pi, pj)[nz])).sum())
    h = [-float((q[q > 0] * np.log(q[q > 0])).sum()) for q in (pi, pj)]
    denom = (h[0] + h[1]) / 2
    return 1.0 if denom == 0 else max(0.0, mi / denom)


def ari(table: np.ndarray) -> float:
    """Adjusted Rand index."""
    def pairs(x):
        return (x * (x - 1) / 2).sum()

    n = table.sum()
    index = pairs(table.astype(np.float64))
    a, b = pairs(table.sum(1).astype(np.float64)), pairs(table.sum(0).astype(np.float64))
    expected = a * b / (n * (n - 1) / 2) if n > 1 else 0.0
    maximum = (a + b) / 2
    return 1.0 if maximum == expected else float((index - expected) / (maximum - expected))


def cluster_scores(predicted: np.ndarray, labels: np.ndarray, k: int) -> dict:
    """Accuracy after Hungarian matching, NMI, ARI and the matched confusion matrix."""
    n_true = max(int(np.max(labels)) + 1, 1)
    table = contingency(predicted, labels, max(k, int(np.max(predicted)) + 1), n_true)
    accuracy, mapping = hungarian_accuracy(table)
    merged = _merged_labels(table)
    return {"accuracy": accuracy, "nmi": nmi(table), "ari": ari(table), "mapping": mapping,
            "confusion": table.tolist(), "merged": merged}


def _merged_labels(table: np.ndarray, share: float = 0.2) -> list[list[int]]:
    """Groups of labels that share a category, each with >= ``share`` of its images there (e.g. [[4, 9]])."""
    fractions = table / np.maximum(table.sum(0, keepdims=True), 1)
    parent = list(range(table.shape[1]))

    def root(i: int) -> int:
        while parent[i] != i:
            i = parent[i]
        return i

    for row in fractions:
        labels = np.flatnonzero(row >= share)
        for other in labels[1:]:
            parent[root(int(other))] = root(int(labels[0]))
    groups: dict[int, list[int]] = {}
    for label in range(table.shape[1]):
        groups.setdefault(root(label), []).append(label)
    return [g for g in groups.values() if len(g) > 1]
