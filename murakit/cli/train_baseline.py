"""``murakit train baseline --run RUN``: HOG + linear SVM on the prepared cache.

Trains on the run's train split, picks the study-level threshold on val, evaluates on test
(MURA's ``valid``) and writes into ``RUN/baseline/``::

    features_<key>.npy      float32 (N, D) HOG of every cached image (reused by reruns)
    baseline.onnx           HOG features -> probability, murakit.* metadata (no pickle)
    val_predictions.csv     path,study,part,label,probability
    test_predictions.csv    path,study,part,label,probability
    metrics.json            the protocol's test metrics + "train_seconds"; written last

``metrics.json`` marks the stage complete: it is removed before retraining and written only
after everything else, each file atomically, so an interrupted run never looks finished.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

FILES = ("baseline.onnx", "val_predictions.csv", "test_predictions.csv", "metrics.json")
PARITY_TOLERANCE = 1e-4  # ONNX (float32) vs scikit-learn probabilities at export


def add_arguments(parser) -> None:
    """Add the ``train baseline`` options to ``parser``."""
    parser.add_argument("--run", default="runs/default", help="run folder (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of fold shuffling and SGD (default: %(default)s)")
    parser.add_argument("--hog-cell", type=int, default=8,
                        help="HOG cell side in pixels (default: %(default)s)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                        help="threads for features and fitting (default: all cores, %(default)s)")
    parser.add_argument("--force", action="store_true", help="retrain even if the run has a baseline")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def _settings(args, prepared) -> dict:
    """What the stored baseline depends on; a change means retraining."""
    from edge.errors import ImageError
    from edge.hog import HogConfig

    try:
        hog_cfg = HogConfig(pixels_per_cell=args.hog_cell)
        hog_cfg.feature_dim(prepared.config.size)
    except (ValueError, ImageError) as e:  # ImageError: cells too big for the cached images
        raise _error(f"--hog-cell {args.hog_cell}: {e}") from None
    return {"seed": args.seed, "hog": hog_cfg.to_dict(), "preprocess": prepared.config.to_dict()}


def _error(msg: str):
    from murakit.errors import MurakitError

    return MurakitError(msg)


def _up_to_date(out: Path, prepared, settings: dict) -> bool:
    """metrics.json exists, is newer than the cache and was made with the same settings."""
    metrics = out / "metrics.json"
    try:
        stored = json.loads(metrics.read_text(encoding="utf-8")).get("settings")
        newer = metrics.stat().st_mtime > (prepared.root / "config.json").stat().st_mtime
    except (OSError, ValueError, AttributeError):
        return False
    return newer and stored == settings and all((out / f).is_file() for f in FILES)


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
        raise _error(f"the {name} split of {prepared.root} is empty: the baseline needs train, "
                     "val and test images (rerun murakit prepare with other split settings)")
    return np.sort(pos)


def _write_predictions(path: Path, prepared, pos, probs) -> None:
    import csv

    from edge.atomic import atomic_write

    with atomic_write(path, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["path", "study", "part", "label", "probability"])
        for i, p in zip(pos, probs):
            w.writerow([prepared.path[i], prepared.study[i], prepared.part[i], int(prepared.label[i]),
                        f"{p:.8f}"])


def _check_parity(onnx_path: Path, feats, probs) -> float:
    """Max |ONNX - scikit-learn| probability on the given features; refuses a broken export."""
    import numpy as np

    from baseline import onnx_probabilities

    diff = float(np.max(np.abs(onnx_probabilities(onnx_path, feats) - probs)))
    if diff > PARITY_TOLERANCE:
        raise _error(f"{onnx_path}: ONNX probabilities differ from scikit-learn's by {diff:.2g} "
                     f"(> {PARITY_TOLERANCE}); model not saved")
    return diff


def _train(prepared, feats, pos: dict, settings: dict, workers: int, log):
    """Fit on train, threshold on val, evaluate on test. Returns (model, probs, metrics)."""
    import numpy as np

    from baseline import BaselineError, fit_baseline, predict_proba
    from murakit.evaluation.metrics import choose_threshold, evaluate, json_safe

    tr = pos["train"]
    log(f"fitting on {len(tr)} train images of {len(np.unique(prepared.patient[tr]))} patients "
        f"({feats.shape[1]} features)")
    t0 = time.perf_counter()
    try:
        model = fit_baseline(np.asarray(feats[tr]), prepared.label[tr], prepared.patient[tr],
                             seed=settings["seed"], n_jobs=workers)
    except BaselineError as e:
        raise _error(f"train split: {e}") from None
    train_seconds = time.perf_counter() - t0
    probs = {s: predict_proba(model, np.asarray(feats[pos[s]])) for s in ("val", "test")}
    v, t = pos["val"], pos["test"]
    threshold = choose_threshold(prepared.label[v], probs["val"], prepared.study[v])
    metrics = evaluate(prepared.label[t], probs["test"], prepared.study[t], prepared.part[t], threshold)
    val = evaluate(prepared.label[v], probs["val"], prepared.study[v], prepared.part[v], threshold)
    metrics.update(train_seconds=round(train_seconds, 3), settings=settings,
                   selection=model.selection_, val={"image": val["image"], "study": val["study"]})
    return model, probs, json_safe(metrics)


def _save(out: Path, prepared, model, feats, pos, probs, metrics, hog_cfg) -> float:
    """Write model, predictions, then metrics.json (last). Returns the ONNX parity figure."""
    from baseline import BaselineError, to_onnx
    from edge.atomic import write_text

    try:
        onnx_path = to_onnx(model, hog_cfg, prepared.config, metrics["threshold"], metrics,
                            out / "baseline.onnx")
    except BaselineError as e:
        raise _error(str(e)) from None
    parity = _check_parity(onnx_path, feats[pos["test"][:512]], probs["test"][:512])
    metrics["onnx_parity_max_abs"] = parity
    for split in ("val", "test"):
        _write_predictions(out / f"{split}_predictions.csv", prepared, pos[split], probs[split])
    write_text(out / "metrics.json", json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    return parity


def run(args) -> int:
    """Train, evaluate and export the baseline; prints a summary. Returns 0."""
    from edge.hog import HogConfig
    from murakit.data.prepared import load_prepared

    if args.workers < 1:
        raise _error(f"--workers must be at least 1, got {args.workers}")
    prepared = load_prepared(args.run)
    settings = _settings(args, prepared)
    out = Path(args.run) / "baseline"
    if not args.force and _up_to_date(out, prepared, settings):
        print(f"{out}: baseline is complete and newer than the cache; nothing to do (--force retrains)")
        return 0
    pos = {s: _split(prepared, s) for s in ("train", "val", "test")}
    (out / "metrics.json").unlink(missing_ok=True)  # the stage is incomplete until rewritten
    hog_cfg = HogConfig.from_dict(settings["hog"])
    feats, feat_seconds = _features(prepared, hog_cfg, out, args.workers, not args.no_progress, print)
    model, probs, metrics = _train(prepared, feats, pos, settings, args.workers, print)
    metrics["features_seconds"] = round(feat_seconds, 3)
    parity = _save(out, prepared, model, feats, pos, probs, metrics, hog_cfg)
    s = metrics["study"]
    print(f"alpha {model.selection_['alpha']:g} (grouped {model.selection_['n_folds']}-fold CV), "
          f"fit {metrics['train_seconds']:.1f} s; threshold {metrics['threshold']:.3f} (val, study level)")
    print(f"test study AUROC {s['auroc']:.3f}  kappa {s['kappa']:.3f}  accuracy {s['accuracy']:.3f}; "
          f"ONNX parity {parity:.1e}")
    print(f"wrote {out / 'baseline.onnx'} and {out / 'metrics.json'}")
    return 0
