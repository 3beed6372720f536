"""The integer (lookup-table) preprocessing path is bit-identical to the frozen float reference
(tests/_preprocess_reference.py, the code as it was before the fast path) on many varied
images: sizes, 1/2/3/4 channels, 8/16-bit, inverted, flat, float arrays, files, CLAHE on/off,
every config knob that reaches a per-pixel step."""

import dataclasses

import cv2
import numpy as np
import pytest
from _preprocess_reference import reference_preprocess_with_info

from edge.preprocess import PreprocessConfig, _bgr_tables, _table_source, preprocess_with_info


def _radiograph(rng, h, w, top):
    """Dark air, a grey limb and a bright bone, with noise and a burned-in marker."""
    img = np.full((h, w), 0.08 * top)
    cv2.ellipse(img, (w // 2, h // 2), (max(1, w // 4), max(1, int(h * 0.45))), 0, 0, 360, 0.35 * top, -1)
    cv2.rectangle(img, (w // 2 - w // 12, h // 8), (w // 2 + w // 12, h - h // 8), 0.8 * top, -1)
    img = img * rng.uniform(0.3, 1.2) + rng.normal(0, rng.uniform(0, 0.05) * top, (h, w))
    img[: max(1, h // 30), : max(1, w // 30)] = top
    return np.clip(img, 0, top)


def _image(rng, case):
    h, w = (int(v) for v in rng.integers(2, 420, 2))
    dtype = np.uint8 if case % 3 else np.uint16
    top = np.iinfo(dtype).max
    grey = _radiograph(rng, h, w, top)
    if case % 7 == 0:
        grey = top - grey  # stored inverted
    if case % 11 == 0:
        grey[:] = rng.integers(0, top)  # flat
    grey = grey.astype(dtype)
    channels = [1, 3, 4, 2, 3][case % 5]
    if channels == 1:
        return grey
    img = np.stack([grey] * channels, axis=-1)
    if case % 4 == 0:  # genuinely coloured: channels differ somewhere (takes the float path)
        img[..., 1] = np.clip(img[..., 1].astype(np.int64) + rng.integers(-2, 3, (h, w)), 0, top)
    return img


def _config(rng):
    return PreprocessConfig(size=int(rng.choice([32, 64, 128, 224])), clahe=bool(rng.random() < 0.35),
                            invert=str(rng.choice(["auto", "auto", "never", "always"])),
                            clip_low=float(rng.choice([0.0, 0.5, 2.0])),
                            clip_high=float(rng.choice([99.5, 100.0, 97.0])),
                            border=float(rng.choice([0.08, 0.2, 0.45])), pad_value=int(rng.choice([0, 7])))


def _same(src, cfg):
    ref, ref_info = reference_preprocess_with_info(src, cfg)
    out, info = preprocess_with_info(src, cfg)
    assert np.array_equal(out, ref)
    assert dataclasses.asdict(info) == ref_info  # inversion score, percentiles: the same floats


@pytest.mark.parametrize("seed", range(4))
def test_random_images_match_the_frozen_reference(seed):
    rng = np.random.default_rng(seed)
    for case in range(60):
        _same(_image(rng, case), _config(rng))


def test_files_of_every_kind_match_the_frozen_reference(tmp_path):
    rng = np.random.default_rng(7)
    cfg = PreprocessConfig()
    for i in range(12):
        img = _image(rng, i)
        if img.ndim == 3 and img.shape[2] == 2:
            continue  # no file format stores grey + alpha as 2 channels in OpenCV
        png = tmp_path / f"{i}.png"
        cv2.imwrite(str(png), img)
        _same(png, cfg)
        _same(png.read_bytes(), cfg)
        if img.dtype == np.uint8 and img.ndim == 2:
            jpg = tmp_path / f"{i}.jpg"
            cv2.imwrite(str(jpg), img, [cv2.IMWRITE_JPEG_QUALITY, 90])
            _same(jpg, cfg)


def test_float_and_other_arrays_take_the_float_path_identically():
    rng = np.random.default_rng(3)
    for dtype in (np.float32, np.float64, np.int32, np.bool_):
        img = _radiograph(rng, 97, 131, 1.0)
        arr = (img > 0.5) if dtype is np.bool_ else (img * 1000).astype(dtype)
        assert _table_source(np.asarray(arr)) is None
        _same(arr, PreprocessConfig(clahe=dtype is np.int32))


def test_equal_channel_colour_uses_tables_and_unequal_does_not():
    g = np.arange(5 * 93, dtype=np.uint8).reshape(5, 93)
    rgb = np.stack([g] * 3, axis=-1)
    assert _table_source(rgb) is not None
    rgb[2, 7, 2] ^= 1
    assert _table_source(rgb) is None
    assert _table_source(np.stack([g.astype(np.uint16)] * 3, axis=-1)) is None  # 16-bit colour: float path


@pytest.mark.parametrize("width", [2, 7, 93, 96, 389, 512, 1001])
def test_colour_conversion_depends_only_on_value_column_and_width(width):
    """The assumption behind _bgr_tables: OpenCV's float BGR->grey result for a pixel is a
    function of (value, column, row width), whatever the height and the neighbours."""
    tables = _bgr_tables(width)
    assert tables is not None
    rng = np.random.default_rng(width)
    for h in (1, 3, 64, 301):
        x = rng.integers(0, 256, (h, width)).astype(np.uint8)
        got = cv2.cvtColor(np.stack([x] * 3, axis=-1).astype(np.float32) / 255.0, cv2.COLOR_BGR2GRAY)
        want = tables.body[x]
        for col, table in tables.extra:
            want[:, col] = table[x[:, col]]
        assert np.array_equal(got, want)


def test_large_image_matches_the_frozen_reference():
    rng = np.random.default_rng(11)
    img = (_radiograph(rng, 1500, 1203, 65535)).astype(np.uint16)
    _same(img, PreprocessConfig(size=256, clahe=True))
    _same(np.stack([(img >> 8).astype(np.uint8)] * 3, axis=-1), PreprocessConfig(size=256))
