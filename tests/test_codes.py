import math
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from torch import distributions as dist
from torch import nn

from torch_infogan import (InfoGANError, InfoRegularizer, format_codes, get_code, list_codes, parse_codes,
                           register_code, split_params)
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
    if code.has_enumerate_support:
        # all mass on the true value: NLL 0, so the bound H(c) - NLL equals the entropy (log k for cat)
        assert float(code.entropy() - exact) == pytest.approx(float(code.entropy()), abs=1e-4)
    if code.name == "cat":
        assert float(code.entropy() - exact) == pytest.approx(math.log(code.k), abs=1e-4)


def test_fitted_nll_is_a_bound_no_worse_than_a_fixed_std(code):
    value = code.sample(256)
    q = _exact_params(code, value) + 0.3 * torch.randn(256, code.param_dim)
    fitted, fixed = code.fitted_nll(q, value), code.nll(q, value)
    assert fitted.shape == (256,)
    if code.has_enumerate_support:
        torch.testing.assert_close(fitted, fixed)  # nothing of Q's likelihood is left unlearned
    elif not code.learn_std:
        assert float(fitted.mean()) <= float(fixed.mean()) + 1e-6  # the fitted variance is the best one


def test_fitted_bound_of_a_uniform_code_known_answer():
    code = get_code("unif", dim=1)
    value = code.sample(100_000, generator=torch.Generator().manual_seed(0))
    q = value + 0.1 * torch.randn(100_000, 1, generator=torch.Generator().manual_seed(1))
    bound = float(code.entropy() - code.fitted_nll(q, value).mean())
    # H = log 2; Q = N(c; mean, 0.1^2): E[-log Q] = 0.5 + 0.5 log(2 pi 0.01)
    assert bound == pytest.approx(math.log(2) - 0.5 - 0.5 * math.log(2 * math.pi * 0.01), abs=0.01)
    assert float(code.entropy() - code.nll(q, value).mean()) < 0  # what Q's std of 1 reports


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
    if code.has_enumerate_support:
        assert torch.equal(values, code.enumerate_support())
    else:
        assert values[0] == -2 and values[-1] == 2 and len(values) == 7
    if code.name == "cat":
        assert values.tolist() == list(range(code.k)) and values.dtype == torch.long
    if code.name == "bern":
        assert values.tolist() == [0.0, 1.0]


def test_held_value_is_shaped_like_one_sample(code):
    held = code.held_value(generator=torch.Generator().manual_seed(0))
    assert held.shape == code.sample(1).shape and held.shape[0] == 1
    assert code.encode(held).shape == (1, code.input_dim)
    if code.has_enumerate_support:
        assert set(held.flatten().tolist()) <= set(code.enumerate_support().tolist())
    else:
        torch.testing.assert_close(held, code.mean.unsqueeze(0))
        assert code.mean.dtype.is_floating_point


def test_mean_is_the_prior_mean(code):
    if code.has_enumerate_support:
        return
    assert code.mean.shape == (code.dim,)
    empirical = code.sample(20000, generator=torch.Generator().manual_seed(0)).mean(0)
    torch.testing.assert_close(code.mean, empirical, atol=0.03, rtol=0)


def test_posterior_keys_are_the_posterior_parts(code):
    posterior = code.posterior(torch.randn(5, code.param_dim))
    assert tuple(posterior) == tuple(code.posterior_parts)


def test_sweep_dims(code):
    expected = 1 if code.name == "cat" else code.dim
    assert code.sweep_dims == expected


def test_cluster(code):
    q = torch.randn(6, code.param_dim)
    assigned = code.cluster(q)
    if code.num_clusters is None:
        assert assigned is None
    else:
        assert assigned.shape == (6,) and assigned.dtype == torch.long
        assert 0 <= int(assigned.min()) and int(assigned.max()) < code.num_clusters
    if code.name == "cat":
        assert code.num_clusters == code.k and torch.equal(assigned, q.argmax(1))


def test_split_params_gives_each_code_its_width():
    codes = [_variants(name)[i] for name in CODES for i in range(2)]
    q = torch.randn(3, sum(c.param_dim for c in codes))
    parts = split_params(codes, q)
    assert [p.shape for p in parts] == [(3, c.param_dim) for c in codes]
    torch.testing.assert_close(torch.cat(parts, 1), q)
    with pytest.raises(InfoGANError, match="param_dim"):
        split_params(codes, q[:, 1:])


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

            def posterior(self, q_params):
                return {"mean": q_params, "std": torch.ones_like(q_params)}

            @property
            def mean(self):
                return torch.full((self.dim,), math.sqrt(2 / math.pi))

        assert "halfnormal" in list_codes()
        codes = parse_codes("cat:10,halfnormal:2:weight=0.1")
        assert codes[1].dim == 2 and codes[1].weight == 0.1
        assert format_codes(codes) == "cat:10,halfnormal:2:weight=0.1"
    finally:
        _REGISTRY.pop("halfnormal", None)


class _NoNll(Code):
    def __init__(self, dim: int = 1, weight: float = 1.0):
        super().__init__(weight)
        self.dim = self.input_dim = self.param_dim = dim

    def sample(self, n, generator=None, device=None):
        return torch.randn(n, self.dim, generator=generator, device=device)

    def entropy(self):
        return torch.tensor(0.0)

    def posterior(self, q_params):
        return {"mean": q_params, "std": torch.ones_like(q_params)}

    @property
    def mean(self):
        return torch.zeros(self.dim)


def test_register_refuses_a_class_missing_a_required_member():
    with pytest.raises(InfoGANError, match="must define nll") as err:
        register_code("nonll_test")(_NoNll)
    assert "_NoNll" in str(err.value) and "nonll_test" not in _REGISTRY

    no_mean = type("NoMean", (_NoNll,), {"nll": lambda self, q, v: (v - q).pow(2).sum(1), "mean": Code.mean})
    with pytest.raises(InfoGANError, match=r"must define mean\b"):
        register_code("nomean_test")(no_mean)

    finite = type("Finite", (no_mean,), {"has_enumerate_support": True})  # needs enumerate_support, not mean
    with pytest.raises(InfoGANError, match="must define enumerate_support"):
        register_code("finite_test")(finite)
    assert not {"nomean_test", "finite_test"} & set(_REGISTRY)

    with pytest.raises(InfoGANError, match="subclass"):
        register_code("notacode_test")(object)


def test_every_registered_code_passes_registration_checks():
    from torch_infogan.codes import _missing_members

    assert {name: _missing_members(_REGISTRY[name]) for name in CODES} == {name: [] for name in CODES}


# A user code, written as a user would; the checkpoint test below also runs it in fresh processes.
LAPLACE_SOURCE = textwrap.dedent('''
    import math

    import torch
    from torch_infogan import Code, register_code


    @register_code("laplace_test")
    class LaplaceTest(Code):
        """Laplace(0, 1) prior per dimension; Q predicts the location."""

        def __init__(self, dim: int = 1, weight: float = 1.0):
            super().__init__(weight)
            self.dim = self.input_dim = self.param_dim = int(dim)

        def sample(self, n, generator=None, device=None):
            e = torch.empty(2, n, self.dim, device=device).exponential_(generator=generator)
            return e[0] - e[1]

        def nll(self, q_params, value):
            return ((value.float() - q_params.float()).abs() + math.log(2)).sum(1)

        def entropy(self):
            return torch.tensor(self.dim * (1 + math.log(2)))

        def posterior(self, q_params):
            return {"mean": q_params.float(), "std": torch.full_like(q_params.float(), math.sqrt(2))}

        @property
        def mean(self):
            return torch.zeros(self.dim)
''')


@pytest.fixture
def laplace_test():
    """Registers ``laplace_test`` for one test."""
    assert "laplace_test" not in _REGISTRY
    try:
        exec(compile(LAPLACE_SOURCE, "laplace_test", "exec"), {"__name__": "laplace_test"})
        yield _REGISTRY["laplace_test"]
    finally:
        _REGISTRY.pop("laplace_test", None)


class _Recorder(nn.Module):
    """Wraps a generator and keeps its latest input."""

    def __init__(self, generator):
        super().__init__()
        self.generator = generator
        self.latent = None

    def forward(self, latent):
        self.latent = latent.clone()
        return self.generator(latent)


def _traversal_setup(spec):
    from torch_infogan.models import DCGAN_TAP, build_dcgan

    info = InfoRegularizer(spec, noise_dim=4)
    G, D = build_dcgan(info.latent_dim, widths=(4, 8), fc_dim=16)
    info.attach(D, DCGAN_TAP, example=torch.rand(2, 1, 28, 28))
    return info, _Recorder(G)


def _code_inputs(info, latent, index):
    start = info.noise_dim + sum(c.input_dim for c in info.codes[:index])
    return latent[:, start:start + info.codes[index].input_dim]


@pytest.mark.parametrize("name", CODES + ["laplace_test"])
def test_every_code_goes_through_traversal_pictures(name, request):
    """Needs InfoRegularizer.draw."""
    if name == "laplace_test":
        request.getfixturevalue("laplace_test")
    from torch_infogan.pictures import traversal_images, traversal_names

    info, G = _traversal_setup(f"cat:3,{name}:2" if name != "cat" else "cat:3,cat:4")
    code = info.codes[1]
    names = traversal_names(info)
    assert [(k, d) for k, d, _ in names if k == info.keys[1]] == [(info.keys[1], d) for d in range(code.sweep_dims)]
    for _, d, _ in (n for n in names if n[0] == info.keys[1]):
        images, cols = traversal_images(G, info, info.keys[1], dim=d, steps=5)
        rows = images.shape[0] // cols
        assert images.shape == (rows * cols, 1, 28, 28) and torch.isfinite(images).all()
        swept = _code_inputs(info, G.latent, 1).view(rows, cols, -1)
        held_cat = _code_inputs(info, G.latent, 0).view(rows, cols, -1)
        if name == "cat":  # one row per class, noise across columns; the other categorical code is held
            assert (rows, cols) == (4, 10)
            torch.testing.assert_close(swept.argmax(-1), torch.arange(4).view(4, 1).expand(4, 10))
            assert (held_cat == held_cat[0, 0]).all()
        else:  # columns sweep dimension d; rows are the classes of the categorical code
            values = code.traversal(5).float()
            assert (rows, cols) == (3, len(values))
            torch.testing.assert_close(swept[..., d], values.expand(rows, cols))
            others = [i for i in range(swept.shape[-1]) if i != d]
            assert (swept[..., others] == swept[0, 0, others]).all()
            assert torch.equal(held_cat.argmax(-1), torch.arange(3).view(3, 1).expand(3, cols))
            if not code.has_enumerate_support:
                torch.testing.assert_close(swept[0, 0, others], code.mean[others])
        assert not torch.equal(swept[0, 0], swept[-1, -1])  # the swept values differ across the grid


def test_user_code_in_evaluation_and_export(laplace_test):
    """Needs InfoRegularizer.draw (estimate_bounds)."""
    from torch_infogan.data import ImageData
    from torch_infogan.evaluation import evaluate
    from torch_infogan.exporters import Encoder, output_names

    info, G = _traversal_setup("cat:3,laplace_test:2")
    assert output_names(info) == ["features", "cat0_probs", "laplace_test1_mean", "laplace_test1_std"]
    outputs = Encoder(info).eval()(torch.rand(4, 1, 28, 28))
    assert [tuple(o.shape) for o in outputs[1:]] == [(4, 3), (4, 2), (4, 2)]
    data = ImageData(torch.randint(0, 256, (20, 1, 28, 28), dtype=torch.uint8), torch.arange(20) % 3, "noise")
    result = evaluate(G.generator, info, data)
    assert list(result["codes"]) == ["cat0"] and list(result["bounds"]) == info.keys


def test_checkpoint_with_an_unregistered_code_names_it(laplace_test, tmp_path):
    from torch_infogan import save_checkpoint
    from torch_infogan.models import DCGAN_TAP, build_models

    info = InfoRegularizer("cat:3,laplace_test:2", noise_dim=4)
    model = {"builder": "dcgan", "latent_dim": info.latent_dim, "widths": [4, 8], "fc_dim": 16}
    G, D = build_models(model)
    info.attach(D, DCGAN_TAP, example=torch.rand(2, 1, 28, 28))
    path = save_checkpoint(tmp_path / "laplace.safetensors", G, D, info, {"model": model, "image_shape": [1, 28, 28]}, 0)
    (tmp_path / "laplace_test_code.py").write_text(LAPLACE_SOURCE)

    def load(prelude):
        script = f"{prelude}\nfrom torch_infogan import load_checkpoint\nprint(load_checkpoint({str(path)!r}).info.spec)"
        return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path,
                              env={**os.environ, "PYTHONPATH": str(tmp_path)})

    missing = load("")
    assert missing.returncode != 0
    message = missing.stderr.strip().splitlines()[-1]
    assert message.startswith("torch_infogan.errors.InfoGANError: checkpoint ")
    assert "uses code 'laplace_test', which is not registered in this process" in message
    assert "@register_code('laplace_test')" in message

    loaded = load("import laplace_test_code")
    assert loaded.returncode == 0, loaded.stderr
    assert loaded.stdout.strip() == "cat:3,laplace_test:2"


def test_codes_hash_as_they_compare_and_say_whether_they_are_bounded():
    a, b, c = parse_codes("cat:10,cat:10,unif:2")
    assert a == b and hash(a) == hash(b) and len({a, b, c}) == 2
    assert parse_codes("cat:10:prior=learned")[0] != a  # the configuration is part of the identity
    assert c.bounded and c.support == (-1.0, 1.0)
    gauss, cat = parse_codes("gauss:1,cat:3")
    assert not gauss.bounded and gauss.support is None and not cat.bounded


def test_a_named_code_keeps_its_key_when_codes_are_inserted_and_round_trips_through_checkpoints(tmp_path):
    from torch_infogan.codes import code_keys
    from torch_infogan import InfoRegularizer
    from torch_infogan.checkpoint import load_checkpoint, save_checkpoint
    from torch_infogan.models import DCGAN_TAP, build_dcgan

    first = parse_codes("cat:10:key=digit,unif:2:key=style")
    inserted = parse_codes("unif:1,cat:10:key=digit,cat:3,unif:2:key=style")
    assert code_keys(first) == ["digit", "style"]
    assert code_keys(inserted) == ["unif0", "digit", "cat2", "style"]  # unnamed codes keep kind and position
    assert parse_codes(format_codes(inserted)) == inserted
    assert parse_codes("cat:10:key=digit") != parse_codes("cat:10")  # the key is part of the code
    for bad, message in [("cat:10:key=a b", "letters, digits"), ("cat:10:key=2x", "letters, digits"),
                         ("cat:10:key=unif1,unif:2", "same key"), ("cat:4:key=x,cat:4:key=x", "same key")]:
        with pytest.raises(InfoGANError, match=message):
            parse_codes(bad)
    info = InfoRegularizer("unif:1,cat:10:key=digit:prior=learned", noise_dim=4)
    G, D = build_dcgan(info.latent_dim)
    info.attach(D, DCGAN_TAP, example=torch.rand(2, 1, 28, 28))
    latent, codes = info.sample(4)
    assert list(codes) == ["unif0", "digit"]
    config = {"model": {"builder": "dcgan", "latent_dim": info.latent_dim, "image_shape": [1, 28, 28]},
              "image_shape": [1, 28, 28]}
    loaded = load_checkpoint(save_checkpoint(tmp_path / "c.safetensors", G, D, info, config, 0))
    assert loaded.info.keys == ["unif0", "digit"] and loaded.info.codes[1].learned
