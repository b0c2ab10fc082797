"""The learned categorical prior (``cat:k:prior=learned``): its gradients, bound, IIC term, checkpoint and exports."""

import json
import math
import warnings

import h5py
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from torch_infogan import InfoRegularizer, parse_codes
from torch_infogan.checkpoint import load_checkpoint
from torch_infogan.cli.main import app
from torch_infogan.codes import Categorical
from torch_infogan.config import preset_config
from torch_infogan.data import load_data
from torch_infogan.errors import InfoGANError
from torch_infogan.evaluation import prior_against_labels
from torch_infogan.losses import paired_information as _paired_information
from torch_infogan.trainer import Trainer

runner = CliRunner()


def _small_gan(spec="cat:4:prior=learned,unif:1"):
    disc = nn.Sequential(nn.Flatten(), nn.Linear(16, 32), nn.LeakyReLU(0.1, inplace=True), nn.Linear(32, 1))
    info = InfoRegularizer(spec, noise_dim=3).attach(disc, layer="2", example=torch.rand(2, 1, 4, 4))
    gen = nn.Sequential(nn.Linear(info.latent_dim, 16), nn.Sigmoid(), nn.Unflatten(1, (1, 4, 4)))
    return gen, disc, info


def test_spec_round_trips_and_bad_options_are_refused():
    code, = parse_codes("cat:10:prior=learned:tau=0.5:hard=false")
    assert (code.prior, code.tau, code.hard, code.learned) == ("learned", 0.5, False, True)
    assert parse_codes(code.spec()) == [code]
    assert parse_codes("cat:10")[0].logits is None
    with pytest.raises(InfoGANError, match="'uniform' or 'learned'"):
        parse_codes("cat:10:prior=zipf")
    with pytest.raises(InfoGANError, match="tau"):
        parse_codes("cat:10:prior=learned:tau=0")


def test_balance_mixes_the_iic_target_toward_uniform_and_needs_a_learned_prior():
    code, = parse_codes("cat:4:prior=learned:balance=0.25")
    assert parse_codes(code.spec()) == [code] and code.balance == 0.25
    code.logits.data = torch.tensor([2.0, 1.0, 0.0, -1.0])
    expected = 0.75 * torch.softmax(code.logits.detach(), 0) + 0.25 / 4
    assert torch.allclose(code.log_prior().exp(), expected, atol=1e-6)
    full, = parse_codes("cat:4:prior=learned:balance=1")
    full.logits.data = code.logits.data.clone()
    assert torch.allclose(full.log_prior(), torch.full((4,), -math.log(4)), atol=1e-6)  # uniform IIC again
    unmixed, = parse_codes("cat:4:prior=learned")
    unmixed.logits.data = code.logits.data.clone()
    assert torch.allclose(unmixed.log_prior(), torch.log_softmax(code.logits.detach(), 0), atol=1e-6)
    with pytest.raises(InfoGANError, match="between 0 and 1"):
        parse_codes("cat:4:prior=learned:balance=1.5")
    with pytest.raises(InfoGANError, match="applies to a learned prior"):
        parse_codes("cat:4:balance=0.5")


def test_rsample_is_differentiable_in_the_logits_and_matches_the_prior():
    code = Categorical(4, prior="learned")
    with torch.no_grad():
        code.logits.copy_(torch.tensor([2.0, 0.0, 0.0, -1.0]))
    value, relaxed = code.rsample(20000, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(relaxed.detach(), nn.functional.one_hot(value, 4).float(), atol=1e-6)  # straight-through
    frequencies = torch.bincount(value, minlength=4).float() / len(value)
    assert torch.allclose(frequencies, code.probs, atol=0.015)  # Gumbel-max draws follow the prior
    (relaxed * torch.arange(4.0)).sum().backward()
    assert code.logits.grad is not None and code.logits.grad.abs().sum() > 0
    soft = Categorical(4, prior="learned", hard=False, tau=0.5)
    _, relaxed = soft.rsample(8)
    assert not torch.equal(relaxed, relaxed.round()) and torch.allclose(relaxed.sum(1), torch.ones(8))


def test_logits_get_gradients_from_g_loss_and_none_from_d_loss():
    gen, disc, info = _small_gan()
    logits, = info.prior_parameters()
    latent, codes = info.sample(8)
    fake = gen(latent)
    loss_d = nn.functional.softplus(disc(fake.detach())).mean() + info.loss(codes)
    loss_d.backward()
    assert logits.grad is None  # D's loss, MI term included, reaches no logit
    loss_g = nn.functional.softplus(-disc(fake)).mean() + info.loss(codes)
    loss_g.backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0


def test_prior_loss_fits_the_prior_to_q_frequencies_on_real_images():
    gen, disc, info = _small_gan()
    logits, = info.prior_parameters()
    assert info.prior_loss().item() == 0.0  # nothing recorded yet
    head = [m for m in info.q.modules() if isinstance(m, nn.Linear)][-1]
    with torch.no_grad():
        head.bias[:4] += torch.tensor([2.0, 1.0, 0.0, -1.0])  # Q names category 0 most often
    real = torch.rand(64, 1, 4, 4)
    disc.eval()  # Q's batch norm as in q_params below
    info.iic(real, real.flip(-1))
    frequencies = torch.softmax(info.q_params(real)[:, :4].float(), 1)
    frequencies = (frequencies + torch.softmax(info.q_params(real.flip(-1))[:, :4].float(), 1)).mean(0) / 2
    before = (info.codes[0].probs - frequencies).abs().sum() / 2
    assert before > 0.15
    opt_g = torch.optim.Adam([*gen.parameters(), *info.prior_parameters()], lr=0.05)
    for _ in range(150):
        opt_g.zero_grad()
        info.prior_loss().backward()
        opt_g.step()
    assert (info.codes[0].probs - frequencies).abs().sum() / 2 < 0.02  # the prior moved to Q's frequencies
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in disc.parameters())  # it trains the prior only


def test_trainer_steps_the_logits_with_g_only():
    trainer = Trainer(preset_config("mnist", codes="cat:10:prior=learned,unif:2", limit=256, batch_size=32,
                                    iterations=2))
    logits, = trainer.info.prior_parameters()
    d_ids = {id(p) for group in trainer.opt_d.param_groups for p in group["params"]}
    g_ids = {id(p) for group in trainer.opt_g.param_groups for p in group["params"]}
    assert id(logits) in g_ids and id(logits) not in d_ids
    seen = []
    logits.register_hook(lambda grad: seen.append(grad.clone()))
    trainer.step()
    assert len(seen) == 1 and seen[0].abs().sum() > 0  # one gradient per step: G's backward's
    assert not torch.equal(logits.detach(), torch.zeros(10))


def test_the_bound_ceiling_is_the_learned_prior_entropy():
    gen, disc, info = _small_gan()
    logits, = info.prior_parameters()
    with torch.no_grad():
        logits.copy_(torch.tensor([3.0, 0.0, 0.0, 0.0]))
    probs = torch.softmax(logits.detach(), 0)
    expected = float(-(probs * probs.log()).sum())
    assert info.entropies()["cat0"] == pytest.approx(expected, rel=1e-5)
    assert expected < math.log(4) - 0.5  # the ceiling moved down from ln 4
    latent, codes = info.sample(16)
    disc(gen(latent))
    info.loss(codes)
    assert info.bounds()["cat0"] <= expected + 1e-6


def test_iic_with_a_prior_is_iic_for_a_uniform_prior_and_rewards_the_prior_marginal():
    probs = torch.softmax(torch.randn(64, 4), 1)
    plain = _paired_information(probs, probs)
    uniform = _paired_information(probs, probs, torch.full((4,), -math.log(4)))
    assert torch.allclose(plain, uniform, atol=1e-6)
    prior = torch.tensor([0.55, 0.25, 0.15, 0.05])
    # confident, consistent categories: the one whose marginal is the prior scores highest, H(prior)
    def onehots(shares):
        counts = (torch.tensor(shares) * 1000).round().long()
        return nn.functional.one_hot(torch.repeat_interleave(torch.arange(4), counts), 4).float()
    matched = _paired_information(onehots(prior.tolist()), onehots(prior.tolist()), prior.log())
    balanced = _paired_information(onehots([0.25] * 4), onehots([0.25] * 4), prior.log())
    assert float(matched) == pytest.approx(float(-(prior * prior.log()).sum()), abs=1e-3)
    assert matched > balanced
    assert _paired_information(onehots([0.25] * 4), onehots([0.25] * 4)) > \
        _paired_information(onehots(prior.tolist()), onehots(prior.tolist()))  # plain IIC prefers balance


def _train(gen, disc, info, opt_d, opt_g, steps):
    """The user's loop: D steps on the detached fakes, then G, both with the MI term."""
    for _ in range(steps):
        latent, codes = info.sample(8)
        fake = gen(latent)
        opt_d.zero_grad()
        (disc(fake.detach()).mean() + info.loss(codes)).backward()
        opt_d.step()
        opt_g.zero_grad()
        (-disc(fake).mean() + info.loss(codes)).backward()
        opt_g.step()


def test_warns_when_no_optimizer_steps_the_logits():
    gen, disc, info = _small_gan()
    opt_d = torch.optim.Adam(disc.parameters())
    opt_g = torch.optim.Adam(gen.parameters())  # the logits left out
    with pytest.warns(UserWarning, match="prior_parameters"):
        _train(gen, disc, info, opt_d, opt_g, steps=3)
    gen, disc, info = _small_gan()
    opt_d = torch.optim.Adam(disc.parameters())
    opt_g = torch.optim.Adam([*gen.parameters(), *info.prior_parameters()])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _train(gen, disc, info, opt_d, opt_g, steps=3)


def test_prior_against_labels_matches_categories_to_labels():
    confusion = [[0, 30, 0], [60, 0, 0], [0, 0, 10]]  # category 0 is label 1, 1 is label 0
    mapping = {0: 1, 1: 0, 2: 2}
    out = prior_against_labels([0.3, 0.6, 0.1], confusion, mapping)
    assert out["label_frequencies"] == pytest.approx([0.3, 0.6, 0.1])
    assert out["prior_tv"] == pytest.approx(0.0)
    assert prior_against_labels([0.5, 0.4, 0.1], confusion, mapping)["prior_tv"] == pytest.approx(0.2)


@pytest.fixture(scope="module")
def learned_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("learned")
    result = runner.invoke(app, ["train", "--out", str(out), "--codes", "cat:10:prior=learned,unif:2", "--limit", "256",
                                 "--iterations", "4", "--batch-size", "32", "--log-every", "2", "--quiet"])
    assert result.exit_code == 0, result.output
    return out


def test_learned_prior_round_trips_through_checkpoint_evaluate_resume_and_exports(learned_run, tmp_path):
    ckpt = load_checkpoint(learned_run / "checkpoint.safetensors")
    logits, = ckpt.info.prior_parameters()
    assert not torch.equal(logits.detach(), torch.zeros(10))  # trained, saved and loaded
    records = [json.loads(line) for line in (learned_run / "metrics.jsonl").read_text().splitlines()]
    ceilings = [r["entropy"]["cat0"] for r in records]  # the bound's ceiling, logged as the prior moves
    assert len(ceilings) == 2 and all(0 < h <= math.log(10) + 1e-6 for h in ceilings)
    assert ceilings[-1] == pytest.approx(float(ckpt.info.codes[0].entropy()), abs=1e-5)
    assert "unif1" not in records[0]["entropy"]
    report = (learned_run / "report.md").read_text()
    assert "cat0 learned prior:" in report and "prior_cat0.png" in report
    assert (learned_run / "prior_cat0.png").stat().st_size > 0

    result = runner.invoke(app, ["evaluate", str(learned_run / "checkpoint.safetensors"), "--json"])
    assert result.exit_code == 0, result.output
    evaluation = json.loads(result.output)
    assert evaluation["priors"]["cat0"] == pytest.approx(ckpt.info.codes[0].probs.tolist(), abs=1e-6)
    assert 0 <= evaluation["codes"]["cat0"]["prior_tv"] <= 1

    result = runner.invoke(app, ["train", "--resume", str(learned_run), "--iterations", "6", "--quiet"])
    assert result.exit_code == 0, result.output
    resumed = load_checkpoint(learned_run / "checkpoint.safetensors")
    assert resumed.step == 6 and not torch.equal(resumed.info.prior_parameters()[0].detach(), logits.detach())

    pytest.importorskip("onnxruntime")
    import onnx

    from torch_infogan.exporters import export_features, export_onnx
    from torch_infogan.exporters.web import page_metadata

    probs = resumed.info.codes[0].probs.tolist()
    report = export_onnx(resumed, tmp_path / "encoder.onnx")
    meta = {p.key: p.value for p in onnx.load(str(report.path)).metadata_props}
    assert json.loads(meta["torch_infogan.priors"])["cat0"] == pytest.approx(probs)
    export_features(resumed, load_data().subset(64), tmp_path / "features.h5", batch_size=32)
    with h5py.File(tmp_path / "features.h5", "r") as h5:
        assert json.loads(h5.attrs["priors"])["cat0"] == pytest.approx(probs)
    cat = page_metadata(resumed, bounds_samples=0)["codes"][0]
    assert cat["prior"] == pytest.approx(probs) and cat["default"] == max(range(10), key=probs.__getitem__)


def test_a_checkpoint_without_the_prior_logits_is_refused(learned_run, tmp_path):
    from safetensors.torch import load_file, save_file
    from safetensors import safe_open

    path = learned_run / "checkpoint.safetensors"
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata()
    tensors = {k: v for k, v in load_file(str(path)).items() if not k.startswith("prior.")}
    save_file(tensors, tmp_path / "broken.safetensors", metadata=metadata)
    with pytest.raises(InfoGANError, match="learned prior"):
        load_checkpoint(tmp_path / "broken.safetensors")
