"""Train the HOG + linear SVM baseline on a run's prepared cache, evaluate it, write its card.

Trains on the train split, picks the study-level threshold on val, evaluates on test (MURA's
``valid``) and writes into ``RUN/baseline/``::

    features_<key>.npy          float32 (N, D) HOG of every cached image (reused by reruns)
    baseline.onnx               HOG features -> probability, its model card inside (no pickle)
    card.json                   the same card
    predictions_{val,test}.csv  path,study,part,label,probability
    metrics.json                the protocol's test metrics + "train_seconds"; written last

``metrics.json`` marks the stage complete: it is removed before retraining and written only
after everything else, each file atomically, so an interrupted run never looks finished.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

from murakit.errors import MurakitError
from murakit.layout import RunLayout
from murakit.stage import StageResult

PARITY_TOLERANCE = 1e-4  # ONNX (float32) vs scikit-learn probabilities at export
ARCH = "hog-linear-svm"


def _settings(seed: int, hog_cell: int, prepared) -> dict:
    """What the stored baseline depends on; a change means retraining."""
    from edge.errors import ImageError
    from edge.hog import HogConfig

    try:
        hog_cfg = HogConfig(pixels_per_cell=hog_cell)
        hog_cfg.feature_dim(prepared.config.size)
    except (ValueError, ImageError) as e:  # ImageError: cells too big for the cached images
        raise MurakitError(f"--hog-cell {hog_cell}: {e}") from None
    return {"seed": seed, "hog": hog_cfg.to_dict(), "preprocess": prepared.config.to_dict()}


def _files(layout: RunLayout) -> list:
    return [layout.baseline_onnx, layout.card("baseline"), layout.predictions("baseline", "val"),
            layout.predictions("baseline", "test"), layout.metrics("baseline")]


def _up_to_date(layout: RunLayout, prepared, settings: dict) -> bool:
    """metrics.json exists, is newer than the cache and was made with the same settings."""
    metrics = layout.metrics("baseline")
    try:
        stored = json.loads(metrics.read_text(encoding="utf-8")).get("settings")
        newer = metrics.stat().st_mtime > layout.prepared_config.stat().st_mtime
    except (OSError, ValueError, AttributeError):
        return False
    return newer and stored == settings and all(f.is_file() for f in _files(layout))


def _feature_key(prepared, hog_json: str) -> str:
    """Hash of everything the feature matrix depends on (cache identity + HOG config)."""
    h = hashlib.sha256(hog_json.encode())
    for name in ("config.json", "index.csv"):
        h.update((prepared.root / name).read_bytes())
    st = (prepared.root / "images.npy").stat()
    h.update(f"{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def _features(prepared, hog_cfg, out: Path, workers: int, progress: bool, log):
    """float32 (N, D) HOG of every indexed image (memmap), computed once per cache + config."""
    import numpy as np
    from tqdm import tqdm

    from baseline import extract_features
    from edge.atomic import atomic_path

    path = out / f"features_{_feature_key(prepared, hog_cfg.to_json())}.npy"
    shape = (len(prepared), hog_cfg.feature_dim(prepared.config.size))
    if path.is_file():
        feats = np.load(path, mmap_mode="r")
        if feats.shape == shape and feats.dtype == np.float32:
            log(f"{path}: reusing cached HOG features {shape}")
            return feats, 0.0
    t0 = time.perf_counter()
    with atomic_path(path) as tmp, tqdm(total=shape[0], unit="img", desc="HOG", disable=not progress,
                                        dynamic_ncols=True) as bar:
        feats = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=shape)
        extract_features(prepared.images, hog_cfg, workers, bar.update, out=feats, rows=prepared.row)
        feats.flush()
        del feats
    seconds = time.perf_counter() - t0
    log(f"HOG features {shape} in {seconds:.1f} s ({shape[0] / max(seconds, 1e-9):.0f} images/s)")
    for stale in out.glob("features_*.npy"):  # one cache per run: they are ~D*4 bytes per image
        if stale != path:
            stale.unlink()
    return np.load(path, mmap_mode="r"), seconds


def _split(prepared, name: str):
    import numpy as np

    pos = prepared.select(name)
    if len(pos) == 0:
        raise MurakitError(f"the {name} split of {prepared.root} is empty: the baseline needs train, "
                           "val and test images (rerun murakit prepare with other split settings)")
    return np.sort(pos)


def _check_parity(onnx_path: Path, feats, probs) -> float:
    """Max |ONNX - scikit-learn| probability on the given features; refuses a broken export."""
    import numpy as np

    from baseline import onnx_probabilities

    diff = float(np.max(np.abs(onnx_probabilities(onnx_path, feats) - probs)))
    if diff > PARITY_TOLERANCE:
        onnx_path.unlink(missing_ok=True)
        raise MurakitError(f"{onnx_path}: ONNX probabilities differ from scikit-learn's by {diff:.2g} "
                           f"(> {PARITY_TOLERANCE}); model not saved")
    return diff


def _fit(prepared, feats, pos: dict, settings: dict, workers: int, log):
    """Fit on train, threshold on val, evaluate val and test. Returns (model, probs, val, test, secs)."""
    import numpy as np

    from baseline import BaselineError, fit_baseline, predict_proba
    from murakit.evaluation.metrics import choose_threshold, evaluate

    tr = pos["train"]
    log(f"fitting on {len(tr)} train images of {len(np.unique(prepared.patient[tr]))} patients "
        f"({feats.shape[1]} features)")
    t0 = time.perf_counter()
    try:
        model = fit_baseline(np.asarray(feats[tr]), prepared.label[tr], prepared.patient[tr],
                             seed=settings["seed"], n_jobs=workers)
    except BaselineError as e:
        raise MurakitError(f"train split: {e}") from None
    seconds = time.perf_counter() - t0
    probs = {s: predict_proba(model, np.asarray(feats[pos[s]])) for s in ("val", "test")}
    v, t = pos["val"], pos["test"]
    threshold = choose_threshold(prepared.label[v], probs["val"], prepared.study[v])
    test = evaluate(prepared.label[t], probs["test"], prepared.study[t], prepared.part[t], threshold)
    val = evaluate(prepared.label[v], probs["val"], prepared.study[v], prepared.part[v], threshold)
    return model, probs, val, test, seconds


def _save(layout: RunLayout, prepared, model, feats, pos, probs, val, test, hog_cfg, extra: dict) -> dict:
    """Write model (with its card), card.json, predictions, then metrics.json (last)."""
    from baseline import to_onnx
    from edge.atomic import write_text
    from murakit.evaluation.metrics import json_safe
    from murakit.evaluation.predictions import write_predictions
    from murakit.pipeline.cards import split_metrics, training_card

    card = training_card("baseline", prepared, threshold=test["threshold"], arch=ARCH, hog=hog_cfg,
                         weights_sha256="0" * 64, metrics=split_metrics(val, test),
                         model_config={"alpha": float(model.selection_["alpha"])},
                         val=(prepared.label[pos["val"]], probs["val"], prepared.study[pos["val"]],
                              prepared.part[pos["val"]]))
    card = to_onnx(model, card, layout.baseline_onnx)
    parity = _check_parity(layout.baseline_onnx, feats[pos["test"][:512]], probs["test"][:512])
    write_text(layout.card("baseline"), card.to_json() + "\n")
    for split in ("val", "test"):
        write_predictions(layout.predictions("baseline", split), prepared, pos[split], probs[split])
    metrics = json_safe({**test, **extra, "onnx_parity_max_abs": parity,
                         "val": {"image": val["image"], "study": val["study"]}})
    write_text(layout.metrics("baseline"), json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    return metrics


def train_baseline(run, seed: int = 0, hog_cell: int = 8, workers: int | None = None, force: bool = False,
                   progress: bool = True, log=print) -> StageResult:
    """The train baseline stage: train, evaluate and export the baseline (or confirm it is up to date).

    Parameters
    ----------
    run : str or Path
        Run folder with a prepared cache.
    seed : int
        Seed of fold shuffling and SGD, in [0, 2**32 - 1].
    hog_cell : int
        HOG cell side in pixels (checked by ``HogConfig`` against the cache's image size).
    workers : int, optional
        Threads for features and fitting, 1 to :func:`murakit.checks.max_workers` (default:
        all cores).
    force : bool
        Retrain even if the stored baseline is up to date.

    Returns
    -------
    StageResult
        ``status`` "done" or "up-to-date"; ``paths``: baseline.onnx, card.json, metrics.json;
        ``figures``: the test metrics (``metrics.json``).
    """
    from edge.cpu import usable_cores
    from murakit.checks import check_seed, check_workers
    from murakit.lock import stage_lock

    t0 = time.perf_counter()
    check_seed(seed)
    workers = check_workers(usable_cores() if workers is None else workers)
    with stage_lock(run, writes="baseline", reads=("prepared",)) as layout:
        status, metrics = _train_baseline(layout, seed, hog_cell, workers, force, progress, log)
    paths = (layout.baseline_onnx, layout.card("baseline"), layout.metrics("baseline"))
    return StageResult("train baseline", status, paths, time.perf_counter() - t0, metrics)


def _train_baseline(layout: RunLayout, seed, hog_cell, workers, force, progress, log) -> tuple:
    """:func:`train_baseline` once its settings are checked and the run folder is locked: (status, metrics)."""
    from edge.hog import HogConfig
    from murakit.data.prepared import load_prepared

    prepared = load_prepared(layout.root)
    settings = _settings(seed, hog_cell, prepared)
    if not force and _up_to_date(layout, prepared, settings):
        log(f"{layout.baseline}: baseline is complete and newer than the cache; nothing to do (--force retrains)")
        return "up-to-date", json.loads(layout.metrics("baseline").read_text())
    pos = {s: _split(prepared, s) for s in ("train", "val", "test")}
    layout.metrics("baseline").unlink(missing_ok=True)  # the stage is incomplete until rewritten
    hog_cfg = HogConfig.from_dict(settings["hog"])
    feats, feat_seconds = _features(prepared, hog_cfg, layout.baseline, workers, progress, log)
    model, probs, val, test, seconds = _fit(prepared, feats, pos, settings, workers, log)
    extra = {"train_seconds": round(seconds, 3), "features_seconds": round(feat_seconds, 3),
             "settings": settings, "selection": model.selection_}
    metrics = _save(layout, prepared, model, feats, pos, probs, val, test, hog_cfg, extra)
    s = metrics["study"]
    log(f"alpha {model.selection_['alpha']:g} (grouped {model.selection_['n_folds']}-fold CV), "
        f"fit {seconds:.1f} s; threshold {metrics['threshold']:.3f} (val, study level)")
    log(f"test study AUROC {s['auroc']:.3f}  kappa {s['kappa']:.3f}  accuracy {s['accuracy']:.3f}; "
        f"ONNX parity {metrics['onnx_parity_max_abs']:.1e}")
    log(f"wrote {layout.baseline_onnx}, {layout.card('baseline')} and {layout.metrics('baseline')}")
    return "done", metrics
