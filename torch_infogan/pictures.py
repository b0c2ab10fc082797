"""Pictures: sample grids, latent traversals (the paper's Figure 2), MI curves (Figure 1), confusion matrices."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torchvision.utils import save_image

from torch_infogan.regularizer import InfoRegularizer


def _to_unit(images: torch.Tensor, output_range: str) -> torch.Tensor:
    return (images + 1) / 2 if output_range == "tanh" else images


@torch.no_grad()
def sample_grid(generator: nn.Module, info: InfoRegularizer, path: str | Path, n: int = 100, seed: int = 0,
                output_range: str = "sigmoid") -> Path:
    """A square grid of ``n`` samples from the prior."""
    device = next(generator.parameters()).device
    gen = torch.Generator(device=device).manual_seed(seed)
    latent, _ = info.draw(n, generator=gen, device=device)
    was_training = generator.training
    generator.eval()
    images = generator(latent)
    generator.train(was_training)
    save_image(_to_unit(images.float(), output_range), path, nrow=int(n ** 0.5), padding=1, pad_value=0.5)
    return Path(path)


def _categorical(code) -> bool:
    """Whether a code's value is one class index that clusters (a categorical code): its traversal is one
    picture with a row per class, and it gives the rows of other codes' traversals."""
    return code.has_enumerate_support and code.num_clusters is not None


@torch.no_grad()
def traversal_images(generator: nn.Module, info: InfoRegularizer, key: str, dim: int = 0, steps: int = 10,
                     seed: int = 0, columns: int = 10) -> tuple[torch.Tensor, int]:
    """Images for a traversal of code ``key`` (dimension ``dim``) and the grid's row length.

    A categorical code: one row per class; columns hold different noise.
    Any other code: columns sweep dimension ``dim`` through ``code.traversal(steps)`` (-2 to 2 for
    continuous codes, every value for codes with enumerate support); rows are the classes of the first
    other categorical code if there is one, else different noise.
    Codes not being swept keep ``code.held_value()``: the prior's mean, or one random draw.
    """
    index = info.keys.index(key)
    code = info.codes[index]
    device = next(generator.parameters()).device
    gen = torch.Generator(device=device).manual_seed(seed)
    row_code = next((i for i, c in enumerate(info.codes) if i != index and _categorical(c)), None)
    if _categorical(code):
        classes = code.enumerate_support().to(device)
        rows, cols = len(classes), columns
    else:
        values = code.traversal(steps).to(device)
        classes = info.codes[row_code].enumerate_support().to(device) if row_code is not None else None
        rows, cols = (len(classes) if classes is not None else columns), len(values)
    row = torch.arange(rows, device=device).repeat_interleave(cols)
    col = torch.arange(cols, device=device).repeat(rows)
    held = {}
    for k, c in zip(info.keys, info.codes):
        value = c.held_value(generator=gen, device=device)
        held[k] = value.expand(rows * cols, *value.shape[1:]).clone()
    noise_pool, _ = info.draw(max(rows, cols), generator=gen, device=device)
    noise_pool = noise_pool[:, : info.noise_dim]
    if _categorical(code):
        held[key] = classes[row]
        noise = noise_pool[col]
    else:
        held[key][:, dim] = values[col].to(held[key].dtype)
        if row_code is not None:
            held[info.keys[row_code]] = classes[row]
            noise = noise_pool[:1].expand(rows * cols, -1)
        else:
            noise = noise_pool[row]
    latent = info.latent_from(held, noise=noise)
    was_training = generator.training
    generator.eval()
    images = generator(latent)
    generator.train(was_training)
    return images.float(), cols


def traversal_grid(generator: nn.Module, info: InfoRegularizer, key: str, path: str | Path, dim: int = 0,
                   steps: int = 10, seed: int = 0, output_range: str = "sigmoid") -> Path:
    """Save the traversal of ``key`` (see ``traversal_images``) as one PNG."""
    images, cols = traversal_images(generator, info, key, dim, steps, seed)
    save_image(_to_unit(images, output_range), path, nrow=cols, padding=1, pad_value=0.5)
    return Path(path)


def traversal_names(info: InfoRegularizer) -> list[tuple[str, int, str]]:
    """``(key, dim, file stem)`` for every traversal worth drawing: each of each code's ``sweep_dims``."""
    out = []
    for key, code in zip(info.keys, info.codes):
        dims = code.sweep_dims
        for d in range(dims):
            out.append((key, d, f"traversal_{key}" if dims == 1 else f"traversal_{key}_{d}"))
    return out


def plot_bounds(records: list[dict], entropies: dict[str, float], path: str | Path) -> Path:
    """MI lower bound of each code over training against its entropy H(c) (the paper's Figure 1).

    Solid: the bound as trained (a continuous code's Q std as configured, 1 by default). Dotted: the same
    Q means with the variance fitted to their error (records' ``mi_fitted``), drawn where it differs; it
    is also a valid lower bound and shows what a continuous code carries. Dashed: H(c), the ceiling (over
    training, from the records' ``entropy``, for a learned prior).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    steps = [r["step"] for r in records]
    for i, (key, h) in enumerate(entropies.items()):
        color = f"C{i}"
        trained = [r["mi"][key] for r in records]
        ax.plot(steps, trained, color=color, label=f"{key} bound (Q as trained)")
        fitted = [r.get("mi_fitted", {}).get(key) for r in records]
        if None not in fitted and max(abs(a - b) for a, b in zip(fitted, trained)) > 1e-3:
            ax.plot(steps, fitted, color=color, linestyle=":", linewidth=2, label=f"{key} bound, Q's variance fitted")
        ceiling = [r.get("entropy", {}).get(key) for r in records]
        if records and None not in ceiling:  # a learned prior: its entropy, the bound's ceiling, moves with it
            ax.plot(steps, ceiling, color=color, linestyle="--", linewidth=1,
                    label=f"{key} H(c), learned prior ({ceiling[-1]:.2f} at the end)")
        else:
            ax.axhline(h, color=color, linestyle="--", linewidth=1, label=f"{key} H(c) = {h:.2f}")
    ax.set_xlabel("iteration")
    ax.set_ylabel("MI lower bound (nats)")
    ax.set_title("Mutual information lower bounds")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


def plot_confusions(evaluation: dict, out: str | Path) -> list[Path]:
    """``confusion_<key>.png`` in ``out`` for each code of an ``evaluate`` result scored against labels (none
    without labels)."""
    return [plot_confusion(scores["confusion"], Path(out) / f"confusion_{key}.png",
                           f"{key}: accuracy {scores['accuracy']:.3f}", scores["mapping"])
            for key, scores in evaluation["codes"].items() if "confusion" in scores]


def plot_priors(evaluation: dict, out: str | Path) -> list[Path]:
    """``prior_<key>.png`` in ``out`` for each learned prior of an ``evaluate`` result: the prior's class
    probabilities as bars, beside the frequencies of the labels matched to each category where there are labels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    paths = []
    for key, probs in evaluation.get("priors", {}).items():
        scores = evaluation["codes"].get(key, {})
        frequencies = scores.get("label_frequencies")
        x = np.arange(len(probs))
        fig, ax = plt.subplots(figsize=(max(4.0, 0.45 * len(probs) + 1.5), 3.0), dpi=100)
        width = 0.4 if frequencies is not None else 0.8
        ax.bar(x - (width / 2 if frequencies is not None else 0), probs, width, label="learned prior")
        if frequencies is not None:
            mapping = scores["mapping"]
            ax.bar(x + width / 2, frequencies, width, label="labels (matched)")
            ax.set_xticks(x, [f"{c}\n({mapping[c]})" if c in mapping else str(c) for c in range(len(probs))])
            ax.set_title(f"{key}: learned prior, total variation {scores['prior_tv']:.3f}")
        else:
            ax.set_xticks(x, [str(c) for c in range(len(probs))])
            ax.set_title(f"{key}: learned prior")
        ax.set_xlabel("category (matched label)" if frequencies is not None else "category")
        ax.set_ylabel("probability")
        ax.legend(fontsize=8)
        fig.tight_layout()
        path = Path(out) / f"prior_{key}.png"
        fig.savefig(path)
        plt.close(fig)
        paths.append(path)
    return paths


def plot_confusion(table, path: str | Path, title: str = "category vs label", mapping: dict | None = None) -> Path:
    """Confusion matrix of categories (rows) against labels; with ``mapping`` ({category: label}, from
    Hungarian matching) rows are ordered by their matched label, so a perfect code is diagonal."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    table = np.asarray(table)
    order = list(range(table.shape[0]))
    if mapping:
        order = sorted(order, key=lambda c: (mapping.get(c, mapping.get(str(c), table.shape[1])), c))
    table = table[order]
    fig, ax = plt.subplots(figsize=(5, 4.5), dpi=100)
    ax.imshow(table, cmap="Blues")
    for (i, j), v in np.ndenumerate(table):
        if v:
            ax.text(j, i, str(v), ha="center", va="center", fontsize=6,
                    color="white" if v > table.max() / 2 else "black")
    ax.set_xlabel("label")
    ax.set_ylabel("category")
    ax.set_xticks(range(table.shape[1]))
    ax.set_yticks(range(table.shape[0]))
    ax.set_yticklabels([str(c) for c in order])
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


def plot_importance(importance, code_names, factor_names, path: str | Path,
                    title: str = "DCI importance: which code predicts which factor") -> Path:
    """Heat map of a DCI importance matrix, codes (rows) x factors (columns): a disentangled representation
    has one strong cell per row and per column."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    table = np.asarray(importance, dtype=float)
    fig, ax = plt.subplots(figsize=(1.2 + 0.9 * table.shape[1], 1.0 + 0.5 * table.shape[0]), dpi=100)
    image = ax.imshow(table, cmap="Greens", vmin=0, vmax=max(float(table.max()), 1e-9))
    for (i, j), v in np.ndenumerate(table):
        ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=8,
                color="white" if v > table.max() / 2 else "black")
    ax.set_xticks(range(table.shape[1]))
    ax.set_xticklabels(list(factor_names), rotation=30, ha="right")
    ax.set_yticks(range(table.shape[0]))
    ax.set_yticklabels(list(code_names))
    ax.set_xlabel("factor")
    ax.set_ylabel("code")
    ax.set_title(title, fontsize=9)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


def code_rows_grid(generator: nn.Module, info: InfoRegularizer, path: str | Path, steps: int = 10, seed: int = 0,
                   samples: int = 3, output_range: str = "sigmoid") -> Path | None:
    """One row per continuous code dimension, sweeping it across its prior's range (``low`` to ``high``, or
    -2 to 2) while every other code keeps its held value, for ``samples`` noise draws stacked as blocks: a
    user sees at a glance which factor each code took. None (nothing written) when no code is continuous."""
    rows = [(key, d, code) for key, code in zip(info.keys, info.codes) if not _categorical(code)
            for d in range(code.sweep_dims)]
    if not rows:
        return None
    device = next(generator.parameters()).device
    gen = torch.Generator(device=device).manual_seed(seed)
    noise = info.draw(samples, generator=gen, device=device)[0][:, :info.noise_dim]
    held = {k: c.held_value(generator=gen, device=device) for k, c in zip(info.keys, info.codes)}
    latents = []
    for s in range(samples):
        for key, d, code in rows:
            if code.bounded:
                values = torch.linspace(*code.support, steps, device=device)
            else:
                values = code.traversal(steps).to(device)
            codes = {k: v.expand(steps, *v.shape[1:]).clone() for k, v in held.items()}
            codes[key][:, d] = values.to(codes[key].dtype)
            latents.append(info.latent_from(codes, noise=noise[s:s + 1].expand(steps, -1)))
    was_training = generator.training
    generator.eval()
    with torch.no_grad():
        images = generator(torch.cat(latents)).float()
    generator.train(was_training)
    save_image(_to_unit(images, output_range), path, nrow=steps, padding=1, pad_value=0.5)
    return Path(path)
