"""Benchmark the HOG + SVM baseline: feature extraction speed and fit time.

    python benchmarks/bench_baseline.py [--run RUN] [--images 2000] [--sizes 2000,10000,40000]

1. HOG images/s at 128 px: ours (edge.hog, numpy) with 1 and 2 threads against a plain
   ``skimage.feature.hog`` loop in 1 and 2 processes, all in this run, with ratios.
   Images come from ``RUN/prepared`` if given, else synthetic radiograph-like images.
   Targets (issue 3): >= 1000 images/s and >= 3x the 2-process scikit-image loop.
2. ``fit_baseline`` seconds (grouped-CV model selection + calibration + final fit) at each
   sample count on 8,100-dim features: HOG of synthetic images (with a weak label signal),
   repeated with small jitter to reach the size. Target: < 180 s at 40,000.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from baseline import extract_features, fit_baseline, predict_proba
from edge.hog import HogConfig, hog_batch

SIZE = 128


def synthetic_images(n: int, seed: int = 0):
    """uint8 (n, 128, 128) radiograph-like images and labels (1 = a bright oblique 'fracture')."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:SIZE, :SIZE].astype(np.float32)
    labels = (rng.random(n) < 0.4).astype(int)
    out = np.empty((n, SIZE, SIZE), np.uint8)
    for i, lab in enumerate(labels):
        cx, w = rng.uniform(40, 88), rng.uniform(8, 20)
        img = 20 + 60 * (np.abs(xx - cx) < 2.5 * w) + 120 * (np.abs(xx - cx) < w)  # tissue, bone
        img = img + rng.normal(0, 6, img.shape)
        if lab:
            y0 = rng.uniform(30, 98)
            img[(np.abs(yy - y0 - 0.5 * (xx - cx)) < 1.5) & (np.abs(xx - cx) < w)] = 40
        out[i] = np.clip(img, 0, 255)
    return out, labels


def _sk_hog_many(images) -> int:
    from skimage.feature import hog

    for img in images:
        hog(img, orientations=9, pixels_per_cell=(8, 8), cells_per_block=(2, 2), block_norm="L2-Hys")
    return len(images)


def _rate(fn, n: int, repeats: int = 2) -> float:
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return n / best


def bench_features(images, sk_images: int) -> dict:
    cfg = HogConfig()
    hog_batch(images[:64], cfg)  # warm the lookup tables
    sk = images[:sk_images]
    halves = [sk[: len(sk) // 2], sk[len(sk) // 2:]]
    r = {
        "ours_1_thread": _rate(lambda: extract_features(images, cfg, n_jobs=1), len(images)),
        "ours_2_threads": _rate(lambda: extract_features(images, cfg, n_jobs=2), len(images)),
        "skimage_1_process": _rate(lambda: _sk_hog_many(sk), len(sk), 1),
    }
    with mp.get_context("fork").Pool(2) as pool:
        pool.map(_sk_hog_many, [sk[:2], sk[2:4]])  # start-up and imports outside the timing
        r["skimage_2_processes"] = _rate(lambda: sum(pool.map(_sk_hog_many, halves)), len(sk), 1)
    return r


def bench_fit(sizes, seed: int = 0) -> list:
    base_n = min(4000, max(sizes))
    images, labels = synthetic_images(base_n, seed + 1)
    base = extract_features(images, HogConfig())
    rng = np.random.default_rng(seed)
    rows = []
    for n in sizes:
        idx = np.arange(n) % base_n
        X = base[idx] + rng.normal(0, 0.01, (n, base.shape[1])).astype(np.float32)
        y, groups = labels[idx], np.arange(n) // 3  # ~3 views per patient
        held = groups % 5 == 0
        t = time.perf_counter()
        model = fit_baseline(X[~held], y[~held], groups[~held], seed=seed)
        seconds = time.perf_counter() - t
        from sklearn.metrics import roc_auc_score

        auc = roc_auc_score(y[held], predict_proba(model, X[held]))
        rows.append({"n_train": int((~held).sum()), "seconds": seconds, "alpha": model.selection_["alpha"],
                     "held_out_auroc": auc})
        stages = ", ".join(f"{k} {v:.1f} s" for k, v in model.selection_["seconds"].items())
        print(f"fit_baseline on {rows[-1]['n_train']:6d} x {X.shape[1]}: {seconds:6.1f} s ({stages}; "
              f"alpha {rows[-1]['alpha']:g}, held-out AUROC {auc:.3f})", flush=True)
        del X, model
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", help="use RUN/prepared images (128 px) instead of synthetic ones")
    ap.add_argument("--images", type=int, default=2000, help="images for our HOG (default 2000)")
    ap.add_argument("--skimage-images", type=int, default=300, help="images for scikit-image (default 300)")
    ap.add_argument("--sizes", default="2000,10000,40000", help="fit sizes (total samples, 80%% train)")
    ap.add_argument("--skip-fit", action="store_true")
    args = ap.parse_args(argv)
    print(f"cores: {os.cpu_count()}")
    if args.run:
        from murakit.data.prepared import load_prepared

        prep = load_prepared(args.run)
        images = np.asarray(prep.images[prep.row[: args.images]])
    else:
        images = synthetic_images(args.images)[0]
    r = bench_features(images, min(args.skimage_images, len(images)))
    for k, v in r.items():
        print(f"HOG {images.shape[1]} px, {k:20s}: {v:8.0f} images/s")
    print(f"ratio ours/skimage: 2 workers {r['ours_2_threads'] / r['skimage_2_processes']:.1f}x, "
          f"1 worker {r['ours_1_thread'] / r['skimage_1_process']:.1f}x")
    if not args.skip_fit:
        bench_fit([int(s) * 5 // 4 for s in args.sizes.split(",")])
    return 0


if __name__ == "__main__":
    sys.exit(main())
