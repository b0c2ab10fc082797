"""What the plug-in's bookkeeping costs per training step, and what it costs other models in the process.

    python benchmarks/tap_overhead.py [--device auto] [--batch-size 128] [--steps 30] [--rounds 3]

Runs the trainer's step (the paper's MNIST networks, alternating updates, float32) and, in the same
process, measures (a) the wall time of a step, (b) the time spent inside the regularizer's hooks and
``sample()``: following G's output (``ForwardHooks.follow``, called when G's module runs on a followed tensor),
classifying each discriminator input, copying the tapped features, the optimizer-step hook; and (c) the
step of another model in the same process (a stack of small layers, where module dispatch shows): with
the plug-in attached and stepped (G's output then followed by a hook on G alone, the process's module hook
gone), with a module hook of the regularizer's own registered globally, as the plug-in once held
for its whole attachment, and with no plug-in hook anywhere.
"""

from __future__ import annotations

import argparse
import platform
import time
from contextlib import contextmanager

import torch
from torch import nn
from torch.nn.modules.module import register_module_forward_hook

from torch_infogan.data import load_data
from torch_infogan.following import ForwardHooks
from torch_infogan.regularizer import InfoRegularizer
from torch_infogan.config import preset_config
from torch_infogan.runtime import resolve_device
from torch_infogan.trainer import Trainer

from throughput import measure  # the sibling benchmark's timing loop (this folder is on sys.path)

#: The timed methods: the hooks' calls (on ``ForwardHooks`` and on the regularizer), and sample() and loss().
HOOKS = {"follow": ForwardHooks, "after_optimizer_step": ForwardHooks, "_before_forward": InfoRegularizer,
         "_after_forward": InfoRegularizer, "_tap": InfoRegularizer, "sample": InfoRegularizer,
         "loss": InfoRegularizer}


class HookTimer:
    """Wraps the regularizer's hook methods (before any attach, so registered hooks are wrapped too) with
    timers that add into ``totals`` (seconds) while ``on`` is set."""

    def __init__(self):
        self.on = False
        self.totals: dict[str, float] = {}
        for name, owner in HOOKS.items():
            setattr(owner, name, self._wrap(name, getattr(owner, name)))

    def _wrap(self, name, fn):
        def timed(*args, **kwargs):
            if not self.on:
                return fn(*args, **kwargs)
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.totals[name] = self.totals.get(name, 0.0) + time.perf_counter() - start
        return timed

    @contextmanager
    def timing(self):
        self.totals, self.on = {}, True
        try:
            yield self.totals
        finally:
            self.on = False


def run(trainer: Trainer, steps: int, device: torch.device) -> float:
    """Seconds per training step (after three warm-up steps)."""
    batch = trainer.config.batch_size
    return batch / measure(trainer.step, steps, device, batch)


def other_model_step(model: nn.Module, x: torch.Tensor, steps: int) -> float:
    """Seconds per forward and backward of an unrelated model (best of the steps after one warm-up)."""
    best = float("inf")
    for i in range(steps + 1):
        start = time.perf_counter()
        model(x).sum().backward()
        if i:
            best = min(best, time.perf_counter() - start)
    return best


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    device = resolve_device(args.device)
    data = load_data()
    timer = HookTimer()
    trainer = Trainer(preset_config("paper-mnist", batch_size=args.batch_size, device=str(device)), data)
    other = nn.Sequential(*[layer for _ in range(40) for layer in (nn.Linear(32, 32), nn.ReLU())]).to(device)
    x = torch.randn(16, 32, device=device)
    plain_step, hooked = float("inf"), {}
    attached = global_hook = removed = float("inf")
    for _ in range(args.rounds):  # interleaved rounds, best of each: the machine is shared and noisy
        plain_step = min(plain_step, run(trainer, args.steps, device))
        with timer.timing() as totals:
            run(trainer, args.steps, device)
        per_step = {k: v / (args.steps + 3) for k, v in totals.items()}
        if not hooked or sum(per_step.values()) < sum(hooked.values()):
            hooked = per_step
        attached = min(attached, other_model_step(other, x, args.steps * 10))
        handle = register_module_forward_hook(trainer.info._hooks.watch, with_kwargs=True)
        try:  # the regularizer's own global module hook, held for the whole attachment in an earlier design
            global_hook = min(global_hook, other_model_step(other, x, args.steps * 10))
        finally:
            handle.remove()
        trainer.info._hooks.generator_hook.remove()  # no plug-in module hook anywhere, for the moment
        try:
            removed = min(removed, other_model_step(other, x, args.steps * 10))
        finally:
            trainer.info._hooks.generator_hook = None
            trainer.info._hooks.move_onto(trainer.generator)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else \
        f"{platform.processor() or 'cpu'}, {torch.get_num_threads()} threads"
    print(f"device: {device} ({name}); torch {torch.__version__}; batch {args.batch_size}; "
          f"best of {args.rounds} rounds of {args.steps} steps")
    print(f"{'what':<44}{'ms/step':>10}{'share':>9}")
    print(f"{'training step (all bookkeeping on)':<44}{plain_step * 1e3:>10.2f}{1:>9.1%}")
    for key in HOOKS:
        if key in hooked:
            note = "  (includes the MI term itself)" if key == "loss" else ""
            print(f"{'  in ' + key + note:<44}{hooked[key] * 1e3:>10.3f}{hooked[key] / plain_step:>9.2%}")
    bookkeeping = sum(v for k, v in hooked.items() if k != "loss")
    print(f"{'  hooks and sample() together':<44}{bookkeeping * 1e3:>10.3f}{bookkeeping / plain_step:>9.2%}")
    print(f"{'another model (80 small layers), no hook':<44}{removed * 1e3:>10.3f}{1:>9.1%}")
    print(f"{'  the plug-in attached and stepped':<44}{attached * 1e3:>10.3f}{attached / removed:>9.1%}")
    print(f"{'  with a global module hook (earlier design)':<44}{global_hook * 1e3:>10.3f}{global_hook / removed:>9.1%}")


if __name__ == "__main__":
    main()
