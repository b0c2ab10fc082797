import copy
import gc
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from torch_infogan import InfoGANError, InfoRegularizer, list_codes, get_code
from torch_infogan.following import trunk_free_features
from torch_infogan.models import DCGAN_TAP, build_dcgan


def _setup(spec="cat:10,unif:2", **kwargs):
    info = InfoRegularizer(spec, noise_dim=16, **kwargs)
    G, D = build_dcgan(info.latent_dim)
    info.attach(D, DCGAN_TAP, example=torch.rand(2, 1, 28, 28))
    return info, G, D


def _grad_norm(params):
    return sum(float(p.grad.abs().sum()) for p in params if p.grad is not None)


def test_default_routing_trains_g_trunk_and_q():
    info, G, D = _setup()
    latent, codes = info.sample(8)
    D(G(latent))
    info.loss(codes).backward()
    assert _grad_norm(G.parameters()) > 0
    assert _grad_norm(D.trunk.parameters()) > 0
    assert _grad_norm(D.info_q.parameters()) > 0
    assert D.head.weight.grad is None  # the real/fake head is not on the MI path


def test_excluded_trunk_gets_no_gradient_but_g_and_q_do():
    info, G, D = _setup(train_trunk=False)
    latent, codes = info.sample(8)
    D(G(latent))
    stats = {k: v.clone() for k, v in D.trunk.state_dict().items()}
    info.loss(codes).backward()
    assert all(p.grad is None for p in D.trunk.parameters())
    assert _grad_norm(G.parameters()) > 0
    assert _grad_norm(D.info_q.parameters()) > 0
    for key, value in D.trunk.state_dict().items():  # the extra trunk forward leaves running stats alone
        torch.testing.assert_close(value, stats[key])


def test_attached_discriminator_can_be_deep_copied():
    info, G, D = _setup()
    latent, codes = info.sample(4)
    D(G(latent))
    info.loss(codes)
    twin = copy.deepcopy(D)
    for (k, a), (_, b) in zip(D.state_dict().items(), twin.state_dict().items()):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("name", list_codes())
def test_every_registered_code_trains_g_through_the_regularizer(name):
    code = get_code(name)
    info = InfoRegularizer([code], noise_dim=8)
    G, D = build_dcgan(info.latent_dim)
    info.attach(D, DCGAN_TAP, example=torch.rand(2, 1, 28, 28))
    latent, codes = info.sample(4)
    assert latent.shape == (4, 8 + code.input_dim)
    D(G(latent))
    loss = info.loss(codes)
    loss.backward()
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    assert _grad_norm(G.parameters()) > 0
    assert list(info.bounds()) == info.keys


def test_loss_refuses_features_of_real_images_and_other_samples():
    info, G, D = _setup()
    latent, codes = info.sample(4)
    fake = G(latent)
    with pytest.raises(InfoGANError, match="needs the discriminator's forward on the images generated"):
        info.loss(codes)  # no forward at all
    D(torch.rand(4, 1, 28, 28))
    with pytest.raises(InfoGANError, match="needs the discriminator's forward on the images generated"):
        info.loss(codes)  # only real images so far
    D(fake)
    D(torch.rand(4, 1, 28, 28))  # a later forward on real images does not replace the generated features
    info.loss(codes)
    latent2, codes2 = info.sample(4)
    with pytest.raises(InfoGANError, match="needs the discriminator's forward"):
        info.loss(codes2)  # a new sample needs its own forward
    with pytest.raises(InfoGANError, match="recent sample"):
        info.loss({key: torch.zeros_like(value) for key, value in codes.items()})  # values of no sample


def test_loss_finds_its_sample_by_the_codes_values():
    info, G, D = _setup()
    latent, codes = info.sample(4)
    D(G(latent))
    expected = info.loss(codes).item()
    latent2, codes2 = info.sample(4)
    D(G(latent2))
    rebuilt = {key: codes[key].clone() for key in reversed(info.keys)}  # another dict, other tensors, same values
    assert info.loss(rebuilt).item() == expected
    assert info.loss(dict(codes2)).item() == info.loss(codes2).item()
    with pytest.raises(InfoGANError, match="whole"):
        info.loss({key: value[:2] for key, value in codes2.items()})  # a slice is not the sample
    with pytest.raises(InfoGANError, match="with the keys cat0"):
        info.loss({"cat0": codes2["cat0"]})
    with pytest.raises(InfoGANError, match="with the keys"):
        info.loss(list(codes2.values()))


def test_loss_uses_the_generated_forward_features():
    info, G, D = _setup()
    D.eval(); G.eval()
    latent, codes = info.sample(6)
    fake = G(latent)
    D(fake)
    loss = info.loss(codes)
    with torch.no_grad():
        features = D.trunk(fake.detach())
        q = D.info_q(features)
    expected = torch.nn.functional.cross_entropy(q[:, :10], codes["cat0"]) - torch.log(torch.tensor(10.0))
    mean = q[:, 10:12]
    expected = expected + (0.5 * (codes["unif1"] - mean).pow(2) + 0.5 * torch.log(torch.tensor(2 * torch.pi))).sum(1).mean() \
        - 2 * torch.log(torch.tensor(2.0))
    torch.testing.assert_close(loss.detach(), expected, rtol=1e-5, atol=1e-5)


def test_bounds_are_entropy_minus_nll():
    info, G, D = _setup()
    latent, codes = info.sample(16)
    D(G(latent))
    loss = info.loss(codes)
    bounds = info.bounds()
    assert list(bounds) == ["cat0", "unif1"]
    assert all(b <= h + 1e-6 for b, h in zip(bounds.values(), info.entropies().values()))
    assert -sum(bounds.values()) == pytest.approx(loss.item(), rel=1e-5)


def test_weights_scale_the_loss():
    info, G, D = _setup("cat:10:weight=2.0")
    latent, codes = info.sample(8)
    D(G(latent))
    loss = info.loss(codes)
    assert loss.item() == pytest.approx(-2.0 * info.bounds()["cat0"], rel=1e-5)


def test_attach_twice_raises_and_remove_restores():
    info = InfoRegularizer("cat:10,unif:2", noise_dim=16)
    G, D = build_dcgan(info.latent_dim)
    images = torch.rand(8, 1, 28, 28)
    before_state = {k: v.clone() for k, v in D.state_dict().items()}
    D.eval()
    before_out = D(images)
    D.train()
    info.attach(D, DCGAN_TAP, example=images[:2])
    assert any(k.startswith("info_q.") for k in D.state_dict())
    q_params = {id(p) for p in D.info_q.parameters()}
    assert q_params <= {id(p) for p in D.parameters()}  # an optimizer over D.parameters() covers Q
    with pytest.raises(InfoGANError, match="already attached"):
        info.attach(D, DCGAN_TAP, example=images[:2])
    with pytest.raises(InfoGANError, match="already has"):
        InfoRegularizer("cat:10").attach(D, DCGAN_TAP, example=images[:2])
    latent, codes = info.sample(4)
    D(G(latent))
    info.loss(codes)
    D.train()
    assert info.remove() is D
    D.load_state_dict(before_state)  # the training forward above moved running stats; parameters untouched
    assert set(D.state_dict()) == set(before_state)
    D.eval()
    torch.testing.assert_close(D(images), before_out)
    assert not hasattr(D, "info_q")
    info.attach(D, DCGAN_TAP, example=images[:2])  # attachable again after remove


def test_attach_alone_does_not_change_the_discriminator():
    info = InfoRegularizer("cat:10", noise_dim=4)
    _, D = build_dcgan(info.latent_dim)
    before = {k: v.clone() for k, v in D.state_dict().items()}
    info.attach(D, DCGAN_TAP, example=torch.rand(4, 1, 28, 28))
    after = {k: v for k, v in D.state_dict().items() if not k.startswith("info_q.")}
    for key in before:
        torch.testing.assert_close(after[key], before[key])
    info.remove()
    assert set(D.state_dict()) == set(before)


def test_bad_attach_arguments():
    info = InfoRegularizer("cat:10", noise_dim=4)
    _, D = build_dcgan(info.latent_dim)
    with pytest.raises(InfoGANError, match="no layer 'nope'"):
        info.attach(D, "nope", example=torch.rand(2, 1, 28, 28))
    with pytest.raises(InfoGANError, match="example"):
        info.attach(D, DCGAN_TAP)
    with pytest.raises(InfoGANError, match="not attached"):
        info.remove()


def test_attach_by_module_object():
    info = InfoRegularizer("cat:10", noise_dim=4)
    _, D = build_dcgan(info.latent_dim)
    info.attach(D, D.trunk.features, example=torch.rand(2, 1, 28, 28))
    assert info.layer_name == DCGAN_TAP


def test_tapping_before_an_inplace_activation_sees_the_pre_activation_values():
    # bn_fc is followed by LeakyReLU(inplace=True), which overwrites bn_fc's output tensor.
    info = InfoRegularizer("cat:10", noise_dim=4)
    G, D = build_dcgan(info.latent_dim)
    info.attach(D, "trunk.bn_fc", example=torch.rand(2, 1, 28, 28))
    D.eval(); G.eval()
    images = torch.rand(5, 1, 28, 28)
    params, features = info.q_params(images, return_features=True)
    with torch.no_grad():
        h = images
        for name, layer in D.trunk.named_children():
            h = layer(h.clone())
            if name == "bn_fc":
                break
    torch.testing.assert_close(features, h)
    assert (features < 0).any()  # the leaky activation would have scaled these
    latent, codes = info.sample(3)
    D(G(latent))
    info.loss(codes).backward()  # no in-place autograd error


def test_batch_size_one_keeps_the_batch_axis():
    info, G, D = _setup()
    out = info.infer(torch.rand(1, 1, 28, 28))
    assert out["cat0"]["probs"].shape == (1, 10)
    assert out["unif1"]["mean"].shape == (1, 2)
    G.eval(); D.eval()
    latent, codes = info.sample(1)
    D(G(latent))
    assert info.loss(codes).shape == ()


def test_infer_leaves_training_mode_and_probabilities_sum_to_one():
    info, G, D = _setup()
    D.train()
    out = info.infer(torch.rand(7, 1, 28, 28))
    assert D.training
    torch.testing.assert_close(out["cat0"]["probs"].sum(1), torch.ones(7))
    assert (out["unif1"]["std"] == 1.0).all()


def test_mi_term_is_float32_under_bf16_autocast():
    info, G, D = _setup()
    latent, codes = info.sample(4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        D(G(latent))
        loss = info.loss(codes)
    assert loss.dtype == torch.float32
    loss.backward()
    assert _grad_norm(G.parameters()) > 0


def test_concatenated_batch_is_not_mistaken_for_the_generated_one():
    info, G, D = _setup()
    latent, codes = info.sample(4)
    D(torch.cat([torch.rand(4, 1, 28, 28), G(latent)]))
    with pytest.raises(InfoGANError):
        info.loss(codes)


def test_latent_layout_and_seeded_sampling():
    info = InfoRegularizer("cat:10,unif:2", noise_dim=62)
    latent, codes = info.sample(5, generator=torch.Generator().manual_seed(1))
    assert latent.shape == (5, 74) and info.latent_dim == 74
    assert torch.equal(latent[:, 62:72].argmax(1), codes["cat0"])
    assert torch.equal(latent[:, 72:], codes["unif1"])
    assert latent[:, :62].abs().max() <= 1
    again, _ = info.sample(5, generator=torch.Generator().manual_seed(1))
    assert torch.equal(latent, again)


def test_consistency_is_the_cross_entropy_from_q_on_the_images_to_q_on_their_copies():
    info, G, D = _setup()
    D.eval()  # fixed statistics: Q's outputs can be recomputed outside
    real, turned = torch.rand(8, 1, 28, 28), torch.rand(8, 1, 28, 28)
    value = info.consistency(real, turned)
    with torch.no_grad():
        target = torch.softmax(D.info_q(D.trunk(real))[:, :10], dim=1)
        logits = D.info_q(D.trunk(turned))[:, :10]
    expected = -(target * torch.log_softmax(logits, dim=1)).sum(1).mean()
    torch.testing.assert_close(value.detach(), expected, rtol=1e-5, atol=1e-5)
    # the same images on both sides: the mean entropy of Q's posterior, its smallest value for that target
    same = info.consistency(real, real).detach()
    assert float(same) == pytest.approx(float(-(target * target.log()).sum(1).mean()), rel=1e-5)
    assert float(same) < float(value.detach())


def test_consistency_trains_q_and_the_trunk_through_the_copies_only_and_leaves_loss_alone():
    info, G, D = _setup()
    latent, codes = info.sample(8)
    fake = G(latent)
    D(fake)
    real = torch.rand(8, 1, 28, 28)
    turned = real.flip(3).requires_grad_()
    info.consistency(real.requires_grad_(), turned).backward()
    assert real.grad is None  # the target carries no gradient
    assert turned.grad is not None and turned.grad.abs().sum() > 0
    assert _grad_norm(D.trunk.parameters()) > 0 and _grad_norm(D.info_q.parameters()) > 0
    D.zero_grad(); G.zero_grad()
    info.loss(codes).backward()  # the real-image forwards were untapped: loss() still uses the generated batch
    assert _grad_norm(G.parameters()) > 0


def test_consistency_needs_a_categorical_code():
    info, _, _ = _setup("unif:2")
    with pytest.raises(InfoGANError, match="needs a categorical code"):
        info.consistency(torch.rand(4, 1, 28, 28), torch.rand(4, 1, 28, 28))


@pytest.mark.parametrize("option", ["consistency", "iic"])
def test_the_trainers_real_image_terms_change_the_discriminators_step(option):
    from torch_infogan.config import preset_config
    from torch_infogan.trainer import Trainer

    def discriminator_after_one_step(weight):
        trainer = Trainer(preset_config("mnist", limit=128, batch_size=16, device="cpu", precision="fp32",
                                        **{"consistency": 0.0, "iic": 0.0, option: weight}))
        trainer.step()
        return torch.cat([p.detach().flatten() for p in trainer.discriminator.parameters()])

    off, on, again = (discriminator_after_one_step(w) for w in (0.0, 1.0, 1.0))
    assert torch.isfinite(on).all() and not torch.equal(off, on)
    assert torch.equal(on, again)  # seeded: the turns and scales are drawn from the run's own generator


def test_iic_is_minus_the_mutual_information_of_the_two_views_categories():
    from torch_infogan import split_params

    info, G, D = _setup("cat:10,unif:2,cat:3")
    D.eval()  # fixed statistics: Q's outputs can be recomputed outside
    with torch.no_grad():
        D.info_q.net[-1].weight.mul_(200)  # confident posteriors: an information well away from zero
    real = torch.rand(8, 1, 28, 28)
    turned = (real + 0.3 * torch.rand(8, 1, 28, 28)).clamp(0, 1)
    value = info.iic(real, turned).detach()
    expected = 0.0
    with torch.no_grad():
        a, b = (split_params(info.codes, D.info_q(D.trunk(x))) for x in (real, turned))
    for part in (0, 2):  # the two categorical codes
        p, q = torch.softmax(a[part], 1), torch.softmax(b[part], 1)
        k = p.shape[1]
        joint = torch.zeros(k, k)
        for i in range(8):  # the batch mean of the outer products, made symmetric
            joint += torch.outer(p[i], q[i]) / 8
        joint = (joint + joint.t()) / 2
        rows = joint.sum(1)
        expected -= float((joint * (joint / rows[:, None] / rows[None, :]).log()).sum())
    assert float(value) == pytest.approx(expected, rel=1e-4)
    assert -(math.log(10) + math.log(3)) <= float(value) < -0.01


def test_paired_information_is_ln_k_for_confident_balanced_consistent_categories_and_zero_for_one():
    from torch_infogan.losses import paired_information as _paired_information

    balanced = torch.eye(4).repeat(2, 1)  # each of 4 categories twice, named with certainty
    assert float(_paired_information(balanced, balanced)) == pytest.approx(math.log(4), abs=1e-5)
    # the copy named by the next category each time: the symmetric joint keeps only half of the information
    assert float(_paired_information(balanced, balanced.roll(1, dims=1))) == pytest.approx(math.log(2), abs=1e-5)
    one = torch.zeros(8, 4)
    one[:, 0] = 1  # every image in one category: no information
    assert float(_paired_information(one, one)) == pytest.approx(0.0, abs=1e-5)
    unsure = torch.full((8, 4), 0.25)
    assert float(_paired_information(balanced, unsure)) == pytest.approx(0.0, abs=1e-5)


def test_iic_trains_q_and_the_trunk_through_both_views_and_leaves_loss_alone():
    info, G, D = _setup()
    latent, codes = info.sample(8)
    D(G(latent))
    real = torch.rand(8, 1, 28, 28, requires_grad=True)
    turned = real.detach().flip(3).requires_grad_()
    info.iic(real, turned).backward()
    assert real.grad.abs().sum() > 0 and turned.grad.abs().sum() > 0
    assert _grad_norm(D.trunk.parameters()) > 0 and _grad_norm(D.info_q.parameters()) > 0
    D.zero_grad(); G.zero_grad()
    info.loss(codes).backward()  # the real-image forwards were untapped: loss() still uses the generated batch
    assert _grad_norm(G.parameters()) > 0


def test_the_trainers_pair_shear_slants_the_copies_the_iic_term_compares(monkeypatch):
    from torch_infogan import objective
    from torch_infogan import trainer as trainer_module
    from torch_infogan.config import preset_config

    shears = []
    affine = objective.random_affine

    def recording(*args, **kwargs):
        shears.append(kwargs.get("max_shear", 0.0))
        return affine(*args, **kwargs)

    monkeypatch.setattr(objective, "random_affine", recording)

    def discriminator_after_one_step(shear):
        trainer = trainer_module.Trainer(preset_config("mnist", limit=128, batch_size=16, device="cpu",
                                                       precision="fp32", pair_shear=shear,
                                                       invariance=0.0))
        trainer.step()
        return torch.cat([p.detach().flatten() for p in trainer.discriminator.parameters()])

    assert preset_config("mnist").pair_shear == 0.4  # the default slants them
    upright, slanted = discriminator_after_one_step(0.0), discriminator_after_one_step(0.4)
    assert shears == [0.0, 0.4] and not torch.equal(upright, slanted)


def test_iic_needs_a_categorical_code():
    info, _, _ = _setup("unif:2")
    with pytest.raises(InfoGANError, match="needs a categorical code"):
        info.iic(torch.rand(4, 1, 28, 28), torch.rand(4, 1, 28, 28))


@pytest.mark.parametrize("option", ["consistency", "iic", "invariance"])
def test_the_configuration_refuses_a_category_term_without_a_categorical_code(option):
    from torch_infogan.config import ConfigError, preset_config

    with pytest.raises(ConfigError, match=f"{option} needs a categorical code"):
        preset_config("mnist", codes="unif:2", limit=128, batch_size=16, device="cpu",
                      **{"iic": 0.0, "invariance": 0.0, option: 1.0})


def test_category_loss_is_the_cross_entropy_of_the_categories_alone_and_reaches_g_through_the_transformation():
    info, G, D = _setup("cat:10,unif:2")
    latent, codes = info.sample(8)
    fake = G(latent)
    moved = fake.flip(3)  # any transformation after G
    value = info.category_loss(moved, codes)
    with info.untapped():
        params = info.q(info.features(moved)).float()
    expected = F.cross_entropy(params[:, :10], codes["cat0"])  # a categorical code is drawn as indices
    assert float(value.detach()) == pytest.approx(float(expected.detach()), rel=1e-5)
    value.backward(inputs=list(G.parameters()), retain_graph=True)
    assert _grad_norm(G.parameters()) > 0
    assert _grad_norm(D.parameters()) == 0  # only what backward was asked for
    D(fake)
    G.zero_grad()
    info.loss(codes).backward()  # the transformed forward was untapped: loss() takes the one on the generated batch
    assert _grad_norm(D.info_q.parameters()) > 0 and _grad_norm(G.parameters()) > 0


def test_category_loss_needs_a_categorical_code():
    info, G, _ = _setup("unif:2")
    latent, codes = info.sample(4)
    with pytest.raises(InfoGANError, match="needs a categorical code"):
        info.category_loss(G(latent), codes)


@pytest.mark.parametrize("updates", ["alternating", "simultaneous"])
def test_the_trainers_invariance_term_moves_both_players(updates):
    from torch_infogan.config import preset_config
    from torch_infogan.trainer import Trainer

    def after_one_step(weight):
        trainer = Trainer(preset_config("mnist", limit=128, batch_size=16, device="cpu", precision="fp32",
                                        updates=updates, invariance=weight))
        trainer.step()
        flat = lambda module: torch.cat([p.detach().flatten() for p in module.parameters()])
        return flat(trainer.generator), flat(trainer.discriminator)

    (g_off, d_off), (g_on, d_on) = after_one_step(0.0), after_one_step(1.0)
    assert not torch.equal(d_off, d_on) and not torch.equal(g_off, g_on)


def test_category_loss_with_a_frozen_trunk_reaches_q_and_the_images_alone():
    info, G, D = _setup("cat:10,unif:2", train_trunk=False)
    latent, codes = info.sample(8)
    images = G(latent).detach().requires_grad_()
    info.category_loss(images, codes).backward()
    assert images.grad.abs().sum() > 0 and _grad_norm(D.info_q.parameters()) > 0
    assert _grad_norm(D.trunk.parameters()) == 0


@pytest.mark.parametrize("train_trunk", [True, False])
def test_features_stop_at_the_tap_and_equal_the_full_forwards(train_trunk):
    info, G, D = _setup(train_trunk=train_trunk)
    images = torch.rand(8, 1, 28, 28)
    full = []
    handle = D.get_submodule(DCGAN_TAP).register_forward_hook(lambda m, i, o: full.append(o.flatten(1).clone()))
    heads = []
    head_handle = D.head.register_forward_hook(lambda m, i, o: heads.append(o))
    D.eval()
    with torch.no_grad():
        D(images)
        assert len(heads) == 1  # the full forward runs the output head
        features = info.features(images)
        trunk_free = trunk_free_features(info._tracker, D, (images,), {})
    handle.remove()
    head_handle.remove()
    assert len(heads) == 1  # the features-only paths did not run it
    torch.testing.assert_close(features, full[0])
    torch.testing.assert_close(trunk_free, full[0])
    assert info._tracker.depth == 0 and info._tracker.capture is None  # the bookkeeping is left as it was
    latent, codes = info.sample(4)  # and a training forward afterwards is tapped as before
    D.train()
    D(G(latent))
    assert torch.isfinite(info.loss(codes))


def test_an_attached_bare_sequential_saves_loads_and_copies_whole(tmp_path):
    torch.manual_seed(0)
    D = nn.Sequential(nn.Flatten(), nn.Linear(784, 32), nn.LeakyReLU(0.2), nn.Linear(32, 1))
    images = torch.rand(6, 1, 28, 28)
    info = InfoRegularizer("cat:10", noise_dim=4).attach(D, layer="2", example=images[:2])
    assert type(D).__name__ == "SequentialWithInfoHeads" and isinstance(D, nn.Sequential)
    torch.save(D, tmp_path / "d.pt")
    loaded = torch.load(tmp_path / "d.pt", weights_only=False)
    copied = copy.deepcopy(D)
    for other in (loaded, copied):
        assert type(other) is type(D) and len(other) == 4
        torch.testing.assert_close(other(images), D(images))
        assert other.state_dict().keys() == D.state_dict().keys()
        assert other.info_q is not D.info_q
    fresh = InfoRegularizer("cat:10", noise_dim=4).attach(nn.Sequential(nn.Flatten(), nn.Linear(784, 8)), layer="1",
                                                           in_features=8)
    assert type(fresh.discriminator) is type(D)  # one class per Sequential class
    info.remove()
    assert type(D) is nn.Sequential


@pytest.mark.parametrize("augmented", [False, True], ids=["generated", "augmented"])
def test_after_the_first_loss_the_plugin_follows_g_with_a_hook_on_g_alone(augmented):
    from torch.nn.modules import module as torch_module

    from torch_infogan import following

    gc.collect()  # regularizers that earlier tests dropped stop following G when collected
    before = len(following._THROUGH_PROCESS)
    info, G, D = _setup()
    assert len(following._THROUGH_PROCESS) == before + 1  # until G is known
    process_hooks = [h for h in torch_module._global_forward_hooks.values() if h is following._watch_any_module]
    assert len(process_hooks) == 1  # one module hook for the process, however many regularizers
    for _ in range(3):  # the first step finds G; the next ones run with the hook on G
        latent, codes = info.sample(4)
        fake = G(latent)
        D(fake.flip(3) if augmented else fake.detach())
        loss = info.loss(codes)
        assert torch.isfinite(loss)
        loss.backward()
        assert len(following._THROUGH_PROCESS) == before  # G found: the process hook no longer follows it
        assert (following._module_handle is None) == (before == 0)  # and no hook at all once none follows
        assert len(G._forward_hooks) == 1
    with torch.no_grad():
        again = G(latent)  # G run again on the step's latent is still followed, and refused
    with pytest.raises(InfoGANError, match="two different generated batches" if not augmented else "ran on the gen"):
        D(again)
    info.remove()
    assert not G._forward_hooks and len(following._THROUGH_PROCESS) == before


def test_label_loss_trains_q_and_the_trunk_not_g_and_names_the_categories():
    info, G, D = _setup()
    images, labels = torch.rand(8, 1, 28, 28), torch.arange(8) % 10
    latent, codes = info.sample(8)
    fake = G(latent)
    D(fake.detach())
    loss = info.label_loss(images, labels)
    assert loss.dtype == torch.float32 and loss.item() == pytest.approx(math.log(10), abs=0.5)
    loss.backward()
    assert _grad_norm(D.info_q.parameters()) > 0 and _grad_norm(D.trunk.parameters()) > 0
    assert _grad_norm(G.parameters()) == 0
    assert torch.isfinite(info.loss(codes))  # its forward is not the one loss() uses
    opt = torch.optim.Adam(D.parameters(), lr=1e-3)
    for _ in range(30):  # it teaches Q to name these images' classes
        opt.zero_grad()
        info.label_loss(images, labels, code="cat0").backward()
        opt.step()
    D.eval()
    assert torch.equal(info.infer(images)["cat0"]["probs"].argmax(1), labels)


def test_label_loss_refuses_what_it_cannot_use():
    info, G, D = _setup()
    images = torch.rand(4, 1, 28, 28)
    with pytest.raises(InfoGANError, match="categorical code"):
        info.label_loss(images, torch.zeros(4, dtype=torch.long), code="unif1")
    with pytest.raises(InfoGANError, match="integer labels"):
        info.label_loss(images, torch.zeros(3, dtype=torch.long))
    with pytest.raises(InfoGANError, match="integer labels"):
        info.label_loss(images, torch.zeros(4))
    with pytest.raises(InfoGANError, match=r"\[0, 10\)"):
        info.label_loss(images, torch.full((4,), 10))
    info_u, _, _ = _setup("unif:2")
    with pytest.raises(InfoGANError, match="needs a categorical code"):
        info_u.label_loss(images, torch.zeros(4, dtype=torch.long))


def test_draw_is_pure_and_draw_tracked_alias_sample_opens_the_record_loss_reads():
    info, G, D = _setup()
    assert InfoRegularizer.sample is InfoRegularizer.draw_tracked
    latent, codes = info.draw(4)
    D(G(latent))
    with pytest.raises(InfoGANError):
        info.loss(codes)  # draw() opened no record
    latent, codes = info.draw_tracked(4)
    D(G(latent))
    assert torch.isfinite(info.loss(codes))


def test_the_overclustering_output_adds_its_own_iic_and_trains_only_through_iic():
    from torch_infogan.losses import paired_information

    plain, _, D_plain = _setup("cat:10,unif:2")
    torch.manual_seed(0)
    info, G, D = _setup("cat:10,unif:2", overcluster=30)
    D.eval()  # fixed statistics: Q's outputs can be recomputed outside
    assert D.info_q.over.out_features == 30 and D_plain.info_q.over is None
    with torch.no_grad():  # confident posteriors: informations well away from zero
        D.info_q.net[-1].weight.mul_(200)
        D.info_q.over.weight.mul_(200)
    real = torch.rand(8, 1, 28, 28)
    turned = (real + 0.3 * torch.rand(8, 1, 28, 28)).clamp(0, 1)
    value = info.iic(real, turned)
    with torch.no_grad():
        (a, over_a), (b, over_b) = (D.info_q(D.trunk(x), overcluster=True) for x in (real, turned))
        main = paired_information(a[:, :10].softmax(1), b[:, :10].softmax(1))
        over = paired_information(over_a.softmax(1), over_b.softmax(1))
    assert float(over) > 1e-4  # the added part is not zero: the check below could fail
    assert float(value.detach()) == pytest.approx(-float(main) - float(over), rel=1e-4)
    value.backward()
    assert D.info_q.over.weight.grad.abs().sum() > 0
    D.zero_grad()
    latent, codes = info.sample(8)
    D(G(latent))
    info.loss(codes).backward()  # the MI term does not read the overclustering output
    assert D.info_q.over.weight.grad is None or float(D.info_q.over.weight.grad.abs().sum()) == 0
    with pytest.raises(InfoGANError, match="overcluster must be >= 0"):
        InfoRegularizer("cat:10", overcluster=-1)


def test_an_overclustering_run_round_trips_through_its_checkpoint(tmp_path):
    from torch_infogan.checkpoint import load_checkpoint
    from torch_infogan.config import preset_config
    from torch_infogan.trainer import Trainer

    trainer = Trainer(preset_config("mnist", limit=64, batch_size=16, device="cpu", precision="fp32",
                                    iterations=2, overcluster=20))
    trainer.step()
    trainer.save(tmp_path / "checkpoint.safetensors")
    loaded = load_checkpoint(tmp_path / "checkpoint.safetensors")
    assert loaded.info.overcluster == 20
    for key, value in trainer.discriminator.state_dict().items():
        assert torch.equal(loaded.discriminator.state_dict()[key], value), key
