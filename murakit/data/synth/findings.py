"""Findings: what makes a study abnormal, and the normal look-alikes that make it hard.

An abnormal study carries one finding on one bone (fracture, metal hardware, lytic lesion
or periosteal reaction); each view shows it with probability ``show_prob`` (at least one view
does), so study labels are noisy at the image level as in MURA. Normal look-alikes
(growth plates, nutrient foramina, bone islands, rings, casts) appear in both classes so
that neither class is trivially separable. ``finding_size`` / ``finding_contrast`` of
``SynthSettings`` scale how visible a finding is; at 1.0 the pixels are the default's.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np

from murakit.data.synth import exact
from murakit.data.synth.anatomy import BUILDERS, Bone, axis, ellipse, line, rot, visible_span
from murakit.data.synth.plan import StudyPlan
from murakit.data.synth.settings import DEFAULT, FINDINGS, SynthSettings


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
    confounders: float = 1.0       # rate multiplier of per-bone look-alikes (SynthSettings)


def study_spec(plan: StudyPlan, rng: np.random.Generator,
               settings: SynthSettings = DEFAULT) -> StudySpec:
    """Draw what stays fixed across a study's views: anatomy, shades, confounders, finding."""
    c = settings.confounders
    spec = StudySpec(
        anatomy_seed=int(rng.integers(2**63)),
        shades=(rng.uniform(0.75, 0.95), rng.uniform(0.5, 0.65), rng.uniform(0.6, 0.72),
                rng.uniform(0.25, 0.45)),
        young=rng.random() < 0.2 * c,
        ring=plan.part in ("HAND", "FINGER") and rng.random() < 0.12 * c,
        cast=rng.random() < 0.07 * c,
        confounders=c,
    )
    if not plan.label:
        return spec
    bones = BUILDERS[plan.part](np.random.default_rng(spec.anatomy_seed), 1.0, 0.0)
    spans = {i: visible_span(b) for i, b in enumerate(bones)
             if isinstance(b, Bone) and b.target}
    cands = [i for i, (lo, hi) in spans.items() if hi > lo]
    lengths = np.array([math.dist(bones[i].p0, bones[i].p1) * np.diff(spans[i])[0]
                        for i in cands])
    spec.bone = cands[int(rng.choice(len(cands), p=lengths / lengths.sum()))]
    spec.finding = FINDINGS[int(rng.choice(len(FINDINGS), p=settings.finding_mix))]
    spec.t = float(rng.uniform(*spans[spec.bone]))
    spec.params = finding_params(spec.finding, rng, settings.finding_size, settings.finding_contrast)
    show = rng.random(plan.n_views) < settings.show_prob
    if not show.any():
        show[rng.integers(plan.n_views)] = True
    spec.show = tuple(bool(s) for s in show)
    return spec


def finding_params(kind: str, rng: np.random.Generator, size: float = 1.0,
                   contrast: float = 1.0) -> dict:
    """Draw the shape parameters of one finding (sizes relative to the bone half-width).

    ``size`` and ``contrast`` scale the drawn values (multiplying by 1.0 is exact, so the
    defaults keep the default pixels); the same random numbers are drawn either way.
    """
    sign = float(rng.choice([-1, 1]))
    if kind == "fracture":
        return {"obl": rng.uniform(-35, 35), "disp": sign * rng.uniform(1.0, 2.0) * size,
                "gap": rng.uniform(8.0, 14.0) * size, "ang": rng.choice([-1, 1]) * rng.uniform(12, 30),
                "along": rng.uniform(-2, 2), "contrast": contrast}
    if kind == "hardware":
        return {"sub": str(rng.choice(["plate", "screws", "wires"], p=[0.35, 0.35, 0.3])),
                "side": sign, "length": rng.uniform(0.35, 0.6) * size, "n": int(rng.integers(1, 4)),
                "angle": rng.uniform(20, 50) * rng.choice([-1, 1]), "contrast": contrast}
    if kind == "lytic":
        return {"rx": rng.uniform(0.9, 1.15) * size, "elong": rng.uniform(2.0, 3.5),
                "off": rng.uniform(-0.25, 0.25), "depth": min(0.98, rng.uniform(0.75, 0.95) * contrast),
                "rim": bool(rng.random() < 0.4)}
    return {"side": sign, "both": bool(rng.random() < 0.4), "half": rng.uniform(0.12, 0.22) * size,
            "layers": int(rng.integers(2, 4)), "value": rng.uniform(0.55, 0.8) * contrast,
            "bulge": rng.uniform(0.8, 1.3) * size}


def _box(center, half) -> np.ndarray:
    c = np.asarray(center, float)
    return np.array([c[0] - half, c[1] - half, c[0] + half, c[1] + half])


def fracture(roi, origin, b: Bone, t: float, p: dict) -> np.ndarray:
    """Cut the bone along an oblique line, shift + angulate the distal piece, open a gap."""
    p0, p1, u, n = axis(b)
    fp = p0 + t * (p1 - p0) - origin
    m = rot(u, p["obl"])
    yy, xx = np.mgrid[0:roi.shape[0], 0:roi.shape[1]].astype(np.float32)
    dist = (xx - fp[0]) * m[0] + (yy - fp[1]) * m[1]
    distal = roi * (dist > 0)
    warp = cv2.getRotationMatrix2D((float(fp[0]), float(fp[1])), float(p["ang"]), 1.0)
    warp[:, 2] += n * p["disp"] * b.hw + u * p["along"]
    moved = exact.warp_affine(distal, warp, (roi.shape[1], roi.shape[0]))
    out = roi * (dist <= 0) + moved
    gap = np.clip(np.abs(dist) / (p["gap"] / 2), 0, 1) ** 2  # 0 on the fracture line, 1 away
    if p["contrast"] != 1.0:  # shallower gap; skipped at 1.0 so the default pixels stay exact
        gap = 1 - min(p["contrast"], 1.0) * (1 - gap)
    out *= gap
    roi[:] = out
    return _box(fp + origin, 1.7 * b.hw + abs(p["disp"]) * b.hw + 4)


def lytic(roi, origin, b: Bone, t: float, p: dict) -> np.ndarray:
    """A rounded lucent (dark) area inside the bone, sometimes with a sclerotic rim."""
    p0, p1, u, n = axis(b)
    hw = b.hw * (1 + (b.taper - 1) * t)
    c = p0 + t * (p1 - p0) + n * p["off"] * hw
    ax = (p["rx"] * hw * p["elong"], p["rx"] * hw)
    ang = math.degrees(math.atan2(u[1], u[0]))
    mask = np.zeros_like(roi)
    ellipse(mask, c, ax, ang, 1.0, origin)
    mask = exact.gaussian_blur(mask, 1.2)
    inside = (roi > 0.05).astype(np.float32)
    if p["rim"]:
        rim = np.zeros_like(roi)
        ellipse(rim, c, (ax[0] + 1.2, ax[1] + 1.2), ang, 0.15, origin, thickness=2)
        roi += rim * inside
    roi *= 1 - p["depth"] * mask
    return _box(c, max(ax) + 3)


def periosteal(roi, origin, b: Bone, t: float, p: dict) -> np.ndarray:
    """Thin bright lamellae parallel to the cortex over a segment of the shaft."""
    p0, p1, u, n = axis(b)
    ln = math.hypot(*(p1 - p0))
    c = p0 + t * (p1 - p0)
    hw = b.hw * (1 + (b.taper - 1) * t)
    a, z = c - u * p["half"] * ln, c + u * p["half"] * ln
    sides = (p["side"], -p["side"]) if p["both"] else (p["side"],)
    ang = math.degrees(math.atan2(u[1], u[0]))
    for s in sides:
        # fusiform cloud of new bone hugging the cortex, then lamellae further out
        cloud = np.zeros_like(roi)
        ellipse(cloud, c + n * s * hw, (p["half"] * ln, p["bulge"] * hw + 1.5), ang, 1.0, origin)
        roi += exact.gaussian_blur(cloud, 1.0) * (p["value"] * 0.7)
        for j in range(p["layers"]):
            off = n * s * (hw + p["bulge"] * hw + 2.2 + 2.4 * j)
            line(roi, a + off + u * 3 * j, z + off - u * 3 * j, p["value"] / (1 + 0.3 * j),
                  1.6, origin)
    return _box(c, max(p["half"] * ln, hw * (1 + p["bulge"]) + 4 + 2.4 * p["layers"]) + 2)


def hardware(metal, b: Bone, t: float, p: dict) -> np.ndarray:
    """Very bright metal: a plate with screws, loose screws, or K-wires; returns bbox."""
    p0, p1, u, n = axis(b)
    ln = math.hypot(*(p1 - p0))
    c = p0 + t * (p1 - p0)
    hw = b.hw
    k = p["contrast"]  # metal density
    pts = []
    o = np.zeros(2)
    if p["sub"] == "plate":
        half = p["length"] * ln / 2
        wd = 0.9 * hw
        pc = c + n * p["side"] * (hw + wd / 2 - 1)
        line(metal, pc - u * half, pc + u * half, 2.2 * k, wd, o)
        n_screws = int(np.clip(round(2 * half / (1.8 * hw)), 2, 6))
        for s in np.linspace(-half * 0.8, half * 0.8, n_screws):
            q = c + u * s
            line(metal, q + n * p["side"] * (hw + wd), q - n * p["side"] * hw * 1.1, 2.4 * k,
                  0.45 * hw, o)
        pts += [pc - u * half, pc + u * half, c - n * p["side"] * hw * 1.1]
    elif p["sub"] == "screws":
        for j in range(p["n"]):
            q = c + u * (j - (p["n"] - 1) / 2) * 2.2 * hw
            d = rot(n, p["angle"] * 0.3)
            line(metal, q + d * hw * 1.2, q - d * hw * 1.2, 2.4 * k, 0.5 * hw, o)
            line(metal, q + d * hw * 1.2, q + d * hw * 1.5, 2.4 * k, 0.9 * hw, o)
            pts += [q + d * hw * 1.6, q - d * hw * 1.3]
    else:
        for j in range(min(p["n"], 2)):
            d = rot(u, p["angle"] + 12 * j)
            q = c + u * j * hw
            line(metal, q - d * 2.6 * hw, q + d * 2.6 * hw, 2.3 * k, 3.5, o)
            pts += [q - d * 2.6 * hw, q + d * 2.6 * hw]
    pts = np.array(pts)
    return np.array([*pts.min(0) - 3, *pts.max(0) + 3])


def confound_bone(roi, origin, b: Bone, spec: StudySpec, rng) -> None:
    """Normal look-alikes, in both classes: growth plates, nutrient foramina, bone islands."""
    p0, p1, u, n = axis(b)
    if spec.young:  # open physis: a thin dark band across each bone end
        for p, r, s in ((p0, b.r0, 1), (p1, b.r1, -1)):
            if r > 0:
                q = p + u * s * r * 0.55
                mask = np.zeros_like(roi)
                line(mask, q + n * r * 1.2, q - n * r * 1.2, 1.0, rng.uniform(1.2, 2.0), origin)
                roi *= 1 - 0.45 * mask
    if rng.random() < 0.35 * spec.confounders:  # nutrient foramen: small oblique lucent channel in the cortex
        q = p0 + rng.uniform(0.3, 0.7) * (p1 - p0) + n * rng.choice([-1, 1]) * b.hw * 0.7
        d = rot(u, rng.uniform(20, 45))
        mask = np.zeros_like(roi)
        line(mask, q - d * b.hw * 0.5, q + d * b.hw * 0.5, 1.0, rng.uniform(1.0, 1.8), origin)
        roi *= 1 - rng.uniform(0.3, 0.5) * mask
    if rng.random() < 0.15 * spec.confounders:  # bone island: small dense spot in the medulla
        q = p0 + rng.uniform(0.2, 0.8) * (p1 - p0) + n * rng.uniform(-0.3, 0.3) * b.hw
        dot = np.zeros_like(roi)
        ellipse(dot, q, (b.hw * rng.uniform(0.2, 0.35),) * 2, 0, 0.15, origin)
        roi += dot * (roi > 0.05)


def ring(metal, bones) -> None:
    """A metal ring around the first proximal phalanx in the list (hand / finger)."""
    ph = [b for b in bones if isinstance(b, Bone) and b.target][1]
    p0, p1, u, _n = axis(ph)
    c = p0 + 0.45 * (p1 - p0)
    ellipse(metal, c, (3.0, ph.hw * 1.9), math.degrees(math.atan2(u[1], u[0])), 2.2,
             np.zeros(2), thickness=3)


DRAW_IN_BONE = {"fracture": fracture, "lytic": lytic, "periosteal": periosteal}  # edit a bone's ROI
