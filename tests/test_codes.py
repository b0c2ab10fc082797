import math

import pytest
import torch
from torch import distributions as dist

from torch_infogan import InfoGANError, format_codes, get_code, list_codes, parse_codes, register_code
from torch_infogan.codes import Code, _REGISTRY

CODES = list_codes()


def _exact_params(code, value):
    """Q outputs that put (almost) all mass on ``value``."""
    if code.name == "cat":
        return torch.nn.functional.one_hot(value, code.k).float() * 1e4
    if code.name == "bern":
        return (value * 2 - 1) * 1e4
    mean = value.clone()
    if code.learn_std:
        return torch.cat([mean, torch.full_like(mean, -1e4)], dim=1)
    return mean


def _reference_log_prob(code, q_params, value):
    """The same log density written with torch.distributions."""
    if code.name == "cat":
        return dist.Categorical(logits=q_params).log_prob(value)
    if code.name == "bern":
        return dist.Bernoulli(logits=q_params).log_prob(value).sum(1)
    mean = q_params[:, : code.dim]
    std = (torch.nn.functional.softplus(q_params[:, code.dim:]) + code.min_std) if code.learn_std \
        else torch.full_like(mean, code.std)
    return dist.Normal(mean, std).log_prob(value).sum(1)


def _reference_entropy(code):
    if code.name == "cat":
        return dist.Categorical(logits=torch.zeros(code.k)).entropy()
    if code.name == "bern":
        return dist.Bernoulli(probs=torch.full((code.dim,), code.p)).entropy().sum()
    if code.name == "unif":
        return dist.Uniform(torch.full((code.dim,), code.low), torch.full((code.dim,), code.high)).entropy().sum()
    return dist.Normal(torch.zeros(code.dim), torch.ones(code.dim)).entropy().sum()


def _variants(name):
    """Default and non-default configurations of each registered code."""
    extra = {"cat": dict(k=7, weight=0.5), "unif": dict(dim=3, low=-2.0, high=0.5, learn_std=True),
             "gauss": dict(dim=2, std=0.5), "bern": dict(dim=4, p=0.25)}
    return [get_code(name), get_code(name, **extra.get(name, {}))]


@pytest.fixture(params=[(name, i) for name in CODES for i in range(2)], ids=lambda p: f"{p[0]}-{p[1]}")
def code(request):
    name, i = request.param
    return _variants(name)[i]


@pytest.mark.parametrize("n", [1, 2, 257])
def test_shapes(code, n):
    value = code.sample(n)
    assert value.shape[0] == n
    assert code.encode(value).shape == (n, code.input_dim)
    q = torch.randn(n, code.param_dim)
    assert code.nll(q, value).shape == (n,)
    for tensor in code.posterior(q).values():
        assert tensor.shape[0] == n and tensor.dim() == 2


def test_nll_matches_torch_distributions(code):
    value = code.sample(64)
    q = torch.randn(64, code.param_dim) * 2
    torch.testing.assert_close(code.nll(q, value), -_reference_log_prob(code, q, value), rtol=1e-5, atol=1e-5)


def test_entropy_is_the_true_prior_entropy(code):
    assert float(code.entropy()) == pytest.approx(float(_reference_entropy(code)), rel=1e-6)
    if code.name == "unif":
        assert float(code.entropy()) == pytest.approx(code.dim * math.log(code.high - code.low))


def test_exact_q_reaches_the_best_bound(code):
    value = code.sample(32)
    exact = code.nll(_exact_params(code, value), value).mean()
    noisy = code.nll(_exact_params(code, value) + torch.randn(32, code.param_dim), value).mean()
    assert exact <= noisy
    if code.discrete():
        # all mass on the true value: NLL 0, so the bound H(c) - NLL equals the entropy (log k for cat)
        assert float(code.entropy() - exact) == pytest.approx(float(code.entropy()), abs=1e-4)
    if code.name == "cat":
        assert float(code.entropy() - exact) == pytest.approx(math.log(code.k), abs=1e-4)


def test_categorical_nll_takes_logits_not_probabilities():
    code = get_code("cat", k=10)
    logits = torch.randn(8, 10)
    value = torch.arange(8)
    expected = -torch.log_softmax(logits, 1)[torch.arange(8), value]
    torch.testing.assert_close(code.nll(logits, value), expected)


def test_sampling_is_reproducible(code):
    a = code.sample(50, generator=torch.Generator().manual_seed(3))
    b = code.sample(50, generator=torch.Generator().manual_seed(3))
    c = code.sample(50, generator=torch.Generator().manual_seed(4))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_samples_follow_the_prior(code):
    value = code.sample(20000, generator=torch.Generator().manual_seed(0)).float()
    if code.name == "cat":
        freq = torch.bincount(value.long(), minlength=code.k).float() / len(value)
        assert torch.allclose(freq, torch.full((code.k,), 1 / code.k), atol=0.02)
    elif code.name == "unif":
        assert value.min() >= code.low and value.max() <= code.high
        assert abs(value.mean() - (code.low + code.high) / 2) < 0.03
    elif code.name == "gauss":
        assert abs(value.mean()) < 0.03 and abs(value.std() - 1) < 0.03
    else:
        assert abs(value.mean() - code.p) < 0.02


def test_spec_round_trips(code):
    spec = format_codes([code])
    assert parse_codes(spec) == [code]
    assert format_codes(parse_codes(spec)) == spec


def test_traversal_values(code):
    values = code.traversal(7)
    if code.name == "cat":
        assert values.tolist() == list(range(code.k))
    elif code.discrete():
        assert values.tolist() == [0.0, 1.0]
    else:
        assert values[0] == -2 and values[-1] == 2 and len(values) == 7


def test_multi_code_spec_round_trip():
    spec = "cat:10,unif:2:weight=0.5:learn_std=true,gauss:1:std=0.5,bern:3:p=0.3"
    codes = parse_codes(spec)
    assert [c.name for c in codes] == ["cat", "unif", "gauss", "bern"]
    assert codes[1].weight == 0.5 and codes[1].learn_std and codes[2].std == 0.5
    assert format_codes(codes) == spec


@pytest.mark.parametrize("spec, fragment", [
    ("cat:10,foo:2", "'foo:2'"),
    ("cat:ten", "'cat:ten'"),
    ("unif:2:color=red", "no option 'color'"),
    ("cat:1", "k >= 2"),
    ("unif:1:low=1:high=0", "high > low"),
    ("", "empty"),
    ("cat:10:3", "key=value"),
])
def test_bad_specs_name_the_token_and_the_registry(spec, fragment):
    with pytest.raises(InfoGANError) as err:
        parse_codes(spec)
    assert fragment in str(err.value)
    if "foo" in spec or spec == "":
        for name in CODES:
            assert name in str(err.value)


def test_register_refuses_a_duplicate_and_accepts_a_new_code():
    with pytest.raises(InfoGANError, match="already registered"):
        register_code("cat")(type("Dup", (Code,), {}))

    try:
        @register_code("halfnormal")
        class HalfNormal(Code):
            def __init__(self, dim: int = 1, weight: float = 1.0):
                super().__init__(weight)
                self.dim, self.input_dim, self.param_dim = dim, dim, dim

            def sample(self, n, generator=None, device=None):
                return torch.randn(n, self.dim, generator=generator, device=device).abs()

            def nll(self, q_params, value):
                return 0.5 * (value - q_params).pow(2).sum(1)

            def entropy(self):
                return torch.tensor(self.dim * 0.5 * math.log(math.pi * math.e / 2))

        assert "halfnormal" in list_codes()
        codes = parse_codes("cat:10,halfnormal:2:weight=0.1")
        assert codes[1].dim == 2 and codes[1].weight == 0.1
        assert format_codes(codes) == "cat:10,halfnormal:2:weight=0.1"
    finally:
        _REGISTRY.pop("halfnormal", None)
