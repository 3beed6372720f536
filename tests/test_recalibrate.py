"""``murakit calibrate``: refit a trained model's calibrators from its stored val predictions."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from types import SimpleNamespace

import numpy as np

from edge.card import ModelCard, read_card, read_onnx_card, save_onnx
from edge.hog import HogConfig
from edge.preprocess import PreprocessConfig
from murakit.cli import main
from murakit.evaluation.calibration import apply_platt, ece, fit_calibration
from murakit.evaluation.metrics import auroc, study_level
from murakit.evaluation.predictions import COLUMNS

IDENTITY = {"image": {"method": "platt", "a": 1.0, "b": 0.0}, "study": {"method": "platt", "a": 1.0, "b": 0.0}}


def _views(n_studies: int, seed: int):
    """(labels, probs, studies, parts) of an overconfident model: studies of 1-3 views, the model
    reporting sigmoid(3 * logit(q)) of the views' true probability q."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, 4, n_studies)
    studies = np.repeat(np.arange(n_studies), sizes)
    z = rng.normal(0, 1.2, n_studies)[studies] + rng.normal(0, 0.3, len(studies))
    q = 1 / (1 + np.exp(-z))
    y = (rng.uniform(size=n_studies) < np.bincount(studies, q) / sizes)[studies].astype(int)
    parts = np.array(["WRIST", "HAND"])[studies % 2]
    return y, (1 / (1 + np.exp(-3 * z))).astype(np.float32), np.array([f"s{s}" for s in studies]), parts


def _write_predictions(path, y, p, g, parts):
    rows = "".join(f"x/{i}.png,{gi},{pt},{yi},{float(pi):.8f}\n" for i, (yi, pi, gi, pt) in enumerate(zip(y, p, g, parts)))
    path.write_text(",".join(COLUMNS) + "\n" + rows, encoding="utf-8")


def _card(kind: str, y, p) -> ModelCard:
    """A card as murakit wrote them before today's fitting rule: identity calibrators, youden only."""
    return ModelCard(kind=kind, preprocess=PreprocessConfig(size=32), threshold=0.4, arch="tiny", version="t",
                     data_fingerprint=hashlib.sha256(b"x").hexdigest(), weights_sha256="0" * 64,
                     metrics={"val": {"image": {"auroc": auroc(y, np.round(p.astype(np.float64), 8))}}},
                     calibration=IDENTITY, operating_points={"youden": {"threshold": 0.4}},
                     hog=HogConfig() if kind == "baseline" else None)


def _tiny_onnx():
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 1])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=onnx.IR_VERSION)


def _run(tmp_path, val):
    """A run folder with an old-style cnn card and a baseline (card.json + baseline.onnx carrying it)."""
    run = tmp_path / "run"
    for kind in ("cnn", "baseline"):
        (run / kind).mkdir(parents=True)
        _write_predictions(run / kind / "predictions_val.csv", *val)
        card = _card(kind, val[0], val[1])
        if kind == "baseline":
            card = save_onnx(_tiny_onnx(), card, run / kind / "baseline.onnx")
        (run / kind / "card.json").write_text(card.to_json() + "\n", encoding="utf-8")
    return run


def test_calibrate_refits_an_old_card_from_val_predictions_and_changes_nothing_else(tmp_path, capsys):
    val, test = _views(150, 1), _views(600, 2)
    run = _run(tmp_path, val)
    old = {k: read_card(run / k / "card.json") for k in ("cnn", "baseline")}
    assert main(["calibrate", "--run", str(run)]) == 0
    assert "murakit export" in capsys.readouterr().out
    for kind in ("cnn", "baseline"):
        new = read_card(run / kind / "card.json")
        want = fit_calibration(val[0], np.round(val[1].astype(np.float64), 8), val[2])
        for level in ("image", "study"):
            assert abs(new.calibration[level]["a"] - want[level]["a"]) < 1e-9 and new.calibration[level]["a"] > 0
        # only calibration and operating points moved: weights, threshold, metrics are the trained model's
        assert new.differences(old[kind]) == ["calibration", "operating_points"]
        assert (new.weights_sha256, new.threshold, new.metrics) == (old[kind].weights_sha256, 0.4, old[kind].metrics)
        assert new.operating_points["youden"]["threshold"] == 0.4 and "sensitivity>=0.90" in new.operating_points
        # the point of it: held-out studies of the same model are better calibrated, ranking unchanged
        s = study_level(test[0], test[1], test[2])
        cal = apply_platt(new.calibration["study"], s["prob"])
        assert ece(s["label"], cal) < 0.5 * ece(s["label"], s["prob"])
        assert ece(test[0], apply_platt(new.calibration["image"], test[1])) < 0.5 * ece(test[0], test[1])
        assert auroc(s["label"], cal) == auroc(s["label"], s["prob"])
    # the baseline's trained ONNX file carries the new card (what export checks), same graph hash
    inside = read_onnx_card(run / "baseline" / "baseline.onnx")
    assert not inside.differences(read_card(run / "baseline" / "card.json"))
    assert inside.weights_sha256 == old["baseline"].weights_sha256
    # a second run finds the cards current and writes nothing
    before = {k: (run / k / "card.json").stat().st_mtime_ns for k in ("cnn", "baseline")}
    assert main(["calibrate", "--run", str(run)]) == 0
    assert "nothing to do" in capsys.readouterr().out
    assert before == {k: (run / k / "card.json").stat().st_mtime_ns for k in ("cnn", "baseline")}


def test_a_card_fitted_at_training_is_current_for_calibrate(tmp_path, capsys):
    """Training fits on float32 probabilities in memory, calibrate on the 8-decimal CSV: the same fit."""
    from murakit.pipeline.cards import training_card

    y, p, g, parts = _views(120, 3)
    prep = SimpleNamespace(config=PreprocessConfig(size=32), fingerprint=lambda: hashlib.sha256(b"x").hexdigest())
    metrics = {"val": {"image": {"auroc": auroc(y, p)}}}
    card = training_card("cnn", prep, threshold=0.4, arch="tiny", weights_sha256="0" * 64, metrics=metrics,
                         val=(y, p, g, parts))
    (tmp_path / "cnn").mkdir()
    (tmp_path / "cnn" / "card.json").write_text(card.to_json() + "\n", encoding="utf-8")
    _write_predictions(tmp_path / "cnn" / "predictions_val.csv", y, p, g, parts)
    assert main(["calibrate", "--run", str(tmp_path)]) == 0
    assert "already has these calibrators" in capsys.readouterr().out
    assert read_card(tmp_path / "cnn" / "card.json") == card


def test_calibrate_errors_are_one_line_and_leave_the_card_alone(tmp_path, capsys):
    val = _views(60, 4)
    run = _run(tmp_path, val)
    card = (run / "cnn" / "card.json").read_bytes()

    def error(args, needle):
        assert main(["calibrate", "--run", str(run), *args]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("murakit: error:") and needle in err[0], err
        assert (run / "cnn" / "card.json").read_bytes() == card

    (run / "cnn" / "predictions_val.csv").rename(run / "cnn" / "kept.csv")
    error(["--model", "cnn"], "no val predictions to fit calibrators on")
    shuffled = np.random.default_rng(0).permutation(val[1])  # another model's probabilities
    _write_predictions(run / "cnn" / "predictions_val.csv", val[0], shuffled, val[2], val[3])
    error(["--model", "cnn"], "not this model's")
    (run / "cnn" / "predictions_val.csv").write_text("path,label\nx.png,1\n", encoding="utf-8")
    error(["--model", "cnn"], "missing columns")
    (run / "cnn" / "predictions_val.csv").write_text(",".join(COLUMNS) + "\nx.png,s,HAND,1,1.5\n", encoding="utf-8")
    error(["--model", "cnn"], "probabilities in [0, 1]")
    (run / "baseline" / "baseline.onnx").unlink()
    error(["--model", "baseline"], "baseline.onnx: missing")
    (run / "baseline" / "card.json").unlink()
    error(["--model", "baseline"], "no trained baseline")
    error(["--run", str(tmp_path / "nowhere")], "no such run folder")


def _shift_script():
    import importlib.util
    from pathlib import Path

    bench = Path(__file__).resolve().parents[1] / "benchmarks"
    sys.path.insert(0, str(bench))  # it imports calibration_check beside it
    try:
        spec = importlib.util.spec_from_file_location("calibration_shift", bench / "calibration_shift.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
    finally:
        sys.path.remove(str(bench))
    return mod


def test_calibration_shift_detects_a_val_to_test_shift_and_only_then():
    shift = _shift_script()
    yv, pv, gv, _ = _views(200, 5)
    yt, pt, gt, _ = _views(200, 6)  # the same overconfident model on new studies
    gt = np.char.add("test-", gt)
    pt_shifted = 1 / (1 + np.exp(-(np.log(pt) - np.log1p(-pt) + 4.0)))  # test: a shift of +4 logits
    sv = shift._study_table(yv, pv, gv)
    same, moved = (shift.shift_row("study", sv[0], sv[1], *shift._study_table(yt, q, gt)[:2], sv[2], resamples=20)
                   for q in (pt, pt_shifted))
    assert same["lr_p"] > 0.05 and moved["lr_p"] < 1e-4, (same["lr_p"], moved["lr_p"])
    assert moved["oracle_ece"] < moved["raw_ece"]  # the form can fit test; val's map cannot be it
    yv, pv, gv, _ = _views(60, 7)  # small: the rule is cross-validated inside cross-validation here
    rows = shift.candidate_rows(yv, pv, gv, yt, pt, gt, resamples=5)
    auc = {(r[0], r[1]): r[6] for r in rows}
    for level in ("image", "study"):  # monotone maps keep AUROC; the raw row is the reference
        assert auc[(level, "rule")] == auc[(level, "raw")] == auc[(level, "platt")]
    r = shift.resplit_row(yv, pv, gv, yt, pt, gt, n=3)
    assert all(0 <= x <= 1 for x in (*r["met"], *r["percentile"])) and r["q"].shape == (2, 2)


HOLD = """
import sys, time
from murakit.lock import stage_lock
with stage_lock(sys.argv[1], writes=sys.argv[2]):
    print("held", flush=True)
    time.sleep(60)
"""


def test_calibrate_refuses_a_run_whose_model_is_being_written(tmp_path, capsys):
    """A training (or another calibrate) holding the model's stage stops calibrate before it writes."""
    from murakit.lock import stage_lock

    run = _run(tmp_path, _views(40, 8))
    card = (run / "cnn" / "card.json").read_bytes()
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(run), "cnn"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert main(["calibrate", "--run", str(run), "--model", "cnn"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and f"in use by PID {holder.pid} (murakit train cnn)" in err[0]
        assert (run / "cnn" / "card.json").read_bytes() == card
    finally:
        holder.kill()
        holder.wait()
    with stage_lock(run, writes="cnn", command="murakit calibrate"):  # and it names itself to others
        assert "murakit calibrate" in next((run / ".locks").glob("cnn.*.holder")).read_text()


def test_python_api_calibrate_returns_the_models_it_refit(tmp_path):
    import json

    import murakit as mk

    run = _run(tmp_path, _views(60, 9))
    for kind in ("cnn", "baseline"):
        (run / kind / "metrics.json").write_text(json.dumps({"study": {"auroc": 0.5}}), encoding="utf-8")
    first, again = mk.calibrate(run), mk.calibrate(run, models=["cnn"])
    assert {k: v.status for k, v in first.items()} == {"cnn": "done", "baseline": "done"}
    assert {k: v.status for k, v in again.items()} == {"cnn": "up-to-date"}
    assert first["cnn"].card == run / "cnn" / "card.json"


def test_simulated_study_means_are_under_dispersed_like_real_ones():
    """calibration_shift --simulate: views of abnormal studies that miss the finding compress the
    study mean, so it needs a steeper map than its views (val study slopes 1.3-4.5 on real runs)."""
    from murakit.evaluation.calibration import platt

    y, p, g = _shift_script().underdispersed_views(2000, 0)
    s = study_level(y, p, g)
    assert platt(s["label"], s["prob"])["a"] > 1.5 * platt(y, p)["a"] and set(np.unique(y)) == {0, 1}
