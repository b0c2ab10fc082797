"""Draw the procedural shapes grid across its factors: per shape, one row each sweeping scale, orientation,
position x and position y (the other factors held in the middle).

    python examples/shapes_grid.py -o shapes_grid.png
"""

import argparse

import numpy as np
from torchvision.utils import save_image

from torch_infogan.data import FACTOR_SIZES, render


def grid_factors(columns: int = 8) -> np.ndarray:
    middle = [0, FACTOR_SIZES[1] - 1, 0, FACTOR_SIZES[3] // 2, FACTOR_SIZES[4] // 2]
    rows = []
    for shape in range(FACTOR_SIZES[0]):
        for factor in range(1, 5):
            values = np.linspace(0, FACTOR_SIZES[factor] - 1, columns).round().astype(int)
            if factor == 2:  # orientation: the first quarter turn and a bit, where hearts show it best
                values = np.arange(0, 2 * columns, 2)
            for value in values:
                f = list(middle)
                f[0], f[factor] = shape, value
                rows.append(f)
    return np.array(rows)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--out", default="shapes_grid.png")
    args = parser.parse_args()
    images = render(grid_factors()).float() / 255
    save_image(images, args.out, nrow=8, padding=2, pad_value=0.5)
    print(f"wrote {args.out}")
