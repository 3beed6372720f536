"""The CAM is drawn where its evidence is: every cell's effective receptive field (gradient of
the cell w.r.t. the input, real architecture, random weights) is centred within 1 input pixel of
where ``edge.cam.upsample_cam`` draws the graph's ``cam`` output, for every arch murakit builds
(``deep.ARCHS``) at the sizes that can go wrong (2 x 2 grids, a grid that does not divide the
canvas, 128 px, >= 224 px).

Every cell's centroid is measured once, with weight draws other than the ones ``deep.cam_model``
uses, and stored with a fingerprint of the architecture (``tests/_receptive_reference.py``):
measuring all 49 cells of DenseNet-169 at 224 px over 20 draws takes minutes. What runs here is
the shipped path itself: ``deep.cam_model`` measures its centres live, places the grid in the
graph, and ``upsample_cam`` draws it.
"""

from __future__ import annotations

import numpy as np
import pytest

import deep
from deep.receptive import CENTRE_SEEDS
from edge.cam import upsample_cam
from tests._receptive_reference import CASES, build, fingerprint, load

TOL_PX = 1.0
REFERENCE = load()
# DenseNet-169 at 224 px: 16 live draws take 1-2 minutes on 2 shared cores, so the test measures
# with the first 7 of cam_model's draws (7 shifts of the diagonals: every row meets every column).
# Its stored per-draw s.d. of a cell's centroid is <= 1.3 px (median 0.9), so the mean of 7 draws
# over the 2 cells of a row or column is within ~0.25 px (s.e.; <= 0.35) of the expectation the
# 16 draws cam_model ships estimate to ~0.2: a placement off by 1 px still fails.
FEWER_DRAWS = {("densenet169", 224): CENTRE_SEEDS[:7], ("densenet169", 320): CENTRE_SEEDS[:7]}
# A row-and-column placement draws a cell at its row's y and its column's x; DenseNet-169's
# receptive fields at 224 px are not quite separable (the first row's centroid is 2.4 px further
# in at the corners than mid-row), so a border cell's own centroid may lie up to half that (its
# stored spread: 1.29 px) beyond the 1 px. Every other case: <= 0.47 px, within the 1 px.
# At 320 px (the MURA paper's setting) the bow is larger: measured 1.87 px (rows and columns
# themselves are still drawn within 1 px); a placement that is not row-and-column would be needed
# to do better, and murakit does not have one (docs/cam.md).
NOT_SEPARABLE_PX = {("densenet169", 224): 1.3, ("densenet169", 320): 1.9}


def separable(erf: np.ndarray) -> np.ndarray:
    """The closest row-and-column layout to (h, w, 2) centroids: each row's mean y, each column's x."""
    out = np.empty_like(erf)
    out[..., 0] = erf[..., 0].mean(axis=1, keepdims=True)
    out[..., 1] = erf[..., 1].mean(axis=0, keepdims=True)
    return out


def reference(model, arch: str, size: int) -> np.ndarray:
    """(h, w, 2) stored centroids of every cell (y, x) of ``model``'s architecture; fails with the
    command to re-measure when none are stored or the architecture changed since."""
    key = f"{arch}:{size}"
    again = f"run python -m tests._receptive_reference {key}"
    assert key in REFERENCE, f"no stored receptive fields for {key}: {again}"
    assert REFERENCE[key]["fingerprint"] == fingerprint(model), \
        f"{arch} at {size} px changed since its receptive fields were measured: {again}"
    return np.asarray(REFERENCE[key]["centroids"])


def _positions(profile: np.ndarray, n: int) -> np.ndarray:
    """Sub-pixel positions where a drawn ramp (cell k has value k / (n - 1)) passes each cell's
    value: the drawing is linear between neighbouring cells, so a line fitted to the pixels of
    each segment (strictly between two levels) gives both ends exactly. NaN when the drawing is
    flat: every cell of that axis pooled to one place (the map shows no position along it)."""
    if np.ptp(profile) < 1e-6:
        return np.full(n, np.nan)
    x = np.arange(len(profile)) + 0.5
    levels = np.arange(n) / (n - 1)
    est = [[] for _ in range(n)]
    for k in range(n - 1):
        inside = (profile > levels[k] + 1e-6) & (profile < levels[k + 1] - 1e-6)
        if inside.sum() >= 2:
            b, a = np.polyfit(profile[inside], x[inside], 1)
            est[k].append(a + b * levels[k])
            est[k + 1].append(a + b * levels[k + 1])
    for k in range(n):  # a cell with no segment of 2+ pixels beside it (its neighbours < 2 px away):
        if not est[k]:  # it lies between the last pixel below its level and the first above (monotone)
            below, above = x[profile < levels[k] - 1e-4], x[profile > levels[k] + 1e-4]
            lo = below[-1] if len(below) else x[profile <= levels[k] + 1e-4][-1]
            hi = above[0] if len(above) else x[profile >= levels[k] - 1e-4][0]
            est[k].append((lo + hi) / 2)
    return np.array([np.mean(e) for e in est])


def drawn_centres(cmodel, h: int, w: int, size: int) -> np.ndarray:
    """(h, w, 2) where ``upsample_cam`` of the graph's placement draws each cell (y, x)."""
    place = cmodel.get_layer("cam")
    ramp_x = np.tile(np.arange(w, dtype=np.float32), (1, h, 1))
    ramp_y = np.transpose(np.tile(np.arange(h, dtype=np.float32), (1, w, 1)), (0, 2, 1))
    xs = _positions(upsample_cam(np.asarray(place(ramp_x))[0], size)[size // 2], w)
    ys = _positions(upsample_cam(np.asarray(place(ramp_y))[0], size)[:, size // 2], h)
    return np.stack(np.meshgrid(ys, xs, indexing="ij"), axis=2)


ALL = [(arch, size) for arch, sizes in CASES.items() for size in sizes]


def test_every_arch_murakit_builds_has_alignment_cases():
    """A new arch (deep.ARCHS) fails here until it has cases: a coarse grid and >= 224 px."""
    assert set(CASES) == set(deep.ARCHS)
    for arch, sizes in CASES.items():
        assert min(sizes) <= 64 and max(sizes) >= 224, (arch, sizes)


@pytest.mark.slow
@pytest.mark.parametrize(("arch", "size"), ALL)
def test_every_cam_cell_is_drawn_at_its_receptive_field_centre(arch, size):
    model = build(arch, size)
    seeds = FEWER_DRAWS.get((arch, size))
    if seeds is None:
        cmodel = deep.cam_model(model)
    else:
        from deep.receptive import receptive_centres

        cmodel = deep.cam_model(model, centres=receptive_centres(model, seeds=seeds))
    assert cmodel.outputs[1].shape[1:] == (size, size)
    erf = reference(model, arch, size)
    h, w = erf.shape[:2]
    drawn = drawn_centres(cmodel, h, w, size)
    for axis in (0, 1):  # an axis pooled to one place: its cells' fields must coincide (to 1 px)
        if np.isnan(drawn[..., axis]).all():
            drawn[..., axis] = erf[..., axis].mean()
    assert np.isfinite(drawn).all(), drawn
    # The placement: every cell within 1 px of the best any row-and-column layout can do ...
    miss = np.abs(drawn - separable(erf)).max(axis=2)
    assert miss.max() <= TOL_PX, f"{arch} {size} px: rows/columns drawn off their receptive fields by (px)\n{miss.round(1)}"
    # ... and of each cell's own centroid (beyond 1 px only by the stated non-separable part).
    slack = NOT_SEPARABLE_PX.get((arch, size), 0.0)
    assert np.abs(erf - separable(erf)).max() <= max(slack, TOL_PX / 2), "receptive fields less separable than stated"
    miss = np.abs(drawn - erf).max(axis=2)
    assert miss.max() <= TOL_PX + slack, f"{arch} {size} px: cells drawn off their receptive field by (px)\n{miss.round(1)}"


@pytest.mark.parametrize("size", [128, 224])
def test_centred_cells_miss_the_receptive_field(size):
    """The check can fail: the placement before the fix (every cell centred on its square) misses
    by far more than 1 px on the small arch (same-padding shifts inside, padding pulls border
    cells in)."""
    model = build("small", size)
    h = int(model.get_layer("gap").input.shape[1])
    centred = (np.arange(h) + 0.5) * size / h
    cmodel = deep.cam_model(model, centres=(centred, centred))
    miss = np.abs(drawn_centres(cmodel, h, h, size) - reference(model, "small", size)).max(axis=2)
    assert miss.max() > 4 * TOL_PX and np.median(miss) > 2 * TOL_PX, miss.round(1)


def test_a_misplaced_cell_is_caught():
    """The check can fail by one row: the shipped placement with one row moved by 2 px fails it."""
    from deep.receptive import receptive_centres

    model = build("small", 128)
    cy, cx = receptive_centres(model)
    cy[3] += 2.0
    cmodel = deep.cam_model(model, centres=(cy, cx))
    miss = np.abs(drawn_centres(cmodel, 8, 8, 128) - reference(model, "small", 128)).max(axis=2)
    assert miss[3].min() > TOL_PX and np.delete(miss, 3, axis=0).max() <= TOL_PX, miss.round(1)


def test_small_s8_map_is_twice_as_fine_at_no_more_weights():
    """``--arch small-s8``: output stride 8 (16 x 16 cells at 128 px) where ``small`` has 16."""
    small, s8 = build("small", 128), build("small-s8", 128)
    assert tuple(small.get_layer("gap").input.shape[1:3]) == (8, 8)
    assert tuple(s8.get_layer("gap").input.shape[1:3]) == (16, 16)
    assert s8.count_params() <= small.count_params()
    x = np.random.default_rng(0).uniform(0, 1, (2, 128, 128, 1)).astype(np.float32)
    p = np.asarray(s8(x, training=False))
    assert p.shape == (2, 1) and np.all((p >= 0) & (p <= 1))
