"""Export: metadata, Keras == ONNX, INT8 gate, golden sets, `murakit export` / `murakit verify` on a tiny run."""

import argparse
import json

import numpy as np
import onnx
import pytest
from _murafix import make_mura

from edge.golden import load_tensor, save_tensor
from edge.predictor import Predictor
from export.errors import ExportError
from export.metadata import get_metadata, load_metadata, set_metadata
from murakit.cli import export as cmd_export, verify as cmd_verify
from murakit.errors import MurakitError

deep = pytest.importorskip("deep")
SIZE = 32


def _args(module, argv):
    p = argparse.ArgumentParser()
    module.add_arguments(p)
    return p.parse_args(argv)


@pytest.fixture(scope="module")
def cam_model():
    from deep.config import ModelConfig

    return deep.cam_model(deep.build_model(ModelConfig(size=SIZE, width=4)))


@pytest.fixture(scope="module")
def x():
    return np.random.default_rng(0).random((5, SIZE, SIZE, 1), dtype=np.float32)


def test_metadata_round_trip_and_replace(tmp_path):
    model = onnx.helper.make_model(onnx.helper.make_graph([], "g", [], []))
    model.metadata_props.add(key="author", value="lab")
    set_metadata(model, {"kind": "cnn", "threshold": 0.4375, "metrics": {"study": {"auroc": 0.9}}})
    set_metadata(model, {"threshold": 0.5})
    meta = get_metadata(model)
    assert meta == {"kind": "cnn", "threshold": "0.5", "metrics": '{"study": {"auroc": 0.9}}'}
    assert [p.key for p in model.metadata_props].count("murakit.threshold") == 1
    assert {p.key: p.value for p in model.metadata_props}["author"] == "lab"
    onnx.save(model, str(tmp_path / "m.onnx"))
    assert load_metadata(tmp_path / "m.onnx") == meta


META = {"kind": "cnn", "input": "image", "threshold": 0.5, "arch": "small"}


@pytest.fixture(scope="module")
def exported(cam_model, x):
    from export.cnn import export_cnn

    return export_cnn(cam_model, SIZE, META, x)


def _assert_short_names(model):
    """Inner tensors and nodes carry short ids; the graph's own input/output names are kept."""
    import re

    io = {v.name for v in model.graph.input} | {v.name for v in model.graph.output}
    inner = {n for node in model.graph.node for n in (*node.input, *node.output) if n} - io
    inner |= {t.name for t in model.graph.initializer}
    assert inner and all(re.fullmatch(r"t\d+", n) for n in inner)
    assert all(re.fullmatch(r"n\d+", node.name) for node in model.graph.node)


def test_cnn_export_parity_checker_and_dynamic_batch(cam_model, x, exported):
    from export.cnn import export_cnn, keras_outputs, onnx_outputs

    model, parity = exported
    onnx.checker.check_model(model)
    assert [o.name for o in model.graph.output] == ["probability", "cam"]
    assert [i.name for i in model.graph.input] == ["image"]
    _assert_short_names(model)
    assert set(parity) == {"probability", "cam"} and max(parity.values()) <= 1e-4
    ref = keras_outputs(cam_model, x)
    for n in (1, 5):  # dynamic batch axis
        got = onnx_outputs(model, x[:n])
        assert got["probability"].shape == (n, 1) and got["cam"].shape == ref["cam"][:n].shape
        assert np.max(np.abs(got["cam"] - ref["cam"][:n])) <= 1e-4
    assert get_metadata(model)["threshold"] == "0.5"
    with pytest.raises(ExportError, match="disagree"):
        export_cnn(cam_model, SIZE, META, x, atol=-1.0)  # an impossible tolerance must refuse


def test_int8_quantization_and_gate(exported, x, tmp_path):
    from export.cnn import onnx_outputs
    from export.quantize import int8_gate, int8_metadata, quantize_int8
    from murakit.evaluation.metrics import auroc

    onnx.save(exported[0], str(tmp_path / "f.onnx"))
    q = quantize_int8(tmp_path / "f.onnx", np.random.default_rng(1).random((24, SIZE, SIZE, 1), dtype=np.float32))
    ops = {n.op_type for n in q.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    _assert_short_names(q)
    onnx.checker.check_model(q)
    assert get_metadata(q) == {**get_metadata(exported[0]), "precision": "int8"}
    pf, pq = onnx_outputs(tmp_path / "f.onnx", x)["probability"], onnx_outputs(q, x)["probability"]
    assert np.max(np.abs(pf - pq)) < 0.05

    y = np.array([0, 0, 1, 1, 0, 1])
    p = np.array([0.1, 0.2, 0.8, 0.9, 0.3, 0.7])
    ok = int8_gate(p, p + 0.01, lambda s: auroc(y, s))
    assert ok["accepted"] and ok["auroc_drop"] == 0.0 and ok["max_abs_diff"] == pytest.approx(0.01)
    assert int8_metadata(ok)["int8_auroc_drop"] == 0.0
    bad = int8_gate(p, p[::-1], lambda s: auroc(y, s))  # forced large drop
    assert not bad["accepted"] and bad["auroc_drop"] > 0.01 and "drop" in bad["reason"]
    one_class = int8_gate(p, p, lambda s: auroc(np.ones(6), s))
    assert not one_class["accepted"] and "undefined" in one_class["reason"]


# ---------------------------------------------------------------- the whole command on a tiny run
@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    import keras

    from deep.config import ModelConfig
    from murakit.cli import prepare as cmd_prepare

    root = tmp_path_factory.mktemp("exportrun")
    make_mura(root / "data", parts=("ELBOW", "HAND", "WRIST"), patients_per_part=(8, 8, 8), views=2)
    run = root / "run"
    assert cmd_prepare.run(_args(cmd_prepare, [str(root / "data"), "--run", str(run), "--size", str(SIZE),
                                               "--workers", "1", "--no-progress", "--val-fraction", "0.3"])) == 0
    cfg = ModelConfig(size=SIZE, width=4)
    keras.utils.set_random_seed(0)
    (run / "cnn").mkdir()
    deep.build_model(cfg).save(run / "cnn" / "best.keras")
    (run / "cnn" / "model_config.json").write_text(cfg.to_json())
    (run / "cnn" / "metrics.json").write_text(json.dumps({"threshold": 0.5, "study": {"auroc": 0.5}}))
    # An untrained model ranks val studies by noise, so INT8 rounding can move its AUROC a lot:
    # accept any drop here (the refusal path has its own test) and check that it is recorded.
    assert cmd_export.run(_args(cmd_export, ["--run", str(run), "--calibration", "20", "--golden", "6",
                                             "--max-int8-drop", "1.0"])) == 0
    return run


def test_export_writes_self_describing_models_and_golden_sets(run_dir):
    out = run_dir / "export"
    summary = json.loads((out / "export.json").read_text())
    gate = summary["cnn.int8"]
    assert gate["accepted"] and summary["cnn"]["keras_parity"]["cam"] <= 1e-4
    assert gate["auroc_drop"] == pytest.approx(gate["float_auroc"] - gate["int8_auroc"])
    meta = load_metadata(out / "cnn.onnx")
    for key in ("kind", "input", "preprocess", "threshold", "labels", "metrics", "version", "arch"):
        assert key in meta
    assert (meta["kind"], meta["arch"], json.loads(meta["preprocess"])["size"]) == ("cnn", "small", SIZE)
    q = load_metadata(out / "cnn.int8.onnx")
    assert q["precision"] == "int8" and float(q["int8_auroc_drop"]) == pytest.approx(gate["auroc_drop"])
    labels = [c["label"] for c in summary["golden_cases"]]
    assert len(labels) == 6 and set(labels) == {0, 1}
    for stem in ("cnn", "cnn.int8"):
        manifest = json.loads((out / "golden" / stem / "manifest.json").read_text())
        assert len(manifest["cases"]) == 6 and manifest["output_names"] == ["probability", "cam"]
        assert (out / "golden" / stem / "test_data_set_5" / "source.png").is_file()
    assert manifest["tolerances"]["probability"] > 1e-3  # INT8: from its recorded agreement
    assert Predictor(out / "cnn.int8.onnx").threshold == 0.5


def test_verify_passes_then_reports_drift(run_dir, capsys):
    assert cmd_verify.run(_args(cmd_verify, ["--run", str(run_dir)])) == 0
    out = capsys.readouterr().out
    for check in ("golden", "keras", "opencv b=1", "opencv b=6"):
        assert check in out
    assert "verify: PASS" in out
    pb = run_dir / "export" / "golden" / "cnn" / "test_data_set_0" / "output_1.pb"
    orig = load_tensor(pb)
    save_tensor(pb, orig + np.float32(0.01), "cam")
    try:
        assert cmd_verify.run(_args(cmd_verify, ["--run", str(run_dir), "--no-opencv"])) == 1
        assert "DRIFT" in capsys.readouterr().out
    finally:
        save_tensor(pb, orig, "cam")


def test_int8_refused_by_gate_is_not_written(run_dir, capsys):
    from murakit.data.prepared import load_prepared

    out = run_dir / "export"
    gate = cmd_export.export_int8(out, load_prepared(run_dir), argparse.Namespace(calibration=10, max_int8_drop=-1.0),
                                  None, None, None, None)
    assert not gate["accepted"]
    assert not (out / "cnn.int8.onnx").exists() and not (out / "golden" / "cnn.int8").exists()
    assert "INT8 model REFUSED" in capsys.readouterr().out


def test_export_without_models_is_a_clear_error(tmp_path):
    with pytest.raises(MurakitError, match="nothing to export"):
        cmd_export.run(_args(cmd_export, ["--run", str(tmp_path)]))
