"""End to end: `murakit demo --quick` runs every stage and a second run redoes nothing.

The first run is the session's shared ``quick_demo`` (tests/conftest.py).
"""

import json

import pytest
from _demofix import run_murakit


@pytest.mark.slow
def test_quick_demo_end_to_end_and_rerun(quick_demo):
    run = quick_demo.run
    report = json.loads((run / "report" / "report.json").read_text())
    assert {"baseline", "cnn", "cnn_onnx"} <= set(report["models"])
    try:
        import tensorflow  # noqa: F401  the TFLite comparison rows need it (always with the train extra)

        assert {"cnn_tflite", "cnn_tflite_int8"} <= set(report["models"])
        tfl, keras_ = report["models"]["cnn_tflite"], report["models"]["cnn"]
        assert tfl["study"]["auroc"] == pytest.approx(keras_["study"]["auroc"], abs=1e-3)  # same float model
    except ImportError:
        pass
    decision = report["int8_decision"]  # export's INT8 decision, whichever way it went, with its reason
    assert isinstance(decision["accepted"], bool) and decision["reason"] and decision["recipe"]
    assert set(decision["speed"]) == {"batch_1", "batch_32"}
    assert ("cnn_onnx_int8" in report["models"]) == decision["accepted"]
    assert isinstance(report["cpu"]["features"], list)
    for name, m in report["models"].items():
        assert 0.0 <= m["study"]["auroc"] <= 1.0, name
        assert m["size_bytes"] > 0 and m["latency_ms_p50"] > 0
        assert set(m["image"]) == {"auroc", "kappa", "accuracy", "sensitivity", "specificity", "f1",
                                   "ece", "ece_ci", "ece_raw", "ece_floor", "ece_floor_q95"}
        for key in ("auroc", "kappa"):  # 95% study-bootstrap intervals around the point estimate
            lo, hi = m["study"][f"{key}_ci"]
            assert lo <= m["study"][key] <= hi, (name, key)
    diff = report["comparisons"]["cnn_vs_baseline"]
    cnn, base = report["models"]["cnn"]["study"]["auroc"], report["models"]["baseline"]["study"]["auroc"]
    assert diff["auroc_diff"] == pytest.approx(cnn - base) and diff["ci"][0] <= diff["auroc_diff"] <= diff["ci"][1]
    assert report["statistics"]["bootstrap"]["n_resamples"] >= 1000
    cam = report["cam"]  # the synthetic data records its findings' boxes: the map is scored against them
    assert {"pointing", "pointing_ci", "pointing_no_margin", "energy_in_box", "centre_guess", "randomised_model"} <= set(cam)
    for d in (cam, cam["randomised_model"]):
        for key in ("pointing", "pointing_no_margin", "energy_in_box"):
            lo, hi = d[f"{key}_ci"]
            assert 0.0 <= lo <= d[key] <= hi <= 1.0, key
    assert cam["model"] == "cnn_onnx" and cam["cam_shape"] == [64, 64]  # placed on the 64 px canvas
    assert report["dataset"]["split"] == "test" and report["dataset"]["studies"] > 0
    for f in ("report.md", "roc.png", "confusion.png", "kappa_by_part.png", "latency_vs_auroc.png"):
        assert (run / "report" / f).stat().st_size > 0, f
    assert (run / "explore" / "summary.json").exists()
    first = quick_demo.stdout
    assert "Report:" in first
    # no library's log line reaches the user (onnxruntime.quantization's root-logger warnings
    # once printed a protobuf dump during export)
    library_lines = [ln for ln in quick_demo.stderr.splitlines()
                     if ln.startswith(("WARNING:", "INFO:", "ERROR:", "DEBUG:")) or "elem_type" in ln]
    assert not library_lines, library_lines[:5]
    verify_hint = next(line.split()[1] for line in first.splitlines() if line.strip().startswith("edge-verify "))
    assert (quick_demo.root / verify_hint).is_file()  # the INT8 model only when export kept it
    mtimes = {p: p.stat().st_mtime for p in run.rglob("*") if p.is_file()}
    rerun = run_murakit(quick_demo.root, "demo", "--quick", "--run", "runs/default")
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    changed = [str(p) for p, t in mtimes.items() if p.exists() and p.stat().st_mtime != t]
    assert changed == []
