"""The embedded default: a MURA-v1.1-shaped data set of procedurally drawn radiographs.

``generate(out_dir)`` writes ``out_dir/MURA-v1.1/`` with exactly the layout and the four
header-less CSVs of the real MURA-v1.1 release, plus its quirks (AppleDouble ``._*`` junk,
1- and 3-channel and a few 16-bit PNGs, sizes from ~90 to 512 px, exposure spread, noise,
inverted images, burned-in position markers in both classes).

Each study is one synthetic patient anatomy (one of the seven upper-extremity parts) seen in
1-5 views with different poses and projections. Abnormal studies carry one finding (fracture,
metal hardware, lytic lesion or periosteal reaction) that each view shows with probability
``SHOW_PROB`` (at least one view shows it), so study labels are noisy at the image level as in
MURA. Normal studies carry look-alike confounders (growth plates, nutrient foramina, bone
islands, rings, casts) so that neither class is trivially separable.

Ground truth that the official CSVs do not hold is written to
``MURA-v1.1/synth_annotations.csv`` (``path,inverted,finding,x0,y0,x1,y1``, bbox in original
pixel coordinates) and the generation parameters to ``MURA-v1.1/synth.json``.

Everything is drawn with numpy + OpenCV in a canonical 320 x 320 "attenuation" canvas that is
then posed (rotation, scale, shift, flip) into the output frame with one ``warpAffine``.
Randomness comes from ``SeedSequence([seed, study_index + 1])``, so studies can be rendered in
any order, by any number of processes, and give byte-identical files.
"""
from __future__ import annotations

import json
import math
import os
import shutil
from dataclasses import dataclass, field, replace
from pathlib import Path

import cv2
import numpy as np

from edge.atomic import atomic_dir
from murakit.errors import MurakitError

GENERATOR_VERSION = 7  # bump whenever the pixels or CSVs of a given seed change
DEFAULT_STUDIES = 1500
PARTS = ("ELBOW", "FINGER", "FOREARM", "HAND", "HUMERUS", "SHOULDER", "WRIST")
# Train studies per part and abnormal share per part in MURA-v1.1 (Rajpurkar et al., table 1).
PART_STUDIES = np.array([1754, 1935, 877, 2018, 592, 2821, 3460], dtype=float)
PART_ABNORMAL = {"ELBOW": 0.38, "FINGER": 0.34, "FOREARM": 0.33, "HAND": 0.26,
                 "HUMERUS": 0.46, "SHOULDER": 0.52, "WRIST": 0.38}
VIEW_COUNTS = (1, 2, 3, 4, 5)
VIEW_PROBS = (0.10, 0.30, 0.40, 0.15, 0.05)  # mean 2.75 views/study (MURA: 2.73)
STUDIES_PER_PATIENT = ((1, 2, 3), (0.82, 0.14, 0.04))
VALID_FRACTION = 0.20     # MURA holds out ~8%; 20% gives the demo ~300 test studies, so the
                          # test AUROC has a standard error near 0.03 rather than 0.05
FINDINGS = ("fracture", "hardware", "lytic", "periosteal")
FINDING_PROBS = (0.40, 0.15, 0.25, 0.20)
SHOW_PROB = 0.9          # chance that one view of an abnormal study shows its finding
INVERT_PROB = 0.10
RGB_PROB = 0.25
U16_PROB = 0.05
APPLEDOUBLE_PROB = 0.20
MARKER_PROB = 0.65
DESIGN = 320             # anatomy is laid out in a DESIGN x DESIGN frame (px) ...
MARGIN = 40              # ... drawn with this margin, so poses rarely show the canvas edge
CANVAS = DESIGN + 2 * MARGIN
_C = DESIGN / 2
_SUB = 16                # OpenCV fixed-point factor (shift=4) for sub-pixel drawing
ANNOTATION_HEADER = "path,inverted,finding,x0,y0,x1,y1"


# --------------------------------------------------------------------------- plan ----

@dataclass(frozen=True)
class StudyPlan:
    """One study to render: where it goes and what it is (no pixels yet)."""

    index: int        # position in the plan; seeds the study's randomness
    split: str        # "train" | "valid"
    part: str         # one of PARTS
    patient: int      # 5-digit patient number, distinct between splits
    study: int        # study number within (patient, part), from 1
    label: int        # 1 = abnormal
    n_views: int

    @property
    def study_dir(self) -> str:
        """Study folder relative to the folder holding MURA-v1.1, with trailing slash."""
        kind = "positive" if self.label else "negative"
        return (f"MURA-v1.1/{self.split}/XR_{self.part}/patient{self.patient:05d}/"
                f"study{self.study}_{kind}/")


def plan_studies(n_studies: int, seed: int = 0) -> list[StudyPlan]:
    """Draw the patient / study / view structure of the data set.

    Parameters
    ----------
    n_studies : int
        Number of studies (>= 1).
    seed : int
        Seed; the same seed gives the same plan.

    Returns
    -------
    list of StudyPlan
        Sorted like the MURA CSVs (split, part, patient, study). Train patients are numbered
        from 1, valid patients continue after the last train patient.
    """
    _check_n_studies(n_studies)
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x5EED]))
    patients = []  # list of lists of (part, label, n_views)
    total = 0
    while total < n_studies:
        k = min(int(rng.choice(STUDIES_PER_PATIENT[0], p=STUDIES_PER_PATIENT[1])), n_studies - total)
        studies = []
        for _ in range(k):
            part = PARTS[int(rng.choice(len(PARTS), p=PART_STUDIES / PART_STUDIES.sum()))]
            label = int(rng.random() < PART_ABNORMAL[part])
            studies.append((part, label, int(rng.choice(VIEW_COUNTS, p=VIEW_PROBS))))
        patients.append(studies)
        total += k
    n_valid_patients = _valid_patient_count(patients, n_studies)
    plans = []
    for p_idx, studies in enumerate(patients):
        split = "valid" if p_idx >= len(patients) - n_valid_patients else "train"
        seen: dict[str, int] = {}
        for part, label, n_views in studies:
            seen[part] = seen.get(part, 0) + 1
            plans.append((split, part, p_idx + 1, seen[part], label, n_views))
    plans.sort(key=lambda p: (p[0] != "train", p[1], p[2], p[3]))
    return [StudyPlan(i, *p) for i, p in enumerate(plans)]


def _check_n_studies(n_studies) -> None:
    if isinstance(n_studies, bool) or not isinstance(n_studies, (int, np.integer)) \
            or n_studies < 1:
        raise MurakitError(f"number of studies must be a positive integer, got {n_studies!r}")


def _valid_patient_count(patients: list, n_studies: int) -> int:
    """Take patients from the end until ~VALID_FRACTION of studies are valid (>=1 if n>=2)."""
    target = max(1, round(VALID_FRACTION * n_studies)) if n_studies >= 2 else 0
    count, got = 0, 0
    for studies in reversed(patients[1:]):  # the first patient always stays in train
        if got >= target:
            break
        got += len(studies)
        count += 1
    return count


# ------------------------------------------------------------------- anatomy ----

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


def _rot(v, deg: float) -> np.ndarray:
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
    d = np.asarray(direction, float) / np.linalg.norm(direction)
    for i, (ln, hw) in enumerate(zip(lengths, hws)):
        d = _rot(d, flex * (i > 0))
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
        return tuple(j + _rot((x0 * sp * k, y0 * k), flex)), tuple(j + _rot((x1 * sp * k, y1 * k), flex))

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
    td = _rot((0.0, 1.0), 38 + 10 * proj)
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


# ----------------------------------------------------------------- study spec ----

@dataclass
class StudySpec:
    """Everything that stays fixed across the views of one study."""

    anatomy_seed: int
    shades: tuple                  # (cortex, medulla / cortex, cancellous / cortex, tissue)
    finding: str = ""              # "" for normal studies
    bone: int = -1                 # index of the bone carrying the finding
    t: float = 0.5                 # position of the finding along that bone (0..1)
    params: dict = field(default_factory=dict)
    show: tuple = ()               # per view: does this view show the finding?
    young: bool = False            # open growth plates (confounder)
    ring: bool = False             # metal ring on a finger (confounder)
    cast: bool = False             # plaster cast (confounder)


def _study_spec(plan: StudyPlan, rng: np.random.Generator) -> StudySpec:
    spec = StudySpec(
        anatomy_seed=int(rng.integers(2**63)),
        shades=(rng.uniform(0.75, 0.95), rng.uniform(0.5, 0.65), rng.uniform(0.6, 0.72),
                rng.uniform(0.25, 0.45)),
        young=rng.random() < 0.2,
        ring=plan.part in ("HAND", "FINGER") and rng.random() < 0.12,
        cast=rng.random() < 0.07,
    )
    if not plan.label:
        return spec
    bones = BUILDERS[plan.part](np.random.default_rng(spec.anatomy_seed), 1.0, 0.0)
    spans = {i: _visible_span(b) for i, b in enumerate(bones)
             if isinstance(b, Bone) and b.target}
    cands = [i for i, (lo, hi) in spans.items() if hi > lo]
    lengths = np.array([math.dist(bones[i].p0, bones[i].p1) * np.diff(spans[i])[0]
                        for i in cands])
    spec.bone = cands[int(rng.choice(len(cands), p=lengths / lengths.sum()))]
    spec.finding = FINDINGS[int(rng.choice(len(FINDINGS), p=FINDING_PROBS))]
    spec.t = float(rng.uniform(*spans[spec.bone]))
    spec.params = _finding_params(spec.finding, rng)
    show = rng.random(plan.n_views) < SHOW_PROB
    if not show.any():
        show[rng.integers(plan.n_views)] = True
    spec.show = tuple(bool(s) for s in show)
    return spec


def _visible_span(b: Bone, lo: float = 0.2, hi: float = 0.8, inset: float = 30.0):
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


def _finding_params(kind: str, rng: np.random.Generator) -> dict:
    """Draw the shape parameters of one finding (sizes relative to the bone half-width)."""
    sign = float(rng.choice([-1, 1]))
    if kind == "fracture":
        return {"obl": rng.uniform(-35, 35), "disp": sign * rng.uniform(1.0, 2.0),
                "gap": rng.uniform(8.0, 14.0), "ang": rng.choice([-1, 1]) * rng.uniform(12, 30),
                "along": rng.uniform(-2, 2)}
    if kind == "hardware":
        return {"sub": str(rng.choice(["plate", "screws", "wires"], p=[0.35, 0.35, 0.3])),
                "side": sign, "length": rng.uniform(0.35, 0.6), "n": int(rng.integers(1, 4)),
                "angle": rng.uniform(20, 50) * rng.choice([-1, 1])}
    if kind == "lytic":
        return {"rx": rng.uniform(0.9, 1.15), "elong": rng.uniform(2.0, 3.5),
                "off": rng.uniform(-0.25, 0.25), "depth": rng.uniform(0.75, 0.95),
                "rim": bool(rng.random() < 0.4)}
    return {"side": sign, "both": bool(rng.random() < 0.4), "half": rng.uniform(0.12, 0.22),
            "layers": int(rng.integers(2, 4)), "value": rng.uniform(0.55, 0.8),
            "bulge": rng.uniform(0.8, 1.3)}


# ------------------------------------------------------------------- drawing ----

def _fp(pts, origin) -> np.ndarray:
    """Canvas points -> OpenCV fixed-point (shift=4) int32 coordinates relative to origin."""
    return np.round((np.asarray(pts, float) - origin) * _SUB).astype(np.int32)


def _ellipse(img, c, axes, angle, value, origin, thickness=-1) -> None:
    cc = _fp(c, origin)
    ax = (max(1, int(np.rint(axes[0] * _SUB))), max(1, int(np.rint(axes[1] * _SUB))))
    cv2.ellipse(img, (int(cc[0]), int(cc[1])), ax, float(angle), 0, 360, float(value),
                thickness, cv2.LINE_8, 4)


def _line(img, p, q, value, width, origin) -> None:
    """A line of (sub-pixel) ``width`` drawn as a filled quad."""
    p, q = np.asarray(p, float), np.asarray(q, float)
    d = q - p
    n = np.array([-d[1], d[0]]) / max(np.linalg.norm(d), 1e-6) * max(width, 0.8) / 2
    cv2.fillConvexPoly(img, _fp([p + n, q + n, q - n, p - n], origin), float(value),
                       cv2.LINE_8, 4)


def _axis(b: Bone):
    p0, p1 = np.asarray(b.p0, float), np.asarray(b.p1, float)
    u = (p1 - p0) / max(np.linalg.norm(p1 - p0), 1e-6)
    return p0, p1, u, np.array([-u[1], u[0]])


def _roi_origin(b, pad: float = 18.0):
    """Integer bounding box (x0, y0, w, h) of a bone's drawing, padded for findings."""
    if isinstance(b, Blob):
        pts, ext = np.array([b.c]), max(b.rx, b.ry)
    else:
        pts, ext = np.array([b.p0, b.p1]), max(b.hw * max(1, b.taper), b.r0, b.r1)
    lo = np.floor(pts.min(0) - ext - pad).astype(int)
    hi = np.ceil(pts.max(0) + ext + pad).astype(int)
    return lo, (hi - lo)


def _draw_bone(b, shades, origin, size) -> np.ndarray:
    """Render one bone into its own float32 ROI: bright cortex rim, darker medulla."""
    roi = np.zeros((size[1], size[0]), np.float32)
    vc = shades[0] * b.dens
    vm, ve = vc * shades[1], vc * shades[2]
    if isinstance(b, Blob):
        ct = max(1.2, 0.18 * min(b.rx, b.ry))
        _ellipse(roi, b.c, (b.rx, b.ry), b.angle, vc * 0.95, origin)
        _ellipse(roi, b.c, (b.rx - ct, b.ry - ct), b.angle, ve, origin)
        return roi
    p0, p1, u, n = _axis(b)
    ang = math.degrees(math.atan2(u[1], u[0]))
    ct = max(1.3, 0.35 * b.hw)
    for grow, v_shaft, v_end in ((0.0, vc, vc * 0.95), (-ct, vm, ve)):
        h0, h1 = b.hw + grow, b.hw * b.taper + grow
        quad = [p0 + n * h0, p1 + n * h1, p1 - n * h1, p0 - n * h0]
        cv2.fillConvexPoly(roi, _fp(quad, origin), float(v_shaft), cv2.LINE_8, 4)
        for p, r in ((p0, b.r0), (p1, b.r1)):
            if r > 0:
                g = grow * 0.6
                _ellipse(roi, p, (r * 0.75 + g, r + g), ang, v_end, origin)
    return roi


def _paste(canvas, roi, origin) -> None:
    """Add ``roi`` into ``canvas`` at integer ``origin`` (clipped at the canvas edges)."""
    x0, y0 = int(origin[0]), int(origin[1])
    h, w = roi.shape
    cx0, cy0 = max(x0, 0), max(y0, 0)
    cx1, cy1 = min(x0 + w, canvas.shape[1]), min(y0 + h, canvas.shape[0])
    if cx1 > cx0 and cy1 > cy0:
        canvas[cy0:cy1, cx0:cx1] += roi[cy0 - y0:cy1 - y0, cx0 - x0:cx1 - x0]


def _box(center, half) -> np.ndarray:
    c = np.asarray(center, float)
    return np.array([c[0] - half, c[1] - half, c[0] + half, c[1] + half])


def _fracture(roi, origin, b: Bone, t: float, p: dict) -> np.ndarray:
    """Cut the bone along an oblique line, shift + angulate the distal piece, open a gap."""
    p0, p1, u, n = _axis(b)
    fp = p0 + t * (p1 - p0) - origin
    m = _rot(u, p["obl"])
    yy, xx = np.mgrid[0:roi.shape[0], 0:roi.shape[1]].astype(np.float32)
    dist = (xx - fp[0]) * m[0] + (yy - fp[1]) * m[1]
    distal = roi * (dist > 0)
    warp = cv2.getRotationMatrix2D((float(fp[0]), float(fp[1])), float(p["ang"]), 1.0)
    warp[:, 2] += n * p["disp"] * b.hw + u * p["along"]
    moved = cv2.warpAffine(distal, warp, (roi.shape[1], roi.shape[0]), flags=cv2.INTER_LINEAR)
    out = roi * (dist <= 0) + moved
    out *= np.clip(np.abs(dist) / (p["gap"] / 2), 0, 1) ** 2
    roi[:] = out
    return _box(fp + origin, 1.7 * b.hw + abs(p["disp"]) * b.hw + 4)


def _lytic(roi, origin, b: Bone, t: float, p: dict) -> np.ndarray:
    """A rounded lucent (dark) area inside the bone, sometimes with a sclerotic rim."""
    p0, p1, u, n = _axis(b)
    hw = b.hw * (1 + (b.taper - 1) * t)
    c = p0 + t * (p1 - p0) + n * p["off"] * hw
    ax = (p["rx"] * hw * p["elong"], p["rx"] * hw)
    ang = math.degrees(math.atan2(u[1], u[0]))
    mask = np.zeros_like(roi)
    _ellipse(mask, c, ax, ang, 1.0, origin)
    mask = cv2.GaussianBlur(mask, (0, 0), 1.2)
    inside = (roi > 0.05).astype(np.float32)
    if p["rim"]:
        ring = np.zeros_like(roi)
        _ellipse(ring, c, (ax[0] + 1.2, ax[1] + 1.2), ang, 0.15, origin, thickness=2)
        roi += ring * inside
    roi *= 1 - p["depth"] * mask
    return _box(c, max(ax) + 3)


def _periosteal(roi, origin, b: Bone, t: float, p: dict) -> np.ndarray:
    """Thin bright lamellae parallel to the cortex over a segment of the shaft."""
    p0, p1, u, n = _axis(b)
    ln = np.linalg.norm(p1 - p0)
    c = p0 + t * (p1 - p0)
    hw = b.hw * (1 + (b.taper - 1) * t)
    a, z = c - u * p["half"] * ln, c + u * p["half"] * ln
    sides = (p["side"], -p["side"]) if p["both"] else (p["side"],)
    ang = math.degrees(math.atan2(u[1], u[0]))
    for s in sides:
        # fusiform cloud of new bone hugging the cortex, then lamellae further out
        cloud = np.zeros_like(roi)
        _ellipse(cloud, c + n * s * hw, (p["half"] * ln, p["bulge"] * hw + 1.5), ang, 1.0, origin)
        roi += cv2.GaussianBlur(cloud, (0, 0), 1.0) * (p["value"] * 0.7)
        for j in range(p["layers"]):
            off = n * s * (hw + p["bulge"] * hw + 2.2 + 2.4 * j)
            _line(roi, a + off + u * 3 * j, z + off - u * 3 * j, p["value"] / (1 + 0.3 * j),
                  1.6, origin)
    return _box(c, max(p["half"] * ln, hw * (1 + p["bulge"]) + 4 + 2.4 * p["layers"]) + 2)


def _hardware(metal, b: Bone, t: float, p: dict) -> np.ndarray:
    """Very bright metal: a plate with screws, loose screws, or K-wires; returns bbox."""
    p0, p1, u, n = _axis(b)
    ln = np.linalg.norm(p1 - p0)
    c = p0 + t * (p1 - p0)
    hw = b.hw
    pts = []
    o = np.zeros(2)
    if p["sub"] == "plate":
        half = p["length"] * ln / 2
        wd = 0.9 * hw
        pc = c + n * p["side"] * (hw + wd / 2 - 1)
        _line(metal, pc - u * half, pc + u * half, 2.2, wd, o)
        k = int(np.clip(round(2 * half / (1.8 * hw)), 2, 6))
        for s in np.linspace(-half * 0.8, half * 0.8, k):
            q = c + u * s
            _line(metal, q + n * p["side"] * (hw + wd), q - n * p["side"] * hw * 1.1, 2.4,
                  0.45 * hw, o)
        pts += [pc - u * half, pc + u * half, c - n * p["side"] * hw * 1.1]
    elif p["sub"] == "screws":
        for j in range(p["n"]):
            q = c + u * (j - (p["n"] - 1) / 2) * 2.2 * hw
            d = _rot(n, p["angle"] * 0.3)
            _line(metal, q + d * hw * 1.2, q - d * hw * 1.2, 2.4, 0.5 * hw, o)
            _line(metal, q + d * hw * 1.2, q + d * hw * 1.5, 2.4, 0.9 * hw, o)
            pts += [q + d * hw * 1.6, q - d * hw * 1.3]
    else:
        for j in range(min(p["n"], 2)):
            d = _rot(u, p["angle"] + 12 * j)
            q = c + u * j * hw
            _line(metal, q - d * 2.6 * hw, q + d * 2.6 * hw, 2.3, 3.5, o)
            pts += [q - d * 2.6 * hw, q + d * 2.6 * hw]
    pts = np.array(pts)
    return np.array([*pts.min(0) - 3, *pts.max(0) + 3])


def _confound_bone(roi, origin, b: Bone, spec: StudySpec, rng) -> None:
    """Normal look-alikes, in both classes: growth plates, nutrient foramina, bone islands."""
    p0, p1, u, n = _axis(b)
    if spec.young:  # open physis: a thin dark band across each bone end
        for p, r, s in ((p0, b.r0, 1), (p1, b.r1, -1)):
            if r > 0:
                q = p + u * s * r * 0.55
                mask = np.zeros_like(roi)
                _line(mask, q + n * r * 1.2, q - n * r * 1.2, 1.0, rng.uniform(1.2, 2.0), origin)
                roi *= 1 - 0.45 * mask
    if rng.random() < 0.35:  # nutrient foramen: small oblique lucent channel in the cortex
        q = p0 + rng.uniform(0.3, 0.7) * (p1 - p0) + n * rng.choice([-1, 1]) * b.hw * 0.7
        d = _rot(u, rng.uniform(20, 45))
        mask = np.zeros_like(roi)
        _line(mask, q - d * b.hw * 0.5, q + d * b.hw * 0.5, 1.0, rng.uniform(1.0, 1.8), origin)
        roi *= 1 - rng.uniform(0.3, 0.5) * mask
    if rng.random() < 0.15:  # bone island: small dense spot in the medulla
        q = p0 + rng.uniform(0.2, 0.8) * (p1 - p0) + n * rng.uniform(-0.3, 0.3) * b.hw
        dot = np.zeros_like(roi)
        _ellipse(dot, q, (b.hw * rng.uniform(0.2, 0.35),) * 2, 0, 0.15, origin)
        roi += dot * (roi > 0.05)


def _soft_tissue(bones, size: int, cast: bool) -> np.ndarray:
    """Blurred envelope around the bones, value 1 inside (caller scales it)."""
    q = 4  # the envelope is smooth: draw and blur it at quarter resolution (fast)
    m = np.zeros((size // q, size // q), np.float32)
    o = np.zeros(2)
    for b in bones:
        if isinstance(b, Blob):
            _ellipse(m, np.divide(b.c, q), ((b.rx + 10) / q, (b.ry + 10) / q), b.angle, 1.0, o)
        elif b.dens >= 0.9:
            _line(m, np.divide(b.p0, q), np.divide(b.p1, q), 1.0,
                  2 * (max(b.hw * 1.8, b.r0, b.r1) + 10) / q, o)
    m = cv2.resize(cv2.GaussianBlur(m, (0, 0), 6 / q), (size, size),
                   interpolation=cv2.INTER_LINEAR)
    if cast:  # plaster: a wider faint shell with a mesh texture
        shell = cv2.GaussianBlur(cv2.dilate((m > 0.3).astype(np.float32), np.ones((15, 15))),
                                 (0, 0), 2)
        yy, xx = np.mgrid[0:size, 0:size]
        mesh = 1 + 0.25 * np.sin(xx * 0.9) * np.sin(yy * 0.9)
        m = m + 0.45 * shell * mesh.astype(np.float32)
    return m


def _ring(metal, bones) -> None:
    """A metal ring around the first proximal phalanx in the list (hand / finger)."""
    ph = [b for b in bones if isinstance(b, Bone) and b.target][1]
    p0, p1, u, _n = _axis(ph)
    c = p0 + 0.45 * (p1 - p0)
    _ellipse(metal, c, (3.0, ph.hw * 1.9), math.degrees(math.atan2(u[1], u[0])), 2.2,
             np.zeros(2), thickness=3)


def _texture(rng, size: int) -> np.ndarray:
    """Low-frequency multiplicative texture (trabecular pattern), mean 1, (size, size)."""
    return 1 + 0.12 * _bank(rng, "texture", size, size)


def _to_canvas(b):
    """Design-frame bone -> canvas coordinates (shift by MARGIN)."""
    if isinstance(b, Blob):
        return replace(b, c=(b.c[0] + MARGIN, b.c[1] + MARGIN))
    return replace(b, p0=(b.p0[0] + MARGIN, b.p0[1] + MARGIN),
                   p1=(b.p1[0] + MARGIN, b.p1[1] + MARGIN))


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
    bones = [_to_canvas(b) for b in
             BUILDERS[part](np.random.default_rng(spec.anatomy_seed), proj, flex)]
    show = bool(spec.finding) and spec.show[view]
    bone_layer = np.zeros((CANVAS, CANVAS), np.float32)
    metal = np.zeros_like(bone_layer)
    bbox = None
    for i, b in enumerate(bones):
        origin, size = _roi_origin(b)
        roi = _draw_bone(b, spec.shades, origin, size)
        if isinstance(b, Bone) and b.target:
            _confound_bone(roi, origin, b, spec, rng)
        if show and i == spec.bone and spec.finding in ("fracture", "lytic", "periosteal"):
            fn = {"fracture": _fracture, "lytic": _lytic, "periosteal": _periosteal}[spec.finding]
            bbox = fn(roi, origin, b, spec.t, spec.params)
        _paste(bone_layer, roi, origin)
    if show and spec.finding == "hardware":
        bbox = _hardware(metal, bones[spec.bone], spec.t, spec.params)
    if spec.ring:
        _ring(metal, bones)
    bone_layer = cv2.GaussianBlur(bone_layer * _texture(rng, CANVAS), (0, 0), 0.7)
    tissue = _soft_tissue(bones, CANVAS, spec.cast) * spec.shades[3]
    att = tissue + bone_layer
    if spec.ring or (show and spec.finding == "hardware"):
        att += cv2.GaussianBlur(metal, (0, 0), 0.5)
    return att, bbox


# ------------------------------------------------------------ pose & exposure ----

def _output_size(rng) -> tuple[int, int]:
    """(H, W): long side 512 for a third of the images, else 90..511; aspect 0.55..0.95."""
    long_side = 512 if rng.random() < 0.35 else int(rng.integers(90, 512))
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
    lin = r @ np.diag([flip, 1.0])
    shift = np.array([w, h]) * (0.5 + rng.uniform(-0.08, 0.08, 2))
    m = np.hstack([lin, (shift - lin @ np.array([CANVAS / 2] * 2))[:, None]])
    if focus is not None:  # slide the image so that the finding stays well inside
        f = m[:, :2] @ focus + m[:, 2]
        lo, hi = np.array([w, h]) * 0.2, np.array([w, h]) * 0.8
        m[:, 2] += np.clip(f, lo, hi) - f
    return m


def _map_box(m: np.ndarray, box, h: int, w: int):
    corners = np.array([[box[0], box[1]], [box[2], box[1]], [box[0], box[3]], [box[2], box[3]]])
    q = corners @ m[:, :2].T + m[:, 2]
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
            field_ = cv2.resize(small, (1024, 1024), interpolation=cv2.INTER_CUBIC)
        _BANKS[kind] = field_
    f = _BANKS[kind].T if rng.random() < 0.5 else _BANKS[kind]
    y, x = rng.integers(0, 1024 - h + 1), rng.integers(0, 1024 - w + 1)
    return f[y:y + h, x:x + w]


def _expose(att, rng) -> np.ndarray:
    """Attenuation -> detector intensity in [0, 1] with exposure spread, blur and noise."""
    h, w = att.shape
    img = 1 - cv2.exp(att * -rng.uniform(0.9, 1.6))
    img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.4, 1.3) * max(h, w) / 512)
    img = cv2.pow(np.maximum(img, 0), rng.uniform(0.7, 1.5))
    kind = rng.random()
    if kind < 0.1:    # washed out: tiny spread
        gain, offset = rng.uniform(0.08, 0.2), rng.uniform(0.2, 0.6)
    elif kind < 0.25:  # dark
        gain, offset = rng.uniform(0.3, 0.55), rng.uniform(0.0, 0.05)
    elif kind < 0.4:   # bright, partly saturated
        gain, offset = rng.uniform(0.7, 1.0), rng.uniform(0.2, 0.35)
    else:
        gain, offset = rng.uniform(0.6, 1.0), rng.uniform(0.0, 0.15)
    ramp = np.linspace(-1, 1, w if rng.random() < 0.5 else h, dtype=np.float32)
    ramp = ramp[None, :] if ramp.size == w else ramp[:, None]
    img = offset + gain * (img + rng.uniform(-0.06, 0.06) * ramp)
    img += _bank(rng, "noise", h, w) * (gain * rng.uniform(0.006, 0.03))
    return np.clip(img, 0, 1)


def _quantize(img, rng) -> np.ndarray:
    """float [0, 1] -> uint8 grey, uint8 3-channel, or (rarely) uint16 (full or 12-bit)."""
    u = rng.random()
    if u < U16_PROB:
        top = 65535 if rng.random() < 0.5 else 4095
        return np.round(img * top).astype(np.uint16)
    g = np.round(img * 255).astype(np.uint8)
    return cv2.merge([g, g, g]) if u < U16_PROB + RGB_PROB else g


def render_view(part: str, spec: StudySpec, view: int, rng: np.random.Generator):
    """Render one view of a study.

    Returns
    -------
    image : np.ndarray
        (H, W) uint8 / uint16 or (H, W, 3) uint8; long side 90..512.
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
    h, w = _output_size(rng)
    focus = None if box is None else (box[:2] + box[2:]) / 2
    m = _pose(rng, h, w, focus)
    out = cv2.warpAffine(att, m, (w, h), flags=cv2.INTER_LINEAR, borderValue=0.0)
    if rng.random() < 0.07:
        _collimate(out, rng)
    if rng.random() < MARKER_PROB:
        _marker(out, rng)
    img = _expose(out, rng)
    inverted = bool(rng.random() < INVERT_PROB)
    if inverted:
        img = 1 - img
    bbox = None if box is None else _map_box(m, box, h, w)
    return _quantize(img, rng), inverted, bbox


# ----------------------------------------------------------------- writing ----

def _appledouble(rng) -> bytes:
    """A small AppleDouble resource-fork file (macOS ``._`` junk): not a PNG."""
    head = b"\x00\x05\x16\x07\x00\x02\x00\x00" + b"Mac OS X        " + b"\x00\x02"
    return head + rng.bytes(4096 - len(head))


def render_study(plan: StudyPlan, seed: int, mura_dir: Path) -> list[tuple]:
    """Render and write all views of one study into ``mura_dir`` (a MURA-v1.1 folder).

    Returns
    -------
    list of tuple
        One ``(path, inverted, finding, bbox)`` per view; path as in the image CSVs
        (``MURA-v1.1/train/...``).
    """
    rng = np.random.default_rng(np.random.SeedSequence([seed, plan.index + 1]))
    spec = _study_spec(plan, rng)
    folder = mura_dir / plan.study_dir.split("/", 1)[1]
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for v in range(plan.n_views):
        img, inverted, bbox = render_view(plan.part, spec, v, rng)
        ok, buf = cv2.imencode(".png", img, [cv2.IMWRITE_PNG_COMPRESSION, 1])
        if not ok:
            raise MurakitError(f"could not encode {plan.study_dir}image{v + 1}.png")
        (folder / f"image{v + 1}.png").write_bytes(buf.tobytes())
        if rng.random() < APPLEDOUBLE_PROB:
            (folder / f"._image{v + 1}.png").write_bytes(_appledouble(rng))
        rows.append((f"{plan.study_dir}image{v + 1}.png", inverted,
                     spec.finding if bbox is not None else "", bbox))
    return rows


def _render_job(job) -> list[tuple]:
    cv2.setNumThreads(1)  # one process per core; OpenCV's own threads would oversubscribe
    return render_study(*job)


def _params(n_studies: int, seed: int) -> dict:
    return {"generator": "murakit.synth", "version": GENERATOR_VERSION,
            "n_studies": int(n_studies), "seed": int(seed)}


def existing_matches(out_dir, n_studies: int = DEFAULT_STUDIES, seed: int = 0) -> bool:
    """True when ``out_dir/MURA-v1.1`` is a complete synth tree made with these parameters."""
    meta = Path(out_dir) / "MURA-v1.1" / "synth.json"
    try:
        stored = json.loads(meta.read_text())
    except (OSError, ValueError):
        return False
    return {k: stored.get(k) for k in _params(0, 0)} == _params(n_studies, seed) \
        and stored.get("complete") is True


def _write_text(path: Path, lines: list[str]) -> None:
    path.write_text("".join(line + "\n" for line in lines))


def _write_tables(mura: Path, plans: list[StudyPlan], rows: list[list[tuple]]) -> dict:
    """The four official CSVs + synth_annotations.csv; returns counts for synth.json."""
    ann = [ANNOTATION_HEADER]
    counts: dict = {}
    for split in ("train", "valid"):
        sel = [(p, r) for p, r in zip(plans, rows) if p.split == split]
        _write_text(mura / f"{split}_image_paths.csv", [v[0] for _, r in sel for v in r])
        _write_text(mura / f"{split}_labeled_studies.csv", [f"{p.study_dir},{p.label}" for p, _ in sel])
        counts[split] = {"studies": len(sel), "images": sum(len(r) for _, r in sel),
                         "abnormal_studies": sum(p.label for p, _ in sel),
                         "patients": len({p.patient for p, _ in sel})}
        for _, r in sel:
            for path, inv, finding, bbox in r:
                box = ",".join(map(str, bbox)) if bbox is not None else ",,,"
                ann.append(f"{path},{int(inv)},{finding},{box}")
    _write_text(mura / "synth_annotations.csv", ann)
    return counts


def _remove_stale_temps(out_dir: Path) -> None:
    """Delete temp trees left by killed runs (their process no longer exists)."""
    for tmp in [*out_dir.glob(".MURA-v1.1.tmp-*"), *out_dir.glob(".MURA-v1.1.old-*")]:
        try:
            os.kill(int(tmp.name.rsplit("-", 1)[1]), 0)
        except (ValueError, ProcessLookupError):
            shutil.rmtree(tmp, ignore_errors=True)
        except PermissionError:
            pass


def _render_all(plans, seed, mura_dir: Path, workers: int, progress: bool) -> list:
    from tqdm import tqdm

    jobs = [(p, seed, mura_dir) for p in plans]
    bar = tqdm(total=len(plans), unit="study", desc="synth", disable=not progress)
    rows = []
    if workers <= 1 or len(plans) < 8:
        for job in jobs:
            rows.append(render_study(*job))
            bar.update()
    else:
        import multiprocessing as mp

        # "spawn": forking a parent whose OpenCV thread pool is live can deadlock the child
        with mp.get_context("spawn").Pool(workers) as pool:
            for r in pool.imap(_render_job, jobs, chunksize=4):  # ordered -> deterministic
                rows.append(r)
                bar.update()
            pool.close()
            pool.join()
    bar.close()
    return rows


def generate(out_dir, n_studies: int = DEFAULT_STUDIES, seed: int = 0, workers=None,
             progress: bool = True, force: bool = False) -> Path:
    """Write the synthetic MURA-v1.1 tree into ``out_dir``.

    Parameters
    ----------
    out_dir : str or Path
        Folder that will contain ``MURA-v1.1/`` (created if missing).
    n_studies : int
        Number of studies (>= 1); the default gives ~1500 studies, ~4100 images.
    seed : int
        Same seed and n_studies -> byte-identical files.
    workers : int or None
        Processes (default: min(2, CPU count)); the output does not depend on it.
    progress : bool
        Show a tqdm progress bar on stderr.
    force : bool
        Replace an existing ``MURA-v1.1`` that was not made with these parameters.

    Returns
    -------
    Path
        ``out_dir/MURA-v1.1``. If it already holds a complete tree made with the same
        parameters, nothing is written (unless ``force``).

    Raises
    ------
    MurakitError
        Bad ``n_studies``, or ``out_dir/MURA-v1.1`` exists, is not empty and ``force`` is off.
    """
    _check_n_studies(n_studies)
    out_dir = Path(out_dir)
    target = out_dir / "MURA-v1.1"
    if not force and existing_matches(out_dir, n_studies, seed):
        return target
    if target.exists() and not force and (not target.is_dir() or any(target.iterdir())):
        raise MurakitError(f"{target} already exists and was not generated with "
                           f"--studies {n_studies} --seed {seed}; use --force to replace it")
    out_dir.mkdir(parents=True, exist_ok=True)
    _remove_stale_temps(out_dir)
    plans = plan_studies(n_studies, seed)
    workers = min(2, os.cpu_count() or 1) if workers is None else int(workers)
    with atomic_dir(target) as tmp:  # a half-written tree never sits at OUT/MURA-v1.1
        rows = _render_all(plans, seed, tmp, workers, progress)
        counts = _write_tables(tmp, plans, rows)
        meta = {**_params(n_studies, seed), "counts": counts, "complete": True}
        (tmp / "synth.json").write_text(json.dumps(meta, indent=2) + "\n")
    return target

