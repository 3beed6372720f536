"""``murakit export --run RUN``: CNN -> ONNX (+ INT8), baseline ONNX, golden sets.

Writes ``RUN/export/``::

    cnn.onnx              float CNN, outputs probability (B,1) and cam (B,h,w), murakit.* metadata
    cnn.int8.onnx         static QDQ INT8 CNN, only when its study AUROC on val drops <= 0.01
    baseline.onnx         the HOG + SVM baseline (copied from RUN/baseline/)
    golden/<stem>/        golden set of each model (ONNX test-data layout + source.png + manifest)
    export.json           what was exported: sizes, hashes, Keras parity, the INT8 gate

Exit code 0 when every available model was exported; an INT8 model refused by the accuracy
gate is *not* an error (the float model is the deliverable and the refusal is printed and
recorded in export.json) unless ``--strict-int8`` is given, which makes it exit 1.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from murakit.errors import MurakitError

LABELS = ["normal", "abnormal"]
GOLDEN_COUNT = 8
CALIBRATION_COUNT = 200


def add_arguments(parser) -> None:
    parser.add_argument("--run", default="runs/default", help="run folder (default: runs/default)")
    parser.add_argument("--golden", type=int, default=GOLDEN_COUNT,
                        help=f"validation images in each golden set (default {GOLDEN_COUNT})")
    parser.add_argument("--calibration", type=int, default=CALIBRATION_COUNT,
                        help=f"train images for INT8 calibration, first by sorted path (default {CALIBRATION_COUNT})")
    parser.add_argument("--max-int8-drop", type=float, default=0.01,
                        help="largest accepted study-AUROC drop of INT8 vs float on val (default 0.01)")
    parser.add_argument("--no-int8", action="store_true", help="skip INT8 quantization")
    parser.add_argument("--strict-int8", action="store_true", help="exit 1 when the INT8 model is refused")
    parser.add_argument("--force", action="store_true", help="export again even if export.json is up to date")


# ---------------------------------------------------------------- choosing images
def golden_positions(prep, n: int) -> list:
    """Deterministic validation positions for a golden set: both classes, spread over parts.

    For each label (abnormal first), body parts are visited round-robin (sorted), each
    giving its next image by sorted path, until ``n // 2`` (resp. the rest) are taken.
    """
    val = prep.select("val")
    if len(val) == 0:
        raise MurakitError("the prepared cache has no validation images for a golden set")
    chosen = []
    for label, want in ((1, n - n // 2), (0, n // 2)):
        by_part = {}
        for i in sorted(val[prep.label[val] == label], key=lambda i: prep.path[i]):
            by_part.setdefault(str(prep.part[i]), []).append(int(i))
        queues, taken = [by_part[p] for p in sorted(by_part)], []
        while len(taken) < want and any(queues):
            for q in queues:
                if q and len(taken) < want:
                    taken.append(q.pop(0))
        chosen += taken
    return chosen


def first_by_path(prep, split: str, n: int) -> np.ndarray:
    """The first ``n`` positions of ``split`` in sorted-path order (calibration sample)."""
    pos = prep.select(split)
    return np.asarray(sorted(pos, key=lambda i: prep.path[i])[:n], dtype=np.int64)


def cache_inputs(prep, positions) -> np.ndarray:
    """float32 (N, S, S, 1) model inputs from the prepared cache."""
    from edge.preprocess import to_model_input

    return to_model_input(np.stack([prep.image(int(i)) for i in positions]))


def golden_sources(prep, positions) -> tuple:
    """(source paths, manifest infos) of golden positions; missing source files are an error."""
    root = Path(prep.meta["data_root"])
    sources, infos = [], []
    for i in positions:
        src = root / str(prep.path[i])
        if not src.is_file():
            raise MurakitError(f"golden source image {src} is missing (data moved since prepare?)")
        sources.append(src)
        infos.append({"path": str(prep.path[i]), "label": int(prep.label[i]), "study": str(prep.study[i]),
                      "part": str(prep.part[i])})
    return sources, infos


# ---------------------------------------------------------------- CNN
def _model_config(run: Path) -> dict:
    for path, key in ((run / "cnn" / "model_config.json", None), (run / "cnn" / "state.json", "model_config")):
        if path.is_file():
            d = json.loads(path.read_text(encoding="utf-8"))
            return d[key] if key else d
    return {}


def _read_json(path: Path, what: str) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise MurakitError(f"{path} is missing: {what}") from None
    except ValueError as e:
        raise MurakitError(f"{path} is not valid JSON ({e})") from None


def cnn_metadata(run: Path, prep, metrics: dict) -> dict:
    """The ``murakit.*`` metadata of the float CNN."""
    from murakit import __version__
    from murakit.evaluation.metrics import json_safe

    mcfg = _model_config(run)
    return {"kind": "cnn", "input": "image", "precision": "float32", "preprocess": prep.config.to_json(),
            "threshold": float(metrics["threshold"]), "labels": LABELS, "metrics": json_safe(metrics),
            "version": __version__, "arch": str(mcfg.get("arch", "unknown")), "model_config": mcfg}


def export_cnn_float(run: Path, out: Path, prep, golden_x, sources, infos) -> dict:
    """Convert RUN/cnn/best.keras, check parity, write cnn.onnx and its golden set."""
    import onnx

    import deep
    from edge.atomic import atomic_path
    from export.cnn import export_cnn
    from export.golden import record_golden

    metrics = _read_json(run / "cnn" / "metrics.json", "train the CNN first (murakit train cnn)")
    model = deep.load_model(run / "cnn" / "best.keras")
    size = int(model.inputs[0].shape[1])
    if size != prep.config.size:
        raise MurakitError(f"CNN input is {size} px but the prepared cache is {prep.config.size} px")
    proto, parity = export_cnn(deep.cam_model(model), size, cnn_metadata(run, prep, metrics), golden_x)
    path = out / "cnn.onnx"
    with atomic_path(path) as tmp:
        onnx.save(proto, str(tmp))
    _, _, outputs = record_golden(path, out / "golden" / "cnn", sources, infos,
                                  extra={"keras_parity": parity})
    print(f"export: {path} ({path.stat().st_size / 1024:.0f} KiB); Keras vs ONNX max |diff| "
          + ", ".join(f"{k} {v:.1e}" for k, v in parity.items()), flush=True)
    return {"path": str(path), "bytes": path.stat().st_size, "keras_parity": parity,
            "golden": str(out / "golden" / "cnn"), "golden_outputs": outputs}


# ---------------------------------------------------------------- INT8
def study_auroc_fn(prep, positions):
    """score(probs (N,)) -> study-level AUROC over ``positions`` (MURA protocol)."""
    from murakit.evaluation.metrics import auroc, study_level

    labels, studies = prep.label[positions], prep.study[positions]

    def score(p):
        s = study_level(labels, p, studies)
        return auroc(s["label"], s["prob"])

    return score


def _remove_int8(out: Path) -> None:
    """Drop an INT8 model (and golden set) left by an earlier export of another float model."""
    import shutil

    (out / "cnn.int8.onnx").unlink(missing_ok=True)
    shutil.rmtree(out / "golden" / "cnn.int8", ignore_errors=True)


def export_int8(out: Path, prep, args, golden_x, float_golden, sources, infos) -> dict:
    """Quantize cnn.onnx, gate it on val study AUROC, write cnn.int8.onnx + golden if accepted."""
    import onnx

    from edge.atomic import atomic_path
    from export.cnn import onnx_outputs
    from export.golden import INT8_RULE, int8_tolerances, record_golden
    from export.metadata import set_metadata
    from export.quantize import int8_gate, int8_metadata, quantize_int8

    float_path = out / "cnn.onnx"
    calib = first_by_path(prep, "train", args.calibration)
    int8 = quantize_int8(float_path, cache_inputs(prep, calib))
    val = np.asarray(sorted(prep.select("val"), key=lambda i: prep.path[i]), dtype=np.int64)
    x_val = cache_inputs(prep, val)
    gate = int8_gate(onnx_outputs(float_path, x_val)["probability"], onnx_outputs(int8, x_val)["probability"],
                     study_auroc_fn(prep, val), args.max_int8_drop)
    gate["calibration_images"] = len(calib)
    if not gate["accepted"]:
        _remove_int8(out)
        print(f"export: INT8 model REFUSED: val study AUROC {gate['float_auroc']:.4f} (float) -> "
              f"{gate['int8_auroc']:.4f} (INT8): {gate['reason']}; "
              "cnn.int8.onnx not written", flush=True)
        return gate
    set_metadata(int8, int8_metadata(gate))
    path = out / "cnn.int8.onnx"
    with atomic_path(path) as tmp:
        onnx.save(int8, str(tmp))
    tol = int8_tolerances(float_golden, onnx_outputs(path, golden_x))
    record_golden(path, out / "golden" / "cnn.int8", sources, infos, tolerances=tol, rule=INT8_RULE,
                  extra={"int8_gate": gate})
    ratio = path.stat().st_size / float_path.stat().st_size
    print(f"export: {path} ({path.stat().st_size / 1024:.0f} KiB, {ratio:.2f}x float); val study AUROC "
          f"{gate['float_auroc']:.4f} -> {gate['int8_auroc']:.4f} (drop {gate['auroc_drop']:+.4f}), "
          f"max |p diff| {gate['max_abs_diff']:.4f}", flush=True)
    return {**gate, "path": str(path), "bytes": path.stat().st_size, "golden_tolerances": tol}


# ---------------------------------------------------------------- baseline
def export_baseline(run: Path, out: Path, sources, infos) -> dict:
    """Copy RUN/baseline/baseline.onnx (checked to be a murakit model) and record its golden set."""
    from edge.atomic import atomic_write
    from edge.predictor import Predictor
    from export.golden import record_golden

    src = run / "baseline" / "baseline.onnx"
    Predictor(src)  # refuses a file without murakit metadata before we publish it
    path = out / "baseline.onnx"
    with atomic_write(path) as f:
        f.write(src.read_bytes())
    record_golden(path, out / "golden" / "baseline", sources, infos)
    print(f"export: {path} ({path.stat().st_size / 1024:.0f} KiB) with its golden set", flush=True)
    return {"path": str(path), "bytes": path.stat().st_size, "golden": str(out / "golden" / "baseline")}


# ---------------------------------------------------------------- command
def _user_errors() -> tuple:
    """Exceptions of export/deep that become one-line MurakitErrors (deep only if already loaded:
    importing it costs TensorFlow's start-up, which a baseline-only export never needs)."""
    import sys

    from export.errors import ExportError

    deep_errors = sys.modules.get("deep.errors")
    return (ExportError, deep_errors.DeepError) if deep_errors else (ExportError,)


def run(args) -> int:
    from edge.atomic import write_text
    from murakit.evaluation.metrics import json_safe
    from murakit.data.prepared import load_prepared

    run_dir, out = Path(args.run), Path(args.run) / "export"
    has_cnn = (run_dir / "cnn" / "best.keras").is_file()
    has_baseline = (run_dir / "baseline" / "baseline.onnx").is_file()
    if not (has_cnn or has_baseline):
        raise MurakitError(f"nothing to export in {run_dir}: train a model first (murakit train cnn / baseline)")
    from murakit.stages import is_fresh

    inputs = [run_dir / "cnn" / "best.keras", run_dir / "cnn" / "metrics.json", run_dir / "baseline" / "baseline.onnx",
              run_dir / "baseline" / "metrics.json", run_dir / "prepared" / "config.json"]
    if not args.force and is_fresh(out / "export.json", inputs):
        print(f"export: {out / 'export.json'} is newer than every model; nothing to do (--force redoes it)")
        return 0
    prep = load_prepared(run_dir)
    sources, infos = golden_sources(prep, golden_positions(prep, args.golden))
    summary, code = {"golden_cases": infos}, 0
    try:
        if has_cnn:
            golden_x = cache_inputs_from_sources(sources, prep.config)
            cnn = export_cnn_float(run_dir, out, prep, golden_x, sources, infos)
            summary["cnn"] = {k: v for k, v in cnn.items() if k != "golden_outputs"}
            if not args.no_int8:
                summary["cnn.int8"] = export_int8(out, prep, args, golden_x, cnn["golden_outputs"], sources, infos)
                code = 1 if args.strict_int8 and not summary["cnn.int8"]["accepted"] else 0
        else:
            print(f"export: no CNN in {run_dir / 'cnn'}; skipping cnn.onnx", flush=True)
        if has_baseline:
            summary["baseline"] = export_baseline(run_dir, out, sources, infos)
        else:
            print(f"export: no {run_dir / 'baseline' / 'baseline.onnx'}; skipping the baseline", flush=True)
    except _user_errors() as e:
        raise MurakitError(str(e)) from None
    write_text(out / "export.json", json.dumps(json_safe(summary), indent=2, sort_keys=True))
    return code


def cache_inputs_from_sources(sources, cfg) -> np.ndarray:
    """float32 (N, S, S, 1): the golden sources through THE preprocessing function."""
    from edge.preprocess import preprocess, to_model_input

    return to_model_input(np.stack([preprocess(s, cfg) for s in sources]))
