"""``murakit verify --run RUN``: prove the exported models still give the lab's outputs.

Checks, printed as one table:

* ``golden``   every ``RUN/export/*.onnx`` against its golden set with the edge runtime
  (source PNG -> edge preprocessing -> onnxruntime, and recorded input -> onnxruntime),
  tolerances from the golden manifest (float 1e-4; INT8 from its recorded agreement);
* ``keras``    the trained Keras CNN (``RUN/cnn/best.keras``) against the recorded float ONNX
  outputs on the golden inputs (max |diff| <= 1e-4);
* ``opencv``   every float model through OpenCV's DNN module as an independent second runtime,
  at batch 1 and at the full golden batch, each with a fresh ``cv2.dnn.Net`` (one Net fed two
  batch sizes has crashed OpenCV's classic engine). A model OpenCV cannot load is reported
  (status ``n/a``), not an error; one it loads must agree within 1e-4.

Exit code 0 when every check passes, 1 on any drift or failed check.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from murakit.errors import MurakitError

ATOL = 1e-4


def add_arguments(parser) -> None:
    parser.add_argument("--run", default="runs/default", help="run folder (default: runs/default)")
    parser.add_argument("--threads", type=int, help="onnxruntime intra-op threads")
    parser.add_argument("--no-keras", action="store_true", help="skip the Keras comparison (no TensorFlow)")
    parser.add_argument("--no-opencv", action="store_true", help="skip the OpenCV DNN comparison")


def _row(model, check, diff, tol, status):
    return {"model": model, "check": check, "max_diff": diff, "tolerance": tol, "status": status}


def _first_line(e: Exception) -> str:
    text = str(e).strip()
    return (text.splitlines()[0] if text else type(e).__name__)[:160]


def golden_row(model: Path, threads) -> dict:
    """Edge verification of one model against its default golden set."""
    from edge.errors import EdgeError
    from edge.golden import verify_golden
    from edge.predictor import Predictor

    try:
        report = verify_golden(Predictor(model, threads=threads))
    except EdgeError as e:
        return _row(model.name, "golden", None, None, f"ERROR: {_first_line(e)}")
    worst = report.worst()
    over = max((worst[k] / report.tolerances[k] for k in worst), default=0.0)
    key = max(worst, key=lambda k: worst[k] / report.tolerances[k]) if worst else None
    status = f"ok ({len(report.cases)} cases)" if report.passed else f"DRIFT ({over:.1f}x tolerance)"
    return _row(model.name, "golden", worst.get(key), report.tolerances.get(key), status)


def keras_row(run: Path, model: Path) -> dict:
    """Keras CAM model vs the float ONNX golden outputs."""
    from edge.golden import default_golden_dir, read_golden

    try:
        import deep
        from export.cnn import keras_outputs, max_diffs

        _, cases = read_golden(default_golden_dir(model))
        x = np.concatenate([c.input for c in cases])
        ref = {k: np.concatenate([c.outputs[k] for c in cases]) for k in cases[0].outputs}
        diffs = max_diffs(keras_outputs(deep.cam_model(deep.load_model(run / "cnn" / "best.keras")), x), ref)
    except Exception as e:  # noqa: BLE001  report, keep verifying the rest
        return _row(model.name, "keras", None, ATOL, f"ERROR: {_first_line(e)}")
    worst = max(diffs.values())
    return _row(model.name, "keras", worst, ATOL, "ok" if worst <= ATOL else "DRIFT")


def opencv_outputs(model: Path, x: np.ndarray, names: list) -> dict:
    """Run ``x`` through a fresh ``cv2.dnn.Net``; returns {output name: ndarray}."""
    import cv2

    level = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)  # we report failures ourselves
    try:
        net = cv2.dnn.readNetFromONNX(str(model))
    finally:
        cv2.utils.logging.setLogLevel(level)
    net.setInput(np.ascontiguousarray(x, np.float32))
    return dict(zip(names, net.forward(names)))


def _why_opencv(model: Path, err: Exception) -> str:
    """Name the ops outside the default ONNX domain (OpenCV's importer has none of them)."""
    try:
        import onnx

        ops = sorted({f"{n.domain}:{n.op_type}" for n in onnx.load(str(model)).graph.node if n.domain})
    except Exception:  # noqa: BLE001  fall back to OpenCV's own message
        ops = []
    return f"unsupported ops {', '.join(ops)}" if ops else _first_line(err)[-100:]


def opencv_rows(model: Path) -> list:
    """OpenCV DNN vs the recorded golden outputs at batch 1 and at the full golden batch."""
    from edge.golden import default_golden_dir, read_golden

    try:
        manifest, cases = read_golden(default_golden_dir(model))
    except Exception as e:  # noqa: BLE001  reported as a row
        return [_row(model.name, "opencv", None, ATOL, f"ERROR: {_first_line(e)}")]
    names = list(manifest["output_names"])
    x = np.concatenate([c.input for c in cases])
    ref = {k: np.concatenate([c.outputs[k] for c in cases]) for k in names}
    rows = []
    for n in sorted({1, len(cases)}):
        check = f"opencv b={n}"
        try:
            got = opencv_outputs(model, x[:n], names)
        except Exception as e:  # noqa: BLE001  cv2.error for layers the importer cannot handle
            rows.append(_row(model.name, check, None, ATOL, f"n/a: OpenCV DNN cannot run it ({_why_opencv(model, e)})"))
            continue
        diffs = [float(np.max(np.abs(np.asarray(got[k], np.float64).reshape(ref[k][:n].shape) - ref[k][:n])))
                 if np.asarray(got[k]).size == ref[k][:n].size else float("inf") for k in names]
        worst = max(diffs)
        rows.append(_row(model.name, check, worst, ATOL, "ok" if worst <= ATOL else "DISAGREE"))
    return rows


def format_table(rows: list) -> str:
    """Plain-text table of verification rows."""
    head = ["model", "check", "max |diff|", "tolerance", "status"]
    body = [[r["model"], r["check"], "-" if r["max_diff"] is None else f"{r['max_diff']:.2e}",
             "-" if r["tolerance"] is None else f"{r['tolerance']:.1e}", r["status"]] for r in rows]
    widths = [max(len(x[i]) for x in [head] + body) for i in range(len(head))]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(line, widths)) for line in [head] + body)


def failed(row: dict) -> bool:
    """True for a row that counts as drift / failure (``n/a`` OpenCV loads do not)."""
    return not (row["status"].startswith("ok") or row["status"].startswith("n/a"))


def run(args) -> int:
    from edge.predictor import Predictor

    run_dir = Path(args.run)
    out = run_dir / "export"
    models = sorted(out.glob("*.onnx"))
    if not models:
        raise MurakitError(f"no exported models in {out}: run murakit export --run {run_dir} first")
    rows = []
    for model in models:
        rows.append(golden_row(model, args.threads))
        try:
            precision = Predictor(model).metadata.get("precision", "float32")
        except Exception:  # noqa: BLE001  its golden row already reports why
            precision = "unknown"
        if model.name == "cnn.onnx" and not args.no_keras and (run_dir / "cnn" / "best.keras").is_file():
            rows.append(keras_row(run_dir, model))
        if precision == "float32" and not args.no_opencv:
            rows.extend(opencv_rows(model))
    print(format_table(rows))
    bad = [r for r in rows if failed(r)]
    print(f"verify: {'FAIL' if bad else 'PASS'} ({len(rows) - len(bad)}/{len(rows)} checks ok)")
    return 1 if bad else 0
