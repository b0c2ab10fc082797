"""InfoRegularizer: the InfoGAN mutual-information term, attachable to any discriminator."""

from __future__ import annotations

import contextlib
import warnings
import weakref
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Sequence

import torch
from torch import nn
from torch.nn.modules.module import register_module_forward_hook
from torch.optim.optimizer import register_optimizer_step_post_hook

from torch_infogan.codes import Categorical, Code, code_keys, format_codes, parse_codes, split_params
from torch_infogan.errors import InfoGANError
from torch_infogan.qhead import QHead

_LIVE_SAMPLES = 4   # how many of the latest sample() calls loss() can still be given the codes of

_GENERATED = "the generated batch"
_DERIVED = "images computed from the generated batch"


@dataclass(eq=False)
class _Forward:
    """One discriminator forward on images that came from a sample's latent."""

    kind: str                                 # _GENERATED (G's output, or its detached twin) or _DERIVED
    key: object                               # same key: the same images
    call: tuple | None = None                 # (args, kwargs) of the forward, kept for train_trunk=False
    nodes: frozenset = frozenset()            # autograd nodes behind a derived input (to spot descendants)
    features: torch.Tensor | None = None      # the tapped layer's output, copied


@dataclass(eq=False)
class _Sample:
    """The bookkeeping of one ``sample()``: its latent, what G made of it, and D's forwards on that."""

    latent: torch.Tensor
    codes: dict
    leaf: torch.Tensor | None = None              # the leaf tensor behind the latent (the latent itself, unless
                                                  # a learned prior's logits make it a computed tensor)
    outputs: list = field(default_factory=list)   # weak references to module outputs computed from the latent
    generator: weakref.ref | None = None          # the outermost module that took the latent itself (G)
    generated: weakref.ref | None = None          # its output
    newest: torch.Tensor | None = None            # detached alias of the newest such output (G's images)
    forwards: list = field(default_factory=list)
    chosen: _Forward | None = None                # the forward the latest loss() used
    ignored: list = field(default_factory=list)   # why forwards that reached the latent were not candidates


class _FeaturesTaken(Exception):
    """Raised by the tap once ``features()`` has its features: the discriminator's layers after the tap (its
    output head) are not run for them."""


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
        self._samples: list[_Sample] = []     # the latest sample() calls, newest last
        self._watching: _Sample | None = None  # the sample whose generator outputs are being followed
        self._pending: list[_Forward] = []     # forwards of the running discriminator call awaiting features
        self._depth = 0                        # > 0 while the discriminator runs
        self._untapped = 0                     # > 0 inside ``untapped()``
        self._capture: list | None = None      # set by ``features()``: tap every forward into this list
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
        state.update(_samples=[], _watching=None, _pending=[], _depth=0, _untapped=0,
                     _capture=None, _bound_tensors=None, _fitted_bound_tensors=None, _global_handles=[],
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

        self._module_hook = register_module_forward_hook(_watcher(ref), with_kwargs=True)
        return [register_optimizer_step_post_hook(after_optimizer_step), self._module_hook]

    def _move_onto(self, generator: nn.Module | None) -> None:
        """Follow G's output with a hook on G's module instead of the global module hook (once ``loss()`` has used
        a forward on G's output or on a tensor computed from it, G being the outermost module given the latent)."""
        if generator is None or self._module_hook not in self._global_handles:
            return
        self._global_handles.remove(self._module_hook)
        self._module_hook.remove()
        self._module_hook = generator.register_forward_hook(_watcher(weakref.ref(self)), with_kwargs=True)

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

    # -- following the generated batch ---------------------------------------------------------
    # The hooks are bookkeeping on Python objects: under torch.compile they run eagerly (a graph break),
    # never traced.
    @torch.compiler.disable
    def _follow(self, module, args, kwargs, output) -> None:
        """Follow ``output`` when the module took the newest sample's latent or a tensor already followed."""
        sample = self._watching
        if module is self.q or not torch.is_tensor(output):
            return
        inputs = [a for a in (*args, *kwargs.values()) if torch.is_tensor(a)]
        if not any(_follows(a, sample) for a in inputs):
            return
        sample.outputs.append(weakref.ref(output))
        sample.newest = output.detach()  # keeps G's images alive when the user keeps only a detached twin
        if any(a is sample.latent or a._base is sample.latent for a in inputs):
            # Modules return inside out: the last one to take the latent is the outermost (G itself).
            sample.generator, sample.generated = weakref.ref(module), weakref.ref(output)

    # -- discriminator hooks -------------------------------------------------------------------
    @torch.compiler.disable
    def _before_forward(self, module, args, kwargs):
        self._depth += 1
        if self._depth > 1 or self._capture is not None or self._untapped or not self._samples:
            return
        x = next((a for a in (*args, *kwargs.values()) if torch.is_tensor(a)), None)
        if x is None:
            return
        call = None if self.train_trunk else (args, kwargs)
        nodes = None  # the input's autograd graph, walked at most once per forward
        for sample in self._samples:
            forward = self._classify(x, sample, call)
            if forward is None and x.grad_fn is not None:
                nodes = _graph_nodes(x.grad_fn) if nodes is None else nodes
                forward = self._classify_derived(x, sample, call, nodes)
            if forward is None:
                continue
            sample.forwards.append(forward)
            if sample.chosen is not None:
                self._check_unchanged(sample, forward)
            self._pending.append(forward)

    @torch.compiler.disable
    def _after_forward(self, module, args, output):
        self._depth -= 1
        if self._depth == 0:
            self._pending = []

    @torch.compiler.disable
    def _tap(self, module, args, output):
        if self._capture is not None:
            self._capture.append(output.flatten(1).to(torch.float32, copy=True))
            # Stop the discriminator's forward here: nothing reads its output. (torch.export traces the whole
            # forward instead: it does not follow an exception out of a hook.)
            if self._depth == 1 and not torch.compiler.is_exporting():
                raise _FeaturesTaken
            return
        if not self._pending or self._depth != 1:
            return
        # Copy now: an in-place activation after this layer would overwrite ``output`` later.
        features = output.flatten(1).to(torch.float32, copy=True)
        for forward in self._pending:
            forward.features = features
        self._pending = []

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
        for sample in self._samples:
            sample.forwards, sample.chosen = [], None
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

    @staticmethod
    def _classify(x: torch.Tensor, sample: _Sample, call) -> _Forward | None:
        """A forward on the sample's generated batch itself (G's output or memory it shares), or None."""
        for image in _alive(sample):
            if _same_images(x, image):
                return _Forward(_GENERATED, image.data_ptr(), call)
        return None

    @staticmethod
    def _classify_derived(x: torch.Tensor, sample: _Sample, call, nodes: set) -> _Forward | None:
        """A forward on a tensor computed from the sample's latent (``nodes``: its autograd graph), or None."""
        n = sample.latent.shape[0]
        if not any(getattr(node, "variable", None) is sample.leaf for node in nodes):
            return None
        if x.shape[0] != n:
            sample.ignored.append(f"a forward on a batch of {x.shape[0]} computed from the latent of {n} "
                                  "(real and generated images concatenated?)")
            return None
        return _Forward(_DERIVED, x.grad_fn, call, frozenset(nodes))

    def _check_unchanged(self, sample: _Sample, forward: _Forward) -> None:
        """A forward after ``loss()`` must not change which forward ``loss()`` uses: that would be a silent switch."""
        try:
            now = self._select(sample)
        except InfoGANError as exc:
            sample.forwards.remove(forward)
            raise InfoGANError(f"{exc} (this forward ran after loss() used another one)") from exc
        if now.key != sample.chosen.key:
            sample.forwards.remove(forward)
            raise InfoGANError(
                f"the discriminator ran on {_GENERATED} after loss() had used its forward on {sample.chosen.kind}, "
                "so the MI term would depend on where loss() is called; call loss() after the forward on "
                "the generated images, or run the other forward inside `with info.untapped():`")

    def _select(self, sample: _Sample) -> _Forward:
        """The forward whose features ``loss()`` uses (see the class docstring); raises where it cannot tell."""
        generated = [f for f in sample.forwards if f.kind == _GENERATED]
        if generated:
            if len({f.key for f in generated}) > 1:
                raise InfoGANError("the discriminator ran on two different generated batches for one sample() "
                                   "(was G run twice on the latent?); run G once per sample()")
            return generated[-1]
        derived = [f for f in sample.forwards if f.kind == _DERIVED]
        top = [f for f in derived if not any(o.key != f.key and o.key in f.nodes for o in derived)]
        if len({f.key for f in top}) > 1:
            raise InfoGANError(
                f"the discriminator ran on {len({f.key for f in top})} different tensors computed from the generated "
                "batch (two augmented copies?) and none is the generated batch itself, so loss() cannot tell "
                "which to use; run the extra forwards inside `with info.untapped():`")
        if not top:
            hint = f" ({'; '.join(dict.fromkeys(sample.ignored))})" if sample.ignored else ""
            raise InfoGANError(
                "loss() needs the discriminator's forward on the images generated from the latest sample()'s "
                f"latent (G(latent) or G(latent).detach()); none has run since{hint}. Run the discriminator "
                "on the generated images first; an augmentation of a detached batch hides it: augment the "
                "attached batch instead")
        return top[-1]

    @contextlib.contextmanager
    def untapped(self):
        """Discriminator forwards inside this block are never used by ``loss()`` (extra augmented copies, penalties)."""
        self._untapped += 1
        try:
            yield
        finally:
            self._untapped -= 1

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
        sample = _Sample(latent, codes, leaf=leaf, outputs=[weakref.ref(latent)])
        self._samples = [*self._samples[-(_LIVE_SAMPLES - 1):], sample]
        self._watching = sample if self.discriminator is not None else None
        # A new step: the discriminator is not running (its post-hook may have been skipped by an interrupt).
        self._depth, self._pending = 0, []
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
        sample = self._sample_of(codes)
        codes = sample.codes
        forward = self._select(sample)
        if forward.features is None:
            raise InfoGANError(f"the tapped layer {self.layer_name!r} did not run during the discriminator's "
                               "forward on the generated images; tap a layer that the forward uses")
        sample.chosen = forward
        if sample.generator is not None and _made_from(forward, sample.generated()):
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

    def _sample_of(self, codes: dict[str, torch.Tensor]) -> _Sample:
        """The recent ``sample()`` whose codes these are: the dict it returned, or any dict holding the same
        values under the same keys (moved to another device or rebuilt); the newest such sample."""
        sample = next((s for s in reversed(self._samples) if s.codes is codes), None)
        if sample is not None:
            return sample
        if not isinstance(codes, dict) or set(codes) != set(self.keys):
            raise InfoGANError(f"loss() takes the dict of codes of a recent sample(), with the keys "
                               f"{', '.join(self.keys)}; got {type(codes).__name__} "
                               f"{', '.join(map(str, codes)) if isinstance(codes, dict) else ''}".rstrip())
        for s in reversed(self._samples):
            if all(torch.is_tensor(codes[key]) and codes[key].shape == value.shape
                   and torch.equal(codes[key].to(value.device), value) for key, value in s.codes.items()):
                return s
        sizes = {tuple(codes[key].shape) if torch.is_tensor(codes[key]) else type(codes[key]).__name__
                 for key in self.keys}
        raise InfoGANError("loss() takes the codes of a recent sample(), whole (every row, in order): these "
                           f"values (shapes {', '.join(map(str, sorted(sizes, key=str)))}) match none of the latest "
                           f"{len(self._samples)} samples (draw() does not prepare a loss); sample again and "
                           "generate from that latent")

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
        with self.untapped():
            features = self.features(images) if self.train_trunk else self._trunk_free_features((images,), {})
        with torch.autocast(device_type=images.device.type, enabled=False):
            params = split_params(self.codes, self.q(features.float()))
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
        with self.untapped():
            features = self.features(images) if self.train_trunk else self._trunk_free_features((images,), {})
        with torch.autocast(device_type=images.device.type, enabled=False):
            params = split_params(self.codes, self.q(features.float()))
        return self.codes[i].weight * self.codes[i].nll(params[i], labels.to(params[i].device).long()).mean()

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
        with self._capturing() as captured:
            try:
                torch.func.functional_call(disc, state, args, kwargs)
            except _FeaturesTaken:
                pass
        return captured[0]

    @contextlib.contextmanager
    def _capturing(self):
        captured: list[torch.Tensor] = []
        self._capture = captured
        try:
            yield captured
        finally:
            self._capture = None

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
        with self._capturing() as captured:
            try:
                disc(images)
            except _FeaturesTaken:
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


class _SkipsHeads:
    """Mixed into a bare ``nn.Sequential`` that holds Q heads: iteration, length and indexing (and so the
    forward) leave the heads out, as if they were not there."""

    def _layers(self) -> list:
        return [(name, m) for name, m in self._modules.items() if name not in self._info_heads]

    def __iter__(self):
        return iter([m for _, m in self._layers()])

    def __len__(self):
        return len(self._layers())

    def __getitem__(self, idx):
        if isinstance(idx, slice):
            return type(self).__mro__[2](OrderedDict(self._layers()[idx]))
        return self._layers()[idx][1]

    def __reduce_ex__(self, protocol):
        # The class is made at run time, so pickle cannot find it by name: rebuild it from the Sequential class
        # it extends (``torch.save(netD)``, ``copy.deepcopy``).
        return _with_heads_instance, (type(self).__mro__[2],), self.__getstate__()


_WITH_HEADS: dict[type, type] = {}  # one class per Sequential class, made on first use


def _with_heads_class(base: type) -> type:
    """The subclass of the ``nn.Sequential`` class ``base`` whose iteration skips Q heads: ``<Base>WithInfoHeads``."""
    if base not in _WITH_HEADS:
        _WITH_HEADS[base] = type(f"{base.__name__}WithInfoHeads", (_SkipsHeads, base),
                                 {"__module__": __name__, "__doc__": _SkipsHeads.__doc__})
    return _WITH_HEADS[base]


def _with_heads_instance(base: type) -> nn.Module:
    """An empty instance of ``_with_heads_class(base)`` for unpickling (its state is set afterwards)."""
    instance = base.__new__(base)
    instance.__class__ = _with_heads_class(base)
    return instance


def add_head(discriminator: nn.Module, name: str, head: nn.Module) -> None:
    """Register ``head`` as the submodule ``name`` of ``discriminator``, so its optimizer, ``state_dict()`` and
    ``.to()`` cover it; a bare ``nn.Sequential`` keeps its forward: as ``torch.nn.utils.parametrize`` does, the
    instance gets a subclass of its class (``SequentialWithInfoHeads``) whose iteration skips the head."""
    if isinstance(discriminator, nn.Sequential):
        if not isinstance(discriminator, _SkipsHeads):
            discriminator.__class__ = _with_heads_class(type(discriminator))
            discriminator._info_heads = set()
        discriminator._info_heads.add(name)
    discriminator.add_module(name, head)


def remove_head(discriminator: nn.Module, name: str) -> None:
    """Undo ``add_head``: the last head removed gives the instance its own class back."""
    delattr(discriminator, name)
    if isinstance(discriminator, _SkipsHeads):
        discriminator._info_heads.discard(name)
        if not discriminator._info_heads:
            discriminator.__class__ = type(discriminator).__mro__[2]
            del discriminator._info_heads


def _watcher(ref: weakref.ref):
    """The module forward hook that follows the newest sample's latent, for the regularizer ``ref()``."""

    def watch(module, args, kwargs, output):
        target = ref()
        if target is None or target._watching is None or target._depth:
            return None  # the common case, cheap and traceable under torch.compile
        target._follow(module, args, kwargs, output)
        return None

    return watch


def _made_from(forward: _Forward, output: torch.Tensor | None) -> bool:
    """Whether the discriminator's input in ``forward`` is ``output`` (its memory) or was computed from it."""
    if output is None:
        return False
    if forward.kind == _GENERATED:
        return forward.key == output.data_ptr()
    return output.grad_fn is not None and output.grad_fn in forward.nodes


def _follows(x: torch.Tensor, sample: _Sample) -> bool:
    """Whether ``x`` is (a view of) the sample's latent or of a module output computed from it."""
    for ref in sample.outputs:
        t = ref()
        if t is not None and (x is t or x._base is t):
            return True
    return False


def _alive(sample: _Sample) -> list[torch.Tensor]:
    """The sample's generated images still alive: module outputs computed from the latent, newest first."""
    out = [sample.newest] if sample.newest is not None else []
    out += [t for t in (ref() for ref in reversed(sample.outputs[1:])) if t is not None]
    return out


def _same_images(x: torch.Tensor, image: torch.Tensor) -> bool:
    """``x`` is ``image`` or the same memory read the same way (``detach()``, ``.data``, a reshaping view)."""
    if x is image:
        return True
    if (x.data_ptr(), x.numel(), x.dtype, x.device, x.shape[0]) != \
            (image.data_ptr(), image.numel(), image.dtype, image.device, image.shape[0]):
        return False
    same_layout = x.shape == image.shape and x.stride() == image.stride()
    return same_layout or (x.is_contiguous() and image.is_contiguous())


def _graph_nodes(root) -> set:
    """Every autograd node behind ``root``."""
    seen, stack = set(), [root]
    while stack:
        fn = stack.pop()
        if fn is None or fn in seen:
            continue
        seen.add(fn)
        stack.extend(next_fn for next_fn, _ in fn.next_functions)
    return seen
