"""The objective's terms: each one's loss per player, the step's totals, and the guard on non-finite totals."""

import pytest
import torch

from torch_infogan.config import preset_config
from torch_infogan.objective import D, G
from torch_infogan.trainer import Trainer, TrainingStopped, training_data

_DATA = {}


def _trainer(preset="mnist", **overrides):
    small = dict(widths=[8, 16], fc_dim=32, q_hidden=16) if preset == "mnist" else {}  # small networks: fast steps
    config = preset_config(preset, limit=128, batch_size=16, device="cpu", precision="fp32", **small, **overrides)
    if preset not in _DATA:  # load (or draw) each dataset once for the whole module
        _DATA[preset] = training_data(config).subset(128)
    return Trainer(config, data=_DATA[preset])


def test_the_step_returns_each_terms_loss_per_player_and_the_weighted_totals():
    trainer = _trainer(consistency=0.5, iic=2.0, invariance=0.7)
    scalars = trainer.step()
    assert sorted(scalars) == sorted(trainer.scalar_names)
    assert set(trainer.scalar_names) == {"d/gan", "d/mi", "d/consistency", "d/iic", "d/invariance",
                                         "g/gan", "g/mi", "g/invariance", "d/total", "g/total"}
    weights = {term.name: term.weight for term in trainer.terms}
    for player in (D, G):
        parts = [weights[name.split("/")[1]] * value for name, value in scalars.items()
                 if name.startswith(player + "/") and not name.endswith("/total")]
        torch.testing.assert_close(scalars[f"{player}/total"], torch.stack(parts).sum())
    assert all(v.dim() == 0 and torch.isfinite(v) for v in scalars.values())


def _state(trainer):
    """Copies of everything a step can change: parameters, buffers and both optimizers' state."""
    tensors = {f"G.{k}": v.clone() for k, v in trainer.generator.state_dict().items()}
    tensors.update({f"D.{k}": v.clone() for k, v in trainer.discriminator.state_dict().items()})
    tensors.update({f"prior.{i}": p.detach().clone() for i, p in enumerate(trainer.info.prior_parameters())})
    for name, opt in (("opt_d", trainer.opt_d), ("opt_g", trainer.opt_g)):
        for i, state in opt.state_dict()["state"].items():
            tensors.update({f"{name}.{i}.{k}": torch.as_tensor(v).clone() for k, v in state.items()})
    return tensors


CASES = [("mnist", term, player) for term, players in
         [("gan", "dg"), ("mi", "dg"), ("consistency", "d"), ("iic", "d"), ("invariance", "dg"), ("prior", "g"),
                                 ("label", "d")]
         for player in players] + [("shapes-cr", "contrastive", "d"), ("shapes-cr", "contrastive", "g")]


@pytest.mark.parametrize("updates", ["alternating", "simultaneous"])
@pytest.mark.parametrize("preset,term_name,player", CASES)
def test_a_non_finite_term_skips_the_step_and_leaves_both_players_as_they_were(preset, term_name, player, updates):
    extra = dict(consistency=1.0, codes="cat:10:prior=learned,unif:2", labels=2) if preset == "mnist" else \
        dict(contrastive_start=0)
    trainer = _trainer(preset, updates=updates, on_nonfinite="skip", **extra)
    term = next(t for t in trainer.terms if t.name == term_name)
    trainer.step()  # a good step first: the optimizers hold state
    original = term.loss

    def poisoned(which, batch):
        value = original(which, batch)
        return value * float("nan") if which == player else value

    term.loss = poisoned
    before = _state(trainer)
    scalars = trainer.step()
    assert trainer.last_skipped and trainer.skipped == 1 and trainer.step_index == 2
    assert not torch.isfinite(scalars[f"{player}/{term_name}"])
    after = _state(trainer)
    assert after.keys() == before.keys()
    changed = [key for key in before if not torch.equal(before[key], after[key])]
    assert not changed, f"a skipped step changed {changed[:5]}"
    term.loss = original
    trainer.step()  # the next step goes on as usual
    assert not trainer.last_skipped
    moved = _state(trainer)
    assert any(not torch.equal(before[key], moved[key]) for key in before if key.startswith("G."))
    assert any(not torch.equal(before[key], moved[key]) for key in before if key.startswith("D."))


@pytest.mark.parametrize("updates", ["alternating", "simultaneous"])
def test_a_non_finite_term_stops_training_in_stop_mode(tmp_path, updates):
    trainer = _trainer(iterations=6, log_every=2, checkpoint_every=2, updates=updates)
    term = next(t for t in trainer.terms if t.name == "invariance")
    original = term.loss
    term.loss = lambda which, batch: original(which, batch) * (float("nan") if trainer.step_index == 3 and which == G
                                                               else 1.0)
    with pytest.raises(TrainingStopped, match="non-finite loss or parameters at step 4"):
        trainer.fit(tmp_path)


def test_the_trainer_leaves_the_global_random_state_as_it_was():
    torch.manual_seed(123)
    state = torch.get_rng_state()
    first = _trainer()
    assert torch.equal(torch.get_rng_state(), state)  # seeded inside, put back
    torch.manual_seed(7)  # another caller state: the same seed still gives the same networks
    second = _trainer()
    for a, b in zip(first.discriminator.parameters(), second.discriminator.parameters()):
        assert torch.equal(a, b)
    state = torch.get_rng_state()
    first.step()
    assert torch.equal(torch.get_rng_state(), state)  # the steps draw from the trainer's own generators
