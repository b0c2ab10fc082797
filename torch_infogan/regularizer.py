"""InfoRegularizer: the InfoGAN mutual-information term, attachable to any discriminator.

The facade over the plug-in's parts: the latent space (``latent.py``), attaching Q (``heads.py``), finding the
generated batch's forward (``following.py``) and the loss terms as functions of Q's outputs (``losses.py``).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from torch_infogan import losses
from torch_infogan.codes import Code, split_params
from torch_infogan.errors import InfoGANError
from torch_infogan.following import (ForwardHooks, ForwardTracker, _same_images, made_from,  # noqa: F401
                                     tapped_output, trunk_free_features)
# (_same_images: read from here by older code)
from torch_infogan.heads import add_head, find_layer, probe_width, remove_head
from torch_infogan.latent import LatentSpace
from torch_infogan.qhead import QHead


class InfoRegularizer(LatentSpace):
    """Adds InfoGAN's latent codes and Q head to an existing GAN. Two lines attach it::

        info = InfoRegularizer("cat:10,unif:2", noise_dim=62).attach(netD, layer="main.8", example=real[:2])
        latent, codes = info.sample(batch_size)      # feed ``latent`` to G; add ``info.loss(codes)`` to both losses

    ``loss(codes)`` takes the tapped features of the discriminator's forward on the images generated from that
    ``latent`` (G's output, its ``detach()``-ed twin, or the one transformed copy D sees); forwards on real
    images and penalty interpolates are ignored, and an ambiguous choice raises (the rules: ``following.py``).
    A code's ``weight`` scales every term computed from it, the same way in each (``losses.py``); Q and every
    term run in float32 with autocast off, the trunk under the caller's autocast. ``train_trunk=False`` keeps
    the discriminator's layers up to the tap (the trunk) out of every term the one way: they are re-run with
    their parameters detached (their running statistics untouched).
    """

    def __init__(self, codes: str | Sequence[Code], noise_dim: int = 62, noise: str = "uniform",
                 q_hidden: int = 128, q_batchnorm: bool = True, q_negative_slope: float = 0.1,
                 train_trunk: bool = True, head_name: str = "info_q", overcluster: int = 0):
        super().__init__(codes, noise_dim, noise)
        if int(overcluster) < 0:
            raise InfoGANError(f"overcluster must be >= 0 categories, got {overcluster}")
        self.overcluster = int(overcluster)  # categories of Q's overclustering output for ``iic`` (0: none)
        self.q_hidden, self.q_batchnorm, self.q_negative_slope = int(q_hidden), bool(q_batchnorm), float(q_negative_slope)
        self.train_trunk, self.head_name = bool(train_trunk), head_name
        self.q: QHead | None = None                   # Q, once attached: the submodule discriminator.<head_name>
        self.discriminator: nn.Module | None = None
        self.layer_name: str | None = None            # the tapped layer's name in the discriminator
        self._hooks: ForwardHooks | None = None       # following.py
        self._reset_state()

    def _reset_state(self) -> None:
        self._tracker = ForwardTracker()       # the open samples and D's forwards on them (following.py)
        self._bounds: dict[str, float] | None = None
        self._bound_tensors: torch.Tensor | None = None
        self._fitted_bound_tensors: torch.Tensor | None = None
        self._real_marginals: dict[int, torch.Tensor] = {}  # Q's latest category frequencies on real images

    def __getstate__(self):
        # Copies (``copy.deepcopy`` of an attached discriminator) leave the per-step bookkeeping behind.
        state = dict(self.__dict__)
        state.update(_tracker=ForwardTracker(), _bound_tensors=None, _fitted_bound_tensors=None, _real_marginals={})
        return state

    def config(self) -> dict[str, object]:
        """Settings that rebuild this regularizer (stored in checkpoints)."""
        return {"codes": self.spec, "noise_dim": self.noise_dim, "noise": self.noise, "q_hidden": self.q_hidden,
                "q_batchnorm": self.q_batchnorm, "q_negative_slope": self.q_negative_slope,
                "train_trunk": self.train_trunk, "head_name": self.head_name, "overcluster": self.overcluster,
                "layer": self.layer_name}

    def attach(self, discriminator: nn.Module, layer: str | nn.Module, example: torch.Tensor | None = None,
               in_features: int | None = None) -> "InfoRegularizer":
        """Tap ``layer`` of ``discriminator``, size Q from one forward of ``example`` (or ``in_features``) and
        register Q in it as ``discriminator.<head_name>`` (``heads.add_head``). Returns ``self``."""
        if self.discriminator is not None:
            raise InfoGANError("this InfoRegularizer is already attached; call remove() first")
        module, name = find_layer(discriminator, layer)
        if in_features is None:
            if example is None:
                raise InfoGANError("attach() needs `example` (a batch of >= 2 real images) or `in_features`")
            in_features = probe_width(discriminator, module, name, example)
        self.q = QHead(in_features, self.param_dim, self.q_hidden, self.q_batchnorm, self.q_negative_slope,
                       self.overcluster)
        add_head(discriminator, self.head_name, self.q)
        for logits in self.prior_parameters():  # in place, so an optimizer made later holds the same tensor
            logits.data = logits.data.to(self._device())
        self.discriminator, self.layer_name = discriminator, name
        self._hooks = ForwardHooks(self, discriminator, module)
        return self

    def remove(self) -> nn.Module:
        """Detach from the discriminator: hooks removed, Q unregistered. Returns the discriminator."""
        discriminator = self._attached()
        self._hooks.remove()
        remove_head(discriminator, self.head_name)
        self._hooks, self.discriminator = None, None
        self._reset_state()
        return discriminator

    # The discriminator's hooks (``ForwardHooks``), which torch.compile runs eagerly (a graph break).
    @torch.compiler.disable
    def _before_forward(self, module, args, kwargs):
        self._tracker.before_forward(args, kwargs, keep_call=not self.train_trunk)

    @torch.compiler.disable
    def _after_forward(self, module, args, output):
        self._tracker.after_forward()

    @torch.compiler.disable
    def _tap(self, module, args, output):
        self._tracker.tap(output)

    def untapped(self):
        """Discriminator forwards inside this ``with`` block are never used by ``loss()`` (extra augmented
        copies, penalties)."""
        return self._tracker.untapped()

    def _device(self) -> torch.device:
        return next(self.q.parameters()).device if self.q is not None else torch.device("cpu")

    def draw_tracked(self, n: int, generator: torch.Generator | None = None, device=None
                     ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``draw`` for the training step, with the record ``loss(codes)`` reads: ``n`` latents ``[n, noise_dim +
        code inputs]`` for G and the codes in them (a dict, spec order); ``loss`` then finds D's forward on the
        images generated from this latent, which requires grad to be recognised (no parameter is added to any
        optimizer). ``sample`` is its name in the two-line recipe; ``draw`` is the pure one."""
        latent, codes = self.draw_relaxed(n, generator, device)
        if latent.requires_grad:  # computed from the logits: a leaf added to it lets derived forwards be told
            leaf = torch.zeros((), device=latent.device, requires_grad=True)
            latent = latent + leaf
        else:
            leaf = latent.requires_grad_(True)
        self._tracker.open(latent, codes, leaf, watch=self.discriminator is not None)
        return latent, codes

    sample = draw_tracked  # the two-line recipe's name: ``latent, codes = info.sample(batch_size)``

    def loss(self, codes: dict[str, torch.Tensor]) -> torch.Tensor:
        """Weighted negative MI lower bound ``sum_i weight_i * (E[-log Q(c_i|x)] - H(c_i))`` (float32 scalar)."""
        self._attached()
        sample = self._tracker.sample_of(codes, self.keys)
        forward = self._tracker.select(sample)
        if forward.features is None:
            raise InfoGANError(f"the tapped layer {self.layer_name!r} did not run during the discriminator's "
                               "forward on the generated images; tap a layer that the forward uses")
        sample.chosen = forward
        if not self._hooks.on_generator and sample.generator is not None \
                and made_from(forward, sample.generated()):  # G found: its hook moves onto G's module
            self._hooks.move_onto(sample.generator())
        features = forward.features if self.train_trunk else trunk_free_features(self._tracker, self.discriminator, *forward.call)
        parts = losses.head_outputs(self.codes, self.q, features)
        bounds, self._fitted_bound_tensors = losses.mi_bounds(self.codes, parts, [sample.codes[k] for k in self.keys])
        self._bound_tensors, self._bounds = bounds.detach(), None
        return -losses.weighted_sum(self.codes, bounds)

    def prior_loss(self) -> torch.Tensor:
        """For G's loss: KL(P || pi) from Q's latest category frequencies P on real images (recorded by ``iic`` and
        ``consistency``, no gradient) to each learned prior pi (float32 scalar; zero with no record yet). It moves
        the prior to the class frequencies Q finds in the data, faster than G's gradient through its input."""
        total = torch.zeros((), device=self._device())
        for i, marginal in self._real_marginals.items():
            total = total + losses.prior_fit(self.codes[i], marginal.to(total.device))
        return total

    def _record_marginals(self, indices: list[int], *views: list[torch.Tensor]) -> None:
        """Keep Q's mean posterior over real images for each learned prior's fit (``prior_loss``)."""
        for i in indices:
            if self.codes[i].learned:
                probs = torch.cat([self.codes[i].posterior(view[i])["probs"] for view in views])
                self._real_marginals[i] = probs.detach().float().mean(0)

    def consistency(self, images: torch.Tensor, augmented: torch.Tensor) -> torch.Tensor:
        """For D's loss: the cross-entropy from Q's categories on real ``images`` (the target, no gradient) to
        Q's categories on ``augmented`` (the same images transformed, e.g. by ``augment.random_affine``), summed
        over the categorical codes (float32 scalar). Its forwards run inside ``untapped()``, in D's mode."""
        categorical = self.categorical_indices("consistency")
        with torch.no_grad():
            target = self._head_outputs(images)
        self._record_marginals(categorical, target)
        return losses.consistency_loss(self.codes, categorical, target, self._head_outputs(augmented))

    def iic(self, images: torch.Tensor, augmented: torch.Tensor) -> torch.Tensor:
        """For D's loss: invariant information clustering of real images (IIC, Ji et al., 2019), minus the MI
        between Q's category of each of ``images`` and of its transformed copy in ``augmented``, summed over the
        categorical codes (float32 scalar, at least minus ln k). High MI needs consistent, confident categories
        used equally often (against a learned prior, in its proportions): ``losses.paired_information``. With
        ``overcluster`` categories, the same MI of Q's overclustering output is subtracted too. Both forwards run
        inside ``untapped()``, in D's mode."""
        categorical = self.categorical_indices("iic")
        if not self.overcluster:
            first, second = self._head_outputs(images), self._head_outputs(augmented)
        else:
            (first, first_over), (second, second_over) = (self._head_outputs(view, overcluster=True)
                                                          for view in (images, augmented))
        self._record_marginals(categorical, first, second)
        loss = losses.iic_loss(self.codes, categorical, first, second)
        if self.overcluster:
            loss = loss - losses.paired_information(first_over.softmax(1), second_over.softmax(1))
        return loss

    def category_loss(self, images: torch.Tensor, codes: dict[str, torch.Tensor]) -> torch.Tensor:
        """For both players' losses: the cross-entropy of the categorical codes' values in ``codes`` (from
        ``sample()``) under Q on ``images``, G's images of those codes transformed after G (e.g. by
        ``augment.random_affine``), summed over the codes (float32 scalar): no category is then made of a property
        the transformation changes (slant, for a shear). Its forward runs inside ``untapped()``, in D's mode."""
        categorical = self.categorical_indices("category_loss")
        targets = {i: codes[self.keys[i]] for i in categorical}
        return losses.category_nll(self.codes, categorical, self._head_outputs(images), targets)

    def label_loss(self, images: torch.Tensor, labels: torch.Tensor, code: str | None = None) -> torch.Tensor:
        """For D's loss in a semi-supervised run (ss-InfoGAN, Spurr et al. 2017): the cross-entropy of Q's
        categorical code ``code`` (a key; the first when None) on labelled real ``images`` against their ``labels``
        (integers ``[n]``), float32 scalar: category k then means class k. Its forward runs inside
        ``untapped()``; it reaches Q and the trunk (only Q with ``train_trunk=False``), never G."""
        categorical = self.categorical_indices("label_loss")
        if code is not None and (code not in self.keys or self.keys.index(code) not in categorical):
            names = ", ".join(self.keys[j] for j in categorical)
            raise InfoGANError(f"label_loss() needs the key of a categorical code ({names}), got {code!r}")
        i = categorical[0] if code is None else self.keys.index(code)
        labels = losses.label_targets(labels, images.shape[0], self.codes[i].k, self.keys[i])
        parts = self._head_outputs(images)
        return losses.category_nll(self.codes, [i], parts, {i: labels.to(parts[i].device)})

    def _head_outputs(self, images: torch.Tensor, overcluster: bool = False):
        """Q's raw outputs per code on ``images`` from a forward that ``loss()`` never takes: the trunk under the
        caller's autocast (kept out with ``train_trunk=False``), Q in float32 (``losses.head_outputs``); with
        ``overcluster``, also the overclustering output's logits ``[n, overcluster]``."""
        with self.untapped():
            features = self.features(images) if self.train_trunk else trunk_free_features(self._tracker, self.discriminator, (images,), {})
        return losses.head_outputs(self.codes, self.q, features, overcluster)

    def bounds(self) -> dict[str, float]:
        """Per-code MI lower bound in nats from the latest ``loss`` (spec order). Syncs with the device."""
        if self._bounds is None and self._bound_tensors is not None:
            self._bounds = dict(zip(self.keys, self._bound_tensors.float().cpu().tolist()))
        return dict(self._bounds or {})

    def bound_tensor(self) -> torch.Tensor | None:
        """The per-code bounds of the latest ``loss`` as a detached tensor on the device (no host sync)."""
        return self._bound_tensors

    def fitted_bound_tensor(self) -> torch.Tensor | None:
        """Per-code MI lower bounds of the latest ``loss`` with Q's unlearned variance fitted to its error on
        that batch (``Code.fitted_nll``; the larger of the two bounds), detached, on the device."""
        return self._fitted_bound_tensors

    @torch.no_grad()
    def infer(self, images: torch.Tensor) -> dict[str, dict[str, torch.Tensor]]:
        """Q's posterior for each code on ``images`` (the discriminator runs in eval mode)."""
        parts = split_params(self.codes, self.q_params(images))
        return {key: code.posterior(part) for key, code, part in zip(self.keys, self.codes, parts)}

    @torch.no_grad()
    def q_params(self, images: torch.Tensor, return_features: bool = False):
        """Raw Q outputs ``[n, param_dim]`` on ``images`` in eval mode (and the tapped features if asked)."""
        disc = self._attached()
        was_training = disc.training
        disc.eval()
        try:
            features = self.features(images)
            with torch.autocast(device_type=features.device.type, enabled=False):
                params = self.q(features)
        finally:
            disc.train(was_training)
        return (params, features) if return_features else params

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """The tapped layer's output for ``images``, flattened to ``[n, F]`` float32: the discriminator runs up
        to the tapped layer, not through the layers after it (its output head)."""
        disc = self._attached()
        features = tapped_output(self._tracker, lambda: disc(images))
        if features is None:
            raise InfoGANError(f"the tapped layer {self.layer_name!r} did not run during the discriminator's forward")
        return features

    def _attached(self) -> nn.Module:
        if self.discriminator is None or self.q is None:
            raise InfoGANError("this InfoRegularizer is not attached (call attach() first)")
        return self.discriminator
