"""Procedural dSprites: the factor grid and its indices, the rendered shapes' geometry, loading and the npz reader."""

import numpy as np
import pytest
import torch

from torch_infogan import InfoGANError
from torch_infogan.data import FACTOR_NAMES, FACTOR_SIZES, load_data
from torch_infogan.data.shapes import NUM_IMAGES, SHAPES, factor_values, factors_to_index, index_to_factors, render

SQUARE, ELLIPSE, HEART = range(3)
LARGEST, MIDDLE = FACTOR_SIZES[1] - 1, 15


def draw(*factors) -> torch.Tensor:
    """Render a list of factor-class tuples as ``uint8 [N, 64, 64]``."""
    return render(np.array(factors))[:, 0]


def centre_of_mass(images: torch.Tensor) -> torch.Tensor:
    """(row, column) centre of mass of each binary image ``[N, 64, 64]``."""
    weights = images.float()
    rows, cols = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")
    mass = weights.sum((1, 2))
    return torch.stack([(weights * rows).sum((1, 2)) / mass, (weights * cols).sum((1, 2)) / mass], 1)


def test_grid_is_dsprites_sized():
    assert NUM_IMAGES == 737_280 == np.prod(FACTOR_SIZES)
    assert FACTOR_NAMES == ("shape", "scale", "orientation", "pos_x", "pos_y") and FACTOR_SIZES == (3, 6, 40, 32, 32)
    assert SHAPES == ("square", "ellipse", "heart")


def test_index_and_factors_round_trip():
    index = np.concatenate([[0, NUM_IMAGES - 1], np.random.default_rng(0).integers(0, NUM_IMAGES, 1000)])
    factors = index_to_factors(index)
    assert factors.dtype == np.int64 and factors.shape == (len(index), 5)
    assert np.array_equal(factors_to_index(factors), index)
    assert factors[0].tolist() == [0, 0, 0, 0, 0] and factors[1].tolist() == [s - 1 for s in FACTOR_SIZES]
    shape, scale, orientation, pos_x, pos_y = factors.T
    assert np.array_equal(index, (((shape * 6 + scale) * 40 + orientation) * 32 + pos_x) * 32 + pos_y)


def test_pos_y_is_the_fastest_factor():
    assert index_to_factors([0, 1, 31, 32, 1024, 40960, 245760]).tolist() == [
        [0, 0, 0, 0, 0], [0, 0, 0, 0, 1], [0, 0, 0, 0, 31], [0, 0, 0, 1, 0],
        [0, 0, 1, 0, 0], [0, 1, 0, 0, 0], [1, 0, 0, 0, 0]]


def test_factor_values():
    values = factor_values([[2, 0, 20, 0, 31], [0, 5, 10, 31, 0]])
    assert np.allclose(values, [[2, 0.5, np.pi, 0, 1], [0, 1, np.pi / 2, 1, 0]])


@pytest.mark.parametrize("call, message", [
    (lambda: index_to_factors([0, NUM_IMAGES]), "image index out of range"),
    (lambda: index_to_factors([-1]), "image index out of range"),
    (lambda: index_to_factors([0.5]), "1-D integer array"),
    (lambda: factors_to_index([[3, 0, 0, 0, 0]]), "factor shape out of range"),
    (lambda: render([[0, 0, 40, 0, 0]]), "factor orientation out of range"),
    (lambda: render([[0, 0, 0, 0, -1]]), "factor pos_y out of range"),
    (lambda: render([[0, 0, 0, 0]]), r"integer array \[N, 5\]"),
    (lambda: factor_values([[0.0, 0, 0, 0, 0]]), r"integer array \[N, 5\]"),
])
def test_out_of_range_is_a_clear_error(call, message):
    with pytest.raises(InfoGANError, match=message):
        call()


def test_render_is_binary_uint8_and_deterministic():
    factors = index_to_factors(np.random.default_rng(1).choice(NUM_IMAGES, 300, replace=False))
    images = render(factors)
    assert images.shape == (300, 1, 64, 64) and images.dtype == torch.uint8
    assert set(images.unique().tolist()) == {0, 255} and bool((images.flatten(1).amax(1) == 255).all())
    assert torch.equal(images, render(factors)) and torch.equal(images[100:101], render(factors[100:101]))
    order = np.random.default_rng(2).permutation(300)
    assert torch.equal(images[order], render(factors[order])) and render(factors[:0]).shape == (0, 1, 64, 64)


def test_every_shape_stays_inside_the_frame():
    corners = [(0, 0), (0, 31), (31, 0), (31, 31)]
    images = draw(*[(s, LARGEST, o, x, y) for s in range(3) for o in range(40) for x, y in corners])
    border = torch.cat([images[:, 0], images[:, -1], images[:, :, 0], images[:, :, -1]], 1)
    assert not border.any() and bool(images.flatten(1).any(1).all())


def test_area_grows_with_scale():
    for shape in range(3):
        for orientation in (0, 7):
            area = draw(*[(shape, k, orientation, MIDDLE, MIDDLE) for k in range(6)]).bool().sum((1, 2))
            assert bool((area.diff() > 0).all()), (SHAPES[shape], orientation, area.tolist())
    largest = draw(*[(s, LARGEST, 0, MIDDLE, MIDDLE) for s in range(3)]).bool()
    assert largest[SQUARE].sum() == 400 and largest[SQUARE].any(0).sum() == 20  # 20 x 20 px at scale 1


def test_rotation():
    def turned(shape, a, b):
        pair = draw((shape, LARGEST, a, MIDDLE, MIDDLE), (shape, LARGEST, b, MIDDLE, MIDDLE))
        return not torch.equal(pair[0], pair[1])

    assert turned(HEART, 0, 10) and turned(HEART, 0, 20) and turned(ELLIPSE, 0, 10) and turned(SQUARE, 0, 5)
    assert not turned(ELLIPSE, 0, 20)  # orientation 20 is pi: an ellipse is symmetric under a half turn


def test_heart_points_down_at_orientation_zero():
    heart = draw((HEART, LARGEST, 0, MIDDLE, MIDDLE))[0].bool()
    rows = heart.any(1).nonzero().flatten()
    top, bottom = heart[rows[0]].sum(), heart[rows[-1]].sum()
    assert top > 2 * bottom  # lobes above, a point below


def test_shapes_differ():
    for orientation in (0, 13):
        images = draw(*[(s, LARGEST, orientation, MIDDLE, MIDDLE) for s in range(3)])
        assert not torch.equal(images[0], images[1]) and not torch.equal(images[0], images[2])
        assert not torch.equal(images[1], images[2])


def test_position_moves_the_centre_of_mass():
    along_x = centre_of_mass(draw(*[(HEART, 3, 7, x, 10) for x in range(32)]))
    along_y = centre_of_mass(draw(*[(HEART, 3, 7, 10, y) for y in range(32)]))
    assert bool((along_x[:, 1].diff() > 0).all()) and torch.allclose(along_x[:, 0], along_x[0, 0])
    assert bool((along_y[:, 0].diff() > 0).all()) and torch.allclose(along_y[:, 1], along_y[0, 1])
    step = draw((ELLIPSE, 4, 9, 3, 5), (ELLIPSE, 4, 9, 4, 5), (ELLIPSE, 4, 9, 3, 6))
    assert torch.equal(step[1], step[0].roll(1, 1)) and torch.equal(step[2], step[0].roll(1, 0))  # one pixel


def test_load_data_shapes_subset_has_factors():
    data = load_data("shapes:500")
    assert len(data) == 500 and data.images.shape == (500, 1, 64, 64) and data.images.dtype == torch.uint8
    assert data.factors.shape == (500, 5) and data.factors.dtype == torch.int64 and data.factor_names == FACTOR_NAMES
    assert torch.equal(data.labels, data.factors[:, 0]) and set(data.labels.tolist()) == {0, 1, 2}
    index = factors_to_index(data.factors.numpy())
    assert bool((np.diff(index) > 0).all())  # distinct, in index order
    assert torch.equal(data.images, render(data.factors.numpy()))
    assert torch.equal(load_data("shapes:500").factors, data.factors)
    part = data.subset(20)  # data in factor order: a random subset, not the first 20 (all squares)
    assert part.factor_names == FACTOR_NAMES and len(part) == 20
    rows = [int(np.flatnonzero(index == i)[0]) for i in factors_to_index(part.factors.numpy())]
    assert torch.equal(part.images, data.images[rows]) and torch.equal(part.labels, data.labels[rows])
    assert rows != list(range(20)) and len(set(part.labels.tolist())) > 1
    assert torch.equal(data.subset(20).factors, part.factors)  # seeded


@pytest.mark.parametrize("save", [np.savez, np.savez_compressed])
def test_fake_dsprites_file_loads(tmp_path, save):
    factors = index_to_factors([0, 1, 5000, 400000, NUM_IMAGES - 1])
    imgs = (render(factors)[:, 0] // 255).numpy()
    classes = np.concatenate([np.zeros((5, 1), np.int64), factors], 1)
    path = tmp_path / "dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz"
    save(path, imgs=imgs, latents_classes=classes, latents_values=classes.astype(float))
    data = load_data(f"dsprites:{path}")
    assert data.images.dtype == torch.uint8 and torch.equal(data.images, render(factors))
    assert data.factors.tolist() == factors.tolist() and data.factor_names == FACTOR_NAMES
    assert data.labels.tolist() == factors[:, 0].tolist()


@pytest.mark.parametrize("spec, message", [
    ("shapes:lots", "needs a whole number"),
    ("shapes:-5", "needs a whole number"),
    ("shapes:0", r"n must be in \[1, 737280\]"),
    ("shapes:737281", r"n must be in \[1, 737280\]"),
    ("dsprites:/no/such/dsprites.npz", "dSprites file not found"),
    ("dsprites:BAD_KEYS", "no latents_classes array"),
    ("dsprites:NOT_NPZ", "cannot read dSprites file"),
    ("dsprites:NPY", "a single array, not the dSprites npz"),
    ("dsprites:NOT_BINARY", "expected 0/1 pixels"),
    ("sprites", "unknown dataset 'sprites'; use .*shapes:N, dsprites:PATH"),
])
def test_bad_specs_are_clear_errors(tmp_path, spec, message):
    if spec == "dsprites:BAD_KEYS":
        spec = f"dsprites:{tmp_path / 'other.npz'}"
        np.savez(tmp_path / "other.npz", imgs=np.zeros((2, 64, 64), np.uint8))
    elif spec == "dsprites:NOT_NPZ":
        spec = f"dsprites:{tmp_path / 'text.npz'}"
        (tmp_path / "text.npz").write_text("not an archive")
    elif spec == "dsprites:NPY":
        spec = f"dsprites:{tmp_path / 'imgs.npy'}"
        np.save(tmp_path / "imgs.npy", np.zeros((2, 64, 64), np.uint8))
    elif spec == "dsprites:NOT_BINARY":
        spec = f"dsprites:{tmp_path / 'gray.npz'}"
        np.savez(tmp_path / "gray.npz", imgs=np.full((2, 64, 64), 255, np.uint8), latents_classes=np.zeros((2, 6), int))
    with pytest.raises(InfoGANError, match=message):
        load_data(spec)
