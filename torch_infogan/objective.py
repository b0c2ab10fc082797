"""The terms of the training objective, one object each: the players it trains, its weight, its loss for each."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from torch_infogan.augment import random_affine, random_flip, random_intensity, random_translate
from torch_infogan.config import LABEL_COIN_FLOOR, TrainConfig
from torch_infogan.contrastive import ContrastiveRegularizer
from torch_infogan.data import normalize
from torch_infogan.labelled import LabelledSet
from torch_infogan.regularizer import InfoRegularizer

#: The transformation that the consistency and IIC terms compare Q's categories of real images across, and
#: that the invariance term moves G's images by (``TrainConfig.consistency``, ``iic``, ``invariance``): turns
#: of up to 20 degrees and scaling by up to 10%, then the slant of ``TrainConfig.pair_shear`` (and, for the real
#: images' copies only, the tone change of ``TrainConfig.pair_intensity``).
CONSISTENCY_DEGREES = 20.0
CONSISTENCY_SCALE = 0.1

D, G = "d", "g"  # the players: the discriminator (with Q) and the generator


@dataclass(eq=False)
class StepBatch:
    """What one training step's terms read: the images and codes of the step and the discriminator's outputs.

    ``d_fake`` is D's output on ``fake`` for D's loss; ``d_fake_g`` the one G's loss takes (a fresh forward of
    the stepped D when updates alternate, else the same). ``shared`` holds what one term computes for another
    or for both players (the turned copies of the real batch, a value both players take)."""

    clean: torch.Tensor                  # the real batch as drawn, float in [0, 1]
    real: torch.Tensor                   # the real batch as D sees it (instance noise, shifts)
    generated: torch.Tensor              # G's output
    fake: torch.Tensor                   # G's output as D sees it
    latent: torch.Tensor
    codes: dict
    d_real: torch.Tensor
    d_fake: torch.Tensor
    step: int
    alternating: bool
    generator_rng: torch.Generator | None = None
    d_fake_g: torch.Tensor | None = None
    shared: dict = field(default_factory=dict)

    def turned(self, pair_shear: float, pair_intensity: float, pair_flip: bool = False) -> torch.Tensor:
        """The real batch turned, scaled and slanted (half of it mirrored with ``pair_flip``, and its tones
        changed, ``random_intensity``), drawn once per step for the terms that compare with it."""
        if "turned" not in self.shared:
            turned = random_affine(self.clean, CONSISTENCY_DEGREES, CONSISTENCY_SCALE, self.generator_rng,
                                   max_shear=pair_shear)
            if pair_flip:
                turned = random_flip(turned, self.generator_rng)
            self.shared["turned"] = random_intensity(turned, pair_intensity, self.generator_rng)
        return self.shared["turned"]


class Term:
    """One term of the objective: ``loss(player, batch)`` is its unweighted loss for a player it trains.

    ``players`` are the players whose optimizer steps on it (``"d"``, ``"g"``); the step adds ``weight`` times
    the loss to each of those players' totals, under the term's ``name``. ``passes`` says what extra
    discriminator forwards the term runs per step."""

    name: str = ""
    players: tuple[str, ...] = (D, G)
    passes: str = ""

    def __init__(self, weight: float = 1.0):
        self.weight = float(weight)

    def loss(self, player: str, batch: StepBatch) -> torch.Tensor:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(weight={self.weight}, players={self.players})"


class GANTerm(Term):
    """The non-saturating GAN loss: D tells real from generated, G is scored by D as real."""

    name, passes = "gan", "none: D's forwards on the real and the generated batch belong to the step"

    def loss(self, player, batch):
        if player == D:
            ones = torch.ones_like(batch.d_real, dtype=torch.float32)
            zeros = torch.zeros_like(batch.d_fake, dtype=torch.float32)
            return F.binary_cross_entropy_with_logits(batch.d_real.float(), ones) \
                + F.binary_cross_entropy_with_logits(batch.d_fake.float(), zeros)
        d_fake = batch.d_fake_g
        return F.binary_cross_entropy_with_logits(d_fake.float(), torch.ones_like(d_fake, dtype=torch.float32))


class MITerm(Term):
    """InfoGAN's mutual-information term (``InfoRegularizer.loss``) on D's forward on the generated batch."""

    name, passes = "mi", "none: it reads the tapped features of the step's forward on the generated batch"

    def __init__(self, info: InfoRegularizer, weight: float = 1.0):
        super().__init__(weight)
        self.info = info

    def loss(self, player, batch):
        if player == G and not batch.alternating:
            return batch.shared["mi"]  # the same forward serves both players
        value = self.info.loss(batch.codes)  # for G when alternating: the stepped D's fresh forward
        batch.shared["mi"] = value
        return value


class PriorTerm(Term):
    """The learned categorical priors' fit to Q's category frequencies on real images (``prior_loss``)."""

    name, players, passes = "prior", (G,), "none"

    def __init__(self, info: InfoRegularizer, weight: float = 1.0):
        super().__init__(weight)
        self.info = info

    def loss(self, player, batch):
        return self.info.prior_loss()


class _RealPairTerm(Term):
    """A term on the real batch and its turned copy: the regularizer's method of the term's name."""

    players = (D,)

    def __init__(self, info: InfoRegularizer, weight: float, pair_shear: float, pair_intensity: float,
                 pair_flip: bool = False):
        super().__init__(weight)
        self.info, self.pair_shear, self.pair_intensity, self.pair_flip = info, pair_shear, pair_intensity, pair_flip

    def loss(self, player, batch):
        turned = batch.turned(self.pair_shear, self.pair_intensity, self.pair_flip)
        return getattr(self.info, self.name)(batch.clean, turned)


class ConsistencyTerm(_RealPairTerm):
    """Q names a real image's category alike on its turned copy (``InfoRegularizer.consistency``)."""

    name, passes = "consistency", "two on the real batch: as drawn (no gradient) and turned"


class IICTerm(_RealPairTerm):
    """Invariant information clustering of the real batch and its turned copy (``InfoRegularizer.iic``)."""

    name, passes = "iic", "two on the real batch: as drawn and turned"


class InvarianceTerm(Term):
    """Q names G's categories on copies of half of G's batch moved as the IIC pair's (``category_loss``).

    Both players take it, as they take the MI term. When updates alternate, D's loss takes it on detached
    copies and G's on the copies themselves through a fresh forward of the stepped D (one more pass over the
    half batch; sharing D's forward instead, with G's gradient from D before its step, merged two digits on
    a seed where this version did not: docs/benchmarks.md)."""

    name, passes = "invariance", "one on half of the generated batch, moved (two when updates alternate)"

    def __init__(self, info: InfoRegularizer, weight: float, pair_shear: float):
        super().__init__(weight)
        self.info, self.pair_shear = info, pair_shear

    def loss(self, player, batch):
        if player == G:
            if not batch.alternating:
                return batch.shared["invariance"]
            moved, moved_codes = batch.shared["moved"]
            return self.info.category_loss(moved, moved_codes)
        half = max(2, batch.generated.shape[0] // 2)  # half the batch, to keep the term's cost down
        moved = random_affine(batch.generated[:half], CONSISTENCY_DEGREES, CONSISTENCY_SCALE, batch.generator_rng,
                              max_shear=self.pair_shear)
        moved_codes = {key: value[:half] for key, value in batch.codes.items()}
        batch.shared["moved"] = (moved, moved_codes)
        value = self.info.category_loss(moved.detach() if batch.alternating else moved, moved_codes)
        batch.shared["invariance"] = value
        return value


class LabelTerm(Term):
    """A few labelled real images (``TrainConfig.labels``): Q's posterior for one categorical code against their
    labels (``InfoRegularizer.label_loss``), for D's side, on a batch of them shifted as D's real images are. With
    it, category k of that code means label k.

    ``schedule`` (``TrainConfig.label_schedule``): the batch is drawn ``every`` step, or on a step whose ``coin``
    comes up, with a chance falling linearly from 1 at the start to ``LABEL_COIN_FLOOR`` at half of ``iterations``
    (a step without it adds 0). The coin of step t is seeded by ``seed`` and t alone, so a resumed run flips the same."""

    name, players, passes = "label", (D,), "one on the labelled batch (at most half a batch of images)"

    def __init__(self, info: InfoRegularizer, weight: float, images: torch.Tensor, labels: torch.Tensor, code: str,
                 batch_size: int, translate: int, schedule: str = "every", iterations: int = 1, seed: int = 0):
        super().__init__(weight)
        self.info, self.images, self.labels, self.code = info, images, labels, code
        self.batch_size, self.translate = min(batch_size, len(images)), translate
        self.schedule, self.iterations, self.seed = schedule, max(1, int(iterations)), int(seed)

    def chance(self, step: int) -> float:
        """The chance that step ``step`` draws a labelled batch."""
        if self.schedule == "every":
            return 1.0
        return max(LABEL_COIN_FLOOR, 1.0 - (1.0 - LABEL_COIN_FLOOR) * step / (0.5 * self.iterations))

    def drawn(self, step: int) -> bool:
        """Whether step ``step`` draws a labelled batch (no coin is flipped while the chance is 1)."""
        chance = self.chance(step)
        if chance >= 1.0:
            return True
        coin = torch.Generator().manual_seed(self.seed * 1_000_003 + step)
        return float(torch.rand((), generator=coin)) < chance

    def loss(self, player, batch):
        if not self.drawn(batch.step):
            return torch.zeros((), device=batch.real.device)
        rows = torch.randperm(len(self.images), generator=batch.generator_rng, device=self.images.device)
        rows = rows[:self.batch_size]
        images = random_translate(normalize(self.images[rows], "unit"), self.translate, batch.generator_rng)
        return self.info.label_loss(images, self.labels[rows], self.code)


class ContrastiveTerm(Term):
    """InfoGAN-CR's contrastive term: a classifier on D's side names the code a pair of generated images shares
    (it learns on detached pairs); G, from the regularizer's ``start`` on, makes pairs it can name."""

    name, passes = "contrastive", "none of D's: the classifier runs on two generated batches"

    def __init__(self, contrastive: ContrastiveRegularizer, generator: nn.Module):
        super().__init__(contrastive.weight)
        self.contrastive, self.generator = contrastive, generator

    def loss(self, player, batch):
        cr = self.contrastive
        if player == G:
            if "pairs" not in batch.shared or not cr.active(batch.step):
                return torch.zeros((), device=batch.real.device)
            return cr.cross_entropy(*batch.shared["pairs"])
        latent_a, latent_b, shared = cr.pairs(batch.real.shape[0], generator=batch.generator_rng)
        with torch.set_grad_enabled(cr.active(batch.step)):
            pair_a, pair_b = self.generator(latent_a), self.generator(latent_b)
        batch.shared["pairs"] = (pair_a, pair_b, shared)
        return cr.cross_entropy(pair_a.detach(), pair_b.detach(), shared)


def build_terms(config: TrainConfig, info: InfoRegularizer, contrastive: ContrastiveRegularizer | None,
                generator: nn.Module, labelled: LabelledSet | None = None, images: torch.Tensor | None = None,
                iterations: int | None = None) -> list[Term]:
    """The objective's terms for ``config``, in the order they are computed. ``labelled``: the labelled training
    images (rows of ``images``, the training images on the device) for ``LabelTerm``; ``iterations``: the run's
    length, which the labelled batch's coin schedule follows (default ``config.iterations``)."""
    terms: list[Term] = [GANTerm(), MITerm(info, config.info_weight)]
    if config.consistency > 0:
        terms.append(ConsistencyTerm(info, config.consistency, config.pair_shear, config.pair_intensity,
                                     config.pair_flip))
    if config.iic > 0:
        terms.append(IICTerm(info, config.iic, config.pair_shear, config.pair_intensity, config.pair_flip))
    if config.invariance > 0:
        terms.append(InvarianceTerm(info, config.invariance, config.pair_shear))
    if contrastive is not None:
        terms.append(ContrastiveTerm(contrastive, generator))
    if labelled is not None:
        iterations = config.iterations if iterations is None else iterations
        rows, labels = (torch.from_numpy(a).to(images.device) for a in (labelled.indices, labelled.labels))
        terms.append(LabelTerm(info, config.label_weight, images[rows], labels, labelled.code,
                               config.batch_size // 2, config.translate, config.label_schedule, iterations,
                               config.seed))
    if info.prior_parameters():  # the learned prior follows Q's category frequencies on real images
        terms.append(PriorTerm(info, config.info_weight))
    return terms
