"""Attaching Q to a discriminator: finding the tapped layer, sizing Q from it, and registering Q heads as a submodule of it, so its optimizer, ``state_dict()`` and ``.to()``
cover Q; a bare ``nn.Sequential`` gets, as ``torch.nn.utils.parametrize`` does, a subclass of its class whose
iteration skips the heads (its forward is unchanged), with its own name and pickling."""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from torch_infogan.errors import InfoGANError


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
    """Register ``head`` as the submodule ``name`` of ``discriminator`` (moved to the device of its parameters),
    so its optimizer, ``state_dict()`` and ``.to()`` cover it; a bare ``nn.Sequential`` keeps its forward: as
    ``torch.nn.utils.parametrize`` does, the instance gets a subclass of its class (``SequentialWithInfoHeads``)
    whose iteration skips the head. A discriminator that already has an attribute ``name`` is refused."""
    if hasattr(discriminator, name):
        raise InfoGANError(f"the discriminator already has an attribute {name!r} (attached to another "
                           "regularizer?)")
    param = next(discriminator.parameters(), None)
    if param is not None:
        head.to(param.device)
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


def find_layer(discriminator: nn.Module, layer: str | nn.Module) -> tuple[nn.Module, str]:
    """The tapped layer, given as a submodule or by its name, and its name."""
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


def probe_width(discriminator: nn.Module, module: nn.Module, name: str, example) -> int:
    """The width of ``module``'s output per image, from one forward of ``example`` in eval mode without gradients
    (the discriminator, its running statistics included, is left as it was)."""
    widths: list[int] = []
    handle = module.register_forward_hook(lambda m, i, o: widths.append(o[0].numel() if o.dim() > 1 else 1))
    was_training = discriminator.training
    discriminator.eval()
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
