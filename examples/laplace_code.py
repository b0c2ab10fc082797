"""A latent code of your own, registered in your script, through the whole library.

Trains the reference DCGAN on the embedded digits with ``codes="cat:10,laplace:2"``, where ``laplace``
is the code defined below (the one in docs/api.md), then draws its traversals and evaluates it;
``--reload`` loads the checkpoint in a fresh process (this file registers the code on import).

    python examples/laplace_code.py --out runs/laplace --iterations 1500
    python examples/laplace_code.py --reload runs/laplace/checkpoint.safetensors
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import torch

from torch_infogan import Code, register_code


@register_code("laplace")
class Laplace(Code):
    """Continuous code with a Laplace(0, 1) prior per dimension; Q predicts its location."""

    def __init__(self, dim: int = 1, weight: float = 1.0):
        super().__init__(weight)
        self.dim = self.input_dim = self.param_dim = int(dim)

    def sample(self, n, generator=None, device=None):
        # the difference of two Exp(1) draws is Laplace(0, 1)
        e = torch.empty(2, n, self.dim, device=device).exponential_(generator=generator)
        return e[0] - e[1]

    def nll(self, q_params, value):
        return ((value.float() - q_params.float()).abs() + math.log(2)).sum(1)

    def entropy(self):
        return torch.tensor(self.dim * (1 + math.log(2)))

    def posterior(self, q_params):
        mean = q_params.float()
        return {"mean": mean, "std": torch.full_like(mean, math.sqrt(2))}

    @property
    def mean(self):
        return torch.zeros(self.dim)


def train_with_laplace(out: Path, iterations: int, seed: int = 0, **overrides) -> dict:
    """Train with the user code through the library; return the evaluation (accuracy of cat0, every bound)."""
    from torch_infogan.config import preset_config
    from torch_infogan.training import train

    config = preset_config("mnist", codes="cat:10,laplace:2", iterations=iterations, seed=seed, **overrides)
    result = train(config, out, overwrite=True)
    return result.evaluation


def reload(path: Path) -> None:
    """Load the checkpoint (possible because this module registered ``laplace``) and draw from it."""
    from torch_infogan import load_checkpoint

    ckpt = load_checkpoint(path)
    latent, codes = ckpt.info.draw(4)
    images = ckpt.generator(latent)
    print(f"loaded {path}: codes {ckpt.info.spec}, step {ckpt.step}, images {tuple(images.shape)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/laplace"))
    parser.add_argument("--iterations", type=int, default=1500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--limit", type=int, default=None, help="train on the first N digits only")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--reload", type=Path, default=None, help="only load this checkpoint")
    args = parser.parse_args()
    if args.reload is not None:
        reload(args.reload)
        return
    from torch_infogan.evaluation import format_table

    evaluation = train_with_laplace(args.out, args.iterations, args.seed, limit=args.limit,
                                    batch_size=args.batch_size)
    print(format_table(evaluation))
    print(f"pictures: {', '.join(sorted(p.name for p in args.out.glob('traversal_*.png')))}")


if __name__ == "__main__":
    main()
