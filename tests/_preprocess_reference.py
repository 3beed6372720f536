"""FROZEN reference copy of the preprocessing as it was before the integer fast path
(main at 6bab321: edge/image.py to_grey/_scale and edge/preprocess.py). Do not edit: tests
compare today's edge.preprocess against it bit for bit (tests/test_preprocess_parity.py)."""

import cv2
import numpy as np

from edge.errors import ImageError
from edge.loader import load_array

MAX_PIXELS = 64_000_000
LEVELS = 65536


def to_grey(arr: np.ndarray, name: str = "<array>") -> np.ndarray:
    """Convert a decoded array to float32 (H, W) in [0, 1].

    uint8 is divided by 255, uint16 by 65535; float input is taken as-is when within
    [0, 1] and scaled by its maximum otherwise. Colour (BGR, BGRA) becomes luminance; the
    alpha channel of a grey+alpha or BGRA image is dropped.
    """
    arr = np.asarray(arr)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim not in (2, 3) or arr.size == 0 or min(arr.shape[:2]) == 0:
        raise ImageError(f"{name}: expected a non-empty (H, W) or (H, W, C) image, got shape {arr.shape}")
    if arr.shape[0] * arr.shape[1] > MAX_PIXELS:
        raise ImageError(f"{name}: image is {arr.shape[1]}x{arr.shape[0]}, above the {MAX_PIXELS:,}-pixel limit")
    grey = _scale(arr, name)
    if grey.ndim == 3:
        c = grey.shape[2]
        if c == 2:
            grey = grey[:, :, 0]
        elif c in (3, 4):
            grey = cv2.cvtColor(np.ascontiguousarray(grey[:, :, :3]), cv2.COLOR_BGR2GRAY)
        else:
            raise ImageError(f"{name}: unsupported channel count {c}")
    return np.ascontiguousarray(grey, dtype=np.float32)


def _scale(arr: np.ndarray, name: str) -> np.ndarray:
    if arr.dtype == np.uint8:
        return arr.astype(np.float32) / 255.0
    if arr.dtype == np.uint16:
        return arr.astype(np.float32) / 65535.0
    if arr.dtype == np.bool_:
        return arr.astype(np.float32)
    if np.issubdtype(arr.dtype, np.number):
        f = arr.astype(np.float32)
        if not np.all(np.isfinite(f)):
            raise ImageError(f"{name}: image contains NaN or infinite values")
        lo, hi = float(f.min()), float(f.max())
        if lo >= 0.0 and hi <= 1.0:
            return f
        return (f - lo) / (hi - lo) if hi > lo else np.zeros_like(f)
    raise ImageError(f"{name}: unsupported pixel type {arr.dtype}")


def percentiles(grey, qs):
    levels = np.rint(grey.ravel() * (LEVELS - 1)).astype(np.int64)
    cdf = np.cumsum(np.bincount(levels, minlength=LEVELS))
    ranks = np.maximum(1, np.ceil(np.asarray(qs, dtype=np.float64) / 100.0 * levels.size))
    return np.searchsorted(cdf, ranks).astype(np.float64) / (LEVELS - 1)


def normalise(grey, cfg):
    lo, hi = percentiles(grey, [cfg.clip_low, cfg.clip_high])
    if hi - lo < 1e-6:
        return np.zeros_like(grey), float(lo), float(hi)
    out = np.clip((grey - lo) / (hi - lo), 0.0, 1.0, dtype=np.float32)
    return out, float(lo), float(hi)


def inversion_score(norm, border=0.08):
    h, w = norm.shape
    bh, bw = max(1, round(h * border)), max(1, round(w * border))
    band = np.concatenate([
        norm[:bh].ravel(), norm[-bh:].ravel(), norm[bh:-bh, :bw].ravel(), norm[bh:-bh, -bw:].ravel()
    ])
    centre = norm[h // 4: h - h // 4, w // 4: w - w // 4]
    return float(np.median(band) - centre.mean())


def _resize_pad(img, cfg):
    h, w = img.shape
    scale = cfg.size / max(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    small = cv2.resize(img, (nw, nh), interpolation=interp)
    canvas = np.full((cfg.size, cfg.size), cfg.pad_value, dtype=np.uint8)
    oy, ox = (cfg.size - nh) // 2, (cfg.size - nw) // 2
    canvas[oy:oy + nh, ox:ox + nw] = small
    return canvas, scale, ox, oy


def reference_preprocess_with_info(src, cfg):
    """(uint8 (S, S), dict of PreprocessInfo fields) exactly as the old code computed them.
    Files are decoded with today's checked decoder (load_array): decoding is not what changed."""
    arr, name = load_array(src)
    grey = to_grey(arr, name)
    if min(grey.shape) < 2:
        raise ImageError(f"image is {grey.shape[1]}x{grey.shape[0]}, too small to be a radiograph")
    norm, lo, hi = normalise(grey, cfg)
    score = inversion_score(norm, cfg.border)
    inverted = cfg.invert == "always" or (cfg.invert == "auto" and score > 0.0)
    if inverted:
        norm = 1.0 - norm
    u8 = np.round(norm * 255.0).astype(np.uint8)
    if cfg.clahe:
        clahe = cv2.createCLAHE(clipLimit=cfg.clahe_clip, tileGridSize=(cfg.clahe_grid, cfg.clahe_grid))
        u8 = clahe.apply(u8)
    out, scale, ox, oy = _resize_pad(u8, cfg)
    info = {"inverted": bool(inverted), "inversion_score": score, "scale": float(scale), "offset_x": int(ox),
            "offset_y": int(oy), "orig_h": int(grey.shape[0]), "orig_w": int(grey.shape[1]), "low": lo, "high": hi}
    return out, info
