"""InfoRegularizer: the InfoGAN mutual-information term, attachable to any discriminator."""

from __future__ import annotations

import warnings
import weakref
from typing import Sequence

import torch
from torch import nn
from torch.nn.modules.module import register_module_forward_hook
from torch.optim.optimizer import register_optimizer_step_post_hook

from torch_infogan.codes import Categorical, Code, code_keys, format_codes, parse_codes, split_params
from torch_infogan.errors import InfoGANError
from torch_infogan.following import FeaturesTaken, ForwardTracker, _same_images, made_from, watcher  # noqa: F401
# (_same_images: read from here by older code)
from torch_infogan.heads import add_head, remove_head
from torch_infogan.qhead import QHead


class InfoRegularizer:
    """Adds InfoGAN's latent codes and Q head to an existing GAN.

    Weights: a code's ``weight`` scales every term computed from that code, the same way in each: ``loss``,
    ``prior_loss``, ``consistency``, ``iic``, ``category_loss`` and ``label_loss``.

    Two lines attach it::

        info = InfoRegularizer("cat:10,unif:2", noise_dim=62).attach(netD, layer="main.8", example=real[:2])
        latent, codes = info.sample(batch_size)      # feed ``latent`` to G; add ``info.loss(codes)`` to both losses

    ``loss(codes)`` uses the features that the tapped layer produced during the discriminator's forward on
    the images generated from that ``latent``: G's output itself or its ``detach()``-ed twin, or, where the
    discriminator sees only a transformed copy (augmentation), that copy. Forwards on real images, on
    gradient-penalty interpolates or on other tensors computed from an already seen generated batch are
    ignored; where the choice is ambiguous it raises ``InfoGANError``.

    Gradient routing: with ``train_trunk=True`` (the paper's code) the term's gradient reaches G, the
    discriminator's layers up to the tap ("trunk") and Q. With ``train_trunk=False`` it reaches G and Q
    only: the trunk is re-run with its parameters detached, costing one extra discriminator forward.
    """

    def __init__(self, codes: str | Sequence[Code], noise_dim: int = 62, noise: str = "uniform",
                 q_hidden: int = 128, q_batchnorm: bool = True, q_negative_slope: float = 0.1,
                 train_trunk: bool = True, head_name: str = "info_q"):
        self.codes: list[Code] = parse_codes(codes) if isinstance(codes, str) else list(codes)
        if not self.codes:
            raise InfoGANError("InfoRegularizer needs at least one code")
        if noise not in ("uniform", "normal"):
            raise InfoGANError(f"noise must be 'uniform' or 'normal', got {noise!r}")
        if noise_dim < 0:
            raise InfoGANError(f"noise_dim must be >= 0, got {noise_dim}")
        self.noise_dim = int(noise_dim)
        self.noise = noise
        self.q_hidden = int(q_hidden)
        self.q_batchnorm = bool(q_batchnorm)
        self.q_negative_slope = float(q_negative_slope)
        self.train_trunk = bool(train_trunk)
        self.head_name = head_name
        self.keys = code_keys(self.codes)
        self.q: QHead | None = None
        self.discriminator: nn.Module | None = None
        self.layer_name: str | None = None
        self._handles: list = []          # hooks on the discriminator and its layer
        self._global_handles: list = []   # the global optimizer hook and, until G is found, the global module hook
        self._module_hook = None          # the handle of the hook that follows G's output (global, then on G)
        self._reset_state()

    def _reset_state(self) -> None:
        self._tracker = ForwardTracker()       # the open samples and D's forwards on them (following.py)
        self._bounds: dict[str, float] | None = None
        self._d_steps = 0                      # the discriminator's optimizer steps seen (for the prior's check)
        self._prior_stepped = False            # whether an optimizer has stepped a learned prior's logits
        self._prior_warned = False
        self._bound_tensors: torch.Tensor | None = None
        self._fitted_bound_tensors: torch.Tensor | None = None
        self._real_marginals: dict[int, torch.Tensor] = {}  # Q's latest category frequencies on real images

    def __getstate__(self):
        # Copies (``copy.deepcopy`` of an attached discriminator) leave the per-step bookkeeping behind, and
        # register global hooks of their own (a handle's state would copy every process-wide hook).
        state = dict(self.__dict__)
        state.update(_tracker=ForwardTracker(), _bound_tensors=None, _fitted_bound_tensors=None, _global_handles=[],
                     _module_hook=None, _real_marginals={})
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        if self.discriminator is not None:
            self._global_handles = self._global_hooks()

    # -- configuration -------------------------------------------------------------------------
    @property
    def spec(self) -> str:
        """The codes as a spec string (round-trips through ``parse_codes``)."""
        return format_codes(self.codes)

    @property
    def latent_dim(self) -> int:
        """Width of G's input: noise plus every code's input width."""
        return self.noise_dim + sum(code.input_dim for code in self.codes)

    def prior_parameters(self) -> list[nn.Parameter]:
        """The learned priors' logits (codes such as ``cat:10:prior=learned``), for the generator's optimizer:
        ``Adam([*netG.parameters(), *info.prior_parameters()])``. Empty when every prior is fixed."""
        return [code.logits for code in self.codes if getattr(code, "logits", None) is not None]

    @property
    def param_dim(self) -> int:
        """Width of Q's output: every code's parameter width."""
        return sum(code.param_dim for code in self.codes)

    def config(self) -> dict[str, object]:
        """Settings that rebuild this regularizer (stored in checkpoints)."""
        return {"codes": self.spec, "noise_dim": self.noise_dim, "noise": self.noise, "q_hidden": self.q_hidden,
                "q_batchnorm": self.q_batchnorm, "q_negative_slope": self.q_negative_slope,
                "train_trunk": self.train_trunk, "head_name": self.head_name, "layer": self.layer_name}

    # -- attach / remove -----------------------------------------------------------------------
    def attach(self, discriminator: nn.Module, layer: str | nn.Module, example: torch.Tensor | None = None,
               in_features: int | None = None) -> "InfoRegularizer":
        """Tap ``layer`` of ``discriminator``, size Q from one forward of ``example`` and register Q in it.

        Q becomes the submodule ``discriminator.<head_name>``, so the discriminator's optimizer,
        ``state_dict()`` and ``.to()`` cover it. A bare ``nn.Sequential`` keeps its forward: its
        iteration skips Q (as ``torch.nn.utils.parametrize`` does, the instance gets a subclass of its
        class; ``remove()`` restores it). Returns ``self``.
        """
        if self.discriminator is not None:
            raise InfoGANError("this InfoRegularizer is already attached; call remove() first")
        if hasattr(discriminator, self.head_name):
            raise InfoGANError(f"the discriminator already has an attribute {self.head_name!r} "
                               "(attached to another InfoRegularizer?)")
        module, name = self._find_layer(discriminator, layer)
        if in_features is None:
            if example is None:
                raise InfoGANError("attach() needs `example` (a batch of >= 2 real images) or `in_features`")
            in_features = self._probe_width(discriminator, module, name, example)
        self.q = QHead(in_features, self.param_dim, self.q_hidden, self.q_batchnorm, self.q_negative_slope)
        param = next(discriminator.parameters(), None)
        if param is not None:
            self.q.to(param.device)
            for logits in self.prior_parameters():  # in place, so an optimizer made later holds the same tensor
                logits.data = logits.data.to(param.device)
        add_head(discriminator, self.head_name, self.q)
        self.discriminator = discriminator
        self.layer_name = name
        self._handles = [
            discriminator.register_forward_pre_hook(self._before_forward, with_kwargs=True),
            discriminator.register_forward_hook(self._after_forward, always_call=True),
            module.register_forward_hook(self._tap),
        ]
        self._global_handles = self._global_hooks()
        return self

    def _global_hooks(self) -> list:
        """The optimizer-step hook, and the module hook that follows G's output until the first ``loss()`` has
        found G (then it moves onto G's module: ``_move_onto``, and other modules of the process run without
        it). Registered once, not per sample() (that would make torch.compile re-trace every step), and holding
        this object weakly, so a discriminator dropped without ``remove()`` does not stay alive in them (the
        hooks are then no-ops). The optimizer hook stays global: fused optimizers step parameters without
        bumping their version counters, so nothing else tells that the discriminator has stepped."""
        ref = weakref.ref(self)

        @torch.compiler.disable
        def after_optimizer_step(optimizer, args, kwargs):
            target = ref()
            if target is not None:
                target._after_optimizer_step(optimizer)

        self._module_hook = register_module_forward_hook(watcher(ref), with_kwargs=True)
        return [register_optimizer_step_post_hook(after_optimizer_step), self._module_hook]

    def _move_onto(self, generator: nn.Module | None) -> None:
        """Follow G's output with a hook on G's module instead of the global module hook (once ``loss()`` has used
        a forward on G's output or on a tensor computed from it, G being the outermost module given the latent)."""
        if generator is None:
            return
        self._global_handles.remove(self._module_hook)
        self._module_hook.remove()
        self._module_hook = generator.register_forward_hook(watcher(weakref.ref(self)), with_kwargs=True)

    def remove(self) -> nn.Module:
        """Detach from the discriminator: hooks removed, Q unregistered. Returns the discriminator."""
        if self.discriminator is None:
            raise InfoGANError("this InfoRegularizer is not attached")
        for handle in {id(h): h for h in [*self._handles, *self._global_handles, self._module_hook] if h}.values():
            handle.remove()
        discriminator = self.discriminator
        remove_head(discriminator, self.head_name)
        self._handles, self._global_handles, self._module_hook = [], [], None
        self.discriminator = None
        self._reset_state()
        return discriminator

    @staticmethod
    def _find_layer(discriminator: nn.Module, layer: str | nn.Module) -> tuple[nn.Module, str]:
        modules = dict(discriminator.named_modules())
        if isinstance(layer, nn.Module):
            for name, module in modules.items():
                if module is layer:
                    return module, name
            raise InfoGANError("the layer given to attach() is not a submodule of the discriminator")
        if layer not in modules or layer == "":
            names = [n for n in modules if n]
            raise InfoGANError(f"the discriminator has no layer {layer!r}; its layers: {', '.join(names)}")
        return modules[layer], layer

    def _probe_width(self, discriminator: nn.Module, module: nn.Module, name: str, example) -> int:
        widths: list[int] = []
        handle = module.register_forward_hook(lambda m, i, o: widths.append(o[0].numel() if o.dim() > 1 else 1))
        was_training = discriminator.training
        discriminator.eval()  # no running-statistics update: the discriminator is left exactly as it was
        try:
            with torch.no_grad():
                discriminator(*example) if isinstance(example, tuple) else discriminator(example)
        finally:
            handle.remove()
            discriminator.train(was_training)
        if not widths:
            raise InfoGANError(f"layer {name!r} did not run during the discriminator's forward on `example`; "
                               "tap a layer that the forward uses")
        return widths[0]  # a layer that runs twice in one forward is tapped at its first call, as in training

    # -- the hooks: bookkeeping on Python objects, which torch.compile runs eagerly (a graph break) ------
    @torch.compiler.disable
    def _follow(self, module, args, kwargs, output) -> None:
        self._tracker.follow(module, args, kwargs, output, skip=self.q)

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

    def _after_optimizer_step(self, optimizer) -> None:
        """Once an optimizer has stepped the discriminator's parameters, its earlier forwards are forgotten.

        A learned prior's logits must be stepped by the generator's optimizer: a warning says so when the
        discriminator's optimizer has stepped twice and none has stepped them, or when it holds them itself."""
        if self.discriminator is None:
            return
        stepped = {id(p) for group in optimizer.param_groups for p in group["params"]}
        priors = {id(p) for p in self.prior_parameters()}
        if priors & stepped:
            self._prior_stepped = True
        if not stepped & {id(p) for p in self.discriminator.parameters()}:
            return
        self._tracker.forget()
        if not priors or self._prior_warned:
            return
        self._d_steps += 1
        if priors & stepped:
            self._prior_warned = True
            warnings.warn("the discriminator's optimizer holds the learned prior's logits (info.prior_parameters()); "
                          "they belong to the generator's optimizer alone", stacklevel=3)
        elif self._d_steps >= 2 and not self._prior_stepped:
            self._prior_warned = True
            warnings.warn("no optimizer has stepped the learned prior's logits: add info.prior_parameters() to the "
                          "generator's optimizer, or the prior stays uniform", stacklevel=3)

    # -- sampling and the loss -----------------------------------------------------------------
    def _device(self) -> torch.device:
        if self.q is not None:
            return next(self.q.parameters()).device
        return torch.device("cpu")

    def draw(self, n: int, generator: torch.Generator | None = None, device=None
             ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Draw ``n`` latents and their codes from the prior, with no side effect (for pictures and evaluation)."""
        if n < 1:
            raise InfoGANError(f"the number of latents to draw must be >= 1, got {n}")
        device = self._device() if device is None else torch.device(device)
        codes = {key: code.sample(n, generator=generator, device=device) for key, code in zip(self.keys, self.codes)}
        return self.latent_from(codes, generator=generator), codes

    def sample(self, n: int, generator: torch.Generator | None = None, device=None
               ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Draw ``n`` latents ``[n, noise_dim + code inputs]`` for G and the codes in them (a dict, spec order).

        Use it for the training step: ``loss(codes)`` then finds the discriminator's forward on the images
        generated from this latent. The latent requires grad so that the forward can be recognised; it adds
        no parameters to any optimizer. ``draw`` draws without this bookkeeping.
        """
        device = self._device() if device is None else torch.device(device)
        codes, inputs = {}, {}
        for key, code in zip(self.keys, self.codes):
            if getattr(code, "learned", False):  # a learned prior: G's input is differentiable in its logits
                codes[key], inputs[key] = code.rsample(n, generator=generator, device=device)
            else:
                codes[key] = code.sample(n, generator=generator, device=device)
        latent = self.latent_from(codes, generator=generator, inputs=inputs)
        if latent.requires_grad:  # computed from the logits: a leaf added to it lets derived forwards be told
            leaf = torch.zeros((), device=device, requires_grad=True)
            latent = latent + leaf
        else:
            leaf = latent.requires_grad_(True)
        self._tracker.open(latent, codes, leaf, watch=self.discriminator is not None)
        return latent, codes

    def latent_from(self, codes: dict[str, torch.Tensor], noise: torch.Tensor | None = None,
                    generator: torch.Generator | None = None, inputs: dict[str, torch.Tensor] | None = None
                    ) -> torch.Tensor:
        """G's input for given code values (and noise, drawn from the prior when not given); ``inputs`` gives G's
        input ``[n, input_dim]`` of some codes directly (a learned prior's relaxed draw) instead of their encoding."""
        first = codes[self.keys[0]]
        n, device = first.shape[0], first.device
        if noise is None:
            if self.noise == "uniform":
                noise = torch.rand(n, self.noise_dim, generator=generator, device=device) * 2 - 1
            else:
                noise = torch.randn(n, self.noise_dim, generator=generator, device=device)
        inputs = inputs or {}
        parts = [noise] + [inputs[key] if key in inputs else code.encode(codes[key])
                           for key, code in zip(self.keys, self.codes)]
        return torch.cat(parts, dim=1)

    def loss(self, codes: dict[str, torch.Tensor]) -> torch.Tensor:
        """Weighted negative MI lower bound ``sum_i weight_i * (E[-log Q(c_i|x)] - H(c_i))`` (float32 scalar)."""
        if self.discriminator is None or self.q is None:
            raise InfoGANError("loss() needs an attached InfoRegularizer (call attach() first)")
        sample = self._tracker.sample_of(codes, self.keys)
        codes = sample.codes
        forward = self._tracker.select(sample)
        if forward.features is None:
            raise InfoGANError(f"the tapped layer {self.layer_name!r} did not run during the discriminator's "
                               "forward on the generated images; tap a layer that the forward uses")
        sample.chosen = forward
        if self._module_hook in self._global_handles and sample.generator is not None \
                and made_from(forward, sample.generated()):  # G found: its hook moves onto G's module
            self._move_onto(sample.generator())
        features = forward.features
        if not self.train_trunk:
            features = self._trunk_free_features(*forward.call)
        device_type = features.device.type
        with torch.autocast(device_type=device_type, enabled=False):
            parts = split_params(self.codes, self.q(features.float()))
            nlls = torch.stack([code.nll(part, codes[key]).mean() for key, code, part in zip(self.keys, self.codes, parts)])
        entropies = torch.stack([code.entropy() for code in self.codes]).to(nlls.device)
        weights = torch.tensor([code.weight for code in self.codes], device=nlls.device)
        bounds = entropies - nlls
        with torch.no_grad():
            fitted = torch.stack([code.fitted_nll(part, codes[key]).mean()
                                  for key, code, part in zip(self.keys, self.codes, parts)])
        self._fitted_bound_tensors = torch.maximum(entropies - fitted, bounds.detach())
        self._bound_tensors = bounds.detach()
        self._bounds = None
        return -(weights * bounds).sum()

    def prior_loss(self) -> torch.Tensor:
        """The learned priors' fit to the data: KL(P || pi) from Q's latest category frequencies P on real images
        (recorded by ``iic`` and ``consistency``, no gradient) to each learned prior pi, weighted as the code's MI
        term (float32 scalar; zero with no learned prior or no record yet). Add it to the generator's loss, whose
        optimizer holds ``prior_parameters()``: it moves the prior to the class frequencies Q finds in the data,
        a direct signal where G's own gradient through its input moves the logits only slowly."""
        total = torch.zeros((), device=self._device())
        for i, marginal in self._real_marginals.items():
            code = self.codes[i]
            log_prior = torch.log_softmax(code.logits.float(), dim=0).to(total.device)
            marginal = marginal.to(total.device)
            total = total + code.weight * (marginal * (marginal.clamp_min(1e-12).log() - log_prior)).sum()
        return total

    def _record_marginal(self, i: int, probs: torch.Tensor) -> None:
        """Keep Q's mean posterior over real images ``probs [n, k]`` for a learned prior's fit."""
        if self.codes[i].learned:
            self._real_marginals[i] = probs.detach().float().mean(0)

    def consistency(self, images: torch.Tensor, augmented: torch.Tensor) -> torch.Tensor:
        """Consistency of Q's categories on real images: the cross-entropy from Q's posterior over each
        categorical code's categories on ``images`` (the target, no gradient) to Q's posterior on ``augmented``
        (the same images transformed, e.g. by ``augment.random_affine``), averaged over the batch and summed
        over the categorical codes (float32 scalar). Add it to the discriminator's loss: it asks Q (and the
        trunk it shares with D) to name a real image's category from what survives the transformation.

        Both discriminator forwards run inside ``untapped()``, in the discriminator's current mode and under
        the caller's autocast; neither is ever taken for ``loss()``."""
        categorical = self._categorical_indices("consistency")
        with self.untapped():
            with torch.no_grad():
                target = split_params(self.codes, self.q(self.features(images)))
            features = self.features(augmented)
            if not self.train_trunk:
                features = features.detach()
            params = split_params(self.codes, self.q(features))
        total = torch.zeros((), device=images.device)
        for i in categorical:
            probs = self.codes[i].posterior(target[i])["probs"]
            self._record_marginal(i, probs)
            total = total - self.codes[i].weight * (probs * torch.log_softmax(params[i].float(), dim=1)).sum(1).mean()
        return total

    def iic(self, images: torch.Tensor, augmented: torch.Tensor) -> torch.Tensor:
        """Invariant information clustering of real images (IIC, Ji et al., 2019): minus the mutual information
        between Q's category of an image and Q's category of its transformed copy, summed over the categorical
        codes (nats, float32 scalar; its lowest value is minus ln k for k categories). Add it to the
        discriminator's loss.

        The joint distribution of the two categories is the batch mean of the outer products of Q's posteriors
        on ``images`` and on ``augmented`` (made symmetric). Its mutual information is high only when Q names an
        image's category alike before and after the transformation (consistency), confidently, and uses every
        category equally often over the batch (balance). Both passes train Q and the trunk it shares with D;
        they run inside ``untapped()``, in the discriminator's current mode, the trunk under the caller's
        autocast and Q in float32."""
        categorical = self._categorical_indices("iic")
        with self.untapped():
            views = [self.features(images), self.features(augmented)]
        if not self.train_trunk:
            views = [features.detach() for features in views]
        with torch.autocast(device_type=images.device.type, enabled=False):
            params = [split_params(self.codes, self.q(features.float())) for features in views]
        total = torch.zeros((), device=images.device)
        for i in categorical:
            first, second = (self.codes[i].posterior(view[i])["probs"] for view in params)
            self._record_marginal(i, torch.cat([first, second]))
            log_prior = self.codes[i].log_prior()
            log_prior = None if log_prior is None else log_prior.to(total.device)
            total = total - self.codes[i].weight * _paired_information(first, second, log_prior)
        return total

    def category_loss(self, images: torch.Tensor, codes: dict[str, torch.Tensor]) -> torch.Tensor:
        """Cross-entropy of the categorical codes' values in ``codes`` (from ``sample()``) under Q's posterior on
        ``images``, summed over the categorical codes (float32 scalar). ``images`` are the generated images of
        those codes transformed after the generator (e.g. by ``augment.random_affine``). Add it to both players'
        losses, as the MI term: it asks Q to name G's categories after the transformation and G for categories
        that Q can still tell apart then, so that no category is made of a property the transformation changes
        (slant, for a shear).

        The discriminator's forward runs inside ``untapped()``, in its current mode, the trunk under the caller's
        autocast and Q in float32; it is never taken for ``loss()``. With ``train_trunk=False`` it reaches Q and
        the images, not the trunk's parameters."""
        categorical = self._categorical_indices("category_loss")
        params = self._untapped_params(images)
        total = torch.zeros((), device=images.device)
        for i in categorical:
            total = total + self.codes[i].weight * self.codes[i].nll(params[i], codes[self.keys[i]]).mean()
        return total

    def label_loss(self, images: torch.Tensor, labels: torch.Tensor, code: str | None = None) -> torch.Tensor:
        """Cross-entropy of Q's posterior for one categorical code on labelled real ``images`` against their
        ``labels`` (long ``[n]``, class k naming category k), float32 scalar. ``code`` is its key
        (``"cat0"``; the first categorical code when None). Add it to the discriminator's loss for the labelled
        images of a semi-supervised run (ss-InfoGAN, Spurr et al. 2017): with it, category k of that code means
        class k, and two classes cannot share a category.

        The discriminator's forward runs inside ``untapped()``, in its current mode, the trunk under the caller's
        autocast and Q in float32; it is never taken for ``loss()``. It reaches Q and the trunk (only Q with
        ``train_trunk=False``), never G."""
        categorical = self._categorical_indices("label_loss")
        if code is None:
            i = categorical[0]
        elif code in self.keys and self.keys.index(code) in categorical:
            i = self.keys.index(code)
        else:
            names = ", ".join(self.keys[j] for j in categorical)
            raise InfoGANError(f"label_loss() needs the key of a categorical code ({names}), got {code!r}")
        k = self.codes[i].k
        if not torch.is_tensor(labels) or labels.dtype not in (torch.int64, torch.int32, torch.uint8) \
                or labels.shape != (images.shape[0],):
            shape = tuple(labels.shape) if torch.is_tensor(labels) else type(labels).__name__
            raise InfoGANError(f"label_loss() needs integer labels [n] for {images.shape[0]} images, got {shape}"
                               f"{' ' + str(labels.dtype) if torch.is_tensor(labels) else ''}")
        if labels.device.type == "cpu" and labels.numel() and not (0 <= int(labels.min()) and int(labels.max()) < k):
            raise InfoGANError(f"labels must lie in [0, {k}) for {self.keys[i]}, got {int(labels.min())} to "
                               f"{int(labels.max())}")
        params = self._untapped_params(images)
        return self.codes[i].weight * self.codes[i].nll(params[i], labels.to(params[i].device).long()).mean()

    def _untapped_params(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Q's raw outputs per code on ``images`` from a forward that ``loss()`` never takes: the trunk under the
        caller's autocast (its parameters left out with ``train_trunk=False``), Q in float32."""
        with self.untapped():
            features = self.features(images) if self.train_trunk else self._trunk_free_features((images,), {})
        with torch.autocast(device_type=images.device.type, enabled=False):
            return split_params(self.codes, self.q(features.float()))

    def _categorical_indices(self, method: str) -> list[int]:
        """Positions of the categorical codes, for a method that needs at least one."""
        categorical = [i for i, code in enumerate(self.codes) if isinstance(code, Categorical)]
        if not categorical:
            raise InfoGANError(f"{method}() needs a categorical code; the codes are {self.spec!r}")
        return categorical

    def _trunk_free_features(self, args: tuple, kwargs: dict) -> torch.Tensor:
        """Re-run the discriminator with detached parameters and copied buffers, tapping the layer."""
        disc = self.discriminator
        state = {name: p.detach() for name, p in disc.named_parameters()}
        state.update({name: b.clone() for name, b in disc.named_buffers()})
        with self._tracker.capturing() as captured:
            try:
                torch.func.functional_call(disc, state, args, kwargs)
            except FeaturesTaken:
                pass
        return captured[0]

    def bounds(self) -> dict[str, float]:
        """Per-code MI lower bound in nats from the latest ``loss`` (spec order). Syncs with the device."""
        if self._bound_tensors is None:
            return {}
        if self._bounds is None:
            self._bounds = dict(zip(self.keys, self._bound_tensors.float().cpu().tolist()))
        return dict(self._bounds)

    def bound_tensor(self) -> torch.Tensor | None:
        """The per-code bounds of the latest ``loss`` as a detached tensor on the device (no host sync)."""
        return self._bound_tensors

    def fitted_bound_tensor(self) -> torch.Tensor | None:
        """Per-code MI lower bounds of the latest ``loss`` with Q's unlearned variance fitted to its error on
        that batch (``Code.fitted_nll``; the larger of the two bounds), detached, on the device."""
        return self._fitted_bound_tensors

    def entropies(self) -> dict[str, float]:
        """H(c) of each code in nats, the ceiling of its MI bound."""
        return {key: float(code.entropy()) for key, code in zip(self.keys, self.codes)}

    # -- inference -----------------------------------------------------------------------------
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
        with self._tracker.capturing() as captured:
            try:
                disc(images)
            except FeaturesTaken:
                pass
        if not captured:
            raise InfoGANError(f"the tapped layer {self.layer_name!r} did not run during the discriminator's forward")
        return captured[0]

    def _attached(self) -> nn.Module:
        if self.discriminator is None or self.q is None:
            raise InfoGANError("this InfoRegularizer is not attached (call attach() first)")
        return self.discriminator


def _paired_information(first: torch.Tensor, second: torch.Tensor, log_prior: torch.Tensor | None = None
                        ) -> torch.Tensor:
    """Mutual information (nats) of the symmetric joint distribution ``mean_n(outer(first_n, second_n))`` of two
    batches of categorical posteriors ``[n, k]``: the quantity IIC maximizes.

    MI = H(P) - H(Z|Z') rewards a uniform marginal P. Given a (learned) prior ``log_prior`` = log pi, its marginal
    entropy H(P) is replaced by H(pi) - KL(P || pi): the value is MI + sum_i P_i log pi_i + H(pi), the same as MI
    for a uniform pi, highest (H(pi)) for consistent, confident categories whose marginal is pi."""
    joint = first.t() @ second / first.shape[0]
    joint = ((joint + joint.t()) / 2).clamp_min(torch.finfo(joint.dtype).tiny)
    marginal = joint.sum(1)
    log_marginal = marginal.log()
    information = (joint * (joint.log() - log_marginal[:, None] - log_marginal[None, :])).sum()
    if log_prior is None:
        return information
    return information + (marginal * log_prior).sum() - (log_prior.exp() * log_prior).sum()


