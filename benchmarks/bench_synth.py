"""Benchmark the synthetic default: generation speed and (optionally) how hard it is.

Usage::

    python benchmarks/bench_synth.py [--studies 1500] [--seed 0] [--workers 2]
                                     [--out DIR] [--difficulty]

Prints images/s of ``murakit.data.synth.generate`` (fresh tree, ``workers`` processes) and the
output size on disk. With ``--difficulty`` it also fits a quick HOG + logistic-regression
baseline (``skimage.feature.hog`` on the 128 px output of ``edge.preprocess``) on the train
split and reports image- and study-level AUROC (study = mean of its views, as in MURA) on the
valid split and in 5-fold patient-grouped cross-validation over all studies, plus the accuracy
of ``edge.preprocess``'s inversion detector against the generator's ground truth.
The generator is tuned so that this baseline lands well below 0.99 study AUROC.
"""
from __future__ import annotations

import argparse
import csv
import os
import resource
import shutil
import sys
import tempfile
import time
from multiprocessing import get_context
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from murakit.data.synth import DEFAULT_STUDIES, generate


def bench_generate(out: Path, n_studies: int, seed: int, workers: int) -> Path:
    """Generate a fresh tree and print images/s."""
    t0, c0 = time.perf_counter(), _cpu_seconds()
    root = generate(out, n_studies=n_studies, seed=seed, workers=workers, progress=False,
                    force=True)
    dt, cpu = time.perf_counter() - t0, _cpu_seconds() - c0
    n_img = (root / "synth_annotations.csv").read_text().count("\n") - 1
    size = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
    print(f"synth: {n_studies} studies, {n_img} images in {dt:.1f} s with {workers} "
          f"process(es) = {n_img / dt:.0f} images/s; {size / 2**20:.0f} MiB on disk; "
          f"{1000 * cpu / n_img:.1f} CPU-ms/image (load-independent; {os.cpu_count()} cores "
          f"-> ~{n_img / cpu * min(workers, os.cpu_count() or 1):.0f} images/s on an idle box)")
    return root


def _cpu_seconds() -> float:
    """CPU seconds used so far by this process and its finished children."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def _features(path: str):
    """(HOG vector float32, detector says inverted, uint8 128x128 image) for one file."""
    from skimage.feature import hog

    from edge.preprocess import PreprocessConfig, preprocess_with_info

    u8, info = preprocess_with_info(path, PreprocessConfig(size=128))
    f = hog(u8, orientations=9, pixels_per_cell=(8, 8), cells_per_block=(2, 2),
            block_norm="L2-Hys", feature_vector=True)
    return f.astype(np.float32), info.inverted, u8


def load_table(root: Path) -> dict:
    """Per image: path, split, study, patient, label, inverted, finding (from the CSVs)."""
    rows = list(csv.DictReader((root / "synth_annotations.csv").read_text().splitlines()))
    parts = [r["path"].split("/") for r in rows]
    return {
        "path": [str(root.parent / r["path"]) for r in rows],
        "split": np.array([p[1] for p in parts]),
        "study": np.array(["/".join(p[:5]) for p in parts]),
        "patient": np.array([p[3] for p in parts]),
        "label": np.array([p[4].endswith("positive") for p in parts], dtype=int),
        "inverted": np.array([r["inverted"] == "1" for r in rows]),
        "finding": np.array([r["finding"] for r in rows]),
    }


def study_auroc(y, p, study) -> float:
    """AUROC of the per-study mean of view probabilities."""
    from sklearn.metrics import roc_auc_score

    _keys, inv = np.unique(study, return_inverse=True)
    ps = np.bincount(inv, weights=p) / np.bincount(inv)
    ys = np.bincount(inv, weights=y) / np.bincount(inv)
    return float(roc_auc_score(ys > 0.5, ps))


def _fit_predict(X, y, tr, te, groups):
    """Standardise, pick C by patient-grouped inner CV on ``tr``, return P(abnormal) on te."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV, GroupKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    pipe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=300,
                                                              class_weight="balanced"))
    grid = GridSearchCV(pipe, {"logisticregression__C": [1e-4, 1e-3, 1e-2]},
                        cv=GroupKFold(3), scoring="roc_auc", n_jobs=1)
    grid.fit(X[tr], y[tr], groups=groups[tr])
    return grid.predict_proba(X[te])[:, 1], grid.best_params_["logisticregression__C"]


def bench_difficulty(root: Path, workers: int, cnn_epochs: int = 0) -> None:
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import GroupKFold

    t = load_table(root)
    t0 = time.perf_counter()
    with get_context("spawn").Pool(workers) as pool:
        out = pool.map(_features, t["path"], chunksize=32)
    X = np.stack([o[0] for o in out])
    det = np.array([o[1] for o in out])
    images = np.stack([o[2] for o in out])
    print(f"features: {X.shape} in {time.perf_counter() - t0:.1f} s")
    inv = t["inverted"]
    print(f"inversion detector: {np.mean(det[inv]):.3f} of {inv.sum()} inverted and "
          f"{np.mean(~det[~inv]):.3f} of {(~inv).sum()} normal images classified right")
    y, groups = t["label"], t["patient"]
    tr, te = np.flatnonzero(t["split"] == "train"), np.flatnonzero(t["split"] == "valid")
    p, c = _fit_predict(X, y, tr, te, groups)
    print(f"HOG+LR (C={c}) valid: image AUROC {roc_auc_score(y[te], p):.3f}, "
          f"study AUROC {study_auroc(y[te], p, t['study'][te]):.3f} "
          f"({len(np.unique(t['study'][te]))} studies)")
    oof = np.zeros(len(y))
    for a, b in GroupKFold(5).split(X, y, groups):
        oof[b] = _fit_predict(X, y, a, b, groups)[0]
    print(f"HOG+LR 5-fold patient CV: image AUROC {roc_auc_score(y, oof):.3f}, "
          f"study AUROC {study_auroc(y, oof, t['study']):.3f}")
    shown = t["finding"] != ""
    neg = y == 0
    for kind in np.unique(t["finding"][shown]):
        sel = (t["finding"] == kind) | neg
        print(f"  views showing {kind:10s}: {np.sum(t['finding'] == kind):4d}, image AUROC vs "
              f"normal views {roc_auc_score(y[sel], oof[sel]):.3f}")
    if cnn_epochs:
        p = _small_cnn(images, y, tr, te, cnn_epochs)
        print(f"small CNN ({cnn_epochs} epochs) valid: image AUROC {roc_auc_score(y[te], p):.3f}, "
              f"study AUROC {study_auroc(y[te], p, t['study'][te]):.3f}")


def _small_cnn(images, y, tr, te, epochs: int, seed: int = 0) -> np.ndarray:
    """A 4-block CNN trained from scratch on the 128 px images; P(abnormal) on ``te``.

    Only a learnability check of the generator (flip / 90-degree augmentation, Adam,
    class-balanced loss, last epoch); the project's real CNN lives in ``deep``.
    """
    import tensorflow as tf
    from tensorflow import keras

    keras.utils.set_random_seed(seed)
    x = images[..., None].astype(np.float32) / 255.0
    inp = keras.Input((128, 128, 1))
    h = inp
    for ch in (16, 32, 64, 128):
        h = keras.layers.Conv2D(ch, 3, padding="same", use_bias=False)(h)
        h = keras.layers.BatchNormalization()(h)
        h = keras.layers.ReLU()(h)
        h = keras.layers.Conv2D(ch, 3, padding="same", activation="relu")(h)
        h = keras.layers.MaxPooling2D()(h)
    h = keras.layers.GlobalMaxPooling2D()(h)  # findings are local: max, not mean
    out = keras.layers.Dense(1, activation="sigmoid")(keras.layers.Dropout(0.3)(h))
    model = keras.Model(inp, out)
    model.compile(keras.optimizers.Adam(1e-3), "binary_crossentropy")

    def aug(img, lab):
        img = tf.image.random_flip_left_right(tf.image.random_flip_up_down(img))
        return tf.image.rot90(img, tf.random.uniform([], 0, 4, tf.int32)), lab

    ds = (tf.data.Dataset.from_tensor_slices((x[tr], y[tr].astype(np.float32)))
          .shuffle(len(tr), seed=seed).map(aug).batch(32))
    w1 = 0.5 * len(tr) / max(y[tr].sum(), 1)
    w0 = 0.5 * len(tr) / max(len(tr) - y[tr].sum(), 1)
    model.fit(ds, epochs=epochs, verbose=2, class_weight={0: w0, 1: w1})
    return model.predict(x[te], verbose=0)[:, 0]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--studies", type=int, default=DEFAULT_STUDIES)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", help="keep the tree here (default: a temp dir, deleted)")
    ap.add_argument("--difficulty", action="store_true", help="also fit the HOG baseline")
    ap.add_argument("--cnn-epochs", type=int, default=0,
                    help="with --difficulty: also train a small CNN this many epochs")
    args = ap.parse_args(argv)
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="bench_synth_"))
    try:
        root = bench_generate(out, args.studies, args.seed, args.workers)
        if args.difficulty:
            bench_difficulty(root, args.workers, args.cnn_epochs)
    finally:
        if not args.out:
            shutil.rmtree(out, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
