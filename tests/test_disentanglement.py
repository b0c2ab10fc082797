import json
import math

import joblib
import numpy as np
import pytest

from torch_infogan.disentanglement import (
    METRICS,
    dci,
    dci_from_importance,
    disentanglement_scores,
    factor_vae_score,
    format_scores,
    histogram_discretize,
    mig,
    sap,
)
from torch_infogan.errors import InfoGANError

# disentanglement_lib's test fixture: 10 factors with 10 values each, drawn uniformly, observed directly.
ONE_CODE_TWO_FACTORS = 1 - math.log(2) / math.log(10)


@pytest.fixture(scope="module")
def grid10():
    """3,000 points of 10 uniform factors with 10 values each."""
    return np.random.default_rng(0).integers(0, 10, size=(3000, 10))


def representations(factors):
    """The three representations of disentanglement_lib's tests: identity, all zero, duplicated."""
    identity = factors.astype(np.float64)
    return {"identity": identity, "zero": np.zeros_like(identity), "duplicated": np.hstack([identity, identity])}


# --------------------------------------------------------------------------------------------- fixture tests


def test_mig_identity_zero_duplicated(grid10):
    reps = representations(grid10)
    assert 0.9 <= mig(reps["identity"][:2000], grid10[:2000])["mig"] <= 1.0
    assert 0.0 <= mig(reps["zero"][:2000], grid10[:2000])["mig"] <= 0.2
    assert 0.0 <= mig(reps["duplicated"][:2000], grid10[:2000])["mig"] <= 0.1


def test_sap_continuous_identity_zero_duplicated(grid10):
    # disentanglement_lib's SAP tests use continuous_factors=True; these are its thresholds.
    reps = representations(grid10)
    scores = {name: sap(rep[:2000], grid10[:2000], rep[2000:], grid10[2000:], continuous_factors=True)["sap"]
              for name, rep in reps.items()}
    assert 0.9 <= scores["identity"] <= 1.0
    assert 0.0 <= scores["zero"] <= 0.2
    assert 0.0 <= scores["duplicated"] <= 0.2


def test_sap_discrete_identity_zero_duplicated(grid10):
    # The study's setting (discrete factors): a linear SVM on one code dimension cannot separate 10 ordered
    # classes, so even the identity reaches only about 0.2, not 0.9; the right code still wins every factor.
    reps = representations(grid10)
    identity = sap(reps["identity"][:2000], grid10[:2000], reps["identity"][2000:], grid10[2000:])
    matrix = np.array(identity["score_matrix"])
    assert matrix.shape == (10, 10)
    assert (matrix.argmax(axis=0) == np.arange(10)).all()
    assert 0.1 <= identity["sap"] <= 0.4
    assert np.allclose(matrix[~np.eye(10, dtype=bool)], 0.1, atol=0.05)  # other codes: chance level
    for name in ("zero", "duplicated"):
        assert sap(reps[name][:2000], grid10[:2000], reps[name][2000:], grid10[2000:])["sap"] <= 0.2


def test_factor_vae_identity_zero_duplicated(grid10):
    # disentanglement_lib's test sizes: batch 5, 3,000 training votes, 2,000 evaluation votes, 2,500 points
    # for the variances.
    reps = representations(grid10)
    options = dict(batch_size=5, num_train=3000, num_eval=2000, num_variance_estimate=2500)
    identity = factor_vae_score(reps["identity"], grid10, **options)
    assert 0.9 <= identity["train_accuracy"] <= 1.0 and 0.9 <= identity["eval_accuracy"] <= 1.0
    assert identity["num_active_dims"] == 10
    zero = factor_vae_score(reps["zero"], grid10, **options)
    assert zero["train_accuracy"] == zero["eval_accuracy"] == 0.0 and zero["num_active_dims"] == 0
    duplicated = factor_vae_score(reps["duplicated"], grid10, **options)
    assert duplicated["train_accuracy"] >= 0.9 and duplicated["eval_accuracy"] >= 0.9
    assert duplicated["num_active_dims"] == 20


def test_dci_identity_and_zero(grid10):
    # 1,000 training and 1,000 test points, as disentanglement_lib's DCI tests.
    reps = representations(grid10)
    identity = dci(reps["identity"][:1000], grid10[:1000], reps["identity"][1000:2000], grid10[1000:2000])
    assert 0.9 <= identity["disentanglement"] <= 1.0 and 0.9 <= identity["completeness"] <= 1.0
    assert identity["informativeness_test"] == pytest.approx(1.0)
    assert np.array(identity["importance"]).shape == (10, 10)
    zero = dci(reps["zero"][:1000], grid10[:1000], reps["zero"][1000:2000], grid10[1000:2000])
    assert 0.0 <= zero["disentanglement"] <= 0.2 and 0.0 <= zero["completeness"] <= 0.2


def test_dci_duplicated_five_factors(grid10):
    # The first 5 factors, duplicated: 10 codes, each factor's importance split about evenly over its two
    # copies, so completeness is near 1 - log 2 / log 10 (the value disentanglement_lib's test aims at).
    factors = grid10[:2000, :5]
    codes = representations(factors)["duplicated"]
    scores = dci(codes[:1000], factors[:1000], codes[1000:], factors[1000:])
    assert 0.9 <= scores["disentanglement"] <= 1.0
    assert scores["completeness"] == pytest.approx(ONE_CODE_TWO_FACTORS, abs=0.05)


def test_dci_duplicated(grid10):
    reps = representations(grid10)
    scores = dci(reps["duplicated"][:1000], grid10[:1000], reps["duplicated"][1000:2000], grid10[1000:2000])
    assert 0.9 <= scores["disentanglement"] <= 1.0
    # disentanglement_lib asserts 1 - log 2 / log 10 +- 0.1; with 20 codes an even split of each factor over
    # its two copies gives 1 - log 2 / log 20, inside that band.
    assert ONE_CODE_TWO_FACTORS - 0.1 <= scores["completeness"] <= ONE_CODE_TWO_FACTORS + 0.1
    assert scores["completeness"] == pytest.approx(1 - math.log(2) / math.log(20), abs=0.03)


def test_dci_permuted_codes_score_low(grid10):
    # disentanglement_lib's "bad" DCI representation: each point's code is a random permutation of its factors.
    rng = np.random.default_rng(1)
    codes = rng.permuted(grid10.astype(np.float64), axis=1)
    scores = dci(codes[:1000], grid10[:1000], codes[1000:2000], grid10[1000:2000])
    assert scores["disentanglement"] <= 0.2 and scores["completeness"] <= 0.2


def test_dci_identical_columns_share_their_importance(grid10):
    factors = grid10[:1000, :3]
    codes = factors[:, [0, 1, 0, 2, 0]].astype(np.float64)  # factor 0 in three identical columns
    importance = np.array(dci(codes[:600], factors[:600], codes[600:], factors[600:])["importance"])
    assert importance[0, 0] == importance[2, 0] == importance[4, 0] == pytest.approx(1 / 3, abs=1e-6)
    assert importance[1, 1] == pytest.approx(1.0, abs=1e-6) and importance[3, 2] == pytest.approx(1.0, abs=1e-6)


@pytest.mark.slow
def test_dci_agrees_with_the_exact_trees(grid10):
    """LightGBM's trees give scikit-learn's exact DCI within 0.02 on disentanglement_lib's fixtures (5 factors:
    identity, duplicated, permuted) and within 0.03 on a noisy linear mix of the factors (0.021 measured)."""
    factors = grid10[:, :5].astype(np.float64)
    rng = np.random.default_rng(3)
    mixed = factors @ (np.eye(5) + 0.3 * rng.random((5, 5))) + rng.normal(0, 1.0, factors.shape)
    cases = [(factors, 0.02), (np.hstack([factors, factors]), 0.02),
             (np.random.default_rng(1).permuted(factors, axis=1), 0.02), (mixed, 0.03)]
    for codes, tolerance in cases:
        split = (codes[:1000], grid10[:1000, :5], codes[1000:2000], grid10[1000:2000, :5])
        fast, exact = dci(*split), dci(*split, exact=True)
        assert (fast["method"], exact["method"]) == ("lightgbm", "exact")
        assert fast["disentanglement"] == pytest.approx(exact["disentanglement"], abs=tolerance)
        assert fast["completeness"] == pytest.approx(exact["completeness"], abs=tolerance)
        assert fast["informativeness_test"] == pytest.approx(exact["informativeness_test"], abs=0.03)


# ------------------------------------------------------------------------------------ importance arithmetic


def test_dci_arithmetic_diagonal():
    assert dci_from_importance(np.diag(np.full(5, 5.0))) == pytest.approx((1.0, 1.0))
    assert dci_from_importance([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]]) == pytest.approx((1.0, 1.0))  # an unused code
    assert dci_from_importance(np.diag(np.full(5, 5.0))[:2]) == pytest.approx((1.0, 1.0))  # missed factors
    assert dci_from_importance(-np.eye(3)) == pytest.approx((1.0, 1.0))  # signs are ignored


def test_dci_arithmetic_shared_importance():
    diagonal = np.diag(np.full(5, 5.0))
    # each of 5 codes spreads its importance over 2 of 10 factors
    assert dci_from_importance(np.hstack([diagonal, diagonal])) == pytest.approx((ONE_CODE_TWO_FACTORS, 1.0))
    # each of 5 factors is spread over 2 of 10 codes
    assert dci_from_importance(np.vstack([diagonal, diagonal])) == pytest.approx((1.0, ONE_CODE_TWO_FACTORS))
    # 10 codes, code i spread evenly over factors i and i+1 (mod 10)
    matrix = np.eye(10) + np.roll(np.eye(10), 1, axis=1)
    disentanglement, completeness = dci_from_importance(matrix)
    assert disentanglement == pytest.approx(ONE_CODE_TWO_FACTORS)
    assert completeness == pytest.approx(ONE_CODE_TWO_FACTORS)


def test_dci_arithmetic_zero_and_uniform():
    assert dci_from_importance(np.zeros((10, 10))) == pytest.approx((0.0, 0.0), abs=1e-7)
    assert dci_from_importance(np.ones((4, 6))) == pytest.approx((0.0, 0.0), abs=1e-9)
    with pytest.raises(InfoGANError):
        dci_from_importance(np.ones((1, 5)))


# ----------------------------------------------------------------------------------------- known answers


def test_histogram_discretize():
    codes = np.array([[0.0, 5.0], [1.0, 4.0], [2.0, 3.0], [3.0, 2.0], [4.0, 1.0], [5.0, 0.0]])
    expected = np.array([[1, 3], [1, 3], [2, 2], [2, 2], [3, 1], [3, 1]])
    np.testing.assert_array_equal(histogram_discretize(codes, num_bins=3), expected)
    assert (histogram_discretize(np.zeros((4, 1)), 20) == histogram_discretize(np.zeros((4, 1)), 20)[0]).all()


def test_mig_known_answer():
    # factors f0, f1 on a balanced 2 x 2 grid; code 0 = 2 f0 + f1 (knows both), code 1 = f1, code 2 = constant
    factors = np.tile([[0, 0], [0, 1], [1, 0], [1, 1]], (25, 1))
    codes = np.column_stack([2.0 * factors[:, 0] + factors[:, 1], factors[:, 1], np.zeros(100)])
    result = mig(codes, factors)
    log2 = math.log(2)
    np.testing.assert_allclose(result["mutual_info"], [[log2, log2], [0.0, log2], [0.0, 0.0]], atol=1e-12)
    # f0: gap log 2 / H(f0) = 1; f1: two codes know it fully, gap 0
    assert result["mig_per_factor"] == pytest.approx([1.0, 0.0])
    assert result["mig"] == pytest.approx(0.5)


def test_sap_known_answer():
    # balanced 2 x 2 grid: code 0 separates f0 perfectly, code 1 separates f1, code 2 is constant; a code that
    # does not see a factor is right on exactly half of the balanced test points.
    factors = np.tile([[0, 0], [0, 1], [1, 0], [1, 1]], (50, 1))
    codes = np.column_stack([4.0 * factors[:, 0] - 2.0, 4.0 * factors[:, 1] - 2.0, np.zeros(200)])
    result = sap(codes[:100], factors[:100], codes[100:], factors[100:])
    np.testing.assert_allclose(result["score_matrix"], [[1.0, 0.5], [0.5, 1.0], [0.5, 0.5]])
    assert result["sap"] == pytest.approx(0.5)


def test_factor_vae_known_answer():
    # Codes 0-2 are factors 0-2 plus small noise; code 3 = 0.001 * factor 0 would vote for factor 0 with zero
    # local variance but its standard deviation is below 0.05, so it is pruned. Every value of a factor is
    # shared by 32 rows (< batch 64), so batches are drawn with replacement.
    grid = np.stack(np.meshgrid(*[np.arange(4)] * 3, indexing="ij"), axis=-1).reshape(-1, 3)
    factors = np.tile(grid, (2, 1))
    rng = np.random.default_rng(1)
    codes = np.column_stack([factors + 0.01 * rng.standard_normal(factors.shape), 0.001 * factors[:, 0]])
    result = factor_vae_score(codes, factors, num_train=600, num_eval=300, num_variance_estimate=128)
    votes = np.array(result["votes_train"])
    assert votes.shape == (3, 4) and votes.sum() == 600
    np.testing.assert_array_equal(votes[:, :3], np.diag(np.diag(votes[:, :3])))
    assert (votes[:, 3] == 0).all()
    assert result["train_accuracy"] == result["eval_accuracy"] == 1.0
    assert result["num_active_dims"] == 3
    assert factor_vae_score(codes, factors, num_train=600, num_eval=300, num_variance_estimate=128) == result


def test_factor_vae_prunes_on_standard_deviation():
    # standard deviation 0.1 (variance 0.01): active under disentanglement_lib's rule (std >= 0.05)
    factors = np.tile(np.arange(10), 20)[:, None]
    codes = np.column_stack([0.1 * np.random.default_rng(0).standard_normal(200), factors[:, 0]])
    result = factor_vae_score(codes, factors, batch_size=8, num_train=50, num_eval=50, num_variance_estimate=200)
    assert result["num_active_dims"] == 2
    assert factor_vae_score(codes, factors, batch_size=8, num_train=50, num_eval=50, num_variance_estimate=200,
                            prune_below=0.5)["num_active_dims"] == 1


# ----------------------------------------------------------------------------------------------- the runner


@pytest.fixture(scope="module")
def small():
    """600 points of 4 factors with 5 values each; codes are the factors plus noise."""
    rng = np.random.default_rng(2)
    factors = rng.integers(0, 5, size=(600, 4))
    return factors + 0.1 * rng.standard_normal(factors.shape), factors


def test_disentanglement_scores_all_metrics(small):
    codes, factors = small
    messages = []
    scores = disentanglement_scores(codes, factors, num_train=400, num_test=200, progress=messages.append)
    assert list(scores) == list(METRICS)
    assert set(scores["mig"]) >= {"mig", "mig_per_factor"}
    assert set(scores["dci"]) >= {"disentanglement", "completeness", "informativeness_train",
                                  "informativeness_test", "importance"}
    assert set(scores["sap"]) >= {"sap", "score_matrix"}
    assert set(scores["factorvae"]) >= {"train_accuracy", "eval_accuracy", "num_active_dims"}
    assert scores["mig"]["mig"] > 0.5 and scores["dci"]["disentanglement"] > 0.9
    assert scores["factorvae"]["eval_accuracy"] > 0.9
    assert json.loads(json.dumps(scores)) == scores
    assert any(message.startswith("dci") for message in messages)
    table = format_scores(scores)
    assert len(table.splitlines()) == 5
    for name in METRICS:
        assert name in table
    assert f"{scores['mig']['mig']:.3f}" in table
    assert format_scores({"dataset": "shapes", "n": 600, **scores}) == table  # extra keys are skipped
    with pytest.raises(InfoGANError):
        format_scores({"dataset": "shapes"})


def test_dci_exact_is_asked_for_by_name(small):
    codes, factors = small
    scores = disentanglement_scores(codes[:, :2], factors[:, :2], metrics=("dci", "dci_exact"), num_train=300,
                                    num_test=200)
    assert scores["dci"]["method"] == "lightgbm" and scores["dci_exact"]["method"] == "exact"
    assert "dci_exact" not in METRICS
    assert "dci exact" in format_scores(scores)


def test_disentanglement_scores_subset_matches_direct_calls(small):
    codes, factors = small
    scores = disentanglement_scores(codes, factors, metrics=("mig", "sap"), num_train=400, num_test=200, seed=3)
    assert list(scores) == ["mig", "sap"]
    order = np.random.default_rng(3).permutation(len(codes))  # rows are shuffled with the seed, then split
    codes, factors = codes[order], factors[order]
    assert scores["mig"] == mig(codes[:400], factors[:400])
    assert scores["sap"] == sap(codes[:400], factors[:400], codes[400:600], factors[400:600])


def test_rows_in_factor_order_split_fairly(small):
    """Arrays stored in factor order (as dSprites is) score as the same rows shuffled."""
    codes, factors = small
    order = np.lexsort(factors.T[::-1])
    ordered = disentanglement_scores(codes[order], factors[order], metrics=("sap",), num_train=400, num_test=200)
    shuffled = disentanglement_scores(codes, factors, metrics=("sap",), num_train=400, num_test=200)
    assert ordered["sap"]["sap"] == pytest.approx(shuffled["sap"]["sap"], abs=0.05)


def test_dci_parallel_matches_sequential(small):
    codes, factors = small
    split = (codes[:200], factors[:200, :2], codes[200:300], factors[200:300, :2])
    with joblib.parallel_config(backend="threading"):  # the same code path without starting processes
        assert dci(*split, n_jobs=2) == dci(*split)


# ---------------------------------------------------------------------------------------------- bad inputs


def test_bad_inputs(small):
    codes, factors = small
    with pytest.raises(InfoGANError, match="rows"):
        disentanglement_scores(codes[:-1], factors, num_train=400, num_test=100)
    nan_codes = codes.copy()
    nan_codes[3, 1] = np.nan
    with pytest.raises(InfoGANError, match="non-finite"):
        disentanglement_scores(nan_codes, factors, num_train=400, num_test=100)
    with pytest.raises(InfoGANError, match="num_train/num_test"):
        disentanglement_scores(codes, factors)
    with pytest.raises(InfoGANError, match="mig, dci, sap, factorvae"):
        disentanglement_scores(codes, factors, metrics=("mig", "beta_vae"), num_train=400, num_test=100)
    with pytest.raises(InfoGANError, match="integer"):
        disentanglement_scores(codes, factors + 0.5, num_train=400, num_test=100)
    with pytest.raises(InfoGANError, match="2-D"):
        mig(codes[:, 0], factors)
    with pytest.raises(InfoGANError, match="single value"):
        mig(codes, np.column_stack([factors, np.zeros(600, dtype=int)]))
    with pytest.raises(InfoGANError, match="columns"):
        sap(codes[:400], factors[:400], codes[400:, :3], factors[400:])
    with pytest.raises(InfoGANError, match="num_variance_estimate"):
        factor_vae_score(codes, factors)
