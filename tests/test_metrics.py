import math

import numpy as np
import pytest
import torch

from torch_infogan import InfoRegularizer
from torch_infogan.data import ImageData
from torch_infogan.evaluation import evaluate, format_table
from torch_infogan.metrics import ari, cluster_scores, contingency, nmi


def test_permuted_labels_score_perfectly():
    labels = np.random.default_rng(0).integers(0, 10, 1000)
    perm = np.random.default_rng(1).permutation(10)
    scores = cluster_scores(perm[labels], labels, 10)
    assert scores["accuracy"] == 1.0 and scores["nmi"] == pytest.approx(1.0) and scores["ari"] == pytest.approx(1.0)
    assert scores["mapping"] == {int(perm[i]): i for i in range(10)}
    assert scores["merged"] == []


def test_random_and_merged_clusters():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, 20000)
    random = cluster_scores(rng.integers(0, 10, 20000), labels, 10)
    assert random["accuracy"] < 0.15 and random["nmi"] < 0.01 and abs(random["ari"]) < 0.01
    merged = labels.copy()
    merged[merged == 9] = 4  # the classic 4/9 merge
    scores = cluster_scores(merged, labels, 10)
    assert scores["accuracy"] == pytest.approx(1 - min((labels == 9).mean(), (labels == 4).mean()))
    assert [4, 9] in scores["merged"]


def test_nmi_and_ari_against_known_values():
    # Worked by hand: MI = ln3/2 + ln2/3; H(pred) = ln3; H(labels) = entropy of (1/3, 1/6, 1/2).
    table = contingency(np.array([0, 0, 1, 1, 2, 2]), np.array([0, 0, 1, 2, 2, 2]))
    h_labels = -sum(p * np.log(p) for p in (1 / 3, 1 / 6, 1 / 2))
    assert nmi(table) == pytest.approx((np.log(3) / 2 + np.log(2) / 3) / ((np.log(3) + h_labels) / 2), abs=1e-12)
    assert ari(contingency(np.array([0, 0, 1, 1]), np.array([0, 0, 1, 2]))) == pytest.approx(0.5714285714285714)


class _LabelOracle(torch.nn.Module):
    """A 'discriminator' whose tapped features are a permutation of the label one-hot, so Q can read it."""

    def __init__(self, perm):
        super().__init__()
        self.perm = perm
        self.features = torch.nn.Identity()

    def forward(self, images):
        label = images[:, 0, 0, 0].mul(255).round().long().clamp(0, 9)
        return self.features(torch.nn.functional.one_hot(self.perm[label], 10).float() * 10)


def _label_oracle_model(perm):
    info = InfoRegularizer("cat:10", noise_dim=2, q_hidden=0).attach(_LabelOracle(perm), "features", in_features=10)
    with torch.no_grad():
        info.q.net[0].weight.copy_(torch.eye(10))
        info.q.net[0].bias.zero_()
    generator = torch.nn.Sequential(torch.nn.Linear(12, 16), torch.nn.Unflatten(1, (1, 4, 4)))
    return generator, info


def test_evaluate_a_q_that_permutes_the_labels_gives_accuracy_one():
    perm = torch.randperm(10)
    labels = torch.randint(0, 10, (500,))
    images = labels.view(-1, 1, 1, 1).expand(-1, 1, 4, 4).to(torch.uint8)
    generator, info = _label_oracle_model(perm)
    result = evaluate(generator, info, ImageData(images, labels, "synthetic"))
    assert result["labelled"] and result["codes"]["cat0"]["accuracy"] == 1.0
    assert result["codes"]["cat0"]["mapping"] == {int(perm[i]): i for i in range(10)}


def test_evaluate_without_labels_gives_the_label_free_scores_alone():
    labels = torch.arange(500) % 10
    noise = torch.randint(0, 20, (500, 1, 4, 4), generator=torch.Generator().manual_seed(0))
    images = (labels.view(-1, 1, 1, 1) * 20 + noise).to(torch.uint8)
    images[:, 0, 0, 0] = labels.to(torch.uint8)  # the pixel the oracle reads
    generator, info = _label_oracle_model(torch.randperm(10))
    labelled = evaluate(generator, info, ImageData(images, labels, "synthetic"))
    unlabelled = evaluate(generator, info, ImageData(images, None, "synthetic"))
    assert not unlabelled["labelled"]
    scores = unlabelled["codes"]["cat0"]
    assert set(scores) == {"usage", "confidence", "real_mi", "agreement"}
    for key in scores:  # the same numbers as with labels: none of them uses the labels
        assert scores[key] == labelled["codes"]["cat0"][key]
    assert scores["usage"] == pytest.approx(math.log(10), abs=1e-3)
    assert unlabelled["bounds"] == labelled["bounds"]
    table = format_table(unlabelled)
    assert "(no labels)" in table and f"{scores['agreement']:.4f}" in table


def test_label_free_scores_known_answers():
    from torch_infogan.evaluation import label_free_scores

    balanced = torch.nn.functional.one_hot(torch.arange(1000) % 10, 10).float()  # confident, equal shares
    scores = label_free_scores({"probs": balanced})
    assert scores["usage"] == pytest.approx(math.log(10)) and scores["confidence"] == pytest.approx(1.0)
    assert scores["real_mi"] == pytest.approx(math.log(10))
    merged = torch.nn.functional.one_hot(torch.arange(1000) % 5, 10).float()  # half the categories unused
    assert label_free_scores({"probs": merged})["real_mi"] == pytest.approx(math.log(5))
    unsure = torch.full((100, 10), 0.1)  # every image spread over all categories: no information
    scores = label_free_scores({"probs": unsure})
    assert scores["usage"] == pytest.approx(math.log(10)) and scores["real_mi"] == pytest.approx(0.0, abs=1e-9)
    assert label_free_scores({"mean": torch.zeros(3, 1), "std": torch.ones(3, 1)}) == {}


def test_neighbour_agreement_rewards_categories_that_follow_the_datas_own_groups():
    from torch_infogan.evaluation import neighbour_agreement, pixel_neighbours

    gen = torch.Generator().manual_seed(0)
    groups = torch.arange(600) % 3  # three groups of images, each around its own random pattern
    patterns = torch.rand(3, 1, 8, 8, generator=gen) * 255
    images = (patterns[groups] + 20 * torch.randn(600, 1, 8, 8, generator=gen)).clamp(0, 255).to(torch.uint8)
    assert neighbour_agreement(images, groups.numpy()) == 1.0
    merged = (groups.clamp(max=1)).numpy()  # two groups share a category: neighbours still agree
    assert neighbour_agreement(images, merged) == 1.0
    split = (groups + 3 * (torch.arange(600) % 2)).numpy()  # each group cut in two at random
    assert 0.4 < neighbour_agreement(images, split) < 0.6
    random = torch.randint(0, 3, (600,), generator=gen).numpy()
    assert neighbour_agreement(images, random) < 0.45
    # on a subset: the same answer for the categories that follow the groups
    assert neighbour_agreement(images, groups.numpy(), limit=200) == 1.0
    # neighbours found once and handed over: the same scores for every categorization
    neighbours = pixel_neighbours(images)
    assert neighbours[1].shape == (600, 10)
    for assigned in (groups.numpy(), merged, split, random):
        assert neighbour_agreement(images, assigned, neighbours=neighbours) == neighbour_agreement(images, assigned)


def test_run_score_and_rank_runs_compare_informative_runs_by_agreement():
    from torch_infogan.errors import InfoGANError
    from torch_infogan.evaluation import rank_runs, run_score

    labels = torch.arange(500) % 10
    images = (labels.view(-1, 1, 1, 1) * 20).expand(-1, 1, 4, 4).clone().to(torch.uint8)
    images[:, 0, 0, 0] = labels.to(torch.uint8)  # the pixel the oracle reads
    _, info = _label_oracle_model(torch.randperm(10))
    with torch.no_grad():
        info.q.net[0].weight.mul_(0.01)  # logits 0.1 and 0: the right digit, but hardly above the others
    unsure = run_score(info, ImageData(images, None, "synthetic"))
    assert unsure["code"] == "cat0" and not unsure["informative"] and "accuracy" not in unsure
    with torch.no_grad():
        info.q.net[0].weight.mul_(100)  # the same categories, confident
    sure = run_score(info, ImageData(images, labels, "synthetic"))
    assert sure["informative"] and sure["real_mi"] > 0.5 * math.log(10) and sure["accuracy"] == 1.0
    rows = [dict(unsure, name="unsure", agreement=1.0), dict(sure, name="sure", agreement=0.5),
            dict(sure, name="surer", agreement=0.9)]
    assert [row["name"] for row in rank_runs(rows)] == ["surer", "sure", "unsure"]
    with pytest.raises(InfoGANError, match="no categorical code 'unif1'"):
        run_score(info, ImageData(images, labels, "synthetic"), code="unif1")
