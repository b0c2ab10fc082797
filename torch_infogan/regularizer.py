"""InfoRegularizer: the InfoGAN mutual-information term, attachable to any discriminator."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from torch_infogan.codes import Code, format_codes, parse_codes
from torch_infogan.errors import InfoGANError
from torch_infogan.qhead import QHead


class InfoRegularizer:
    """Adds InfoGAN's latent codes and Q head to an existing GAN.

    Two lines attach it::

        info = InfoRegularizer("cat:10,unif:2", noise_dim=62).attach(netD, layer="main.8", example=real[:2])
        latent, codes = info.sample(batch_size)      # feed ``latent`` to G; add ``info.loss(codes)`` to both losses

    ``loss(codes)`` uses the features that the tapped layer produced during the discriminator's latest
    forward on images generated from that ``latent`` (found through the autograd graph, so a forward on
    real images or on ``fake.detach()`` is never mistaken for it).

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
        self.keys = [f"{code.name}{i}" for i, code in enumerate(self.codes)]
        self.q: QHead | None = None
        self.discriminator: nn.Module | None = None
        self.layer_name: str | None = None
        self._handles: list = []
        self._latent: torch.Tensor | None = None
        self._codes: dict[str, torch.Tensor] | None = None
        self._mode = "idle"          # "idle", "generated" (tap this forward), "capture" (tap any forward)
        self._features: torch.Tensor | None = None
        self._input: torch.Tensor | None = None
        self._bounds: dict[str, float] | None = None
        self._bound_tensors: torch.Tensor | None = None

    def __getstate__(self):
        # Copies (``copy.deepcopy`` of an attached discriminator) leave the per-step tensors behind.
        state = dict(self.__dict__)
        for key in ("_latent", "_codes", "_features", "_input", "_bound_tensors"):
            state[key] = None
        state["_mode"] = "idle"
        return state

    # -- configuration -------------------------------------------------------------------------
    @property
    def spec(self) -> str:
        """The codes as a spec string (round-trips through ``parse_codes``)."""
        return format_codes(self.codes)

    @property
    def latent_dim(self) -> int:
        """Width of G's input: noise plus every code's input width."""
        return self.noise_dim + sum(code.input_dim for code in self.codes)

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
        ``state_dict()`` and ``.to()`` cover it. Returns ``self``.
        """
        if self.discriminator is not None:
            raise InfoGANError("this InfoRegularizer is already attached; call remove() first")
        if hasattr(discriminator, self.head_name):
            raise InfoGANError(f"the discriminator already has an attribute {self.head_name!r} "
                               "(attached to another InfoRegularizer?)")
        if isinstance(discriminator, nn.Sequential):
            raise InfoGANError("attach() cannot add Q to a bare nn.Sequential (its forward would run Q too); "
                               "wrap it: `class D(nn.Module)` holding the Sequential as `self.main`")
        module, name = self._find_layer(discriminator, layer)
        if in_features is None:
            if example is None:
                raise InfoGANError("attach() needs `example` (a batch of >= 2 real images) or `in_features`")
            in_features = self._probe_width(discriminator, module, example)
        self.q = QHead(in_features, self.param_dim, self.q_hidden, self.q_batchnorm, self.q_negative_slope)
        param = next(discriminator.parameters(), None)
        if param is not None:
            self.q.to(param.device)
        discriminator.add_module(self.head_name, self.q)
        self.discriminator = discriminator
        self.layer_name = name
        self._handles = [
            discriminator.register_forward_pre_hook(self._before_forward),
            module.register_forward_hook(self._tap),
        ]
        return self

    def remove(self) -> nn.Module:
        """Detach from the discriminator: hooks removed, Q unregistered. Returns the discriminator."""
        if self.discriminator is None:
            raise InfoGANError("this InfoRegularizer is not attached")
        for handle in self._handles:
            handle.remove()
        discriminator = self.discriminator
        delattr(discriminator, self.head_name)
        self._handles = []
        self.discriminator = None
        self._latent = self._codes = self._features = self._input = None
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

    def _probe_width(self, discriminator: nn.Module, module: nn.Module, example: torch.Tensor) -> int:
        widths: list[int] = []
        handle = module.register_forward_hook(lambda m, i, o: widths.append(o[0].numel() if o.dim() > 1 else 1))
        was_training = discriminator.training
        discriminator.eval()  # no running-statistics update: the discriminator is left exactly as it was
        try:
            with torch.no_grad():
                discriminator(example)
        finally:
            handle.remove()
            discriminator.train(was_training)
        if not widths:
            raise InfoGANError("the tapped layer did not run during the discriminator's forward on `example`")
        return widths[-1]

    # -- hooks ---------------------------------------------------------------------------------
    def _before_forward(self, module, args):
        if self._mode == "capture":
            return
        self._mode = "idle"
        if self._latent is None or not args or not torch.is_tensor(args[0]):
            return
        x = args[0]
        if x.shape[0] == self._latent.shape[0] and _reaches(x, self._latent):
            self._mode = "generated"
            self._input = x

    def _tap(self, module, args, output):
        if self._mode == "idle":
            return
        # Copy now: an in-place activation after this layer would overwrite ``output`` later.
        self._features = output.flatten(1).to(torch.float32, copy=True)
        if self._mode == "generated":
            self._mode = "idle"

    # -- sampling and the loss -----------------------------------------------------------------
    def _device(self) -> torch.device:
        if self.q is not None:
            return next(self.q.parameters()).device
        return torch.device("cpu")

    def sample(self, n: int, generator: torch.Generator | None = None, device=None
               ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Draw ``n`` latents ``[n, noise_dim + code inputs]`` for G and the codes in them (a dict, spec order).

        The latent requires grad so the discriminator's forward on ``G(latent)`` can be recognised; it
        adds no parameters to any optimizer.
        """
        if n < 1:
            raise InfoGANError(f"sample() needs n >= 1, got {n}")
        device = self._device() if device is None else torch.device(device)
        codes = {key: code.sample(n, generator=generator, device=device) for key, code in zip(self.keys, self.codes)}
        latent = self.latent_from(codes, generator=generator)
        latent.requires_grad_(True)
        self._latent, self._codes = latent, codes
        self._features = self._input = None
        return latent, codes

    def latent_from(self, codes: dict[str, torch.Tensor], noise: torch.Tensor | None = None,
                    generator: torch.Generator | None = None) -> torch.Tensor:
        """G's input for given code values (and noise, drawn from the prior when not given)."""
        first = codes[self.keys[0]]
        n, device = first.shape[0], first.device
        if noise is None:
            if self.noise == "uniform":
                noise = torch.rand(n, self.noise_dim, generator=generator, device=device) * 2 - 1
            else:
                noise = torch.randn(n, self.noise_dim, generator=generator, device=device)
        parts = [noise] + [code.encode(codes[key]) for key, code in zip(self.keys, self.codes)]
        return torch.cat(parts, dim=1)

    def loss(self, codes: dict[str, torch.Tensor]) -> torch.Tensor:
        """Weighted negative MI lower bound ``sum_i weight_i * (E[-log Q(c_i|x)] - H(c_i))`` (float32 scalar)."""
        if self.discriminator is None or self.q is None:
            raise InfoGANError("loss() needs an attached InfoRegularizer (call attach() first)")
        if self._codes is None or codes is not self._codes:
            raise InfoGANError("loss() takes the codes returned by the latest sample(); sample again and "
                               "generate from that latent")
        if self._features is None or self._input is None:
            raise InfoGANError(
                "loss() needs the discriminator's forward on G(latent) for the latest sample(), with gradients "
                "enabled and without .detach(); run the discriminator on the generated images first "
                "(a forward on real or detached images cannot be used)")
        features = self._features
        if not self.train_trunk:
            features = self._trunk_free_features(self._input)
        device_type = features.device.type
        with torch.autocast(device_type=device_type, enabled=False):
            q_params = self.q(features.float())
            nlls, entropies = self._split_nll(q_params, codes)
        weights = torch.tensor([code.weight for code in self.codes], device=nlls.device)
        bounds = entropies - nlls
        self._bound_tensors = bounds.detach()
        self._bounds = None
        return -(weights * bounds).sum()

    def _split_nll(self, q_params: torch.Tensor, codes: dict[str, torch.Tensor]):
        nlls, start = [], 0
        for key, code in zip(self.keys, self.codes):
            part = q_params[:, start:start + code.param_dim]
            nlls.append(code.nll(part, codes[key]).mean())
            start += code.param_dim
        entropies = torch.stack([code.entropy() for code in self.codes]).to(q_params.device)
        return torch.stack(nlls), entropies

    def _trunk_free_features(self, x: torch.Tensor) -> torch.Tensor:
        """Re-run the discriminator with detached parameters and copied buffers, tapping the layer."""
        disc = self.discriminator
        state = {name: p.detach() for name, p in disc.named_parameters()}
        state.update({name: b.clone() for name, b in disc.named_buffers()})
        self._mode = "capture"
        try:
            torch.func.functional_call(disc, state, (x,))
        finally:
            self._mode = "idle"
        return self._features

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

    def entropies(self) -> dict[str, float]:
        """H(c) of each code in nats, the ceiling of its MI bound."""
        return {key: float(code.entropy()) for key, code in zip(self.keys, self.codes)}

    # -- inference -----------------------------------------------------------------------------
    @torch.no_grad()
    def infer(self, images: torch.Tensor) -> dict[str, dict[str, torch.Tensor]]:
        """Q's posterior for each code on ``images`` (the discriminator runs in eval mode)."""
        q_params = self.q_params(images)
        out, start = {}, 0
        for key, code in zip(self.keys, self.codes):
            out[key] = code.posterior(q_params[:, start:start + code.param_dim])
            start += code.param_dim
        return out

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
        """The tapped layer's output for ``images``, flattened to ``[n, F]`` float32 (runs the discriminator)."""
        disc = self._attached()
        self._mode = "capture"
        try:
            disc(images)
            return self._features
        finally:
            self._mode = "idle"
            self._features = None

    def _attached(self) -> nn.Module:
        if self.discriminator is None or self.q is None:
            raise InfoGANError("this InfoRegularizer is not attached (call attach() first)")
        return self.discriminator


def _reaches(x: torch.Tensor, leaf: torch.Tensor) -> bool:
    """Whether ``leaf`` (a tensor that requires grad) is among the autograd inputs of ``x``."""
    if x is leaf:
        return True
    seen, stack = set(), [x.grad_fn]
    while stack:
        fn = stack.pop()
        if fn is None or fn in seen:
            continue
        seen.add(fn)
        if getattr(fn, "variable", None) is leaf:
            return True
        stack.extend(next_fn for next_fn, _ in fn.next_functions)
    return False
