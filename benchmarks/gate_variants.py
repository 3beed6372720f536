"""Fourth round of input-gate variants, on validation evidence only (no OOD test image, no test split).

Usage::

    python benchmarks/gate_variants.py --run RUN [--variants shipped +med +var +med+var balanced distances]

The evidence is ``benchmarks/gate_validation.py``'s: the "val" OOD set per category and each real
modality and medical source of the "fit" set left out in turn, every image ranked among the
validation radiographs' gate scores; plus drawn microscopy and fundus frames with "val" seeds
(``medval``: only a check that the gate separates such pictures at all; for ``+med`` it is
circular, the same drawers with other seeds are in its fit). Variants, all export-time (same graph):

- ``shipped``: the gate ``murakit export`` fits;
- ``+med``: 80 drawn "medical" frames added to the fit set (:func:`micro_frame`: cells under a
  brightfield or fluorescence microscope, grey or stained; :func:`fundus_frame`: retina
  photographs, whole, green channel or cropped);
- ``+var``: the fit set's real CT/MR/US/SEG and microscopy/retina sources with 3x the variants
  (crops, flips, turns, gamma; 84 more images);
- ``balanced``: each OOD category weighs the same in the logistic (instead of each image);
- ``distances``: the logistic reads the log distances and the input statistics only (weight 0 on
  the CNN's raw pooled statistics).

None was shipped: docs/trust.md ("Fourth round") has the figures.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from gate_validation import LOSO_CATEGORIES, _group

VARIANTS = ("shipped", "+med", "+var", "+med+var", "balanced", "distances")


# ---------------------------------------------------------------- drawn medical frames
def micro_frame(rng: np.random.Generator) -> np.ndarray:
    """Cells under a microscope: brightfield (outlined cells, dark nuclei on light) or
    fluorescence (bright cells on black), grey or tinted by a stain, uneven illumination, noise."""
    import cv2

    from murakit.evaluation.ood import _smooth_field

    h, w = int(rng.integers(200, 512)), int(rng.integers(200, 512))
    fluo = rng.random() < 0.4
    img = np.full((h, w), 20.0 if fluo else 200.0, np.float32)
    n = int(rng.integers(15, 120))
    r0 = rng.uniform(6, 30)
    for _ in range(n):
        cx, cy = int(rng.integers(0, w)), int(rng.integers(0, h))
        a, b, ang = int(r0 * rng.uniform(0.6, 1.4)), int(r0 * rng.uniform(0.6, 1.4)), float(rng.uniform(0, 180))
        if fluo:
            cv2.ellipse(img, (cx, cy), (a, b), ang, 0, 360, float(rng.uniform(90, 250)), -1)
        else:
            cv2.ellipse(img, (cx, cy), (a, b), ang, 0, 360, float(rng.uniform(150, 190)), -1)
            cv2.ellipse(img, (cx, cy), (a, b), ang, 0, 360, float(rng.uniform(60, 120)), int(rng.integers(1, 3)))
        centre = (cx + int(rng.integers(-3, 4)), cy + int(rng.integers(-3, 4)))
        nucleus = float(rng.uniform(150, 255) if fluo else rng.uniform(30, 110))
        cv2.ellipse(img, centre, (max(1, a // 3), max(1, b // 3)), ang, 0, 360, nucleus, -1)
    img = cv2.GaussianBlur(img, (0, 0), float(rng.uniform(0.5, 2.5)))
    img *= 0.7 + 0.6 * _smooth_field(rng, h, w, max(h, w) / 3)
    img += rng.normal(0, rng.uniform(2, 12), img.shape).astype(np.float32)
    g = np.clip(img, 0, 255).astype(np.uint8)
    if rng.random() < 0.5:  # a stain: a tint per channel
        tint, offset = rng.uniform(0.4, 1.0, 3), rng.uniform(0, 60, 3)
        return np.clip(g[..., None] * tint + offset, 0, 255).astype(np.uint8)
    return g


def fundus_frame(rng: np.random.Generator) -> np.ndarray:
    """A retina photograph: an orange disc on black, a bright optic disc, branching dark vessels,
    spots; sometimes its green channel alone, sometimes a crop inside the disc."""
    import cv2

    from murakit.evaluation.ood import _smooth_field, _to_u8

    s = int(rng.integers(256, 512))
    c = s // 2
    base = np.zeros((s, s), np.float32)
    cv2.circle(base, (c, c), int(s * rng.uniform(0.4, 0.5)), 1.0, -1)
    yy, xx = np.mgrid[0:s, 0:s]
    vignette = np.clip(1 - (np.hypot(xx - c, yy - c) / (s * 0.55)) ** 2, 0, 1)
    lum = base * (0.5 + 0.5 * vignette) * (0.8 + 0.4 * _smooth_field(rng, s, s, s / 6))
    ox, oy = int(c + rng.uniform(-0.25, 0.25) * s), int(c + rng.uniform(-0.15, 0.15) * s)
    lum += 0.6 * base * np.exp(-((xx - ox) ** 2 + (yy - oy) ** 2) / (2 * (s * rng.uniform(0.04, 0.07)) ** 2))
    vessels = np.zeros((s, s), np.float32)
    for _ in range(int(rng.integers(6, 14))):
        x, y, ang, width = float(ox), float(oy), rng.uniform(0, 2 * np.pi), float(rng.uniform(2, 6))
        for _ in range(int(rng.integers(30, 80))):
            ang += rng.normal(0, 0.25)
            nx, ny = x + 6 * np.cos(ang), y + 6 * np.sin(ang)
            cv2.line(vessels, (int(x), int(y)), (int(nx), int(ny)), 1.0, max(1, int(width)))
            x, y, width = nx, ny, max(1.0, width * 0.985)
    lum *= 1 - 0.45 * cv2.GaussianBlur(vessels, (0, 0), 1.0) * base
    for _ in range(int(rng.integers(0, 20))):
        cv2.circle(lum, (int(rng.integers(0, s)), int(rng.integers(0, s))), int(rng.integers(1, 5)),
                   float(rng.choice([0.2, 1.3])), -1)
    lum = np.clip(lum * base + rng.normal(0, 0.02, lum.shape), 0, 1.5) / 1.5
    out = np.clip(np.stack([lum * 255, lum * rng.uniform(100, 180), lum * rng.uniform(20, 80)], -1),
                  0, 255).astype(np.uint8)
    if rng.random() < 0.4:
        out = _to_u8(out[..., 1].astype(np.float64)) if rng.random() < 0.5 else out[..., 1]
    if rng.random() < 0.3:
        k = int(s * rng.uniform(0.3, 0.5))
        y0, x0 = int(c - k / 2 + rng.uniform(-0.1, 0.1) * s), int(c - k / 2 + rng.uniform(-0.1, 0.1) * s)
        out = np.ascontiguousarray(out[y0:y0 + k, x0:x0 + k])
    return out


def drawn_medical(split: str, n: int) -> list:
    """``n`` drawn microscopy and fundus frames (alternating), seeded by ``split`` like ood's frames."""
    from murakit.evaluation.ood import OodImage, _rng

    drawers = {"micro": micro_frame, "fundus": fundus_frame}
    return [OodImage("medical", f"drawn/{kind}{k}", drawers[kind](_rng(split, f"{kind}{k}")))
            for k, kind in ((k, list(drawers)[k % 2]) for k in range(n))]


def more_variants(n_medical: int = 27, n_modality: int = 18) -> list:
    """The extra variants of the "fit" set's real medical pictures and DICOM frames (those beyond
    the ones the fit set already holds)."""
    from murakit.evaluation import ood

    base = {o.name for o in ood._skimage("medical", "fit") + ood._dicom_frames("fit")}
    old = dict(ood._PER_SOURCE)
    try:
        ood._PER_SOURCE.update(medical=n_medical, modality=n_modality)
        items = ood._skimage("medical", "fit") + ood._dicom_frames("fit")
    finally:
        ood._PER_SOURCE.update(old)
    return [o for o in items if o.name not in base]


# ---------------------------------------------------------------- logistic variants
def _fit(tr, va, fi, sizes, cats=None, drop_raw: bool = False):
    """export.gate's fit with two switches: ``cats`` (each OOD category weighs the same) and
    ``drop_raw`` (weight 0 on the CNN's raw pooled statistics); threshold: val rule."""
    from sklearn.linear_model import LogisticRegression

    from export import gate

    edges = np.cumsum([0, *sizes])
    params = {"blocks": np.column_stack([edges[:-1], edges[1:]]).astype(np.int64)}
    for k, (a, b) in enumerate(params["blocks"]):
        params[f"mu_{k}"], params[f"w_{k}"] = gate.whitening(tr[:, a:b])
    x = np.vstack([np.hstack([v, gate.log_distances(v, params)]) for v in (tr, fi)])
    y = np.r_[np.zeros(len(tr)), np.ones(len(fi))]
    mean, scale = x.mean(0), x.std(0)
    scale = np.where(scale > 1e-12, scale, 1.0)
    if cats is None:
        w_out = np.full(len(fi), len(y) / (2 * len(fi)))
    else:
        _, inv, cnt = np.unique(cats, return_inverse=True, return_counts=True)
        w_out = len(y) / (2 * len(cnt) * cnt[inv])
    keep = np.ones(x.shape[1], bool)
    if drop_raw:
        keep[:edges[-2]] = False  # the CNN's statistics; the input block and the distances stay
    clf = LogisticRegression(C=gate.LOGISTIC_C, max_iter=5000, random_state=0)
    clf.fit(((x - mean) / scale)[:, keep], y, sample_weight=np.r_[np.full(len(tr), len(y) / (2 * len(tr))), w_out])
    coef = np.zeros(x.shape[1])
    coef[keep] = clf.coef_[0]
    params.update(x_mean=mean, x_scale=scale, coef=coef, intercept=np.asarray(clf.intercept_, np.float64))
    return params, gate.threshold_rule(gate.gate_scores(va, params))[0]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", required=True)
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    args = ap.parse_args(argv)

    import deep
    from edge.preprocess import preprocess, to_model_input
    from export import gate
    from murakit.data.prepared import load_prepared
    from murakit.evaluation.metrics import auroc
    from murakit.evaluation.ood import ood_images
    from murakit.pipeline.export import MAX_GATE_TRAIN, cache_inputs, first_by_path, pooled_statistics

    prep = load_prepared(args.run)
    model = deep.load_model(Path(args.run) / "cnn" / "best.keras")
    pooled, sizes = deep.pooled_model(model), deep.block_sizes(model)

    def stats(items):
        return pooled_statistics(pooled, to_model_input(np.stack([preprocess(o.image, prep.config) for o in items])))

    train = first_by_path(prep, "train", MAX_GATE_TRAIN)
    val = np.asarray(sorted(prep.select("val"), key=lambda i: prep.path[i]), dtype=np.int64)
    train_v, val_v = (pooled_statistics(pooled, cache_inputs(prep, p)) for p in (train, val))
    sets = {"fit": ood_images("fit"), "val": ood_images("val"), "med": drawn_medical("fit", 80),
            "var": more_variants(), "medval": drawn_medical("val", 40)}
    v = {k: stats(items) for k, items in sets.items()}
    cv = np.array([o.category for o in sets["val"]])

    def auc(i, o):
        return auroc(np.r_[np.zeros(len(i)), np.ones(len(o))], np.r_[i, o])

    cats_v = sorted(set(cv))
    print(f"{args.run}: {len(train)} training / {len(val)} validation radiographs")
    print("| variant | " + " | ".join(f"val {c}" for c in cats_v) + " | val all | "
          + " | ".join(f"left out: {c}" for c in LOSO_CATEGORIES) + " | left-out passing | medval (drawn) |")
    print("|---|" + "---|" * (len(cats_v) + len(LOSO_CATEGORIES) + 3))
    for name in args.variants:
        extra = [k for k in ("med", "var") if f"+{k}" in name]
        items = sets["fit"] + [o for k in extra for o in sets[k]]
        fi = np.vstack([v["fit"]] + [v[k] for k in extra])
        gf, cf = np.array([_group(o.name) for o in items]), np.array([o.category for o in items])

        def fit(f_v, f_c, name=name):
            if name == "balanced":
                return _fit(train_v, val_v, f_v, sizes, cats=f_c)
            if name == "distances":
                return _fit(train_v, val_v, f_v, sizes, drop_raw=True)
            return gate.fit_gate(train_v, val_v, f_v, sizes)[0], None

        p, _ = fit(fi, cf)
        inlier, out = gate.gate_scores(val_v, p), gate.gate_scores(v["val"], p)
        held = sorted({g for g, c in zip(gf, cf) if c in LOSO_CATEGORIES and not g.startswith("drawn/")})
        per, passing = {c: [] for c in LOSO_CATEGORIES}, 0
        for g in held:
            pg, _ = fit(fi[gf != g], cf[gf != g])
            s_in, s_out = gate.gate_scores(val_v, pg), gate.gate_scores(fi[gf == g], pg)
            per[cf[gf == g][0]].append(auc(s_in, s_out))
            passing += int(np.sum(s_out <= np.quantile(s_in, 0.99)))
        print(f"| {name} | " + " | ".join(f"{auc(inlier, out[cv == c]):.4f}" for c in cats_v)
              + f" | {auc(inlier, out):.4f} | " + " | ".join(f"{np.mean(per[c]):.4f}" for c in LOSO_CATEGORIES)
              + f" | {passing}/{int(np.isin(gf, held).sum())} | {auc(inlier, gate.gate_scores(v['medval'], p)):.4f} |",
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
