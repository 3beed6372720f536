"""Prove a run's exported models still give the lab's outputs (``murakit verify``).

Checks, printed as one table:

* ``card``     every ``RUN/export/*.onnx`` carries the card of the model it was made from
  (``RUN/<model>/card.json``: same preprocessing, threshold, labels, training data);
* ``golden``   every ``RUN/export/*.onnx`` against its golden set with the edge runtime
  (source PNG -> edge preprocessing -> onnxruntime, and recorded input -> onnxruntime),
  tolerances from the golden manifest (float 1e-4; INT8 from its recorded agreement);
* ``keras``    the trained Keras CNN (``RUN/cnn/best.keras``) against the recorded float ONNX
  outputs on the golden inputs (max |diff| <= 1e-4);
* ``opencv``   every float model through OpenCV's DNN module as an independent second runtime,
  at batch 1 and at the full golden batch, each with a fresh ``cv2.dnn.Net`` (one Net fed two
  batch sizes has crashed OpenCV's classic engine). A model OpenCV cannot load is reported
  (status ``n/a``), not an error; one it loads must agree within each output's float
  tolerance (1e-4; the gate's logit 1e-3, ``edge.golden.OUTPUT_TOLERANCE``).

:func:`verify` is the stage (it prints the table and returns the rows as its figures);
the CLI exits 0 when every check passes, 1 on any drift or failed check.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edge.errors import first_line
from edge.golden import FLOAT_TOLERANCE as ATOL
from murakit.errors import MurakitError
from murakit.layout import RunLayout
from murakit.stage import StageResult


def _row(model, check, diff, tol, status):
    return {"model": model, "check": check, "max_diff": diff, "tolerance": tol, "status": status}


def _first_line(e: Exception) -> str:
    return first_line(e, 160)


def card_row(layout: RunLayout, model: Path) -> dict:
    """The exported model's card against the training card of the model it was made from."""
    from edge.card import read_card, read_onnx_card
    from edge.errors import EdgeError

    stage = "baseline" if model.stem == "baseline" else "cnn"
    try:
        inside, trained = read_onnx_card(model), read_card(layout.card(stage))
    except EdgeError as e:
        return _row(model.name, "card", None, None, f"ERROR: {_first_line(e)}")
    diff = inside.differences(trained)
    return _row(model.name, "card", None, None, "ok" if not diff else f"DIFFERS: {', '.join(diff)}")


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


def keras_row(layout: RunLayout, model: Path) -> dict:
    """Keras CAM model vs the float ONNX golden outputs."""
    from edge.golden import default_golden_dir, read_golden

    try:
        import deep
        from export.cnn import keras_outputs, max_diffs

        _, cases = read_golden(default_golden_dir(model))
        x = np.concatenate([c.input for c in cases])
        ref = {k: np.concatenate([c.outputs[k] for c in cases]) for k in cases[0].outputs}
        diffs = max_diffs(keras_outputs(deep.cam_model(deep.load_model(layout.cnn_best)), x), ref)
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
    from edge.golden import default_golden_dir, float_tolerance, read_golden

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
        diffs = {k: float(np.max(np.abs(np.asarray(got[k], np.float64).reshape(ref[k][:n].shape) - ref[k][:n])))
                 if np.asarray(got[k]).size == ref[k][:n].size else float("inf") for k in names}
        # each output against its own float tolerance (the gate's logit: 1e-3), as the golden check does;
        # the row shows the output closest to (or furthest past) its tolerance
        k = max(names, key=lambda n: diffs[n] / float_tolerance(n))
        ok = all(diffs[n] <= float_tolerance(n) for n in names)
        rows.append(_row(model.name, f"{check} ({k})" if not ok else check, diffs[k], float_tolerance(k),
                         "ok" if ok else "DISAGREE"))
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


def verify_run(run, threads: int | None = None, keras: bool = True, opencv: bool = True) -> list:
    """Every check of every exported model of ``run``; returns the table's rows.

    A row is ``{"model", "check", "max_diff", "tolerance", "status"}``; :func:`failed` says
    whether it counts as drift.
    """
    from edge.card import read_onnx_card
    from edge.errors import EdgeError
    from murakit.checks import check_workers

    if threads is not None:
        check_workers(threads, "--threads")
    layout = RunLayout(run)
    models = sorted(layout.export.glob("*.onnx"))
    if not models:
        raise MurakitError(f"no exported models in {layout.export}: run murakit export --run {layout.root} first")
    rows = []
    for model in models:
        rows.append(card_row(layout, model))
        rows.append(golden_row(model, threads))
        try:
            precision = read_onnx_card(model).precision
        except EdgeError:  # its card and golden rows already report why
            precision = "unknown"
        if model.name == "cnn.onnx" and keras and layout.cnn_best.is_file():
            rows.append(keras_row(layout, model))
        if precision == "float32" and opencv:
            rows.extend(opencv_rows(model))
    return rows


def verify(run, threads: int | None = None, keras: bool = True, opencv: bool = True, *, force: bool = False,
           log=print) -> StageResult:
    """The verify stage: every check of every exported model of ``run``, logged as one table.

    Verify writes nothing, so it takes no lock and is never "up to date": every call checks
    the models as they are now (``force`` is accepted for the stages' common signature).

    Returns
    -------
    StageResult
        ``status`` "done"; ``paths``: the models checked; ``figures``: ``{"rows": [...],
        "failed": n}`` (rows as :func:`verify_run` returns them, ``n`` the rows that
        :func:`failed`).
    """
    import time

    t0 = time.perf_counter()
    rows = verify_run(run, threads=threads, keras=keras, opencv=opencv)
    log(format_table(rows))
    models = sorted(RunLayout(run).export.glob("*.onnx"))
    return StageResult("verify", "done", models, time.perf_counter() - t0,
                       {"rows": rows, "failed": sum(failed(r) for r in rows)})
