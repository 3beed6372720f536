"""The one preprocessing path: formats, inversion, exposure, geometry, bad input."""

import struct
import zlib

import cv2
import numpy as np
import pytest

from edge import ImageError, PreprocessConfig, load_image, preprocess, preprocess_with_info, to_model_input
from edge.limits import MAX_PIXELS


def radiograph(h=300, w=200, seed=0, gain=1.0, offset=0.0):
    """A dark background with a bright 'bone' and grey 'tissue', plus noise (uint8)."""
    rng = np.random.default_rng(seed)
    img = np.full((h, w), 20.0)
    cv2.ellipse(img, (w // 2, h // 2), (w // 4, int(h * 0.45)), 0, 0, 360, 90, -1)
    cv2.rectangle(img, (w // 2 - w // 12, h // 8), (w // 2 + w // 12, h - h // 8), 200, -1)
    img = img * gain + offset + rng.normal(0, 4, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


@pytest.fixture
def img():
    return radiograph()


def test_output_shape_dtype_and_range(img):
    out = preprocess(img, PreprocessConfig(size=96))
    assert out.shape == (96, 96) and out.dtype == np.uint8
    x = to_model_input(out)
    assert x.shape == (96, 96, 1) and x.dtype == np.float32
    assert 0.0 <= x.min() and x.max() <= 1.0


def test_deterministic(img):
    assert np.array_equal(preprocess(img), preprocess(img.copy()))


def test_inverted_image_is_corrected(img):
    a, ia = preprocess_with_info(img)
    b, ib = preprocess_with_info(255 - img)
    assert not ia.inverted and ib.inverted
    assert np.abs(a.astype(int) - b.astype(int)).max() <= 1


def test_invert_policy_never_and_always(img):
    never = preprocess(255 - img, PreprocessConfig(invert="never"))
    always = preprocess(img, PreprocessConfig(invert="always"))
    assert np.abs(never.astype(int) - always.astype(int)).max() <= 1


def test_exposure_is_normalised():
    # under- and over-exposed versions of the same scene give nearly the same input
    a = preprocess(radiograph(gain=0.3))
    b = preprocess(radiograph(gain=1.0, offset=40))
    assert np.mean(np.abs(a.astype(float) - b.astype(float))) < 6.0


def test_percentile_clipping_ignores_saturated_marker(img):
    marked = img.copy()
    marked[5:9, 5:9] = 255  # a tiny burned-in marker must not compress the rest of the range
    a, b = preprocess(img).astype(float), preprocess(marked).astype(float)
    assert np.mean(np.abs(a - b)) < 2.0


def test_formats_give_same_result(tmp_path, img):
    cv2.imwrite(str(tmp_path / "g.png"), img)
    cv2.imwrite(str(tmp_path / "c.png"), cv2.cvtColor(img, cv2.COLOR_GRAY2BGR))
    cv2.imwrite(str(tmp_path / "a.png"), cv2.cvtColor(img, cv2.COLOR_GRAY2BGRA))
    cv2.imwrite(str(tmp_path / "w.png"), img.astype(np.uint16) * 257)
    ref = preprocess(tmp_path / "g.png")
    for name in ("c.png", "a.png", "w.png"):
        assert np.abs(preprocess(tmp_path / name).astype(int) - ref).max() <= 1, name
    cv2.imwrite(str(tmp_path / "j.jpg"), img, [cv2.IMWRITE_JPEG_QUALITY, 95])
    assert np.mean(np.abs(preprocess(tmp_path / "j.jpg").astype(float) - ref)) < 3.0
    assert np.array_equal(preprocess((tmp_path / "g.png").read_bytes()), ref)


@pytest.mark.parametrize("shape", [(90, 40), (40, 90), (512, 512), (33, 500)])
def test_aspect_preserving_geometry(shape):
    h, w = shape
    out, info = preprocess_with_info(radiograph(h, w), PreprocessConfig(size=64))
    assert out.shape == (64, 64)
    assert info.scale == pytest.approx(64 / max(h, w))
    nh, nw = round(h * info.scale), round(w * info.scale)
    assert info.offset_y == (64 - nh) // 2 and info.offset_x == (64 - nw) // 2
    pad = np.ones((64, 64), bool)
    pad[info.offset_y:info.offset_y + nh, info.offset_x:info.offset_x + nw] = False
    assert np.all(out[pad] == 0)  # padding is air


def test_config_json_round_trip():
    cfg = PreprocessConfig(size=224, clahe=True, clip_low=1.0)
    assert PreprocessConfig.from_json(cfg.to_json()) == cfg
    with pytest.raises(ValueError, match="unknown"):
        PreprocessConfig.from_dict({**cfg.to_dict(), "gamma": 2})
    with pytest.raises(ValueError):
        PreprocessConfig(invert="sometimes")
    with pytest.raises(ValueError):
        PreprocessConfig(clip_low=90, clip_high=10)


def test_clahe_changes_image_but_keeps_shape(img):
    a = preprocess(img)
    b = preprocess(img, PreprocessConfig(clahe=True))
    assert a.shape == b.shape and not np.array_equal(a, b)


def test_flat_image_is_all_zero():
    out = preprocess(np.full((50, 50), 77, np.uint8))
    assert out.max() == 0


def _png_header(w, h):
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + chunk + struct.pack(">I", zlib.crc32(chunk))


@pytest.mark.parametrize("content,match", [
    (None, "no such file"),
    (b"", "empty"),
    (b"this is not an image", "not a PNG or JPEG"),
    ("truncated", "corrupt or truncated"),
    (_png_header(0, 10), "zero size"),
    (_png_header(100_000, 100_000), "pixel limit"),
])
def test_bad_files_raise_clear_errors(tmp_path, img, content, match):
    path = tmp_path / "x.png"
    if content == "truncated":
        _ok, buf = cv2.imencode(".png", img)
        content = buf.tobytes()[:150]
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ImageError, match=match):
        preprocess(path)


def test_bad_arrays_raise_clear_errors():
    with pytest.raises(ImageError):
        load_image(np.zeros((0, 10), np.uint8))
    with pytest.raises(ImageError):
        load_image(np.full((4, 4), np.nan, np.float32))
    with pytest.raises(ImageError):
        load_image(12)
    assert MAX_PIXELS >= 4096 * 4096


def test_equal_channel_check_finds_one_differing_byte():
    """Colour images take the lookup-table route only when B == G == R everywhere: the check
    (one masked comparison of neighbouring bytes) must see a single differing byte in any
    channel of any pixel, row band included, and must ignore alpha."""
    import importlib

    pre = importlib.import_module("edge.preprocess")  # the module; edge.preprocess is also a function
    rng = np.random.default_rng(3)
    for h, w, c in ((2, 2, 3), (7, 33, 3), (300, 301, 3), (5, 9, 4), (260, 257, 4)):
        grey = rng.integers(0, 256, (h, w), dtype=np.uint8)
        img = np.stack([grey] * c, axis=-1)
        if c == 4:
            img[..., 3] = rng.integers(0, 256, (h, w))  # alpha never counts
        assert pre._grey_colour(img)
        for y, x, k in ((0, 0, 1), (h - 1, w - 1, 2), (h // 2, w - 1, 0), (h - 1, 0, 1)):
            bad = img.copy()
            bad[y, x, k] ^= 1
            assert not pre._grey_colour(bad), (h, w, c, y, x, k)
            assert not pre._grey_colour(bad[:, ::-1])  # a strided view takes the per-channel check


def test_lookup_writes_into_a_strided_view():
    from edge.pixels import lookup

    idx = np.arange(60, dtype=np.uint8).reshape(6, 10)
    table = np.linspace(0, 1, 256, dtype=np.float32)
    buffer = np.full((6, 11), -1, np.float32)
    out = lookup(table, idx, buffer[:, :10])
    assert np.shares_memory(out, buffer)
    assert np.array_equal(buffer[:, :10], table[idx]) and np.all(buffer[:, 10] == -1)
