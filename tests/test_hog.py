"""edge.hog: numpy HOG equal to skimage.feature.hog (max |diff| < 1e-5), config round trips."""

import subprocess
import sys

import numpy as np
import pytest
from skimage.feature import hog as sk_hog

from edge.errors import ImageError
from edge.hog import HogConfig, hog, hog_batch

TOL = 1e-5  # parity tolerance against scikit-image (measured worst case ~2e-7)


def _structured(h, w, seed=0):
    """Bars, a disc and a step edge: many exact 0/45/90 degree gradients (bin edges)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w]
    img = np.where((xx // 5) % 2 == 0, 40, 200).astype(np.float64)
    img[(yy - h / 2) ** 2 + (xx - w / 3) ** 2 < (min(h, w) / 4) ** 2] = 255
    img[: h // 3] = 0
    img[np.abs(yy - xx) < 2] = 128  # a 45-degree line
    return np.clip(img + rng.integers(-3, 4, size=img.shape) * (xx > w // 2), 0, 255).astype(np.uint8)


def _images():
    rng = np.random.default_rng(7)
    return {
        "uint8-random-128": rng.integers(0, 256, (128, 128), dtype=np.uint8),
        "uint8-structured-100x77": _structured(100, 77),
        "uint8-flat-region-64": np.pad(rng.integers(0, 256, (32, 32), dtype=np.uint8), 16),
        "float32-random-50x61": rng.random((50, 61), dtype=np.float32),
        "float64-range-40x48": rng.normal(0.0, 5.0, (40, 48)),
        "float64-structured-96": _structured(96, 96, 1) / 255.0,
    }


CONFIGS = [
    HogConfig(),
    HogConfig(orientations=8, pixels_per_cell=16),
    HogConfig(orientations=12, pixels_per_cell=(6, 10), cells_per_block=(3, 2), block_norm="L2"),
    HogConfig(orientations=7, pixels_per_cell=5, cells_per_block=1, block_norm="L1"),
    HogConfig(orientations=6, pixels_per_cell=(7, 4), cells_per_block=(1, 3), block_norm="L1-sqrt"),
]


@pytest.mark.parametrize("name", list(_images()))
@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: f"{c.orientations}-{c.pixels_per_cell}-{c.block_norm}")
def test_matches_skimage(name, cfg):
    img = _images()[name]
    ref = sk_hog(img, orientations=cfg.orientations, pixels_per_cell=cfg.pixels_per_cell,
                 cells_per_block=cfg.cells_per_block, block_norm=cfg.block_norm, feature_vector=True)
    ours = hog(img, cfg)
    assert ours.dtype == np.float32 and ours.shape == ref.shape == (cfg.feature_dim(img.shape),)
    assert np.max(np.abs(ours - ref)) < TOL


def test_batch_equals_single_images_and_default_dimension():
    rng = np.random.default_rng(3)
    batch = rng.integers(0, 256, (70, 128, 128), dtype=np.uint8)  # > one internal chunk
    feats = hog_batch(batch)
    assert feats.shape == (70, 8100) and feats.dtype == np.float32
    for i in (0, 63, 64, 69):
        np.testing.assert_array_equal(feats[i], hog(batch[i]))


def test_value_ranges_and_block_norms():
    rng = np.random.default_rng(4)
    img = rng.integers(0, 256, (64, 64), dtype=np.uint8)
    blocks = hog(img).reshape(-1, 36)
    assert blocks.min() >= 0 and blocks.max() <= 1
    np.testing.assert_allclose(np.linalg.norm(blocks, axis=1), 1.0, atol=1e-5)  # L2-Hys renormalises
    assert np.all(hog(np.full((64, 64), 77, np.uint8)) == 0)  # flat image: no gradients at all


def test_gradient_direction_changes_features():
    ramp = np.tile(np.arange(64, dtype=np.uint8) * 3, (64, 1))
    horizontal, vertical = hog(ramp), hog(ramp.T.copy())
    assert not np.allclose(horizontal, vertical)
    # a horizontal ramp votes only into bin 0 (0 degrees) of interior cells
    cells = horizontal.reshape(7, 7, 2, 2, 9)[2, 2]
    assert np.all(cells[..., 1:] == 0) and np.all(cells[..., 0] > 0)


def test_config_normalises_and_round_trips():
    cfg = HogConfig(orientations=8, pixels_per_cell=16, cells_per_block=[3, 3])
    assert cfg.pixels_per_cell == (16, 16) and cfg.cells_per_block == (3, 3)
    assert HogConfig.from_dict(cfg.to_dict()) == cfg
    assert HogConfig.from_json(cfg.to_json()) == cfg
    assert hash(cfg) == hash(HogConfig.from_json(cfg.to_json()))
    assert HogConfig().feature_dim(128) == 8100 and HogConfig(pixels_per_cell=16).feature_dim(128) == 1764


@pytest.mark.parametrize("kwargs", [{"orientations": 0}, {"pixels_per_cell": (8,)}, {"pixels_per_cell": 0},
                                    {"cells_per_block": (2, -1)}, {"block_norm": "L3"}])
def test_bad_config_is_value_error(kwargs):
    with pytest.raises(ValueError):
        HogConfig(**kwargs)


def test_unknown_config_key_is_refused():
    with pytest.raises(ValueError, match="unknown HogConfig parameters"):
        HogConfig.from_dict({**HogConfig().to_dict(), "gamma": 1})


def test_bad_images_are_image_errors():
    with pytest.raises(ImageError, match="too small"):
        hog(np.zeros((12, 40), np.uint8))  # 1 cell row < 2-cell blocks
    with pytest.raises(ImageError, match="shaped"):
        hog(np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(ImageError, match="shaped"):
        hog_batch(np.zeros((16, 16), np.uint8))
    with pytest.raises(ImageError, match="numeric"):
        hog_batch(np.array([[["a"] * 16] * 16]))


def test_edge_hog_imports_no_scientific_stack():
    code = ("import sys, numpy as np, edge.hog as h; h.hog(np.zeros((32, 32), np.uint8));"
            "print([m for m in ('skimage', 'sklearn', 'scipy', 'tensorflow') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
