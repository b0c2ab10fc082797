"""The contrastive regularizer (InfoGAN-CR): pairs, loss, attachment, checkpoints and a short training run."""

import pytest
import torch
from torch import nn

from torch_infogan import ContrastiveRegularizer, InfoGANError, InfoRegularizer, load_checkpoint
from torch_infogan.config import preset_config
from torch_infogan.data import ImageData
from torch_infogan.trainer import Trainer


def _attached(codes="unif,unif,unif", noise_dim=4, image_shape=(1, 16, 16), **kwargs):
    disc = nn.Sequential(nn.Conv2d(1, 8, 4, 2, 1), nn.LeakyReLU(0.2), nn.Flatten(), nn.Linear(8 * 8 * 8, 16),
                         nn.LeakyReLU(0.2), nn.Linear(16, 1))
    info = InfoRegularizer(codes, noise_dim=noise_dim).attach(disc, "4", example=torch.rand(2, *image_shape))
    return disc, info, ContrastiveRegularizer(info, **kwargs).attach(disc, image_shape)


def test_pairs_share_the_noise_and_exactly_the_chosen_code():
    _, info, cr = _attached()
    a, b, shared = cr.pairs(256, generator=torch.Generator().manual_seed(0))
    assert a.shape == b.shape == (256, info.latent_dim)
    assert torch.equal(a[:, :4], b[:, :4])  # the noise
    same = (a[:, 4:] == b[:, 4:])
    assert torch.equal(same.float().argmax(1), shared)
    assert same.sum(1).eq(1).all()  # only the shared code is equal
    assert set(shared.tolist()) == {0, 1, 2}


def test_gap_keeps_the_other_codes_apart_inside_their_range():
    _, _, cr = _attached(gap=1.5)
    a, b, shared = cr.pairs(512, generator=torch.Generator().manual_seed(1))
    codes_a, codes_b = a[:, 4:], b[:, 4:]
    other = torch.ones_like(codes_a, dtype=torch.bool)
    other[torch.arange(512), shared] = False
    assert (codes_a - codes_b).abs()[other].min() >= 1.5 - 1e-6
    assert codes_a.abs().max() <= 1 and codes_b.abs().max() <= 1


def test_loss_trains_the_classifier_and_the_generator():
    disc, info, cr = _attached(weight=2.0)
    gen = nn.Sequential(nn.Linear(info.latent_dim, 256), nn.Sigmoid(), nn.Unflatten(1, (1, 16, 16)))
    a, b, shared = cr.pairs(8)
    images_a, images_b = gen(a), gen(b)
    cr.classifier.eval()  # spectral norm's power iteration moves the weights at every training-mode forward
    loss = cr.loss(images_a, images_b, shared)
    assert loss.dim() == 0 and loss.dtype == torch.float32
    plain = torch.nn.functional.cross_entropy(cr.logits(images_a, images_b), shared)
    assert torch.allclose(loss, 2.0 * plain)
    loss.backward()
    assert gen[0].weight.grad.abs().sum() > 0
    assert all(p.grad is not None for p in cr.classifier.parameters())
    # The classifier is part of D: D's optimizer and state_dict cover it, D's forward ignores it.
    assert any(k.startswith("info_cr.") for k in disc.state_dict())
    assert {id(p) for p in cr.classifier.parameters()} <= {id(p) for p in disc.parameters()}
    assert disc(torch.rand(3, 1, 16, 16)).shape == (3, 1)


def test_classifier_learns_which_code_a_pair_shares():
    """A fixed generator that paints each code into its own band: the classifier must find the equal band."""
    _, info, cr = _attached(codes="unif,unif,unif,unif", noise_dim=0)

    def paint(latent):
        bands = latent.repeat_interleave(4, dim=1)  # 4 codes x 4 rows
        return ((bands[:, :, None] + 1) / 2).expand(-1, 16, 16).unsqueeze(1)

    opt = torch.optim.Adam(cr.classifier.parameters(), lr=2e-3)
    gen = torch.Generator().manual_seed(0)
    for _ in range(150):
        a, b, shared = cr.pairs(64, generator=gen)
        opt.zero_grad()
        cr.loss(paint(a), paint(b), shared).backward()
        opt.step()
    a, b, shared = cr.pairs(512, generator=gen)
    assert cr.accuracy(paint(a), paint(b), shared) > 0.8  # chance is 0.25


def test_attachment_is_refused_twice_and_undone_by_remove():
    disc, info, cr = _attached()
    with pytest.raises(InfoGANError, match="already attached"):
        cr.attach(disc, (1, 16, 16))
    with pytest.raises(InfoGANError, match="already has an attribute"):
        ContrastiveRegularizer(info).attach(disc, (1, 16, 16))
    assert cr.remove() is disc
    assert not hasattr(disc, "info_cr") and len(disc) == 6
    with pytest.raises(InfoGANError, match="not attached"):
        cr.loss(torch.rand(2, 1, 16, 16), torch.rand(2, 1, 16, 16), torch.zeros(2, dtype=torch.long))


@pytest.mark.parametrize("kwargs, message", [
    (dict(weight=-1), "weight"), (dict(start=-1), "start"), (dict(gap=-0.5), "gap"), (dict(gap=2.0), "range"),
])
def test_bad_options_are_refused(kwargs, message):
    info = InfoRegularizer("unif,unif", noise_dim=2)
    with pytest.raises(InfoGANError, match=message):
        ContrastiveRegularizer(info, **kwargs)


def test_one_code_is_refused():
    with pytest.raises(InfoGANError, match="at least two codes"):
        ContrastiveRegularizer(InfoRegularizer("unif", noise_dim=2))


def test_trainer_runs_the_term_saves_it_and_resumes(tmp_path):
    images = (torch.rand(256, 1, 64, 64) > 0.9).to(torch.uint8) * 255
    data = ImageData(images, None, "random")
    config = preset_config("shapes-cr", data="random", iterations=4, contrastive_start=2, log_every=2,
                           checkpoint_every=4, precision="fp32")
    trainer = Trainer(config, data)
    before = trainer.contrastive.classifier.net.out.weight.detach().clone()
    fit = trainer.fit(tmp_path)
    assert [r["step"] for r in fit.records] == [2, 4]
    assert all(0 < r["loss_cr"] < 5 for r in fit.records)
    assert not torch.equal(before, trainer.contrastive.classifier.net.out.weight)  # D's optimizer trains it
    ckpt = load_checkpoint(tmp_path / "checkpoint.safetensors")
    assert ckpt.contrastive is not None and ckpt.contrastive.config()["start"] == 2
    assert torch.equal(ckpt.contrastive.classifier.net.out.weight, trainer.contrastive.classifier.net.out.weight)
    resumed = Trainer(preset_config("shapes-cr", data="random", iterations=6, contrastive_start=2,
                                    precision="fp32"), data)
    resumed.resume(tmp_path / "checkpoint.safetensors")
    assert resumed.step_index == 4
    assert all(torch.isfinite(v) for v in resumed.step().values())


@pytest.mark.parametrize("updates", ["alternating", "simultaneous"])
def test_trainer_routes_the_term_to_the_classifier_always_and_to_g_from_start(updates):
    images = (torch.rand(128, 1, 64, 64) > 0.9).to(torch.uint8) * 255
    config = preset_config("shapes-cr", data="random", batch_size=16, contrastive_start=1, updates=updates,
                           precision="fp32")
    trainer = Trainer(config, ImageData(images, None, "random"))
    cr = trainer.contrastive
    calls = []
    original = cr.cross_entropy  # both players' terms go through it

    def recording(a, b, shared):
        calls.append(a.requires_grad)
        return original(a, b, shared)

    cr.cross_entropy = recording
    trainer.step()  # step 0 < start: the classifier learns on detached pairs, G does not see the term
    assert calls == [False]
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in cr.classifier.parameters())
    calls.clear()
    trainer.step()  # from start on: G's loss gets the term on pairs it can be differentiated through
    assert calls == [False, True]
    # The term never reaches D's trunk or Q: their gradients come from the GAN and MI terms alone.
    trainer.opt_d.zero_grad()
    trainer.opt_g.zero_grad()
    a, b, shared = cr.pairs(16)
    pair_a, pair_b = trainer.generator(a), trainer.generator(b)
    original(pair_a.detach(), pair_b.detach(), shared).backward()
    assert all(p.grad is None for name, p in trainer.discriminator.named_parameters() if not name.startswith("info_cr."))
    assert all(p.grad is None for p in trainer.generator.parameters())


def test_resuming_with_another_contrastive_setting_is_a_one_line_error(tmp_path):
    images = (torch.rand(128, 1, 64, 64) > 0.9).to(torch.uint8) * 255
    data = ImageData(images, None, "random")
    trainer = Trainer(preset_config("shapes", data="random", iterations=1, precision="fp32"), data)
    trainer.fit(tmp_path)
    other = Trainer(preset_config("shapes-cr", data="random", iterations=2, precision="fp32"), data)
    with pytest.raises(InfoGANError, match="contrastive differs .* trained without the contrastive"):
        other.resume(tmp_path / "checkpoint.safetensors")
