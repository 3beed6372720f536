"""Benchmark every model of a run on the test split (MURA valid): accuracy and cost.

All models are scored on the same prepared test images, with the MURA protocol (image and
study level, kappa per body part), and timed side by side in one process: batch-1 latency
(median, p95) and batch-32 throughput. The Keras model is timed through a compiled
``tf.function`` (its fastest path), the ONNX models through onnxruntime with the thread
count set explicitly.

When TensorFlow is installed, the Keras CNN is also converted to TensorFlow Lite at bench time
(float, and INT8 calibrated on the same train images as the ONNX INT8 model) and scored and
timed the same way: comparison rows (``cnn_tflite``, ``cnn_tflite_int8``), not deployed
artifacts. ``report["int8_decision"]`` carries export's INT8 decision (export.json) and
``report["cpu"]`` the CPU the figures were measured on.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from edge.mura import MURA_DIRNAME
from murakit.errors import MurakitError
from murakit.evaluation.bootstrap import LEVEL, N_RESAMPLES, paired_auroc_difference, study_intervals
from murakit.evaluation.metrics import evaluate, json_safe
from murakit.layout import RunLayout

MODEL_NAMES = ("baseline", "cnn", "cnn_onnx", "cnn_onnx_int8", "cnn_tflite", "cnn_tflite_int8")
TFLITE_NAMES = ("cnn_tflite", "cnn_tflite_int8")
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


def keras_scorer(layout: RunLayout):
    """(fn, threshold) for the trained Keras CNN, through a compiled ``tf.function``."""
    import tensorflow as tf

    import deep
    from edge.card import read_card
    from edge.preprocess import to_model_input

    model = deep.probability_model(deep.load_model(layout.cnn_best))  # without the part head's output
    infer = tf.function(lambda x: model(x, training=False), reduce_retracing=True)

    def fn(u8):
        return infer(tf.convert_to_tensor(to_model_input(u8))).numpy().reshape(-1)

    return fn, read_card(layout.card("cnn")).threshold


def tflite_scorers(layout: RunLayout, prep, threads: int, progress=print) -> dict:
    """``{name: (fn, threshold, size_bytes)}`` of the TFLite rows; empty without TensorFlow.

    The Keras CNN is converted at bench time (float, and INT8 calibrated on the first train
    images by sorted path, as export calibrates the ONNX INT8 model); ``fn`` takes uint8
    (B, S, S) prepared images like every other scorer.
    """
    import importlib.util

    if importlib.util.find_spec("tensorflow") is None or not layout.cnn_best.exists():
        return {}
    import deep
    from edge.card import read_card
    from edge.preprocess import to_model_input
    from export.tflite import TfliteRunner, to_tflite
    from murakit.pipeline.export import CALIBRATION_COUNT, cache_inputs, first_by_path

    cam = deep.cam_model(deep.load_model(layout.cnn_best))
    threshold = read_card(layout.card("cnn")).threshold
    out = {}
    for name, calib in (("cnn_tflite", None),
                        ("cnn_tflite_int8", cache_inputs(prep, first_by_path(prep, "train", CALIBRATION_COUNT)))):
        progress(f"  converting {layout.cnn_best.name} to TensorFlow Lite ({'INT8' if calib is not None else 'float'})")
        content = to_tflite(cam, calib)
        runner = TfliteRunner(content, threads)
        out[name] = (lambda u8, r=runner: r.probabilities(to_model_input(u8)), threshold, len(content))
    return out


def int8_decision(layout: RunLayout):
    """Export's INT8 decision from export.json (None when INT8 was not attempted)."""
    try:
        d = json.loads(layout.export_summary.read_text()).get("cnn.int8")
    except (OSError, ValueError):
        return None
    if not d:
        return None
    keys = ("accepted", "refused_by", "reason", "float_auroc", "int8_auroc", "auroc_drop", "max_auroc_drop",
            "speed", "max_latency_ratio", "onnxruntime")
    return {**{k: d.get(k) for k in keys}, "recipe": (d.get("recipe") or {}).get("name"),
            "cpu_int8_dot": (d.get("cpu") or {}).get("int8_dot"),
            "candidates": [{"recipe": c["recipe"], "speed": c["speed"]} for c in d.get("candidates", [])]}


def model_files(run) -> dict:
    """The model file of each benchmarked model that the run has."""
    layout = RunLayout(run)
    cands = {
        "baseline": [layout.exported("baseline"), layout.baseline_onnx],
        "cnn": [layout.cnn_best],
        "cnn_onnx": [layout.exported("cnn")],
        "cnn_onnx_int8": [layout.exported("cnn.int8")],
    }
    return {k: next((p for p in v if p.exists()), None) for k, v in cands.items()}


def model_card(layout: RunLayout, name: str, path: Path):
    """The card of a benchmarked model: inside the ONNX file, or card.json beside the Keras model."""
    from edge.card import read_card, read_onnx_card

    return read_card(layout.card("cnn")) if name == "cnn" else read_onnx_card(path)


def train_seconds(layout: RunLayout, name: str):
    src = layout.metrics("baseline" if name == "baseline" else "cnn")
    if not src.exists():
        return None
    return json.loads(src.read_text()).get("train_seconds")


def data_root(run):
    """The data root the run's cache was prepared from (from RUN/prepared/config.json)."""
    cfg = RunLayout(run).prepared_config
    return json.loads(cfg.read_text()).get("data_root") if cfg.exists() else None


def is_synthetic(root) -> bool:
    """True when the data root was written by ``murakit synth`` (it leaves synth.json)."""
    if not root:
        return False
    root = Path(root)
    return any((d / "synth.json").exists() for d in (root, root / MURA_DIRNAME))


# (name in report.json, model A, model B): A's study AUROC minus B's, paired bootstrap over studies.
# The Keras CNN stands for the CNN (the float ONNX file gives the same probabilities within 1e-4).
COMPARISONS = (("cnn_vs_baseline", ("cnn", "cnn_onnx"), "baseline"),
               ("cnn_onnx_int8_vs_cnn_onnx", ("cnn_onnx_int8",), "cnn_onnx"),
               ("cnn_tflite_int8_vs_cnn_tflite", ("cnn_tflite_int8",), "cnn_tflite"))


def comparisons(labels, studies, probs: dict, seed: int = 0) -> dict:
    """Paired-bootstrap AUROC differences between the models that are present."""
    out = {}
    for name, a_choices, b in COMPARISONS:
        a = next((m for m in a_choices if m in probs), None)
        if a is not None and b in probs:
            out[name] = {**paired_auroc_difference(labels, probs[a], probs[b], studies, seed=seed),
                         "models": [a, b]}
    return out


def _add_trust(m: dict, card, labels, p, studies, parts, seed: int) -> None:
    """ECE (calibrated and raw) with intervals and the operating points' figures (murakit.evaluation.trust)."""
    from murakit.evaluation.trust import calibration_metrics, operating_point_metrics

    cal = calibration_metrics(card, labels, p, studies, seed=seed)
    m["image"].update(cal["image"])
    m["study"].update(cal["study"])
    m["operating_points"] = operating_point_metrics(card, labels, p, studies, parts, seed=seed)
    m["calibration"] = None if card is None else card.calibration


def benchmark(run, threads: int = 2, n_single: int = 200, n_batches: int = 10, progress=print, seed: int = 0):
    """Score and time every model of ``run``; returns (report dict, per-model test probabilities).

    Study AUROC and kappa carry 95% bootstrap intervals (studies resampled, seeded), and
    ``report["comparisons"]`` the paired CNN - baseline (and INT8 - float) AUROC differences.
    """
    from edge.cpu import cpu_info
    from murakit.data.prepared import load_prepared

    layout = RunLayout(run)
    files = {k: v for k, v in model_files(layout.root).items() if v is not None}
    if not files:
        raise MurakitError(f"{layout.root}: no trained or exported model found; run `murakit train` first")
    cards = {k: model_card(layout, k, v) for k, v in files.items()}
    for card in cards.values():  # every model must have been trained on this cache's preprocessing
        load_prepared(layout.root, expect_config=card.preprocess)
    prep = load_prepared(layout.root)
    test = prep.select("test")
    if len(test) == 0:
        raise MurakitError(f"{run}: the prepared cache has no test images")
    order = np.sort(test)
    images = np.asarray(prep.images[order])
    labels, studies, parts = prep.label[order], prep.study[order], prep.part[order]
    root = data_root(layout.root)
    report = {"dataset": {"root": root, "synthetic": is_synthetic(root), "split": "test", "images": len(order),
                          "studies": len(np.unique(studies))},
              "models": {}}
    tflite = tflite_scorers(layout, prep, threads, progress)
    probs = {}
    for name in MODEL_NAMES:
        if name not in files and name not in tflite:
            continue
        progress(f"  scoring {name} on {len(order)} test images")
        if name in tflite:
            fn, thr, size = tflite[name]
        elif name == "cnn":
            (fn, thr), size = keras_scorer(layout), files[name].stat().st_size
        else:
            fn, thr, _ = onnx_scorer(files[name], threads)
            size = files[name].stat().st_size
        p = predict_all(fn, images)
        m = evaluate(labels, p, studies, parts, thr)
        ci = study_intervals(labels, p, studies, thr, seed=seed)
        m["study"].update(auroc_ci=ci["auroc_ci"], kappa_ci=ci["kappa_ci"])
        _add_trust(m, cards.get(name) or cards.get("cnn"), labels, p, studies, parts, seed)
        m.update(cost(fn, images, n_single, n_batches))
        m["size_bytes"] = int(size)
        m["train_seconds"] = train_seconds(layout, name)
        m["file"] = f"{layout.cnn_best} (converted at bench time)" if name in tflite else str(files[name])
        report["models"][name] = json_safe(m)
        probs[name] = p
    report["comparisons"] = json_safe(comparisons(labels, studies, probs, seed))
    if "cnn_onnx" in files:
        from edge.predictor import Predictor
        from murakit.evaluation.trust import gate_metrics, part_accuracy

        progress("  input gate: test radiographs and murakit's OOD test set")
        gate = gate_metrics(Predictor(files["cnn_onnx"], threads=threads), images, seed=seed)
        if gate is not None:
            report["gate"] = json_safe(gate)
        for name in ("cnn_onnx", "cnn_onnx_int8"):
            if name in files:
                pa = part_accuracy(Predictor(files[name], threads=threads), images, parts, studies, seed=seed)
                if pa is not None:
                    report["models"][name]["part_accuracy"] = json_safe(pa)
    report["int8_decision"] = json_safe(int8_decision(layout))
    report["cpu"] = cpu_info()
    report["threads"] = threads
    report["statistics"] = {"bootstrap": {"unit": "study", "n_resamples": N_RESAMPLES, "level": LEVEL, "seed": seed,
                                          "interval": "percentile"}}
    return report, {"labels": labels, "studies": studies, "parts": parts, "probs": probs,
                    "images": images, "order": order, "prep": prep}
