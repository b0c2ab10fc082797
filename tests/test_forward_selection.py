"""Which discriminator forward ``loss(codes)`` uses, on the GAN code people write."""

import gc

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from torch_infogan import InfoGANError, InfoRegularizer


class Generator(nn.Module):
    def __init__(self, latent_dim):
        super().__init__()
        self.fc = nn.Linear(latent_dim, 64)
        self.out = nn.Linear(64, 28 * 28)

    def forward(self, z):
        return torch.sigmoid(self.out(F.relu(self.fc(z)))).view(-1, 1, 28, 28)


class Critic(nn.Module):
    """No batch norm (WGAN-GP style): a forward's features do not depend on the rest of the batch."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 4, 2, 1)
        self.hidden = nn.Linear(8 * 14 * 14, 32)
        self.act = nn.LeakyReLU(0.2, inplace=True)
        self.out = nn.Linear(32, 1)

    def forward(self, x):
        h = F.leaky_relu(self.conv(x), 0.2).flatten(1)
        return self.out(self.act(self.hidden(h)))


def _setup(seed=0, **kwargs):
    torch.manual_seed(seed)
    info = InfoRegularizer("cat:10,unif:2", noise_dim=8, **kwargs)
    D = Critic()
    info.attach(D, "hidden", example=torch.rand(2, 1, 28, 28))
    G = Generator(info.latent_dim)
    return info, G, D


def _penalty(D, real, fake, alpha):
    interpolates = (alpha * real + (1 - alpha) * fake).requires_grad_(True)
    out = D(interpolates)
    grad, = torch.autograd.grad(out.sum(), interpolates, create_graph=True)
    return ((grad.flatten(1).norm(dim=1) - 1) ** 2).mean()


def _grad_norm(params):
    return sum(float(p.grad.abs().sum()) for p in params if p.grad is not None)


def _wgan_gp_step(order):
    info, G, D = _setup()
    real = torch.rand(6, 1, 28, 28)
    alpha = torch.rand(6, 1, 1, 1)
    latent, codes = info.sample(6, generator=torch.Generator().manual_seed(1))
    fake = G(latent)
    D(real), D(fake)
    if order == "loss first":
        mi = info.loss(codes)
        _penalty(D, real, fake, alpha)
    else:
        _penalty(D, real, fake, alpha)
        mi = info.loss(codes)
    return mi.item(), info, G, D, real, fake, alpha, codes


def test_wgan_gp_penalty_forward_does_not_change_the_loss_in_either_order():
    first = _wgan_gp_step("loss first")
    after = _wgan_gp_step("penalty first")
    assert first[0] == after[0]
    # The interpolates' MI term is a different number: that is the value a careless tap would give.
    _, info, G, D, real, fake, alpha, codes = after
    latent, codes2 = info.sample(6, generator=torch.Generator().manual_seed(1))
    fake2 = G(latent)
    D((alpha * real + (1 - alpha) * fake2.detach()))   # unrelated to the latent: ignored
    D(alpha * real + (1 - alpha) * fake2)              # the only forward computed from the latent
    interpolates_value = info.loss(codes2).item()
    assert interpolates_value != first[0]


def test_detached_d_step_trains_trunk_and_q_and_the_g_step_trains_g():
    info, G, D = _setup()
    latent, codes = info.sample(5)
    fake = G(latent)
    errD = D(torch.rand(5, 1, 28, 28)).mean() - D(fake.detach()).mean() + info.loss(codes)
    errD.backward()
    assert _grad_norm(D.hidden.parameters()) > 0 and _grad_norm(D.info_q.parameters()) > 0
    assert _grad_norm(G.parameters()) == 0  # the D step never reaches G
    D.zero_grad()
    errG = -D(fake).mean() + info.loss(codes)
    errG.backward()
    assert _grad_norm(G.parameters()) > 0


def test_detached_and_attached_forwards_give_the_same_value():
    info, G, D = _setup()
    latent, codes = info.sample(5)
    fake = G(latent)
    D(fake.detach())
    detached = info.loss(codes).item()
    D(fake)
    attached = info.loss(codes)
    assert attached.item() == pytest.approx(detached, abs=1e-6)
    assert attached.requires_grad


def test_generator_output_detached_at_once_is_still_recognised():
    info, G, D = _setup()
    latent, codes = info.sample(4)
    fake = G(latent).detach()      # G's output object is gone; only the detached twin remains
    D(fake)
    assert torch.isfinite(info.loss(codes))


def test_sample_drawn_at_the_top_of_the_step_and_g_under_no_grad():
    info, G, D = _setup()
    latent, codes = info.sample(4)
    D(torch.rand(4, 1, 28, 28))    # the real half of the D step runs before G
    with torch.no_grad():
        fake = G(latent)
    D(fake)
    assert torch.isfinite(info.loss(codes))


def _augment(x, shift):
    return torch.roll(x, shifts=shift, dims=3) * 1.0


def test_a_single_augmented_copy_is_used():
    info, G, D = _setup()
    latent, codes = info.sample(4)
    fake = G(latent)
    D(_augment(fake, 1))
    value = info.loss(codes)
    value.backward()
    assert _grad_norm(G.parameters()) > 0


def test_two_augmented_copies_raise_in_both_orders_unless_one_is_untapped():
    info, G, D = _setup()
    latent, codes = info.sample(4)
    fake = G(latent)
    D(_augment(fake, 1)), D(_augment(fake, 2))
    with pytest.raises(InfoGANError, match="cannot tell") as error:
        info.loss(codes)
    assert "\n" not in str(error.value)

    info, G, D = _setup()
    latent, codes = info.sample(4)
    fake = G(latent)
    D(_augment(fake, 1))
    single = info.loss(codes).item()
    with pytest.raises(InfoGANError, match="untapped"):
        D(_augment(fake, 2))
    with info.untapped():
        D(_augment(fake, 2))
    assert info.loss(codes).item() == single


def test_penalty_on_the_augmented_copy_is_a_descendant_and_ignored():
    info, G, D = _setup()
    real = torch.rand(4, 1, 28, 28)
    latent, codes = info.sample(4)
    fake_aug = _augment(G(latent), 1)
    D(fake_aug)
    expected = info.loss(codes).item()
    _penalty(D, _augment(real, 1), fake_aug, torch.rand(4, 1, 1, 1))
    assert info.loss(codes).item() == expected


def test_a_new_augmented_copy_after_backward_starts_a_new_update():
    # DiffAugment's D step and G step augment the same generated batch independently.
    info, G, D = _setup()
    opt = torch.optim.SGD(D.parameters(), lr=0.1)
    latent, codes = info.sample(4)
    fake = G(latent)
    (D(_augment(fake, 1)).mean() + info.loss(codes)).backward(inputs=list(D.parameters()))
    opt.step()
    D(_augment(fake, 2))
    info.loss(codes).backward()
    assert _grad_norm(G.parameters()) > 0


def test_generated_forward_after_a_loss_on_a_derived_copy_raises():
    info, G, D = _setup()
    real = torch.rand(4, 1, 28, 28)
    latent, codes = info.sample(4)
    fake = G(latent)
    _penalty(D, real, fake, torch.rand(4, 1, 1, 1))   # penalty first: only a derived forward so far
    info.loss(codes)
    with pytest.raises(InfoGANError, match="depend on where loss\\(\\) is called"):
        D(fake)


def test_sample_or_picture_between_forward_and_loss_leaves_the_loss_unchanged(tmp_path):
    from torch_infogan.pictures import sample_grid, traversal_grid

    info, G, D = _setup()
    latent, codes = info.sample(4, generator=torch.Generator().manual_seed(3))
    D(G(latent))
    expected = info.loss(codes).item()

    info, G, D = _setup()
    latent, codes = info.sample(4, generator=torch.Generator().manual_seed(3))
    D(G(latent))
    other, _ = info.sample(16)
    G(other)                                           # a grid drawn the old way, between forward and loss
    sample_grid(G, info, tmp_path / "grid.png", n=16)
    traversal_grid(G, info, "cat0", tmp_path / "cat.png")
    assert info.loss(codes).item() == expected


def test_draw_has_no_side_effect():
    info, G, D = _setup()
    latent, codes = info.draw(4)
    assert not latent.requires_grad
    D(G(latent))
    with pytest.raises(InfoGANError, match="recent sample"):
        info.loss(codes)


def test_bare_sequential_discriminator_keeps_its_output_and_holds_q():
    torch.manual_seed(0)
    D = nn.Sequential(nn.Flatten(), nn.Linear(784, 32), nn.LeakyReLU(0.2, inplace=True), nn.Linear(32, 1))
    images = torch.rand(6, 1, 28, 28)
    before = D(images)
    info = InfoRegularizer("cat:10", noise_dim=4).attach(D, layer="2", example=images[:2])
    torch.testing.assert_close(D(images), before)
    assert {id(p) for p in D.info_q.parameters()} <= {id(p) for p in D.parameters()}
    assert any(k.startswith("info_q.") for k in D.state_dict())
    assert len(D) == 4 and isinstance(D, nn.Sequential)
    G = Generator(info.latent_dim)
    latent, codes = info.sample(6)
    D(G(latent).detach())
    info.loss(codes).backward()
    assert _grad_norm(D.info_q.parameters()) > 0 and _grad_norm(D[1].parameters()) > 0
    info.remove()
    assert type(D) is nn.Sequential and not hasattr(D, "info_q")
    torch.testing.assert_close(D(images), before)


class Projection(nn.Module):
    """A conditional discriminator D(x, y) with a projection of the label embedding."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(784, 32), nn.ReLU())
        self.embed = nn.Embedding(10, 32)
        self.out = nn.Linear(32, 1)

    def forward(self, x, y):
        h = self.body(x)
        return self.out(h).squeeze(1) + (self.embed(y) * h).sum(1)


def test_conditional_discriminator_taking_images_and_labels():
    D = Projection()
    y = torch.randint(0, 10, (4,))
    info = InfoRegularizer("cat:10", noise_dim=4).attach(D, layer="body.2", example=(torch.rand(2, 1, 28, 28), y[:2]))
    G = Generator(info.latent_dim)
    latent, codes = info.sample(4)
    fake = G(latent)
    D(torch.rand(4, 1, 28, 28), y), D(fake.detach(), y)
    assert torch.isfinite(info.loss(codes))


def test_bad_use_gives_one_line_errors():
    info, G, D = _setup()
    latent, codes = info.sample(4)
    with pytest.raises(InfoGANError) as no_forward:
        info.loss(codes)
    spare = Critic()
    spare.spare = nn.Linear(32, 32)
    with pytest.raises(InfoGANError, match="did not run") as not_run:
        InfoRegularizer("cat:10").attach(spare, "spare", example=torch.rand(2, 1, 28, 28))
    fake1, fake2 = G(latent), G(latent)   # two different generated batches from one latent
    D(fake1.detach()), D(fake2.detach())
    with pytest.raises(InfoGANError, match="two different generated batches") as two:
        info.loss(codes)
    for error in (no_forward, not_run, two):
        assert "\n" not in str(error.value)


def test_tap_that_never_runs_is_reported_at_loss_time():
    info = InfoRegularizer("cat:10", noise_dim=4)
    D = Critic()
    D.spare = nn.Linear(32, 32)
    info.attach(D, "spare", in_features=32)
    G = Generator(info.latent_dim)
    latent, codes = info.sample(4)
    D(G(latent))
    with pytest.raises(InfoGANError, match="did not run"):
        info.loss(codes)


def test_discriminator_in_ddp_and_under_bf16_autocast(tmp_path):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    try:
        info, G, D = _setup()
        ddp = nn.parallel.DistributedDataParallel(D)
        latent, codes = info.sample(4)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            fake = G(latent)
            out = ddp(fake.detach())
            loss = out.float().mean() + info.loss(codes)
        assert info.loss(codes).dtype == torch.float32
        loss.backward()
        assert _grad_norm(D.info_q.parameters()) > 0
    finally:
        dist.destroy_process_group()


def test_forwards_before_the_discriminators_optimizer_step_are_forgotten():
    info, G, D = _setup()
    opt_d = torch.optim.Adam(D.parameters(), lr=1e-3)
    latent, codes = info.sample(4)
    fake = G(latent)
    (D(fake.detach()).mean() + info.loss(codes)).backward()
    opt_d.step()
    with pytest.raises(InfoGANError, match="none has run since"):
        info.loss(codes)  # the G step's loss needs a forward of the updated discriminator
    D(fake)
    info.loss(codes).backward()
    assert _grad_norm(G.parameters()) > 0


def test_generator_run_again_on_the_same_latent_is_not_silently_mixed_up():
    info, G, D = _setup()
    opt_g = torch.optim.SGD(G.parameters(), lr=0.5)
    latent, codes = info.sample(4)
    fake = G(latent)
    (-D(fake).mean() + info.loss(codes)).backward()
    opt_g.step()
    with torch.no_grad():
        fake2 = G(latent)          # the updated G, same latent
    with pytest.raises(InfoGANError, match="two different generated batches"):
        D(fake2)


def test_an_interrupted_forward_does_not_leave_the_bookkeeping_stuck():
    info, G, D = _setup()
    latent, codes = info.sample(4)
    fake = G(latent)
    handle = D.hidden.register_forward_hook(lambda *a: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):
        D(fake)
    handle.remove()
    latent, codes = info.sample(4)
    D(G(latent).detach())
    assert torch.isfinite(info.loss(codes))


def test_a_transposed_view_of_the_generated_memory_is_not_the_generated_batch():
    info, G, D = _setup()
    latent, codes = info.sample(4)
    fake = G(latent)
    D(fake.detach())
    info.loss(codes)
    D(fake.detach().transpose(2, 3))   # unrelated (no graph), not the same images: ignored
    D(fake)
    assert torch.isfinite(info.loss(codes))
    same = torch.empty(4, 28, 28, 1).permute(0, 3, 1, 2)
    from torch_infogan.regularizer import _same_images
    assert not _same_images(fake.detach().transpose(2, 3), fake)
    assert _same_images(fake.detach().view(4, -1), fake) and not _same_images(same, fake)


def test_deep_copy_follows_g_through_the_process_hook_and_the_original_keeps_working():
    import copy

    from torch_infogan import following

    gc.collect()  # regularizers that earlier tests dropped stop following G when collected
    info, G, D = _setup()
    before = len(following._THROUGH_PROCESS)
    twin = copy.deepcopy(D)
    assert len(following._THROUGH_PROCESS) == before + 1
    latent, codes = info.sample(4)
    D(G(latent).detach())
    assert torch.isfinite(info.loss(codes))
    twin_info = twin._forward_pre_hooks[next(iter(twin._forward_pre_hooks))].__self__
    assert twin_info.discriminator is twin and twin_info.q is twin.info_q
    latent, codes = twin_info.sample(4)
    twin(G(latent).detach())
    assert torch.isfinite(twin_info.loss(codes))


def test_sequential_indexing_leaves_q_out():
    D = nn.Sequential(nn.Flatten(), nn.Linear(784, 32), nn.LeakyReLU(0.2), nn.Linear(32, 1))
    last = D[-1]
    InfoRegularizer("cat:10", noise_dim=4).attach(D, layer="2", example=torch.rand(2, 1, 28, 28))
    assert D[-1] is last and len(D[:-1]) == 3 and type(D[:-1]) is nn.Sequential
    assert list(D) == [D[0], D[1], D[2], last]


def test_conditional_discriminator_with_the_trunk_left_out():
    D = Projection()
    y = torch.randint(0, 10, (4,))
    info = InfoRegularizer("cat:10", noise_dim=4, train_trunk=False)
    info.attach(D, layer="body.2", example=(torch.rand(2, 1, 28, 28), y[:2]))
    G = Generator(info.latent_dim)
    latent, codes = info.sample(4)
    D(G(latent), y)
    info.loss(codes).backward()
    assert all(p.grad is None for p in D.body.parameters()) and _grad_norm(G.parameters()) > 0
