"""What the plug-in's bookkeeping costs per training step: time spent in its hooks, beside the step's time.

    python benchmarks/tap_overhead.py [--device auto] [--batch-size 128] [--steps 30] [--rounds 3]

Runs the trainer's step (the paper's MNIST networks, alternating updates, float32) and, in the same
process, measures (a) the wall time of a step, (b) the time spent inside the regularizer's hooks and
``sample()``: following G's output (``_follow``, called when a module outside D takes a followed
tensor), classifying each discriminator input, copying the tapped features, the optimizer-step hook;
and (c) the step with the global module hook removed (the generated batch is then found through the
autograd graph), which shows what that hook costs in module dispatch beyond its own body.
"""

from __future__ import annotations

import argparse
import platform
import time
from contextlib import contextmanager

import torch

from torch_infogan.data import load_data
from torch_infogan.regularizer import InfoRegularizer
from torch_infogan.config import preset_config
from torch_infogan.runtime import resolve_device
from torch_infogan.trainer import Trainer

from throughput import measure  # the sibling benchmark's timing loop (this folder is on sys.path)

HOOKS = ("_follow", "_before_forward", "_after_forward", "_tap", "_after_optimizer_step", "sample", "loss")


class HookTimer:
    """Wraps the regularizer's hook methods (before any attach, so registered hooks are wrapped too) with
    timers that add into ``totals`` (seconds) while ``on`` is set."""

    def __init__(self):
        self.on = False
        self.totals: dict[str, float] = {}
        for name in HOOKS:
            setattr(InfoRegularizer, name, self._wrap(name, getattr(InfoRegularizer, name)))

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
    plain_step, hooked, no_follow = float("inf"), {}, float("inf")
    for _ in range(args.rounds):  # interleaved rounds, best of each: the machine is shared and noisy
        plain_step = min(plain_step, run(trainer, args.steps, device))
        with timer.timing() as totals:
            run(trainer, args.steps, device)
        per_step = {k: v / (args.steps + 3) for k, v in totals.items()}
        if not hooked or sum(per_step.values()) < sum(hooked.values()):
            hooked = per_step
        info = trainer.info
        info._global_handles[1].remove()  # the module hook that follows G's output
        try:
            no_follow = min(no_follow, run(trainer, args.steps, device))
        finally:
            info._global_handles[0].remove()
            info._global_handles = info._global_hooks()
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
    print(f"{'training step, no global module hook':<44}{no_follow * 1e3:>10.2f}{no_follow / plain_step:>9.1%}")


if __name__ == "__main__":
    main()
