"""Benchmark every model of a run on the test split (MURA valid): accuracy and cost.

All models are scored on the same prepared test images, with the MURA protocol (image and
study level, kappa per body part), and timed side by side in one process: batch-1 latency
(median, p95) and batch-32 throughput. The Keras model is timed through a compiled
``tf.function`` (its fastest path), the ONNX models through onnxruntime with the thread
count set explicitly.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from murakit.errors import MurakitError
from murakit.evaluation.metrics import evaluate, json_safe

MODEL_NAMES = ("baseline", "cnn", "cnn_onnx", "cnn_onnx_int8")
ANCHOR = {"auroc": 0.929, "kappa": 0.705, "radiologist_kappa": 0.778}


def time_calls(fn, batches, warmup: int = 3):
    """Wall-clock milliseconds of ``fn(b)`` for each batch, after ``warmup`` untimed calls."""
    for b in batches[:warmup]:
        fn(b)
    out = []
    for b in batches:
        t0 = time.perf_counter()
        fn(b)
        out.append((time.perf_counter() - t0) * 1e3)
    return np.asarray(out)


def cost(fn, images: np.ndarray, n_single: int, n_batches: int, seed: int = 0) -> dict:
    """Batch-1 latency (p50, p95 ms) and batch-32 throughput (images/s) of ``fn``.

    ``fn`` takes uint8 (B, S, S) prepared images and returns probabilities, so the cost
    includes turning the cache into the model's input (HOG for the baseline).
    """
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(images), size=n_single)
    singles = [np.asarray(images[i:i + 1]) for i in idx]
    lat = time_calls(fn, singles)
    batch = min(32, len(images))
    starts = rng.integers(0, max(1, len(images) - batch + 1), size=n_batches)
    batches = [np.asarray(images[s:s + batch]) for s in starts]
    bt = time_calls(fn, batches, warmup=1)
    return {
        "latency_ms_p50": float(np.median(lat)),
        "latency_ms_p95": float(np.percentile(lat, 95)),
        "throughput_ips": float(batch / (np.median(bt) / 1e3)),
    }


def predict_all(fn, images: np.ndarray, batch: int = 64) -> np.ndarray:
    """Probabilities (N,) float64 of ``fn`` over all images, in batches."""
    out = [np.asarray(fn(np.asarray(images[i:i + batch])), dtype=np.float64).reshape(-1)
           for i in range(0, len(images), batch)]
    return np.concatenate(out) if out else np.zeros(0)


def onnx_scorer(path: Path, threads: int):
    """(fn, threshold, predictor) for an exported model: fn(uint8 (B,S,S)) -> probs (B,)."""
    from edge.predictor import Predictor

    pred = Predictor(path, threads=threads)

    def fn(u8):
        return pred.probabilities(pred.run(pred.model_input(u8)))

    return fn, pred.threshold, pred


def keras_scorer(run: Path):
    """(fn, threshold) for the trained Keras CNN, through a compiled ``tf.function``."""
    import tensorflow as tf

    import deep

    model = deep.load_model(run / "cnn" / "best.keras")
    infer = tf.function(lambda x: model(x, training=False), reduce_retracing=True)

    def fn(u8):
        x = tf.convert_to_tensor(u8[..., None].astype(np.float32) / 255.0)
        return infer(x).numpy().reshape(-1)

    threshold = json.loads((run / "cnn" / "metrics.json").read_text())["threshold"]
    return fn, float(threshold)


def model_files(run: Path) -> dict:
    """The model file of each benchmarked model that the run has."""
    cands = {
        "baseline": [run / "export" / "baseline.onnx", run / "baseline" / "baseline.onnx"],
        "cnn": [run / "cnn" / "best.keras"],
        "cnn_onnx": [run / "export" / "cnn.onnx"],
        "cnn_onnx_int8": [run / "export" / "cnn.int8.onnx"],
    }
    return {k: next((p for p in v if p.exists()), None) for k, v in cands.items()}


def train_seconds(run: Path, name: str):
    src = run / ("baseline" if name == "baseline" else "cnn") / "metrics.json"
    if not src.exists():
        return None
    return json.loads(src.read_text()).get("train_seconds")


def data_root(run: Path):
    """The data root the run's cache was prepared from (from RUN/prepared/config.json)."""
    cfg = Path(run) / "prepared" / "config.json"
    return json.loads(cfg.read_text()).get("data_root") if cfg.exists() else None


def is_synthetic(root) -> bool:
    """True when the data root was written by ``murakit synth`` (it leaves synth.json)."""
    if not root:
        return False
    root = Path(root)
    return any((d / "synth.json").exists() for d in (root, root / "MURA-v1.1"))


def benchmark(run, threads: int = 2, n_single: int = 200, n_batches: int = 10, progress=print):
    """Score and time every model of ``run``; returns (report dict, per-model test probabilities)."""
    from murakit.data.prepared import load_prepared

    run = Path(run)
    prep = load_prepared(run)
    test = prep.select("test")
    if len(test) == 0:
        raise MurakitError(f"{run}: the prepared cache has no test images")
    order = np.sort(test)
    images = np.asarray(prep.images[order])
    labels, studies, parts = prep.label[order], prep.study[order], prep.part[order]
    files = {k: v for k, v in model_files(run).items() if v is not None}
    if not files:
        raise MurakitError(f"{run}: no trained or exported model found; run `murakit train` first")
    root = data_root(run)
    report = {"dataset": {"root": root, "synthetic": is_synthetic(root), "split": "test", "images": len(order),
                          "studies": len(np.unique(studies))},
              "models": {}}
    probs = {}
    for name in MODEL_NAMES:
        if name not in files:
            continue
        progress(f"  scoring {name} ({files[name].name}) on {len(order)} test images")
        if name == "cnn":
            fn, thr = keras_scorer(run)
        else:
            fn, thr, _ = onnx_scorer(files[name], threads)
        p = predict_all(fn, images)
        m = evaluate(labels, p, studies, parts, thr)
        m.update(cost(fn, images, n_single, n_batches))
        m["size_bytes"] = int(files[name].stat().st_size)
        m["train_seconds"] = train_seconds(run, name)
        m["file"] = str(files[name])
        report["models"][name] = json_safe(m)
        probs[name] = p
    return report, {"labels": labels, "studies": studies, "parts": parts, "probs": probs,
                    "images": images, "order": order, "prep": prep}
