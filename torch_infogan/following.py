"""Finding the discriminator's forward on the generated batch: the bookkeeping behind ``InfoRegularizer.loss``.

``InfoRegularizer.sample()`` opens a ``Sample`` for its latent (the latest few stay open). Until the next
``sample()``, a module forward hook follows it: outside the discriminator, the output of any module that
takes the latent, or a tensor already followed, is followed too; the newest one is G's output. The hook is
the process's until the first ``loss()`` names G, then one on G's module alone.

The discriminator's pre-hook classifies each input, for each open sample:

- the generated batch: a followed tensor or the same memory read the same way (``fake.detach()``,
  ``fake.data``, a reshaping view of contiguous memory; not a transposed view);
- computed from the generated batch: otherwise, the input's autograd graph reaches the latent (an
  augmented copy, penalty interpolates, a mix); its graph's nodes are kept to tell descendants apart;
- unrelated: real images, or anything detached before being transformed.

The tap copies the tapped layer's output for the candidates. ``select`` picks the latest forward on the
generated batch if there is one (two different generated batches raise), otherwise the one candidate not
computed from another candidate (two such raise). A forward that would change a choice already made
raises. docs/architecture.md tells the same with its reasons.
"""

from __future__ import annotations

import contextlib
import warnings
import weakref
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn.modules.module import register_module_forward_hook
from torch.optim.optimizer import register_optimizer_step_post_hook

from torch_infogan.errors import InfoGANError

LIVE_SAMPLES = 4   # how many of the latest sample() calls loss() can still be given the codes of

GENERATED = "the generated batch"
DERIVED = "images computed from the generated batch"


@dataclass(eq=False)
class Forward:
    """One discriminator forward on images that came from a sample's latent."""

    kind: str                                 # GENERATED (G's output, or its detached twin) or DERIVED
    key: object                               # same key: the same images
    call: tuple | None = None                 # (args, kwargs) of the forward, kept for train_trunk=False
    nodes: frozenset = frozenset()            # autograd nodes behind a derived input (to spot descendants)
    features: torch.Tensor | None = None      # the tapped layer's output, copied


@dataclass(eq=False)
class Sample:
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
    chosen: Forward | None = None                # the forward the latest loss() used
    ignored: list = field(default_factory=list)   # why forwards that reached the latent were not candidates


class FeaturesTaken(Exception):
    """Raised by the tap once ``features()`` has its features: the discriminator's layers after the tap (its
    output head) are not run for them."""


class ForwardTracker:
    """The open samples and the discriminator's forwards on them; the regularizer's hooks call into it."""

    def __init__(self):
        self.samples: list[Sample] = []      # the latest sample() calls, newest last
        self.watching: Sample | None = None  # the sample whose generator outputs are being followed
        self.pending: list[Forward] = []     # forwards of the running discriminator call awaiting features
        self.depth = 0                       # > 0 while the discriminator runs
        self.untapped_depth = 0              # > 0 inside ``untapped()``
        self.capture: list | None = None     # set by ``capturing()``: tap every forward into this list

    def open(self, latent: torch.Tensor, codes: dict, leaf: torch.Tensor, watch: bool) -> Sample:
        """Open a sample for a new latent (the oldest open one closes); ``watch``: follow G's output for it."""
        sample = Sample(latent, codes, leaf=leaf, outputs=[weakref.ref(latent)])
        self.samples = [*self.samples[-(LIVE_SAMPLES - 1):], sample]
        self.watching = sample if watch else None
        # A new step: the discriminator is not running (its post-hook may have been skipped by an interrupt).
        self.depth, self.pending = 0, []
        return sample

    def forget(self) -> None:
        """The discriminator has stepped: the forwards recorded so far are stale."""
        for sample in self.samples:
            sample.forwards, sample.chosen = [], None

    def follow(self, module, args, kwargs, output, skip: nn.Module | None = None) -> None:
        """Follow ``output`` when the module took the newest sample's latent or a tensor already followed."""
        sample = self.watching
        if module is skip or not torch.is_tensor(output):
            return
        inputs = [a for a in (*args, *kwargs.values()) if torch.is_tensor(a)]
        if not any(_follows(a, sample) for a in inputs):
            return
        sample.outputs.append(weakref.ref(output))
        sample.newest = output.detach()  # keeps G's images alive when the user keeps only a detached twin
        if any(a is sample.latent or a._base is sample.latent for a in inputs):
            # Modules return inside out: the last one to take the latent is the outermost (G itself).
            sample.generator, sample.generated = weakref.ref(module), weakref.ref(output)

    def before_forward(self, args, kwargs, keep_call: bool) -> None:
        """Classify the discriminator's input for each open sample (its pre-hook); ``keep_call`` keeps the
        forward's arguments (for ``train_trunk=False``)."""
        self.depth += 1
        if self.depth > 1 or self.capture is not None or self.untapped_depth or not self.samples:
            return
        x = next((a for a in (*args, *kwargs.values()) if torch.is_tensor(a)), None)
        if x is None:
            return
        call = (args, kwargs) if keep_call else None
        nodes = None  # the input's autograd graph, walked at most once per forward
        for sample in self.samples:
            forward = self.classify(x, sample, call)
            if forward is None and x.grad_fn is not None:
                nodes = _graph_nodes(x.grad_fn) if nodes is None else nodes
                forward = self.classify_derived(x, sample, call, nodes)
            if forward is None:
                continue
            sample.forwards.append(forward)
            if sample.chosen is not None:
                self.check_unchanged(sample, forward)
            self.pending.append(forward)

    def after_forward(self) -> None:
        self.depth -= 1
        if self.depth == 0:
            self.pending = []

    def tap(self, output: torch.Tensor) -> None:
        """The tapped layer's output: features for the pending forwards, or for ``capturing()``."""
        if self.capture is not None:
            self.capture.append(output.flatten(1).to(torch.float32, copy=True))
            # Stop the discriminator's forward here: nothing reads its output. (torch.export traces the whole
            # forward instead: it does not follow an exception out of a hook.)
            if self.depth == 1 and not torch.compiler.is_exporting():
                raise FeaturesTaken
            return
        if not self.pending or self.depth != 1:
            return
        # Copy now: an in-place activation after this layer would overwrite ``output`` later.
        features = output.flatten(1).to(torch.float32, copy=True)
        for forward in self.pending:
            forward.features = features
        self.pending = []

    @staticmethod
    def classify(x: torch.Tensor, sample: Sample, call) -> Forward | None:
        """A forward on the sample's generated batch itself (G's output or memory it shares), or None."""
        for image in _alive(sample):
            if _same_images(x, image):
                return Forward(GENERATED, image.data_ptr(), call)
        return None

    @staticmethod
    def classify_derived(x: torch.Tensor, sample: Sample, call, nodes: set) -> Forward | None:
        """A forward on a tensor computed from the sample's latent (``nodes``: its autograd graph), or None."""
        n = sample.latent.shape[0]
        if not any(getattr(node, "variable", None) is sample.leaf for node in nodes):
            return None
        if x.shape[0] != n:
            sample.ignored.append(f"a forward on a batch of {x.shape[0]} computed from the latent of {n} "
                                  "(real and generated images concatenated?)")
            return None
        return Forward(DERIVED, x.grad_fn, call, frozenset(nodes))

    def check_unchanged(self, sample: Sample, forward: Forward) -> None:
        """A forward after ``loss()`` must not change which forward ``loss()`` uses: that would be a silent switch."""
        try:
            now = self.select(sample)
        except InfoGANError as exc:
            sample.forwards.remove(forward)
            raise InfoGANError(f"{exc} (this forward ran after loss() used another one)") from exc
        if now.key != sample.chosen.key:
            sample.forwards.remove(forward)
            raise InfoGANError(
                f"the discriminator ran on {GENERATED} after loss() had used its forward on {sample.chosen.kind}, "
                "so the MI term would depend on where loss() is called; call loss() after the forward on "
                "the generated images, or run the other forward inside `with info.untapped():`")

    def select(self, sample: Sample) -> Forward:
        """The forward whose features ``loss()`` uses (see the class docstring); raises where it cannot tell."""
        generated = [f for f in sample.forwards if f.kind == GENERATED]
        if generated:
            if len({f.key for f in generated}) > 1:
                raise InfoGANError("the discriminator ran on two different generated batches for one sample() "
                                   "(was G run twice on the latent?); run G once per sample()")
            return generated[-1]
        derived = [f for f in sample.forwards if f.kind == DERIVED]
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
        """Discriminator forwards inside this block are never candidates."""
        self.untapped_depth += 1
        try:
            yield
        finally:
            self.untapped_depth -= 1

    def sample_of(self, codes: dict, keys: list[str]) -> Sample:
        """The recent ``sample()`` whose codes these are: the dict it returned, or any dict holding the same
        values under the same keys (moved to another device or rebuilt); the newest such sample."""
        sample = next((s for s in reversed(self.samples) if s.codes is codes), None)
        if sample is not None:
            return sample
        if not isinstance(codes, dict) or set(codes) != set(keys):
            raise InfoGANError(f"loss() takes the dict of codes of a recent sample(), with the keys "
                               f"{', '.join(keys)}; got {type(codes).__name__} "
                               f"{', '.join(map(str, codes)) if isinstance(codes, dict) else ''}".rstrip())
        for s in reversed(self.samples):
            if all(torch.is_tensor(codes[key]) and codes[key].shape == value.shape
                   and torch.equal(codes[key].to(value.device), value) for key, value in s.codes.items()):
                return s
        sizes = {tuple(codes[key].shape) if torch.is_tensor(codes[key]) else type(codes[key]).__name__
                 for key in keys}
        raise InfoGANError("loss() takes the codes of a recent sample(), whole (every row, in order): these "
                           f"values (shapes {', '.join(map(str, sorted(sizes, key=str)))}) match none of the latest "
                           f"{len(self.samples)} samples (draw() does not prepare a loss); sample again and "
                           "generate from that latent")

    @contextlib.contextmanager
    def capturing(self):
        """Every tapped output inside this block goes into the list it yields (``features()``)."""
        captured: list[torch.Tensor] = []
        self.capture = captured
        try:
            yield captured
        finally:
            self.capture = None


class ForwardHooks:
    """The hooks that feed a regularizer's ``ForwardTracker`` (``owner._tracker``), and where they live.

    On the discriminator: a pre-hook and a hook around its forward, and a hook on the tapped layer (the owner's
    methods, so that a copied discriminator's hooks reach the copied regularizer). Following G's output: the
    process's module forward hook until ``move_onto(G)`` (the first ``loss()`` that finds G), then a hook on
    G's module alone, so that other modules of the process run without it. The process's optimizer step hook,
    because fused optimizers step parameters without bumping their version counters and nothing else tells
    that the discriminator has stepped: its forwards are then forgotten, and a learned prior's logits are
    checked to be stepped by another optimizer (``check_prior_step``).

    The process has one of each hook however many regularizers there are (``_sync_process_hooks``: registered
    while one needs it, removed by the plug-in's own calls once none does); they reach the live
    ``ForwardHooks`` through weak references, so a discriminator dropped without ``remove()`` does not stay
    alive in them. Both run eagerly under torch.compile (a graph break at each module while the module hook is
    registered, that is until the first ``loss()``): Dynamo never traces a weak reference that garbage
    collection could clear between tracing and building its guards, and a collection never changes the hook
    dictionaries it guards."""

    def __init__(self, owner, discriminator: nn.Module, layer: nn.Module):
        self.owner = owner  # held strongly, as the discriminator's hooks hold it: an unpickled one keeps it
        self.local = [discriminator.register_forward_pre_hook(owner._before_forward, with_kwargs=True),
                      discriminator.register_forward_hook(owner._after_forward, always_call=True),
                      layer.register_forward_hook(owner._tap)]
        self.d_steps, self.prior_stepped, self.prior_warned = 0, False, False
        self._join_process()

    def _join_process(self) -> None:
        _LIVE.add(self)
        self.generator_hook = None
        _THROUGH_PROCESS[id(self)] = weakref.ref(self)
        weakref.finalize(self, _THROUGH_PROCESS.pop, id(self), None)
        _sync_process_hooks()

    @property
    def on_generator(self) -> bool:
        return self.generator_hook is not None

    def move_onto(self, generator: nn.Module) -> None:
        """Follow G's output with a hook on G's module instead of the process's module hook."""
        if not self.on_generator:
            _THROUGH_PROCESS.pop(id(self), None)
            _sync_process_hooks()
            ref = weakref.ref(self)

            def watch(module, args, kwargs, output):
                hooks = ref()
                if hooks is not None:
                    hooks.watch(module, args, kwargs, output)

            self.generator_hook = generator.register_forward_hook(watch, with_kwargs=True)

    def remove(self) -> None:
        for handle in self.local:
            handle.remove()
        if self.generator_hook is not None:
            self.generator_hook.remove()
        _THROUGH_PROCESS.pop(id(self), None)
        _LIVE.discard(self)
        _sync_process_hooks()

    def __getstate__(self):
        return {"owner": self.owner, "local": self.local, "steps": (self.d_steps, self.prior_stepped,
                                                                      self.prior_warned)}

    def __setstate__(self, state):
        self.owner, self.local = state["owner"], state["local"]
        self.d_steps, self.prior_stepped, self.prior_warned = state["steps"]
        self._join_process()

    @property
    def tracker(self) -> "ForwardTracker":
        return self.owner._tracker

    def watch(self, module, args, kwargs, output) -> None:
        """Follow a module's output when a sample is being watched and the discriminator is not running."""
        tracker = self.tracker
        if tracker is None or tracker.watching is None or tracker.depth:
            return  # the common case, cheap and traceable under torch.compile
        self.follow(module, args, kwargs, output)

    @torch.compiler.disable
    def follow(self, module, args, kwargs, output) -> None:
        owner = self.owner
        owner._tracker.follow(module, args, kwargs, output, skip=owner.q)

    def after_optimizer_step(self, optimizer) -> None:
        """Once an optimizer has stepped the discriminator's parameters, its earlier forwards are forgotten."""
        owner = self.owner
        if owner.discriminator is None:
            return
        stepped = {id(p) for group in optimizer.param_groups for p in group["params"]}
        priors = {id(p) for p in owner.prior_parameters()}
        self.prior_stepped |= bool(priors & stepped)
        if stepped & {id(p) for p in owner.discriminator.parameters()}:
            owner._tracker.forget()
            if priors and not self.prior_warned:
                self.check_prior_step(bool(priors & stepped))

    def check_prior_step(self, held_by_d: bool) -> None:
        """A learned prior's logits must be stepped by the generator's optimizer: warn when the discriminator's
        optimizer holds them, or when it has stepped twice and no optimizer has stepped them."""
        self.d_steps += 1
        if held_by_d or (self.d_steps >= 2 and not self.prior_stepped):
            self.prior_warned = True
            warnings.warn("the discriminator's optimizer holds the learned prior's logits (info.prior_parameters()); "
                          "they belong to the generator's optimizer alone" if held_by_d else
                          "no optimizer has stepped the learned prior's logits: add info.prior_parameters() to the "
                          "generator's optimizer, or the prior stays uniform", stacklevel=4)


# The process-wide hooks and what they reach (see ``ForwardHooks``).
_LIVE: "weakref.WeakSet[ForwardHooks]" = weakref.WeakSet()  # every ForwardHooks not removed
_THROUGH_PROCESS: dict[int, weakref.ref] = {}                # those following G through the process's module hook
_module_handle = None                                        # the process's module forward hook, while needed
_optimizer_handle = None                                     # the process's optimizer step hook, while needed


def _sync_process_hooks() -> None:
    """Register the process's hooks while a regularizer needs them, and remove them once none does. Called from
    ``attach()``, ``move_onto()`` and ``remove()`` alone: a collection only drops its regularizer from
    ``_THROUGH_PROCESS``, so that the hook dictionaries Dynamo guards never change while it compiles."""
    global _module_handle, _optimizer_handle
    if _THROUGH_PROCESS and _module_handle is None:
        _module_handle = register_module_forward_hook(_watch_any_module, with_kwargs=True)
    elif not _THROUGH_PROCESS and _module_handle is not None:
        _module_handle.remove()
        _module_handle = None
    if _LIVE and _optimizer_handle is None:
        _optimizer_handle = register_optimizer_step_post_hook(_after_any_optimizer_step)
    elif not _LIVE and _optimizer_handle is not None:
        _optimizer_handle.remove()
        _optimizer_handle = None


@torch.compiler.disable
def _watch_any_module(module, args, kwargs, output) -> None:
    for ref in list(_THROUGH_PROCESS.values()):
        hooks = ref()
        if hooks is not None:
            hooks.watch(module, args, kwargs, output)


@torch.compiler.disable
def _after_any_optimizer_step(optimizer, args, kwargs) -> None:
    for hooks in list(_LIVE):
        hooks.after_optimizer_step(optimizer)


def trunk_free_features(tracker: ForwardTracker, discriminator: nn.Module, args: tuple, kwargs: dict) -> torch.Tensor:
    """The tapped features of ``discriminator(*args, **kwargs)`` re-run with its parameters detached and its buffers
    copied: how ``train_trunk=False`` keeps the trunk out of a term (gradients still reach the inputs)."""
    state = {name: p.detach() for name, p in discriminator.named_parameters()}
    state.update({name: b.clone() for name, b in discriminator.named_buffers()})
    return tapped_output(tracker, lambda: torch.func.functional_call(discriminator, state, args, kwargs))


def tapped_output(tracker: ForwardTracker, run) -> torch.Tensor | None:
    """The tapped layer's output (flattened, float32) during ``run()``, a discriminator forward that stops at the
    tap; None when the layer did not run."""
    with tracker.capturing() as captured:
        try:
            run()
        except FeaturesTaken:
            pass
    return captured[0] if captured else None


def made_from(forward: Forward, output: torch.Tensor | None) -> bool:
    """Whether the discriminator's input in ``forward`` is ``output`` (its memory) or was computed from it."""
    if output is None:
        return False
    if forward.kind == GENERATED:
        return forward.key == output.data_ptr()
    return output.grad_fn is not None and output.grad_fn in forward.nodes


def _follows(x: torch.Tensor, sample: Sample) -> bool:
    """Whether ``x`` is (a view of) the sample's latent or of a module output computed from it."""
    for ref in sample.outputs:
        t = ref()
        if t is not None and (x is t or x._base is t):
            return True
    return False


def _alive(sample: Sample) -> list[torch.Tensor]:
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
