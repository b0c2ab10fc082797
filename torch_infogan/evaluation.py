"""Evaluate a trained model: how well each clustering code recovers the labels, the MI bounds, and the
disentanglement metrics on data with known factors."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from torch_infogan.codes import split_params
from torch_infogan.data import ImageData, normalize
from torch_infogan.errors import InfoGANError
from torch_infogan.labelled import LabelledSet
from torch_infogan.metrics import cluster_scores
from torch_infogan.regularizer import InfoRegularizer


@torch.no_grad()
def encode(info: InfoRegularizer, images: torch.Tensor, batch_size: int = 1000, normalization: str = "unit",
           device: torch.device | str | None = None) -> torch.Tensor:
    """Q's raw outputs ``[N, param_dim]`` for uint8 ``images``, batch by batch, in eval mode."""
    device = torch.device(device) if device is not None else next(info.q.parameters()).device
    out = []
    for start in range(0, images.shape[0], batch_size):
        batch = normalize(images[start:start + batch_size].to(device), normalization)
        out.append(info.q_params(batch).cpu())
    return torch.cat(out)


@torch.no_grad()
def estimate_bounds(generator: nn.Module, info: InfoRegularizer, n: int = 2000, seed: int = 0,
                    batch_size: int = 500, fitted: bool = False) -> dict[str, float]:
    """Each code's MI lower bound H(c) - E[-log Q(c|G(z, c))] on ``n`` fresh samples (eval mode).

    ``fitted=True``: the bound with Q's unlearned variance fitted to its error on these samples
    (``Code.fitted_nll``; the larger of the two bounds), which shows what a continuous code carries when
    Q's std is fixed at 1. ``estimate_bound_pair`` gives both from one pass.
    """
    plain, fitted_bounds = estimate_bound_pair(generator, info, n, seed, batch_size)
    return fitted_bounds if fitted else plain


def estimate_bound_pair(generator: nn.Module, info: InfoRegularizer, n: int = 2000, seed: int = 0,
                        batch_size: int = 500) -> tuple[dict[str, float], dict[str, float]]:
    """``estimate_bounds`` and ``estimate_bounds(fitted=True)`` from one pass of G and Q over the samples."""
    device = next(generator.parameters()).device
    gen = torch.Generator(device=device).manual_seed(seed)
    was_training = generator.training
    generator.eval()
    params, drawn = [], []
    try:
        done = 0
        while done < n:
            b = min(batch_size, n - done)
            latent, codes = info.draw(b, generator=gen, device=device)
            params.append(info.q_params(generator(latent)))
            drawn.append(codes)
            done += b
    finally:
        generator.train(was_training)
    parts = split_params(info.codes, torch.cat(params))
    plain, fitted = {}, {}
    for key, code, part in zip(info.keys, info.codes, parts):
        value = torch.cat([codes[key] for codes in drawn])
        nll = float(code.nll(part, value).mean())
        plain[key] = float(code.entropy()) - nll
        fitted[key] = float(code.entropy()) - min(nll, float(code.fitted_nll(part, value).mean()))
    return plain, fitted


def _without_trained(data: ImageData, trained_labels: LabelledSet | None) -> tuple[ImageData, int]:
    """``data`` less the labelled images a semi-supervised run trained on, and how many were left out."""
    excluded = trained_labels.rows_in(data) if trained_labels is not None else np.zeros(0, dtype=np.int64)
    return (data.without(excluded) if len(excluded) else data), int(len(excluded))


def evaluate(generator: nn.Module, info: InfoRegularizer, data: ImageData, normalization: str = "unit",
             batch_size: int = 1000, seed: int = 0, trained_labels: LabelledSet | None = None) -> dict:
    """Per code that clusters (``cluster()`` is not None, e.g. a categorical code): the label-free scores
    (``label_free_scores``, ``agreement``) and, where ``data`` has labels, accuracy after Hungarian matching,
    NMI, ARI and the confusion matrix; and every code's MI bound. ``labelled`` says whether labels were used.

    ``trained_labels``: the labelled images a semi-supervised run trained on (``Checkpoint.trained_labels``).
    Those of them that are in ``data`` are left out of every score (``excluded`` counts them), and the code
    they name gets ``plain_accuracy``: category k taken as label k, no matching."""
    data, excluded = _without_trained(data, trained_labels)
    named = trained_labels.code if trained_labels is not None else None
    result: dict = {"dataset": data.name, "split": data.split, "n": int(len(data)),
                    "labelled": data.labels is not None, "excluded": excluded,
                    "codes": cluster_code_scores(info, data, normalization, batch_size, seed, named)}
    if named is not None:
        result["label_trained"] = {"code": named, "images": len(trained_labels)}
    priors = learned_priors(info)
    if priors:
        result["priors"] = priors
        for key, probs in priors.items():
            scores = result["codes"].get(key, {})
            if "mapping" in scores:
                scores.update(prior_against_labels(probs, scores["confusion"], scores["mapping"]))
    result["bounds"], result["bounds_fitted"] = estimate_bound_pair(generator, info, seed=seed)
    result["entropies"] = info.entropies()
    return result


def learned_priors(info: InfoRegularizer) -> dict[str, list[float]]:
    """The class probabilities of every code with a learned prior (``cat:10:prior=learned``), by key."""
    return {key: code.probs.tolist() for key, code in zip(info.keys, info.codes) if getattr(code, "learned", False)}


def prior_against_labels(probs, confusion, mapping: dict) -> dict:
    """A learned prior beside the labels' frequencies: ``label_frequencies`` (of the label each category is matched
    to, in category order; 0 for a category matched to none), and ``prior_tv``, the total-variation distance
    between the prior and the labels' frequencies under that matching (labels no category is matched to count
    in full)."""
    table = np.asarray(confusion, dtype=np.float64)
    frequencies = table.sum(0) / table.sum()
    matched = [frequencies[mapping[c]] if c in mapping else 0.0 for c in range(len(probs))]
    unmatched = sum(f for label, f in enumerate(frequencies) if label not in mapping.values())
    tv = 0.5 * (float(np.abs(np.asarray(probs) - np.asarray(matched)).sum()) + unmatched)
    return {"label_frequencies": [float(f) for f in matched], "prior_tv": tv}


def cluster_code_scores(info: InfoRegularizer, data: ImageData, normalization: str = "unit",
                        batch_size: int = 1000, seed: int = 0, named: str | None = None) -> dict[str, dict]:
    """``evaluate``'s per-code scores alone (no MI bounds, no generator): for each code that clusters, the
    label-free scores and ``agreement``, and accuracy, NMI, ARI, mapping, confusion and merges where ``data``
    has labels; for the code ``named`` by training labels, also ``plain_accuracy`` (category k as label k)."""
    params = encode(info, data.images, batch_size, normalization)
    labels = None if data.labels is None else data.labels.numpy()
    scores, neighbours = {}, None
    for key, code, part in zip(info.keys, info.codes, split_params(info.codes, params)):
        assigned = code.cluster(part)
        if assigned is not None:
            scores[key] = {} if labels is None else cluster_scores(assigned.long().numpy(), labels, code.num_clusters)
            if key == named and labels is not None:
                scores[key]["plain_accuracy"] = float((assigned.long().numpy() == labels).mean())
            scores[key].update(label_free_scores(code.posterior(part)))
            if neighbours is None:  # the images' neighbours are the same for every code: found once
                neighbours = pixel_neighbours(data.images, seed=seed)
            scores[key]["agreement"] = neighbour_agreement(data.images, assigned.long().numpy(), seed=seed,
                                                           neighbours=neighbours)
    return scores


def run_score(info: InfoRegularizer, data: ImageData, normalization: str = "unit", code: str | None = None,
              seed: int = 0, trained_labels: LabelledSet | None = None) -> dict:
    """One run's label-free score for choosing among runs (``rank_runs``): ``agreement``, ``real_mi``, ``usage``
    and ``confidence`` of the categorical ``code`` (default: the first) on ``data``, ``accuracy`` where ``data``
    has labels, and ``informative``: whether its categories carry at least half of ln k nats about the images.

    Only informative runs are compared by agreement: one category for everything, or a Q unsure of every image
    (its argmax still follows the pixels smoothly), agrees with the neighbours too. Neither is agreement
    comparable across recipes that train on a neighbour term themselves (docs/training.md). ``trained_labels``:
    a semi-supervised run's labelled images, left out as ``evaluate`` leaves them out."""
    data, _ = _without_trained(data, trained_labels)
    scores = cluster_code_scores(info, data, normalization, seed=seed)
    key = code or next(iter(scores), None)
    if key not in scores:
        wanted = f"categorical code {code!r}" if code else "categorical code"
        raise InfoGANError(f"no {wanted} to rank by (codes: {info.spec})")
    k = info.codes[info.keys.index(key)].num_clusters
    row = {"code": key, "informative": scores[key]["real_mi"] >= 0.5 * math.log(k)}
    row.update({name: scores[key][name] for name in ("agreement", "real_mi", "usage", "confidence", "accuracy")
                if name in scores[key]})
    return row


def rank_runs(rows: list[dict]) -> list[dict]:
    """``run_score`` rows (with any extra keys, e.g. the checkpoint), best first: informative runs by
    agreement, then the others by agreement."""
    return sorted(rows, key=lambda row: (row["informative"], row["agreement"]), reverse=True)


def label_free_scores(posterior: dict[str, torch.Tensor]) -> dict[str, float]:
    """What Q's categories do on real images, computed without labels: ``usage`` is the entropy of the
    mean posterior over categories (ln k when every category takes an equal share of the data),
    ``confidence`` the mean of each image's largest probability, ``real_mi`` = usage - E[H(Q(c|x))]
    (the information Q's categories carry about real images). Empty for a code without ``probs``."""
    probs = posterior.get("probs")
    if probs is None or probs.dim() != 2 or not torch.allclose(probs.sum(1), torch.ones(len(probs)), atol=1e-3):
        return {}
    probs = probs.double()
    marginal = probs.mean(0)
    usage = float(-(marginal * marginal.clamp_min(1e-12).log()).sum())
    conditional = float(-(probs * probs.clamp_min(1e-12).log()).sum(1).mean())
    return {"usage": usage, "confidence": float(probs.max(1).values.mean()), "real_mi": usage - conditional}


def pixel_neighbours(images: torch.Tensor, k: int = 10, limit: int = 10000,
                     seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``(rows, neighbours)``: at most ``limit`` of the images (a seeded random subset when there are more; their
    indices in ``rows``) and, for each, the positions in ``rows`` of its ``k`` nearest others by cosine similarity
    of the pixels."""
    n = images.shape[0]
    rows = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:limit] if n > limit else torch.arange(n)
    x = images[rows].reshape(len(rows), -1).float()
    x = x / x.norm(dim=1, keepdim=True).clamp_min(1e-12)
    k = min(k, len(rows) - 1)
    if k < 1:
        raise InfoGANError("neighbour agreement needs at least two images")
    parts = []
    for start in range(0, len(rows), 2000):
        sim = x[start:start + 2000] @ x.T
        sim[torch.arange(sim.shape[0]), torch.arange(start, start + sim.shape[0])] = -2.0  # not its own neighbour
        parts.append(sim.topk(k, dim=1).indices)
    return rows, torch.cat(parts)


def neighbour_agreement(images: torch.Tensor, assigned: np.ndarray, k: int = 10, limit: int = 10000,
                        seed: int = 0, neighbours: tuple[torch.Tensor, torch.Tensor] | None = None) -> float:
    """The share of real images' ``k`` nearest neighbours (cosine similarity of the pixels) that fall in the
    same category as the image itself: high when the categories follow the groups the data forms on its own,
    lower when a category cuts a group in two. Merging groups does not lower it (one category for everything
    scores 1.0), nor does a Q unsure of every image (its argmax still follows the pixels smoothly), so compare it
    between models whose categories carry information (``real_mi`` near ln k). Computed without labels, on at most
    ``limit`` images (a seeded random subset) and their neighbours among the same images; ``neighbours``, from
    ``pixel_neighbours(images, k, limit, seed)``, saves finding them again."""
    rows, found = neighbours if neighbours is not None else pixel_neighbours(images, k, limit, seed)
    category = torch.as_tensor(assigned)[rows]
    return int((category[found] == category[:, None]).sum()) / found.numel()


def format_table(result: dict) -> str:
    """A plain-text table of an evaluation result."""
    def cell(scores: dict, key: str, width: int) -> str:
        return f"{scores[key]:>{width}.4f}" if key in scores else f"{'-':>{width}}"

    lines = [f"{'code':<8}{'accuracy':>10}{'NMI':>8}{'ARI':>8}{'real MI':>9}{'agreement':>11}  merged labels"]
    for key, s in result["codes"].items():
        merged = (" ".join("/".join(map(str, g)) for g in s["merged"]) or "-") if "merged" in s else "(no labels)"
        lines.append(f"{key:<8}{cell(s, 'accuracy', 10)}{cell(s, 'nmi', 8)}{cell(s, 'ari', 8)}"
                     f"{cell(s, 'real_mi', 9)}{cell(s, 'agreement', 11)}  {merged}")
    trained = result.get("label_trained")
    if trained is not None:
        plain = result["codes"].get(trained["code"], {}).get("plain_accuracy")
        lines.append("")
        excluded = result.get("excluded", 0)
        where = f"{excluded:,} of them in this data, left out of every score" if excluded else \
            "none of them in this data"
        lines.append(f"{trained['code']} was trained on {trained['images']:,} labelled images ({where})"
                     + ("" if plain is None else f": plain accuracy {plain:.4f} (category k as label k, no matching)"))
    for key, probs in result.get("priors", {}).items():
        lines.append("")
        tv = result["codes"].get(key, {}).get("prior_tv")
        against = "" if tv is None else f"; total variation to the matched labels' frequencies {tv:.3f}"
        lines.append(f"{key} learned prior: {' '.join(f'{p:.3f}' for p in probs)}{against}")
        frequencies = result["codes"].get(key, {}).get("label_frequencies")
        if frequencies is not None:
            lines.append(f"{'':<{len(key) + 15}}{' '.join(f'{f:.3f}' for f in frequencies)}  (labels, matched)")
    lines.append("")
    lines.append(f"{'code':<8}{'MI bound':>10}{'fitted':>8}{'H(c)':>8}   (nats; fitted: Q's variance fitted to its error)")
    fitted = result.get("bounds_fitted", {})
    for key, b in result["bounds"].items():
        lines.append(f"{key:<8}{b:>10.4f}{fitted.get(key, float('nan')):>8.4f}{result['entropies'][key]:>8.4f}")
    return "\n".join(lines)



def check_image_shape(data: ImageData, image_shape) -> None:
    """Refuse a dataset whose images do not have the shape the model was trained on."""
    if tuple(data.image_shape) != tuple(image_shape):
        raise InfoGANError(f"dataset {data.name!r} has images of shape {tuple(data.image_shape)}, "
                           f"the model expects {tuple(image_shape)}")


def load_data_for(config: dict, spec: str, root=None, split: str = "train") -> ImageData:
    """``spec`` loaded the way the run of checkpoint configuration ``config`` loaded its training images (at the
    ``--image-size`` and ``--channels`` it was trained with, if any), refused if the images still do not have
    the model's shape."""
    from torch_infogan.data import load_data

    train = config.get("train") or {}
    data = load_data(spec, root, split, image_size=train.get("image_size"), channels=train.get("channels"))
    check_image_shape(data, config["image_shape"])
    return data


def representation(info: InfoRegularizer, params: torch.Tensor) -> tuple[np.ndarray, list[str]]:
    """Q's point estimate of every code from its raw outputs, side by side: ``[N, D]`` float64 and the column
    names (a continuous code's means, ``unif0``; a categorical code's probabilities, ``cat0_3``)."""
    columns = {}
    for key, code, part in zip(info.keys, info.codes, split_params(info.codes, params)):
        posterior = code.posterior(part)
        value = posterior["mean"] if "mean" in posterior else posterior[code.posterior_parts[0]]
        columns[key] = value.reshape(len(value), -1).double().numpy()
    return code_columns(columns)


def code_columns(columns: dict[str, np.ndarray]) -> tuple[np.ndarray, list[str]]:
    """Each code's ``[N, width]`` values side by side, and the columns' names: ``key`` for a code of width
    1, ``key_j`` otherwise."""
    names = [name for key, value in columns.items()
             for name in ([key] if value.shape[1] == 1 else [f"{key}_{j}" for j in range(value.shape[1])])]
    return np.concatenate(list(columns.values()), axis=1), names


def scores_of_arrays(name: str, codes: np.ndarray, code_names: list[str], factors: np.ndarray,
                     factor_names: list[str] | None, metrics=None, num_train: int = 10000, num_test: int = 5000,
                     seed: int = 0, n_jobs: int | None = None) -> dict:
    """``disentanglement_scores`` of ``codes`` against ``factors``, with what the rows and columns are:
    ``dataset`` (``name``), ``n``, ``codes`` and ``factors`` (names), then one entry per metric. ``n_jobs``: DCI's
    factors fitted that many at once (the same result)."""
    from torch_infogan.disentanglement import METRICS, disentanglement_scores

    scores = disentanglement_scores(codes, factors, METRICS if metrics is None else metrics, num_train=num_train,
                                    num_test=num_test, seed=seed, n_jobs=n_jobs)
    factor_names = list(factor_names or [f"factor{i}" for i in range(factors.shape[1])])
    return {"dataset": name, "n": int(len(codes)), "codes": code_names, "factors": factor_names, **scores}


def factor_data(spec: str, points: int = 20000, seed: int = 0, root=None, split: str = "train") -> ImageData:
    """A dataset with factor labels for ``disentanglement``: for the procedural grid (``shapes``) only
    ``points`` random images of it are rendered; other specs load as ``load_data`` loads them."""
    from torch_infogan.data import load_data
    from torch_infogan.data.shapes import load_shapes

    if spec == "shapes":
        return load_shapes(points, seed)
    return load_data(spec, root, split)


def disentanglement(info: InfoRegularizer, data: ImageData, metrics=None, points: int = 20000,
                    num_train: int = 10000, num_test: int = 5000, seed: int = 0, normalization: str = "unit",
                    batch_size: int = 1000, image_shape=None, n_jobs: int | None = None) -> dict:
    """The disentanglement metrics (``torch_infogan.disentanglement``) of Q's point estimates on ``points``
    images drawn at random (``seed``) from ``data``, which must carry factor labels. Returns the scores,
    plus ``codes`` and ``factors`` (the names of the matrices' rows and columns) and ``n``. ``image_shape``:
    refuse data whose images have another shape (the model's). ``n_jobs``: DCI's factors fitted that many at once
    in worker processes (the same result)."""
    if data.factors is None:
        raise InfoGANError(f"dataset {data.name!r} has no factor labels; disentanglement metrics need data with "
                           "known factors (shapes, shapes:N, dsprites:PATH)")
    if image_shape is not None:
        check_image_shape(data, image_shape)
    n = min(points, len(data))
    rows = np.random.default_rng(seed).choice(len(data), size=n, replace=False)
    params = encode(info, data.images[torch.from_numpy(rows)], batch_size, normalization)
    codes, names = representation(info, params)
    return scores_of_arrays(data.name, codes, names, data.factors.numpy()[rows], data.factor_names, metrics,
                            num_train, num_test, seed, n_jobs)
