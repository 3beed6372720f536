"""Anatomy: the bones of each body part as geometry, and how to draw them.

A part builder (``BUILDERS[part](rng, proj, flex)``) lays out long bones (``Bone``) and
round bones (``Blob``) in a DESIGN x DESIGN frame; ``proj`` (0 = lateral, 1 = frontal)
compresses the layout sideways and ``flex`` bends the joint, so the views of one study show
the same anatomy (same ``rng`` seed) from different angles. Drawing happens in a CANVAS x
CANVAS attenuation map (the design frame plus a margin) with OpenCV's sub-pixel primitives.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import cv2
import numpy as np

from murakit.data.synth import exact

DESIGN = 320             # anatomy is laid out in a DESIGN x DESIGN frame (px) ...
MARGIN = 40              # ... drawn with this margin, so poses rarely show the canvas edge
CANVAS = DESIGN + 2 * MARGIN
_C = DESIGN / 2
_SUB = 16                # OpenCV fixed-point factor (shift=4) for sub-pixel drawing


# ----------------------------------------------------------------- geometry ----

@dataclass(frozen=True)
class Bone:
    """A long bone: shaft from p0 to p1 (canvas px), half-width hw, end bulbs r0 / r1."""

    p0: tuple
    p1: tuple
    hw: float
    r0: float = 0.0
    r1: float = 0.0
    taper: float = 1.0      # half-width at p1 = hw * taper
    target: bool = True     # may carry a finding
    dens: float = 1.0       # density multiplier (ribs, scapula are fainter)


@dataclass(frozen=True)
class Blob:
    """A round bone (carpal, glenoid, condyles): ellipse at c with semi-axes rx, ry."""

    c: tuple
    rx: float
    ry: float
    angle: float = 0.0
    dens: float = 1.0


def rot(v, deg: float) -> np.ndarray:
    t = math.radians(deg)
    c, s = math.cos(t), math.sin(t)
    return np.array([c * v[0] - s * v[1], s * v[0] + c * v[1]])


def _carpals(a, cx: float, y: float, sp: float, k: float, n_rows: int = 2) -> list:
    """Two rows of four rounded carpal bones around (cx, y); sp compresses x (lateral)."""
    xs = np.array([-30.0, -10.0, 10.0, 28.0])
    out = []
    for row in range(n_rows):
        jit = a.uniform(-2, 2, size=(4, 2))
        for i, x in enumerate(xs):
            out.append(Blob((cx + (x + jit[i, 0]) * k * sp, y + (row * 24 + jit[i, 1]) * k),
                            a.uniform(8, 11) * k, a.uniform(7, 9.5) * k, a.uniform(-30, 30)))
    return out


def _finger(a, base, direction, lengths, hws, gap: float, flex: float) -> list:
    """A chain of phalanges starting at ``base`` along ``direction`` (bent by ``flex``)."""
    bones, p = [], np.asarray(base, float)
    d = np.asarray(direction, float) / math.hypot(*direction)
    for i, (ln, hw) in enumerate(zip(lengths, hws)):
        d = rot(d, flex * (i > 0))
        p = p + d * gap
        q = p + d * ln
        tip = i == len(lengths) - 1
        bones.append(Bone(tuple(p), tuple(q), hw, hw * 1.25, hw * (0.8 if tip else 1.1),
                          taper=0.9))
        p = q
    return bones


def _forearm(a, proj: float, flex: float) -> list:
    k = a.uniform(0.9, 1.1)
    sp = 14 * k * (0.25 + 0.75 * proj)
    return [
        Bone((_C - 0.8 * sp, 45), (_C - 1.6 * sp, 280), 7.5 * k, 8 * k, 15 * k, 1.15),
        Bone((_C + sp, 35), (_C + 0.9 * sp, 276), 6.5 * k, 12 * k, 7 * k, 0.85),
        Blob((_C, 8), 30 * k, 13 * k),
        *_carpals(a, _C - 4, 304, 0.5 + 0.5 * proj, k * 0.8, n_rows=1),
    ]


def _humerus(a, proj: float, flex: float) -> list:
    k = a.uniform(0.9, 1.1)
    sp = 0.3 + 0.7 * proj
    return [
        Bone((_C, 55), (_C + a.uniform(-8, 8), 262), 10 * k, 26 * k, 20 * k, 1.1),
        Blob((_C - 44 * sp, 52), 11 * k, 28 * k, -8, dens=0.8),
        Bone((_C - 75, 12), (_C - 5, 8), 6 * k, 0, 8 * k, target=False),
        Bone((_C - 12 * sp, 292), (_C - 14 * sp, 420), 7 * k, 8 * k, 0),
        Bone((_C + 12 * sp, 285), (_C + 12 * sp, 420), 6.5 * k, 11 * k, 0),
    ]


def _elbow(a, proj: float, flex: float) -> list:
    k = a.uniform(0.9, 1.1)
    sp = 0.3 + 0.7 * proj
    j = np.array([_C, 165.0])

    def fore(x0, y0, x1, y1):
        return tuple(j + rot((x0 * sp * k, y0 * k), flex)), tuple(j + rot((x1 * sp * k, y1 * k), flex))

    r0, r1 = fore(-11, 18, -15, 280)
    u0, u1 = fore(9, 2, 12, 280)
    return [
        Bone((_C, -100), (_C, 146), 11 * k, 0, 22 * k, 1.3),
        Bone(r0, r1, 7 * k, 9 * k, 0),
        Bone(u0, u1, 7.5 * k, 13 * k, 0, 0.9),
        Blob(tuple(j + (-26 * sp * k, -10 * k)), 8 * k, 7 * k, dens=0.8),
    ]


def _wrist(a, proj: float, flex: float) -> list:
    k = a.uniform(0.9, 1.1)
    sp = 0.35 + 0.65 * proj
    bones = [
        Bone((_C - 13 * sp, -100), (_C - 16 * sp, 122), 12 * k, 0, 20 * k, 1.1),
        Bone((_C + 24 * sp, -100), (_C + 21 * sp, 116), 7 * k, 0, 9 * k, 0.9),
        *_carpals(a, _C - 2, 150, sp, k),
    ]
    starts = np.array([-36, -18, 0, 17, 31.0])
    ends = np.array([-58, -26, 0, 22, 42.0])
    for i, (x0, x1) in enumerate(zip(starts, ends)):
        y0 = 200 if i else 190
        bones.append(Bone((_C + x0 * sp * k, y0), (_C + x1 * sp * k, 335 - 25 * (i == 0)),
                          5.5 * k, 6 * k, 7.5 * k))
    return bones


def _hand(a, proj: float, flex: float) -> list:
    k = a.uniform(0.9, 1.05)
    sp = 0.35 + 0.65 * proj
    bones = [
        Bone((_C - 15 * sp, -90), (_C - 17 * sp, 44), 10 * k, 0, 15 * k, target=False),
        Bone((_C + 20 * sp, -90), (_C + 18 * sp, 40), 6 * k, 0, 7 * k, target=False),
        *_carpals(a, _C - 2, 66, sp, k * 0.75),
    ]
    bases = np.array([-26, -9, 8, 24.0])
    tips = np.array([-44, -14, 15, 42.0])
    lengths = [(40, 25, 17), (45, 28, 18), (42, 26, 17), (34, 20, 16)]
    for i in range(4):
        p0 = np.array([_C + bases[i] * sp * k, 108.0])
        p1 = np.array([_C + tips[i] * sp * k, 190.0])
        bones.append(Bone(tuple(p0), tuple(p1), 5.8 * k, 6 * k, 7.5 * k))
        ln = np.array(lengths[i]) * k * a.uniform(0.95, 1.05)
        bones += _finger(a, p1, p1 - p0, ln, (5.4 * k, 4.7 * k, 4.1 * k), 6 * k, flex)
    t0 = np.array([_C - 30 * sp * k, 104.0])
    td = rot((0.0, 1.0), 38 + 10 * proj)
    bones.append(Bone(tuple(t0), tuple(t0 + td * 40 * k), 6.2 * k, 6.5 * k, 7.5 * k))
    bones += _finger(a, t0 + td * 40 * k, td, np.array([28, 20.0]) * k, (5.6 * k, 4.8 * k),
                     6 * k, flex * 0.5)
    return bones


def _finger_part(a, proj: float, flex: float) -> list:
    k = a.uniform(0.9, 1.1)
    side = a.choice([-1, 1])
    bones = [Bone((_C, 420), (_C, 272), 13 * k, 0, 16 * k, target=False)]
    bones += _finger(a, (_C, 272), (0, -1), np.array([92, 56, 36.0]) * k,
                     (11 * k, 9.5 * k, 8 * k), 12 * k, flex)
    nx = _C + side * (60 + 25 * proj) * k
    bones += _finger(a, (nx, 300), (side * 0.15, -1), np.array([85, 50.0]) * k,
                     (9.5 * k, 8 * k), 12 * k, flex)
    return bones


def _shoulder(a, proj: float, flex: float) -> list:
    k = a.uniform(0.9, 1.1)
    sp = 0.4 + 0.6 * proj
    head = np.array([_C + 18, 150.0])
    bones = [
        Bone(tuple(head), (_C + 45, 430), 19 * k, 42 * k, 0, 0.95),
        Blob((_C - 36 * sp, 150), 11 * k, 34 * k, -5),
        Blob((_C - 100 * sp, 205), 45 * k, 95 * k, 18, dens=0.45),
        Bone((-90, 76), (_C + 50, 58), 9 * k, 0, 11 * k),
        Bone((_C - 70 * sp, 96), (_C + 30, 90), 7 * k, 0, 9 * k, target=False),
    ]
    for i in range(4):
        y = 215 + 40 * i + a.uniform(-5, 5)
        bones.append(Bone((-90, y - 15), (_C - 70 * sp, y + 25), 4 * k, target=False, dens=0.5))
    return bones


BUILDERS = {"ELBOW": _elbow, "FINGER": _finger_part, "FOREARM": _forearm, "HAND": _hand,
            "HUMERUS": _humerus, "SHOULDER": _shoulder, "WRIST": _wrist}


# ------------------------------------------------------------------ drawing ----

def visible_span(b: Bone, lo: float = 0.2, hi: float = 0.8, inset: float = 30.0):
    """Range of t in [lo, hi] where p0 + t (p1 - p0) lies well inside the design frame.

    Bones that run off the field are drawn far beyond it; a finding there would be cut off.
    """
    p0, p1 = np.asarray(b.p0, float), np.asarray(b.p1, float)
    d = p1 - p0
    for k in range(2):
        if abs(d[k]) < 1e-9:
            if not inset <= p0[k] <= DESIGN - inset:
                return 0.0, 0.0
            continue
        ta, tb = sorted(((inset - p0[k]) / d[k], (DESIGN - inset - p0[k]) / d[k]))
        lo, hi = max(lo, ta), min(hi, tb)
    return lo, max(lo, hi)


def to_canvas(b):
    """Design-frame bone -> canvas coordinates (shift by MARGIN)."""
    if isinstance(b, Blob):
        return replace(b, c=(b.c[0] + MARGIN, b.c[1] + MARGIN))
    return replace(b, p0=(b.p0[0] + MARGIN, b.p0[1] + MARGIN),
                   p1=(b.p1[0] + MARGIN, b.p1[1] + MARGIN))


def fixed_point(pts, origin) -> np.ndarray:
    """Canvas points -> OpenCV fixed-point (shift=4) int32 coordinates relative to origin."""
    return np.round((np.asarray(pts, float) - origin) * _SUB).astype(np.int32)


def ellipse(img, c, axes, angle, value, origin, thickness=-1) -> None:
    cc = fixed_point(c, origin)
    ax = (max(1, int(np.rint(axes[0] * _SUB))), max(1, int(np.rint(axes[1] * _SUB))))
    cv2.ellipse(img, (int(cc[0]), int(cc[1])), ax, float(angle), 0, 360, float(value),
                thickness, cv2.LINE_8, 4)


def line(img, p, q, value, width, origin) -> None:
    """A line of (sub-pixel) ``width`` drawn as a filled quad."""
    p, q = np.asarray(p, float), np.asarray(q, float)
    d = q - p
    n = np.array([-d[1], d[0]]) / max(math.hypot(*d), 1e-6) * max(width, 0.8) / 2
    cv2.fillConvexPoly(img, fixed_point([p + n, q + n, q - n, p - n], origin), float(value),
                       cv2.LINE_8, 4)


def axis(b: Bone):
    p0, p1 = np.asarray(b.p0, float), np.asarray(b.p1, float)
    u = (p1 - p0) / max(math.hypot(*(p1 - p0)), 1e-6)
    return p0, p1, u, np.array([-u[1], u[0]])


def roi_origin(b, pad: float = 18.0):
    """Integer bounding box (x0, y0, w, h) of a bone's drawing, padded for findings."""
    if isinstance(b, Blob):
        pts, ext = np.array([b.c]), max(b.rx, b.ry)
    else:
        pts, ext = np.array([b.p0, b.p1]), max(b.hw * max(1, b.taper), b.r0, b.r1)
    lo = np.floor(pts.min(0) - ext - pad).astype(int)
    hi = np.ceil(pts.max(0) + ext + pad).astype(int)
    return lo, (hi - lo)


def draw_bone(b, shades, origin, size) -> np.ndarray:
    """Render one bone into its own float32 ROI: bright cortex rim, darker medulla."""
    roi = np.zeros((size[1], size[0]), np.float32)
    vc = shades[0] * b.dens
    vm, ve = vc * shades[1], vc * shades[2]
    if isinstance(b, Blob):
        ct = max(1.2, 0.18 * min(b.rx, b.ry))
        ellipse(roi, b.c, (b.rx, b.ry), b.angle, vc * 0.95, origin)
        ellipse(roi, b.c, (b.rx - ct, b.ry - ct), b.angle, ve, origin)
        return roi
    p0, p1, u, n = axis(b)
    ang = math.degrees(math.atan2(u[1], u[0]))
    ct = max(1.3, 0.35 * b.hw)
    for grow, v_shaft, v_end in ((0.0, vc, vc * 0.95), (-ct, vm, ve)):
        h0, h1 = b.hw + grow, b.hw * b.taper + grow
        quad = [p0 + n * h0, p1 + n * h1, p1 - n * h1, p0 - n * h0]
        cv2.fillConvexPoly(roi, fixed_point(quad, origin), float(v_shaft), cv2.LINE_8, 4)
        for p, r in ((p0, b.r0), (p1, b.r1)):
            if r > 0:
                g = grow * 0.6
                ellipse(roi, p, (r * 0.75 + g, r + g), ang, v_end, origin)
    return roi


def paste(canvas, roi, origin) -> None:
    """Add ``roi`` into ``canvas`` at integer ``origin`` (clipped at the canvas edges)."""
    x0, y0 = int(origin[0]), int(origin[1])
    h, w = roi.shape
    cx0, cy0 = max(x0, 0), max(y0, 0)
    cx1, cy1 = min(x0 + w, canvas.shape[1]), min(y0 + h, canvas.shape[0])
    if cx1 > cx0 and cy1 > cy0:
        canvas[cy0:cy1, cx0:cx1] += roi[cy0 - y0:cy1 - y0, cx0 - x0:cx1 - x0]


def soft_tissue(bones, size: int, cast: bool) -> np.ndarray:
    """Blurred envelope around the bones, value 1 inside (caller scales it)."""
    q = 4  # the envelope is smooth: draw and blur it at quarter resolution (fast)
    m = np.zeros((size // q, size // q), np.float32)
    o = np.zeros(2)
    for b in bones:
        if isinstance(b, Blob):
            ellipse(m, np.divide(b.c, q), ((b.rx + 10) / q, (b.ry + 10) / q), b.angle, 1.0, o)
        elif b.dens >= 0.9:
            line(m, np.divide(b.p0, q), np.divide(b.p1, q), 1.0,
                  2 * (max(b.hw * 1.8, b.r0, b.r1) + 10) / q, o)
    m = exact.resize(exact.gaussian_blur(m, 6 / q), (size, size))
    if cast:  # plaster: a wider faint shell with a mesh texture
        shell = exact.gaussian_blur(cv2.dilate((m > 0.3).astype(np.float32), np.ones((15, 15))), 2)
        wave = exact.sin(np.arange(size) * 0.9)
        mesh = 1 + (0.25 * wave)[None, :] * wave[:, None]
        m = m + 0.45 * shell * mesh.astype(np.float32)
    return m
