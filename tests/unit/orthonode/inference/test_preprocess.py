"""Tests of orthonode.inference.preprocess: letterboxing, mapping heat maps back, slice selection.

The resampling is compared with Pillow's own bilinear resize (a separate implementation of antialiased
bilinear filtering), and the back-mapping with a map that is a known linear function of model coordinates.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from orthonode.inference.loading import Volume
from orthonode.inference.preprocess import Placement, fit_to_square, select_slices


def _pil_resize(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    resized = Image.fromarray(image.astype(np.float32), mode="F").resize((shape[1], shape[0]), Image.BILINEAR)
    return np.asarray(resized)


@pytest.mark.parametrize(
    ("shape", "size", "content", "offset"),
    [
        ((150, 90), 64, (64, 38), (0, 13)),  # tall, shrunk: 90 * 64 / 150 = 38.4
        ((90, 150), 64, (38, 64), (13, 0)),  # wide
        ((20, 30), 64, (43, 64), (10, 0)),  # enlarged: 20 * 64 / 30 = 42.67
        ((64, 64), 64, (64, 64), (0, 0)),  # already square and of the right size
        ((1, 50), 32, (1, 32), (15, 0)),  # extreme aspect: the short side keeps at least one pixel
    ],
)
def test_fit_to_square_keeps_aspect_and_centres(
    shape: tuple[int, int], size: int, content: tuple[int, int], offset: tuple[int, int]
) -> None:
    rng = np.random.default_rng(1)
    image = rng.random(shape).astype(np.float32)
    square, placement = fit_to_square(image, size)
    assert square.shape == (size, size)
    assert square.dtype == np.float32
    assert square.flags["C_CONTIGUOUS"]
    assert placement.content_shape == content
    assert placement.offset == offset
    assert placement.source_shape == shape
    # Aspect ratio to within one pixel of the short side.
    assert abs(content[0] / content[1] - shape[0] / shape[1]) <= 1.0 / min(content)
    top, left, bottom, right = placement.content_box
    np.testing.assert_allclose(square[top:bottom, left:right], _pil_resize(image, content), atol=1e-5)
    padding = np.ones((size, size), dtype=bool)
    padding[top:bottom, left:right] = False
    assert np.all(square[padding] == 0.0)
    assert float(square.min()) >= 0.0 and float(square.max()) <= 1.0
    torch.from_numpy(square)  # tensor-ready


def test_fit_to_square_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="multiple of patch"):
        fit_to_square(np.zeros((10, 10)), 100, patch=16)
    with pytest.raises(ValueError, match=r"\[H, W\]"):
        fit_to_square(np.zeros((2, 10, 10)), 64)
    with pytest.raises(ValueError, match=r"\[H, W\]"):
        fit_to_square(np.zeros((0, 10)), 64)
    with pytest.raises(ValueError, match="non-finite"):
        fit_to_square(np.full((4, 4), np.nan), 64)


@pytest.mark.parametrize("shape", [(150, 90), (20, 30), (37, 211)])
def test_to_source_maps_a_model_grid_map_back(shape: tuple[int, int]) -> None:
    """A map that is linear in model coordinates comes back as that function at each source pixel centre.

    Bilinear interpolation reproduces a linear function exactly, so the expected value is the model
    coordinate of the source pixel centre (``top + (i + 0.5) * scale``) -- for pixels at least half a map
    cell inside the image on the model grid (nearer the edge, sampling is held at that distance).
    """
    size = 64
    _, placement = fit_to_square(np.zeros(shape, dtype=np.float32), size)
    for grid in (size, placement.grid, 10):
        centres = (np.arange(grid) + 0.5) * size / grid  # model coordinate of each map cell's centre
        rows_map = np.repeat(centres[:, None], grid, axis=1)
        cols_map = np.repeat(centres[None, :], grid, axis=0)
        back_rows = placement.to_source(rows_map)
        back_cols = placement.to_source(torch.from_numpy(cols_map))
        assert back_rows.shape == shape
        assert back_cols.shape == shape
        assert back_rows.dtype == np.float32
        scale_y, scale_x = placement.content_shape[0] / shape[0], placement.content_shape[1] / shape[1]
        want_rows = placement.offset[0] + (np.arange(shape[0]) + 0.5) * scale_y
        want_cols = placement.offset[1] + (np.arange(shape[1]) + 0.5) * scale_x
        half = 0.5 * size / grid
        top, left, bottom, right = placement.content_box
        inside_r = (want_rows >= top + half) & (want_rows <= bottom - half)
        inside_c = (want_cols >= left + half) & (want_cols <= right - half)
        if grid == size:  # a full-resolution map: nearly every source pixel is checked
            assert inside_r.sum() > shape[0] // 2 and inside_c.sum() > shape[1] // 2
        np.testing.assert_allclose(back_rows[inside_r, 0], want_rows[inside_r], atol=1e-3)
        np.testing.assert_allclose(back_cols[0, inside_c], want_cols[inside_c], atol=1e-3)


def test_to_source_round_trip_and_padding_dropped() -> None:
    """A smooth image letterboxed and mapped back is itself again; the zero padding does not leak in."""
    rows, cols = np.mgrid[0:120, 0:80]
    image = (0.25 + 0.5 * np.sin(rows / 40.0) * np.cos(cols / 30.0) ** 2).astype(np.float32)
    square, placement = fit_to_square(image, 96)
    back = placement.to_source(square)
    assert back.shape == image.shape
    np.testing.assert_allclose(back, image, atol=0.02)
    assert placement.offset[1] > 0  # padded left and right

    # A token-grid map that is 1 on the image's tokens and 0 on pure-padding tokens stays 1 on the image.
    tokens = np.zeros((placement.grid, placement.grid), dtype=np.float32)
    top, left, bottom, right = placement.content_box
    edges = np.arange(placement.grid + 1) * placement.patch
    hit_rows = (edges[1:] > top) & (edges[:-1] < bottom)
    hit_cols = (edges[1:] > left) & (edges[:-1] < right)
    tokens[np.ix_(hit_rows, hit_cols)] = 1.0
    np.testing.assert_allclose(placement.to_source(tokens), 1.0, atol=1e-6)


def test_to_source_rejects_non_2d_maps() -> None:
    placement = Placement(source_shape=(10, 20), size=32, content_shape=(16, 32), offset=(8, 0))
    with pytest.raises(ValueError, match=r"\[h, w\]"):
        placement.to_source(np.zeros((2, 2, 2)))


# --------------------------------------------------------------------------------------------- slices


@pytest.mark.parametrize(
    ("total", "count", "expected"),
    [
        (10, 3, [3, 4, 5]),
        (9, 3, [3, 4, 5]),
        (10, 4, [3, 4, 5, 6]),
        (10, 1, [4]),
        (1, 1, [0]),
        (1, 5, [0]),  # S = 1
        (4, 4, [0, 1, 2, 3]),  # count >= S: every slice
        (4, 9, [0, 1, 2, 3]),
    ],
)
def test_select_central(total: int, count: int, expected: list[int]) -> None:
    assert select_slices(total, count, "central") == expected


@pytest.mark.parametrize(
    ("total", "count", "expected"),
    [
        (100, 5, [10, 30, 50, 69, 89]),  # linspace(9.9, 89.1, 5) = 9.9, 29.7, 49.5, 69.3, 89.1
        (21, 3, [2, 10, 18]),  # linspace(2, 18, 3)
        (1, 3, [0]),
        (3, 3, [0, 1, 2]),
        (10, 1, [4]),  # one slice: the middle, as for central
    ],
)
def test_select_uniform(total: int, count: int, expected: list[int]) -> None:
    assert select_slices(total, count, "uniform") == expected


def test_select_uniform_excludes_the_outer_tenth_and_stays_distinct() -> None:
    for total in range(2, 60):
        for count in range(1, total):
            chosen = select_slices(total, count, strategy="uniform")
            assert len(chosen) == count, (total, count)
            assert chosen == sorted(set(chosen))
            assert chosen[0] >= 0 and chosen[-1] < total
            interior = [i for i in range(total) if 0.1 * (total - 1) - 0.5 <= i <= 0.9 * (total - 1) + 0.5]
            if len(interior) >= 2 * count:  # room enough: nothing from the outer 10 %
                assert set(chosen) <= set(interior), (total, count, chosen)


def test_select_slices_accepts_volumes_and_arrays() -> None:
    voxels = np.zeros((12, 4, 4), dtype=np.float32)
    volume = Volume(
        voxels=voxels,
        positions=np.zeros((12, 3)),
        normal=np.array([1.0, 0.0, 0.0]),
        orientation=(0.0, 1.0, 0.0, 0.0, 0.0, -1.0),
        spacing=(0.5, 0.5, 3.0),
        sources=(),
        plane="sagittal",
    )
    assert select_slices(volume, 2) == select_slices(voxels, 2) == select_slices(12, 2) == [5, 6]


def test_select_slices_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="count"):
        select_slices(10, 0)
    with pytest.raises(ValueError, match="no slices"):
        select_slices(0, 1)
    with pytest.raises(ValueError, match="strategy"):
        select_slices(10, 2, "random")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="margin"):
        select_slices(10, 2, "uniform", margin=0.5)
