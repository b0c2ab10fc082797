"""MIG, DCI, SAP and the FactorVAE score as in disentanglement_lib, computed on arrays of codes and factors."""

from __future__ import annotations

import warnings
from typing import Callable, Sequence

import numpy as np
from joblib import Parallel, delayed
from scipy.stats import entropy
from sklearn.ensemble import GradientBoostingClassifier
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import mutual_info_score
from sklearn.svm import LinearSVC

from torch_infogan.errors import InfoGANError

METRICS = ("mig", "dci", "sap", "factorvae")
# Asked for by name only, not part of METRICS ("all"): DCI with scikit-learn's exact trees (minutes, not seconds).
EXTRA_METRICS = ("dci_exact",)
KNOWN_METRICS = METRICS + EXTRA_METRICS

_MAIN_SCORE = {"mig": "mig", "dci": "disentanglement", "dci_exact": "disentanglement", "sap": "sap",
               "factorvae": "eval_accuracy"}
_LABEL = {"mig": "mig", "dci": "dci (disentanglement)", "dci_exact": "dci exact (disentanglement)", "sap": "sap",
          "factorvae": "factorvae (eval accuracy)"}

Progress = Callable[[str], None]


# ----------------------------------------------------------------------------------------------- input checks


def _check_codes(codes, name: str = "codes") -> np.ndarray:
    """``codes`` as a finite float64 array ``[N, K]``, or an InfoGANError saying what is wrong."""
    array = np.asarray(codes)
    if array.ndim != 2:
        raise InfoGANError(f"{name} must be a 2-D array [points, code dimensions], got shape {array.shape}")
    if array.dtype.kind not in "biuf":
        raise InfoGANError(f"{name} must hold real numbers, got dtype {array.dtype}")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise InfoGANError(f"{name} is empty (shape {array.shape})")
    array = array.astype(np.float64)
    if not np.isfinite(array).all():
        bad = int((~np.isfinite(array)).any(axis=1).sum())
        raise InfoGANError(f"{name} has non-finite values (NaN or inf) in {bad} of {array.shape[0]} rows")
    return array


def _check_factors(factors, name: str = "factors") -> np.ndarray:
    """``factors`` as an int64 array ``[N, F]`` of class indices, or an InfoGANError saying what is wrong."""
    array = np.asarray(factors)
    if array.ndim != 2:
        raise InfoGANError(f"{name} must be a 2-D array [points, factors], got shape {array.shape}")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise InfoGANError(f"{name} is empty (shape {array.shape})")
    if array.dtype.kind == "f":
        if not np.isfinite(array).all() or not np.array_equal(array, np.round(array)):
            raise InfoGANError(f"{name} must hold integer class indices, got non-integer values")
    elif array.dtype.kind not in "biu":
        raise InfoGANError(f"{name} must hold integer class indices, got dtype {array.dtype}")
    return array.astype(np.int64)


def _check_pair(codes, factors, suffix: str = "") -> tuple[np.ndarray, np.ndarray]:
    """Check one (codes, factors) pair and that both have the same number of rows."""
    codes = _check_codes(codes, "codes" + suffix)
    factors = _check_factors(factors, "factors" + suffix)
    if codes.shape[0] != factors.shape[0]:
        raise InfoGANError(f"codes{suffix} has {codes.shape[0]} rows but factors{suffix} has {factors.shape[0]}")
    return codes, factors


def _check_split(codes_train, factors_train, codes_test, factors_test):
    """Check train and test pairs and that they agree on the number of codes and factors."""
    codes_train, factors_train = _check_pair(codes_train, factors_train, "_train")
    codes_test, factors_test = _check_pair(codes_test, factors_test, "_test")
    if codes_train.shape[1] != codes_test.shape[1]:
        raise InfoGANError(f"codes_train has {codes_train.shape[1]} columns but codes_test has {codes_test.shape[1]}")
    if factors_train.shape[1] != factors_test.shape[1]:
        raise InfoGANError(
            f"factors_train has {factors_train.shape[1]} columns but factors_test has {factors_test.shape[1]}")
    return codes_train, factors_train, codes_test, factors_test


def _need_codes(codes: np.ndarray, metric: str) -> None:
    """Metrics that compare the best code with the second best need two code dimensions."""
    if codes.shape[1] < 2:
        raise InfoGANError(f"{metric} needs at least 2 code dimensions, got {codes.shape[1]}")


def _need_varying_factors(factors: np.ndarray, metric: str, name: str = "factors") -> None:
    """Each factor must take at least two values (entropy and classifiers are undefined otherwise)."""
    constant = [j for j in range(factors.shape[1]) if np.unique(factors[:, j]).size < 2]
    if constant:
        raise InfoGANError(f"{metric}: factor(s) {constant} take a single value in {name}; drop them")


def _report(progress: Progress | None, message: str) -> None:
    if progress is not None:
        progress(message)


# ------------------------------------------------------------------------------------------------------ MIG


def histogram_discretize(codes: np.ndarray, num_bins: int = 20) -> np.ndarray:
    """Bin each column of ``codes [N, K]`` into ``num_bins`` equal-width bins over its own range.

    Bin ``b`` (1-based) holds values from the ``b``-th lower edge of ``np.histogram``'s edges; the maximum
    falls in the last bin. This is disentanglement_lib's histogram discretizer.
    """
    codes = np.asarray(codes, dtype=np.float64)
    binned = np.empty(codes.shape, dtype=np.int64)
    for k in range(codes.shape[1]):
        lower_edges = np.histogram_bin_edges(codes[:, k], bins=num_bins)[:-1]
        binned[:, k] = np.digitize(codes[:, k], lower_edges)
    return binned


def mig(codes, factors, num_bins: int = 20) -> dict:
    """Mutual Information Gap (Chen et al., 2018) as in disentanglement_lib.

    Each code dimension is discretized into ``num_bins`` equal-width bins (:func:`histogram_discretize`); the
    discrete mutual information (nats, ``sklearn.metrics.mutual_info_score``) between every code and every
    factor is divided by the factor's entropy, and per factor the gap between the two most informative codes
    is taken. Returns ``mig`` (the mean gap), ``mig_per_factor`` and ``mutual_info`` (``[K][F]``, nats).
    """
    codes, factors = _check_pair(codes, factors)
    _need_codes(codes, "MIG")
    _need_varying_factors(factors, "MIG")
    if int(num_bins) < 2:
        raise InfoGANError(f"num_bins must be at least 2, got {num_bins}")
    binned = histogram_discretize(codes, int(num_bins))
    info = np.array([[mutual_info_score(factors[:, j], binned[:, k]) for j in range(factors.shape[1])]
                     for k in range(codes.shape[1])])
    factor_entropy = np.array([mutual_info_score(factors[:, j], factors[:, j]) for j in range(factors.shape[1])])
    top = np.sort(info, axis=0)[::-1]
    gaps = (top[0] - top[1]) / factor_entropy
    return {"mig": float(gaps.mean()), "mig_per_factor": gaps.tolist(), "mutual_info": info.tolist()}


# ------------------------------------------------------------------------------------------------------ DCI


def dci_from_importance(importance) -> tuple[float, float]:
    """Disentanglement and completeness (Eastwood & Williams, 2018) of an importance matrix ``[K codes, F factors]``.

    Disentanglement: per code, 1 - the entropy (log base F) of its row normalized to sum 1, weighted by the
    code's share of the total importance. Completeness: per factor, 1 - the entropy (log base K) of its
    normalized column, weighted by the factor's share. As disentanglement_lib, 1e-11 is added before
    normalizing and an all-zero matrix weighs codes and factors equally (both scores are then 0).
    """
    matrix = np.abs(np.asarray(importance, dtype=np.float64))
    if matrix.ndim != 2 or matrix.shape[0] < 2 or matrix.shape[1] < 2:
        raise InfoGANError(f"the importance matrix must be [codes, factors], at least 2 of each, got {matrix.shape}")
    if not np.isfinite(matrix).all():
        raise InfoGANError("the importance matrix has non-finite values")
    num_codes, num_factors = matrix.shape
    per_code = 1.0 - entropy(matrix + 1e-11, base=num_factors, axis=1)
    per_factor = 1.0 - entropy(matrix + 1e-11, base=num_codes, axis=0)
    weights = matrix if matrix.sum() > 0 else np.ones_like(matrix)
    code_share = weights.sum(axis=1) / weights.sum()
    factor_share = weights.sum(axis=0) / weights.sum()
    return float(np.sum(per_code * code_share)), float(np.sum(per_factor * factor_share))


def _fit_factor(codes_train, labels_train, codes_test, labels_test, seed, exact):
    """Fit one boosted-tree classifier; return its importances and its train and test accuracy."""
    if exact:
        model = GradientBoostingClassifier(random_state=seed).fit(codes_train, labels_train)
        importance = model.feature_importances_
    else:
        import lightgbm

        # scikit-learn's defaults (100 stages, learning rate 0.1, depth 3, leaves of one point, no L2), with a bin
        # per point up to 10,000 points, so that every threshold the exact trees can pick is open to these too
        # (with 255 bins the trees fit the training points visibly worse: docs/benchmarks.md).
        model = lightgbm.LGBMClassifier(
            n_estimators=100, learning_rate=0.1, max_depth=3, num_leaves=8, min_child_samples=1,
            min_child_weight=1e-3, reg_lambda=0.0, max_bin=min(len(codes_train), 10000), min_data_in_bin=1,
            importance_type="gain", n_jobs=1, verbose=-1)
        model.fit(codes_train, labels_train)
        importance = model.feature_importances_ / max(model.feature_importances_.sum(), 1e-300)
    return (np.abs(importance), model.score(codes_train, labels_train), model.score(codes_test, labels_test))


def dci(codes_train, factors_train, codes_test, factors_test, seed: int | None = 0, n_jobs: int | None = None,
        progress: Progress | None = None, exact: bool = False) -> dict:
    """DCI disentanglement, completeness and informativeness with gradient boosted trees.

    One gradient-boosted classifier is fitted per factor on the training points; their importances form the
    importance matrix ``[K, F]`` (:func:`dci_from_importance`). Informativeness is the mean accuracy over
    factors on the training and on the test points.

    ``exact=True`` is disentanglement_lib's computation: scikit-learn's ``GradientBoostingClassifier`` with its
    defaults and its impurity importances (minutes for 10,000 points when factors have dozens of values). The
    default fits the same trees' settings with LightGBM (histograms with as many bins as points, split-gain
    importances): seconds instead of minutes, within 0.001 of the exact scores on disentanglement_lib's
    fixtures and within about 0.02 on trained models (docs/benchmarks.md). Code columns that are identical on
    the training points cannot be told apart by any tree: one of them is fitted and they share its importance
    equally, which is what the exact method's random tie-break gives on average.

    ``seed`` fixes the exact trees' ``random_state`` (it only breaks ties; disentanglement_lib leaves it unset);
    ``None`` leaves it unset. LightGBM's trees, on one thread without sampling, are deterministic. ``n_jobs``
    fits that many factors at once in worker processes (joblib; -1 for all cores), with the same result;
    ``progress`` then gets one message, otherwise one per factor. Returns ``disentanglement``,
    ``completeness``, ``informativeness_train``, ``informativeness_test``, ``importance`` (``[K][F]``) and
    ``method`` (``"exact"`` or ``"lightgbm"``).
    """
    codes_train, factors_train, codes_test, factors_test = _check_split(codes_train, factors_train, codes_test,
                                                                        factors_test)
    _need_codes(codes_train, "DCI")
    if factors_train.shape[1] < 2:
        raise InfoGANError(f"DCI needs at least 2 factors, got {factors_train.shape[1]}")
    _need_varying_factors(factors_train, "DCI", "factors_train")
    num_factors = factors_train.shape[1]
    if exact:
        columns, copies = np.arange(codes_train.shape[1]), np.arange(codes_train.shape[1])
    else:
        # columns: the first of each group of identical code columns; copies[k]: the group of column k.
        _, first, copies = np.unique(codes_train, axis=1, return_index=True, return_inverse=True)
        order = np.argsort(first)
        columns, copies = first[order], np.argsort(order)[copies.ravel()]
    jobs = [(codes_train[:, columns], factors_train[:, j], codes_test[:, columns], factors_test[:, j], seed, exact)
            for j in range(num_factors)]
    if n_jobs in (None, 1):
        fits = []
        for j, job in enumerate(jobs):
            _report(progress, f"dci: fitting factor {j + 1}/{num_factors}")
            fits.append(_fit_factor(*job))
    else:
        _report(progress, f"dci: fitting {num_factors} factors with n_jobs={n_jobs}")
        # Largest first: a factor with k > 2 values fits k trees a stage, so the cores finish closer together.
        order = sorted(range(num_factors), key=lambda j: -len(np.unique(factors_train[:, j])))
        done = Parallel(n_jobs=n_jobs)(delayed(_fit_factor)(*jobs[j]) for j in order)
        fits = [fit for _, fit in sorted(zip(order, done), key=lambda pair: pair[0])]
    group_size = np.bincount(copies, minlength=len(columns))
    importance = np.column_stack([fit[0] for fit in fits])[copies] / group_size[copies, None]
    disentanglement, completeness = dci_from_importance(importance)
    return {"disentanglement": disentanglement, "completeness": completeness,
            "informativeness_train": float(np.mean([fit[1] for fit in fits])),
            "informativeness_test": float(np.mean([fit[2] for fit in fits])), "importance": importance.tolist(),
            "method": "exact" if exact else "lightgbm"}


# ------------------------------------------------------------------------------------------------------ SAP


def sap(codes_train, factors_train, codes_test, factors_test, continuous_factors: bool = False,
        progress: Progress | None = None) -> dict:
    """Separated Attribute Predictability (Kumar et al., 2018) as in disentanglement_lib.

    With discrete factors (the study's setting) the score matrix ``[K, F]`` holds the test accuracy of a
    ``LinearSVC(C=0.01, class_weight="balanced")`` trained on one code dimension alone to predict one factor;
    with ``continuous_factors=True`` it holds the squared correlation of code and factor on the training
    points (0 for a code with variance below 1e-12), and the test points are not used. Per factor the
    difference between the two best codes is taken; ``sap`` is its mean. Also returns ``sap_per_factor`` and
    ``score_matrix`` (``[K][F]``). The SVM is solved in the primal (``dual=False``, what scikit-learn's
    ``dual="auto"`` picks for one feature); disentanglement_lib used the dual solver of the same problem.
    Convergence warnings of the SVM are silenced.
    """
    codes_train, factors_train, codes_test, factors_test = _check_split(codes_train, factors_train, codes_test,
                                                                        factors_test)
    _need_codes(codes_train, "SAP")
    _need_varying_factors(factors_train, "SAP", "factors_train")
    num_codes, num_factors = codes_train.shape[1], factors_train.shape[1]
    if continuous_factors:
        code_var = codes_train.var(axis=0, ddof=1)
        factor_var = factors_train.var(axis=0, ddof=1)
        centered_codes = codes_train - codes_train.mean(axis=0)
        centered_factors = factors_train - factors_train.mean(axis=0)
        cov = centered_codes.T @ centered_factors / (codes_train.shape[0] - 1)
        with np.errstate(divide="ignore", invalid="ignore"):
            matrix = cov ** 2 / np.outer(code_var, factor_var)
        matrix[code_var <= 1e-12, :] = 0.0
    else:
        matrix = np.zeros((num_codes, num_factors))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            for k in range(num_codes):
                _report(progress, f"sap: code {k + 1}/{num_codes}")
                for j in range(num_factors):
                    svm = LinearSVC(C=0.01, class_weight="balanced", dual=False)
                    svm.fit(codes_train[:, k:k + 1], factors_train[:, j])
                    matrix[k, j] = svm.score(codes_test[:, k:k + 1], factors_test[:, j])
    top = np.sort(matrix, axis=0)
    gaps = top[-1] - top[-2]
    return {"sap": float(gaps.mean()), "sap_per_factor": gaps.tolist(), "score_matrix": matrix.tolist()}


# ------------------------------------------------------------------------------------------------ FactorVAE


def _factor_vae_votes(codes: np.ndarray, groups: list[list[np.ndarray]], value_of_row: np.ndarray,
                      batch_size: int, num_votes: int, global_variances: np.ndarray, active: np.ndarray,
                      rng: np.random.Generator) -> np.ndarray:
    """Vote matrix ``[F, K]``: how often fixing factor f made code k the least varying active dimension."""
    num_factors = len(groups)
    active_index = np.flatnonzero(active)
    votes = np.zeros((num_factors, codes.shape[1]), dtype=np.int64)
    chosen_factors = rng.integers(num_factors, size=num_votes)
    anchor_rows = rng.integers(codes.shape[0], size=num_votes)
    for factor, anchor in zip(chosen_factors, anchor_rows):
        rows = groups[factor][value_of_row[anchor, factor]]
        batch = rows[rng.choice(rows.size, size=batch_size, replace=rows.size < batch_size)]
        local = codes[batch][:, active_index].var(axis=0, ddof=1)
        votes[factor, active_index[np.argmin(local / global_variances[active_index])]] += 1
    return votes


def factor_vae_score(codes, factors, batch_size: int = 64, num_train: int = 10000, num_eval: int = 5000,
                     num_variance_estimate: int = 10000, prune_below: float = 0.05, seed: int = 0) -> dict:
    """The FactorVAE disentanglement score (Kim & Mnih, 2018) as in disentanglement_lib, on a fixed array of points.

    Global variances (``ddof=1``) come from ``num_variance_estimate`` rows drawn without replacement. A code
    dimension whose standard deviation is below ``prune_below`` is inactive (disentanglement_lib's
    ``prune_dims.threshold = 0.05`` compares the standard deviation); with no active dimension both accuracies
    are 0. Each vote picks a factor uniformly and fixes the value that factor has in a uniformly drawn row,
    takes a batch of ``batch_size`` rows sharing that value and votes for the active dimension with the least
    local variance (``ddof=1``) relative to its global variance. ``num_train`` votes give the majority-vote
    classifier (each code dimension predicts the factor it was most often voted for) and its
    ``train_accuracy``; ``num_eval`` fresh votes give ``eval_accuracy``.

    Difference from disentanglement_lib: there every vote samples fresh observations from the data
    simulator, with the fixed factor's value drawn from its prior and every other factor drawn anew. Here the
    batch is drawn (``np.random.default_rng(seed)``) from the given rows that share the fixed value, without
    replacement, or with replacement when fewer rows than ``batch_size`` share it; so it works on any
    exported array of points that covers the factor grid, and the fixed value follows the rows' own
    distribution. ``num_active_dims`` is the number of active dimensions (disentanglement_lib reports the
    total number of dimensions there). A vote is stored at the code dimension itself, where
    disentanglement_lib stores it at the position among the active dimensions; the accuracies are the same
    either way. Also returns ``votes_train`` and ``votes_eval`` (``[F][K]``).
    """
    codes, factors = _check_pair(codes, factors)
    num_rows, num_codes = codes.shape
    if int(batch_size) < 2:
        raise InfoGANError(f"batch_size must be at least 2 (a variance needs two points), got {batch_size}")
    if int(num_train) < 1 or int(num_eval) < 1:
        raise InfoGANError(f"num_train and num_eval must be positive, got {num_train} and {num_eval}")
    if not 2 <= int(num_variance_estimate) <= num_rows:
        raise InfoGANError(f"num_variance_estimate must be between 2 and the {num_rows} rows, got "
                           f"{num_variance_estimate}")
    rng = np.random.default_rng(seed)
    sample = rng.choice(num_rows, size=int(num_variance_estimate), replace=False)
    global_variances = codes[sample].var(axis=0, ddof=1)
    active = np.sqrt(global_variances) >= prune_below
    empty = np.zeros((factors.shape[1], num_codes), dtype=np.int64).tolist()
    if not active.any():
        return {"train_accuracy": 0.0, "eval_accuracy": 0.0, "num_active_dims": 0,
                "votes_train": empty, "votes_eval": empty}
    value_of_row = np.empty_like(factors)
    groups = []
    for j in range(factors.shape[1]):
        _, value_of_row[:, j] = np.unique(factors[:, j], return_inverse=True)
        order = np.argsort(value_of_row[:, j], kind="stable")
        bounds = np.cumsum(np.bincount(value_of_row[:, j]))[:-1]
        groups.append(np.split(order, bounds))
    args = (groups, value_of_row, int(batch_size))
    train_votes = _factor_vae_votes(codes, *args, int(num_train), global_variances, active, rng)
    classifier = np.argmax(train_votes, axis=0)
    columns = np.arange(num_codes)
    eval_votes = _factor_vae_votes(codes, *args, int(num_eval), global_variances, active, rng)
    return {"train_accuracy": float(train_votes[classifier, columns].sum() / train_votes.sum()),
            "eval_accuracy": float(eval_votes[classifier, columns].sum() / eval_votes.sum()),
            "num_active_dims": int(active.sum()),
            "votes_train": train_votes.tolist(), "votes_eval": eval_votes.tolist()}


# ---------------------------------------------------------------------------------------------- all together


def disentanglement_scores(codes, factors, metrics: Sequence[str] = METRICS, num_train: int = 10000,
                           num_test: int = 5000, seed: int = 0, n_jobs: int | None = None,
                           progress: Progress | None = None) -> dict:
    """The metrics of Locatello et al. (2019) with their study defaults, on one array of points.

    ``codes`` float ``[N, K]`` (a representation, e.g. Q's means) and ``factors`` int ``[N, F]`` (ground-truth
    factor classes) describe the same N points, in any order: they are shuffled (``seed``) first, so that
    data stored in factor order splits fairly. MIG uses the first ``num_train`` shuffled rows (20 bins); DCI
    and SAP train on the first ``num_train`` and test on the next ``num_test``; the FactorVAE score uses all rows (batch 64, 10,000 training and 5,000 evaluation votes,
    variances from ``min(10000, N)`` rows). Needs ``N >= num_train + num_test``. ``dci`` fits its trees with
    LightGBM (seconds); ``dci_exact`` (one of ``EXTRA_METRICS``, asked for by name) with scikit-learn's exact
    trees (minutes for 10,000 points with many factor values). ``n_jobs`` fits DCI's factors in parallel and
    ``progress`` receives short status messages. Returns ``{metric: result}`` for each requested metric, with
    plain floats and lists only.
    """
    if isinstance(metrics, str):
        metrics = (metrics,)
    unknown = [name for name in metrics if name not in KNOWN_METRICS]
    if unknown:
        raise InfoGANError(f"unknown metric(s) {', '.join(map(str, unknown))}; choose from "
                           f"{', '.join(KNOWN_METRICS)}")
    if not metrics:
        raise InfoGANError(f"no metric requested; choose from {', '.join(KNOWN_METRICS)}")
    num_train, num_test = int(num_train), int(num_test)
    if num_train < 2 or num_test < 1:
        raise InfoGANError(f"num_train must be at least 2 and num_test at least 1, got {num_train} and {num_test}")
    codes, factors = _check_pair(codes, factors)
    num_rows = codes.shape[0]
    if num_rows < num_train + num_test:
        raise InfoGANError(f"{num_train + num_test} points are needed (num_train={num_train} + num_test={num_test}), "
                           f"got {num_rows}; use more points (--points) or lower num_train/num_test")
    order = np.random.default_rng(seed).permutation(num_rows)
    codes, factors = codes[order], factors[order]
    train = slice(0, num_train)
    test = slice(num_train, num_train + num_test)
    results = {}
    for name in dict.fromkeys(metrics):
        _report(progress, f"{name}: computing")
        if name == "mig":
            results[name] = mig(codes[train], factors[train])
        elif name in ("dci", "dci_exact"):
            results[name] = dci(codes[train], factors[train], codes[test], factors[test], seed=seed,
                                n_jobs=n_jobs, progress=progress, exact=name == "dci_exact")
        elif name == "sap":
            results[name] = sap(codes[train], factors[train], codes[test], factors[test], progress=progress)
        else:
            results[name] = factor_vae_score(codes, factors, num_variance_estimate=min(10000, num_rows), seed=seed)
    return results


def format_scores(scores: dict) -> str:
    """A short plain-text table of :func:`disentanglement_scores`' result: metric, main score, secondary scores.

    Keys of ``scores`` that are not metric names (for example a dataset name added by a caller) are skipped.
    """
    rows = [("metric", "score", "details")]
    for name in (name for name in KNOWN_METRICS if name in scores):
        result = scores[name]
        if name == "mig":
            details = "per factor " + " ".join(f"{value:.3f}" for value in result["mig_per_factor"])
        elif name in ("dci", "dci_exact"):
            details = (f"completeness {result['completeness']:.3f}, informativeness train "
                       f"{result['informativeness_train']:.3f} test {result['informativeness_test']:.3f}")
        elif name == "sap":
            details = "per factor " + " ".join(f"{value:.3f}" for value in result["sap_per_factor"])
        else:
            details = f"train accuracy {result['train_accuracy']:.3f}, active dims {result['num_active_dims']}"
        rows.append((_LABEL[name], f"{result[_MAIN_SCORE[name]]:.3f}", details))
    if len(rows) == 1:
        raise InfoGANError(f"no metric results to format; expected keys among {', '.join(KNOWN_METRICS)}")
    width = [max(len(row[i]) for row in rows) for i in range(2)]
    return "\n".join(f"{row[0]:<{width[0]}}  {row[1]:>{width[1]}}  {row[2]}" for row in rows)
