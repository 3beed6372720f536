"""CAM metrics (murakit.evaluation.cam): hand-made maps score as they must, and the metric can
fail - maps of shuffled boxes or of noise score low, a fixed centre guess scores what geometry gives."""

from __future__ import annotations

import numpy as np
import pytest

from murakit.evaluation.cam import centre_guess, energy_in_box, markdown_lines, peaks, score_maps, to_canvas

S = 64


def boxes_and_maps(n=40, seed=0):
    """n boxes away from the centre, maps with a bump on each box, two views per study."""
    rng = np.random.default_rng(seed)
    c = rng.choice([12.0, 50.0], size=(n, 2)) + rng.uniform(-3, 3, (n, 2))
    boxes = np.concatenate([c - 4, c + 4], axis=1)
    yy, xx = np.mgrid[0:S, 0:S] + 0.5
    maps = np.stack([np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / 8.0) - 0.2 for x, y in c]).astype(np.float32)
    findings = np.array(["fracture", "hardware", "lytic", "periosteal"] * (n // 4))
    studies = np.repeat(np.arange(n // 2), 2).astype(str)
    return maps, boxes, findings, studies


def test_maps_on_their_boxes_score_high_with_intervals():
    maps, boxes, findings, studies = boxes_and_maps()
    r = score_maps(maps, boxes, findings, studies, S, n=300)
    assert r["pointing"] == 1.0 and r["pointing_no_margin"] == 1.0 and r["n_views"] == 40
    assert 0.6 < r["energy_in_box"] <= 1.0
    lo, hi = r["energy_in_box_ci"]
    assert lo <= r["energy_in_box"] <= hi
    assert set(r["by_finding"]) == {"fracture", "hardware", "lesion"}
    assert r["by_finding"]["lesion"]["n_views"] == 20  # lytic + periosteal


def test_the_metric_can_fail_shuffled_boxes_noise_and_centre_guess():
    maps, boxes, findings, studies = boxes_and_maps()
    shuffled = boxes[np.random.default_rng(1).permutation(len(boxes))]
    r = score_maps(maps, shuffled, findings, studies, S, n=300)
    assert r["pointing"] < 0.5 and r["energy_in_box"] < 0.4
    noise = np.random.default_rng(2).normal(size=maps.shape).astype(np.float32)
    rn = score_maps(noise, boxes, findings, studies, S, n=300)
    assert rn["pointing"] < 0.3 and rn["energy_in_box"] < 0.1
    assert rn["pointing_ci"][1] < 1.0
    assert centre_guess(boxes, findings, studies, S, n=300)["pointing"] == 0.0  # no box near the centre


def test_margin_is_five_percent_of_the_side_and_peaks_are_pixel_centres():
    box = np.array([[20.0, 20.0, 30.0, 30.0]])
    cam = np.zeros((1, S, S), np.float32)
    cam[0, 25, 32] = 1.0  # x = 32.5: 2.5 px right of the box, inside the 3.2 px margin
    r = score_maps(cam, box, ["fracture"], ["s"], S, n=50)
    assert r["pointing"] == 1.0 and r["pointing_no_margin"] == 0.0
    assert peaks(cam) == (32.5, 25.5)
    cam[0, 25, 32], cam[0, 25, 34] = 0.0, 1.0  # x = 34.5: beyond the margin
    assert score_maps(cam, box, ["fracture"], ["s"], S, n=50)["pointing"] == 0.0


def test_energy_counts_positive_mass_only():
    cam = np.full((1, 4, 4), -1.0, np.float32)
    cam[0, 0, 0], cam[0, 3, 3] = 3.0, 1.0
    assert energy_in_box(cam, np.array([[0.0, 0.0, 1.0, 1.0]]))[0] == pytest.approx(0.75)
    assert energy_in_box(-np.abs(cam), np.array([[0.0, 0.0, 1.0, 1.0]]))[0] == 0.0


def test_coarse_maps_are_drawn_centred_and_the_markdown_has_every_row():
    grid = np.zeros((1, 2, 2), np.float32)
    grid[0, 1, 1] = 1.0
    up = to_canvas(grid, 8)
    assert up.shape == (1, 8, 8) and np.unravel_index(np.argmax(up[0]), (8, 8)) == (6, 6)
    maps, boxes, findings, studies = boxes_and_maps()
    r = score_maps(maps, boxes, findings, studies, S, n=100)
    cam = {"model": "cnn_onnx", "margin": 0.05, **r, "centre_guess": centre_guess(boxes, findings, studies, S, n=100),
           "randomised_model": r}
    text = "\n".join(markdown_lines(cam))
    assert "centre guess" in text and "randomised CNN" in text and "CNN: lesion" in text
    assert markdown_lines(None) == []


@pytest.mark.parametrize(("h", "w", "size"), [(300, 170, 64), (90, 257, 128), (128, 128, 64)])
def test_canvas_points_map_back_to_the_original_image(h, w, size):
    """A blob drawn in the original lands on the canvas and maps back (edge.cam.canvas_to_original)
    to where it was drawn, within one canvas pixel's worth of original pixels."""
    from edge.cam import canvas_to_original
    from edge.preprocess import PreprocessConfig, preprocess_with_info

    rng = np.random.default_rng(h + w)
    for _ in range(3):
        img = np.full((h, w), 60, np.uint8)
        cx, cy = rng.uniform(0.25, 0.75) * w, rng.uniform(0.25, 0.75) * h
        yy, xx = np.mgrid[0:h, 0:w] + 0.5
        r = 0.06 * max(h, w)
        img[(xx - cx) ** 2 + (yy - cy) ** 2 <= r * r] = 250
        u8, info = preprocess_with_info(img, PreprocessConfig(size=size))
        bright = (u8 > u8.max() * 0.9) & (u8 > 128)  # the blob on the canvas
        ys, xs = np.nonzero(bright)
        ox, oy = canvas_to_original(xs.mean() + 0.5, ys.mean() + 0.5, info)
        px = max(h, w) / size  # original pixels per canvas pixel
        assert abs(ox - cx) <= px and abs(oy - cy) <= px, (ox, cx, oy, cy, px)


def test_placement_matrix_interpolates_between_cell_centres():
    from edge.cam import placement_matrix

    a = placement_matrix([5.5, 10.5, 30.5], 40)
    assert a.shape == (40, 3) and np.allclose(a.sum(axis=1), 1.0)
    assert np.allclose(a[5], [1, 0, 0]) and np.allclose(a[10], [0, 1, 0]) and np.allclose(a[30], [0, 0, 1])
    assert np.allclose(a[20], [0, 0.5, 0.5]) and np.allclose(a[0], [1, 0, 0]) and np.allclose(a[39], [0, 0, 1])
    tied = placement_matrix([8.0, 8.0, 24.0], 32)  # cells that see the same place share it
    assert np.allclose(tied[7], [0.5, 0.5, 0]) and np.allclose(tied.sum(axis=1), 1.0)
    with pytest.raises(ValueError, match="non-decreasing"):
        placement_matrix([10.0, 5.0], 32)
