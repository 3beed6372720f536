"""Rendering: from a study's spec to the pixels of one view, as an X-ray system would produce them.

``render_canvas`` draws the attenuation map (bones, findings, confounders, soft tissue,
metal) in the canonical canvas; ``render_view`` poses it into the output frame (rotation,
scale, shift, flip, one ``warpAffine``), burns in markers and collimation, exposes it
(exposure spread, blur, gamma, noise), may invert it, and quantises it to 8-bit grey,
8-bit RGB or 16-bit PNG pixels, all as set by ``SynthSettings``.
"""
from __future__ import annotations

import math

import cv2
import numpy as np

from murakit.data.synth import exact
from murakit.data.synth.anatomy import BUILDERS, CANVAS, Bone, draw_bone, paste, roi_origin, soft_tissue, to_canvas
from murakit.data.synth.findings import DRAW_IN_BONE, StudySpec, confound_bone, hardware, ring
from murakit.data.synth.settings import DEFAULT, SynthSettings

_BANKS: dict = {}


def _bank(rng, kind: str, h: int, w: int) -> np.ndarray:
    """A random (h, w) window (h, w <= 1024) of a fixed per-process 1024 x 1024 field.

    Drawing fresh normals for every pixel dominated the render time; a window at a random
    offset and orientation of one fixed field is just as random for our purpose and still a
    pure function of ``rng``. ``kind``: "noise" (white, unit variance) or "texture"
    (smooth, ~unit variance, features ~6 px).
    """
    if kind not in _BANKS:
        g = np.random.default_rng(1234 if kind == "noise" else 4321)
        if kind == "noise":
            field_ = g.standard_normal((1024, 1024), dtype=np.float32)
        else:
            small = g.standard_normal((171, 171), dtype=np.float32)
            field_ = exact.resize(small, (1024, 1024), cubic=True)
        _BANKS[kind] = field_
    f = _BANKS[kind].T if rng.random() < 0.5 else _BANKS[kind]
    y, x = rng.integers(0, 1024 - h + 1), rng.integers(0, 1024 - w + 1)
    return f[y:y + h, x:x + w]



def _texture(rng, size: int) -> np.ndarray:
    """Low-frequency multiplicative texture (trabecular pattern), mean 1, (size, size)."""
    return 1 + 0.12 * _bank(rng, "texture", size, size)


def render_canvas(part: str, spec: StudySpec, view: int, proj: float, flex: float,
                  rng: np.random.Generator):
    """Draw one view's attenuation map in the canonical canvas.

    Returns
    -------
    att : np.ndarray
        float32 (CANVAS, CANVAS), >= 0 (0 = air, ~0.3 soft tissue, ~0.5-1.2 bone, >2 metal).
    bbox : np.ndarray or None
        Finding box (x0, y0, x1, y1) in canvas px when this view shows the finding.
    """
    bones = [to_canvas(b) for b in
             BUILDERS[part](np.random.default_rng(spec.anatomy_seed), proj, flex)]
    show = bool(spec.finding) and spec.show[view]
    bone_layer = np.zeros((CANVAS, CANVAS), np.float32)
    metal = np.zeros_like(bone_layer)
    bbox = None
    for i, b in enumerate(bones):
        origin, size = roi_origin(b)
        roi = draw_bone(b, spec.shades, origin, size)
        if isinstance(b, Bone) and b.target:
            confound_bone(roi, origin, b, spec, rng)
        if show and i == spec.bone and spec.finding in ("fracture", "lytic", "periosteal"):
            bbox = DRAW_IN_BONE[spec.finding](roi, origin, b, spec.t, spec.params)
        paste(bone_layer, roi, origin)
    if show and spec.finding == "hardware":
        bbox = hardware(metal, bones[spec.bone], spec.t, spec.params)
    if spec.ring:
        ring(metal, bones)
    bone_layer = exact.gaussian_blur(bone_layer * _texture(rng, CANVAS), 0.7)
    tissue = soft_tissue(bones, CANVAS, spec.cast) * spec.shades[3]
    att = tissue + bone_layer
    if spec.ring or (show and spec.finding == "hardware"):
        att += exact.gaussian_blur(metal, 0.5)
    return att, bbox


def _output_size(rng, s: SynthSettings) -> tuple[int, int]:
    """(H, W): long side ``max_side`` for a share ``max_side_prob`` of the images, else
    ``min_side``..``max_side`` - 1 (default: 512 for a third, else 90..511); aspect 0.55..0.95."""
    long_side = s.max_side if rng.random() < s.max_side_prob else int(rng.integers(s.min_side, s.max_side))
    short = max(60, int(np.rint(long_side * rng.uniform(0.55, 0.95))))
    return (long_side, short) if rng.random() < 0.8 else (short, long_side)


def _pose(rng, h: int, w: int, focus) -> np.ndarray:
    """2x3 affine canvas -> output: flip, rotate, scale, shift; keeps ``focus`` in view."""
    angle = rng.uniform(-25, 25) + (rng.choice([-90, 90]) if w > h and rng.random() < 0.7 else 0)
    # zoomed in like MURA's tightly cropped views: the limb fills the frame, ends may be cut off
    scale = max(h, w) / 230 * rng.uniform(0.9, 1.25)
    flip = rng.choice([-1.0, 1.0])
    t = math.radians(angle)
    r = np.array([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]]) * scale
    lin = r * np.array([flip, 1.0])  # r @ diag(flip, 1)
    shift = np.array([w, h]) * (0.5 + rng.uniform(-0.08, 0.08, 2))
    m = np.hstack([lin, (shift - _apply(lin, np.array([CANVAS / 2] * 2)))[:, None]])
    if focus is not None:  # slide the image so that the finding stays well inside
        f = _apply(m[:, :2], np.asarray(focus, float)) + m[:, 2]
        lo, hi = np.array([w, h]) * 0.2, np.array([w, h]) * 0.8
        m[:, 2] += np.clip(f, lo, hi) - f
    return m


def _apply(a: np.ndarray, p: np.ndarray) -> np.ndarray:
    """``a @ p`` for a 2x2 ``a`` and points ``p`` (2,) or (n, 2), as element-wise products and
    one sum each: BLAS's matrix product may fuse multiply-adds on one CPU and not another."""
    p = np.asarray(p, float)
    return np.stack([a[0, 0] * p[..., 0] + a[0, 1] * p[..., 1],
                     a[1, 0] * p[..., 0] + a[1, 1] * p[..., 1]], axis=-1)


def _map_box(m: np.ndarray, box, h: int, w: int):
    corners = np.array([[box[0], box[1]], [box[2], box[1]], [box[0], box[3]], [box[2], box[3]]])
    q = _apply(m[:, :2], corners) + m[:, 2]
    x0, y0 = np.clip(np.floor(q.min(0)), 0, [w - 1, h - 1]).astype(int)
    x1, y1 = np.clip(np.ceil(q.max(0)), 0, [w - 1, h - 1]).astype(int)
    return int(x0), int(y0), int(x1), int(y1)


def _marker(att, rng) -> None:
    """Burn a lead position marker ("L", "R", ...) into a random corner (label-independent)."""
    h, w = att.shape
    text = str(rng.choice(["L", "R", "L", "R", "LT", "RT", "PA", "LAT"]))
    height = max(8.0, max(h, w) * rng.uniform(0.045, 0.09))
    fs = height / 22
    th = max(1, int(np.rint(fs * rng.uniform(1.5, 2.5))))
    (tw, tht), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, fs, th)
    mx, my = int(w * rng.uniform(0.03, 0.1)), int(h * rng.uniform(0.03, 0.1))
    x = mx if rng.random() < 0.5 else max(0, w - mx - tw)
    y = tht + my if rng.random() < 0.5 else max(tht, h - my)
    ink = np.zeros((h, w), np.uint8)  # OpenCV draws text on 8-bit images only
    cv2.putText(ink, text, (x, y), cv2.FONT_HERSHEY_SIMPLEX, fs, 255, th, cv2.LINE_AA)
    if rng.random() < 0.3:
        cv2.rectangle(ink, (x - 3, y - tht - 3), (x + tw + 3, y + 4), 255, 1)
    np.maximum(att, ink.astype(np.float32) * (3.0 / 255), out=att)


def _collimate(att, rng) -> None:
    """Bright (unexposed) band on one or two edges, as in collimated acquisitions."""
    h, w = att.shape
    for _ in range(int(rng.integers(1, 3))):
        side = int(rng.integers(4))
        k = int((h if side < 2 else w) * rng.uniform(0.02, 0.08))
        sl = [np.s_[:k, :], np.s_[h - k:, :], np.s_[:, :k], np.s_[:, w - k:]][side]
        att[sl] = rng.uniform(1.5, 3.0)


def _expose(att, rng, s: SynthSettings) -> np.ndarray:
    """Attenuation -> detector intensity in [0, 1] with exposure spread, blur and noise.

    A share ``s.bad_exposure`` of images is washed out, dark or saturated (1 : 1.5 : 1.5);
    the noise level is multiplied by ``s.noise``.
    """
    h, w = att.shape
    bad = s.bad_exposure / 0.4  # the thresholds below are the default's (0.4) shares
    img = 1 - exact.exp(att * -rng.uniform(0.9, 1.6))
    img = exact.gaussian_blur(img, rng.uniform(0.4, 1.3) * max(h, w) / 512)
    img = exact.power(np.maximum(img, 0), rng.uniform(0.7, 1.5))
    kind = rng.random()
    if kind < 0.1 * bad:    # washed out: tiny spread
        gain, offset = rng.uniform(0.08, 0.2), rng.uniform(0.2, 0.6)
    elif kind < 0.25 * bad:  # dark
        gain, offset = rng.uniform(0.3, 0.55), rng.uniform(0.0, 0.05)
    elif kind < 0.4 * bad:   # bright, partly saturated
        gain, offset = rng.uniform(0.7, 1.0), rng.uniform(0.2, 0.35)
    else:
        gain, offset = rng.uniform(0.6, 1.0), rng.uniform(0.0, 0.15)
    ramp = np.linspace(-1, 1, w if rng.random() < 0.5 else h, dtype=np.float32)
    ramp = ramp[None, :] if ramp.size == w else ramp[:, None]
    img = offset + gain * (img + rng.uniform(-0.06, 0.06) * ramp)
    img += _bank(rng, "noise", h, w) * (gain * rng.uniform(0.006, 0.03) * s.noise)
    return np.clip(img, 0, 1)


def _quantize(img, rng, s: SynthSettings) -> np.ndarray:
    """float [0, 1] -> uint8 grey, uint8 3-channel (``rgb_prob``) or uint16 (``u16_prob``; full or 12-bit)."""
    u = rng.random()
    if u < s.u16_prob:
        top = 65535 if rng.random() < 0.5 else 4095
        return np.round(img * top).astype(np.uint16)
    g = np.round(img * 255).astype(np.uint8)
    return cv2.merge([g, g, g]) if u < s.u16_prob + s.rgb_prob else g


def render_view(part: str, spec: StudySpec, view: int, rng: np.random.Generator,
                settings: SynthSettings = DEFAULT):
    """Render one view of a study.

    Returns
    -------
    image : np.ndarray
        (H, W) uint8 / uint16 or (H, W, 3) uint8; long side ``min_side``..``max_side``
        (default 90..512).
    inverted : bool
        True when the image was stored with bones dark on light.
    bbox : tuple of int or None
        (x0, y0, x1, y1) of the finding in image pixels, None if the view does not show it.
    """
    proj = rng.uniform(0.75, 1.0) if view == 0 else rng.uniform(0.0, 0.35) if view == 1 \
        else rng.uniform(0.0, 1.0)
    flex = rng.uniform(-8, 8) if view == 0 else rng.uniform(10, 80) * rng.choice([-1, 1])
    if part in ("HAND", "FINGER"):
        flex = flex * 0.25
    att, box = render_canvas(part, spec, view, proj, flex, rng)
    h, w = _output_size(rng, settings)
    focus = None if box is None else (box[:2] + box[2:]) / 2
    m = _pose(rng, h, w, focus)
    out = exact.warp_affine(att, m, (w, h))
    if rng.random() < 0.07:
        _collimate(out, rng)
    if rng.random() < settings.marker_prob:
        _marker(out, rng)
    img = _expose(out, rng, settings)
    inverted = bool(rng.random() < settings.invert_prob)
    if inverted:
        img = 1 - img
    bbox = None if box is None else _map_box(m, box, h, w)
    return _quantize(img, rng, settings), inverted, bbox
