"""The non-finite guard of a training step (``on_nonfinite="skip"``): what a step changes is kept before it
changes, the totals each optimizer is about to step on are checked, and a bad step is undone."""

from __future__ import annotations

import copy

import torch
import torch.distributed as dist
from torch import nn


class StepGuard:
    """Keeps and restores what one step changes: G's and D's buffers (batch-norm statistics move in the forward),
    and, once D is about to step before G's total is known (alternating updates), D's parameters and optimizer
    state. ``world`` > 1: finiteness is agreed across processes."""

    def __init__(self, modules: list[nn.Module], d_params: list[torch.Tensor], opt_d: torch.optim.Optimizer,
                 world: int = 1):
        self.modules, self.d_params, self.opt_d, self.world = modules, d_params, opt_d, world
        self._buffers: list | None = None
        self._d_state = None

    def begin(self) -> None:
        """Keep the buffers, before the step's forwards."""
        self._buffers = [(b, b.clone()) for m in self.modules for b in m.buffers()]
        self._d_state = None

    def keep_d(self) -> None:
        """Keep D's parameters and optimizer state, before D steps."""
        self._d_state = ([p.detach().clone() for p in self.d_params], copy.deepcopy(self.opt_d.state_dict()))

    def all_finite(self, *totals: torch.Tensor) -> bool:
        """Whether the totals are finite on every process (one host sync)."""
        finite = torch.stack([torch.isfinite(t) for t in totals]).all().to(torch.int32)
        if self.world > 1:
            dist.all_reduce(finite, op=dist.ReduceOp.MIN)
        return bool(finite)

    def undo(self, *optimizers: torch.optim.Optimizer) -> None:
        """Put back what the step changed, and drop the gradients it left in ``optimizers``."""
        for opt in optimizers:
            opt.zero_grad(set_to_none=True)
        with torch.no_grad():
            for buffer, saved in self._buffers or []:
                buffer.copy_(saved)
            if self._d_state is not None:
                params, state = self._d_state
                for p, saved in zip(self.d_params, params):
                    p.copy_(saved)
                self.opt_d.load_state_dict(state)


def parameters_finite(*modules: nn.Module) -> bool:
    """Whether every floating-point parameter and buffer of ``modules`` is finite (one host sync)."""
    tensors = [t for m in modules for t in m.state_dict().values() if t.is_floating_point()]
    return bool(torch.stack([torch.isfinite(t).all() for t in tensors]).all())
