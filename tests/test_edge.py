"""The edge runtime: golden TensorProto I/O, Predictor, edge-predict, edge-verify, CAM overlays.

Models are hand-built ONNX graphs (tests/_edgefix.py), so nothing here needs TensorFlow.
"""

import json
import subprocess
import sys

import cv2
import numpy as np
import onnx
import pytest
from _edgefix import SIZE, baseline_model, cnn_model, write_images
from onnx import helper, numpy_helper

from edge.cam import normalise_cam, overlay, upsample_cam
from edge.cli import predict_main, verify_main
from edge.errors import ModelError
from edge.golden import GoldenError, load_tensor, save_tensor
from edge.predictor import Predictor
from edge.protobuf import tensor_from_bytes, tensor_to_bytes
from export.golden import record_golden


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("models")
    return {"cnn": cnn_model(d / "cnn.onnx"), "baseline": baseline_model(d / "baseline.onnx"),
            "other": cnn_model(d / "other.onnx", seed=7)}


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return write_images(tmp_path_factory.mktemp("study") / "study1_positive", 3)


def _lines(text):
    return [line for line in text.splitlines() if line.strip()]


# ---------------------------------------------------------------- TensorProto
@pytest.mark.parametrize("arr,name", [
    (np.random.default_rng(0).random((1, 8, 8, 1), dtype=np.float32), "image"),
    (np.arange(12, dtype=np.uint8).reshape(3, 4), "u8"),
    (np.array([[-1.5, 2.25]], np.float32), ""),
    (np.zeros((0, 3), np.float32), "empty"),
    (np.array([-7, 300], np.int64), "i64"),
])
def test_tensor_bytes_equal_onnx_numpy_helper(arr, name):
    ours = tensor_to_bytes(arr, name)
    assert ours == numpy_helper.from_array(arr, name).SerializeToString()
    got_name, back = tensor_from_bytes(ours)
    assert got_name == name and back.dtype == arr.dtype and np.array_equal(back, arr)
    assert np.array_equal(numpy_helper.to_array(onnx.load_tensor_from_string(ours)), arr)


def test_tensor_reader_handles_typed_fields_and_rejects_garbage(tmp_path):
    t = helper.make_tensor("f", onnx.TensorProto.FLOAT, [2, 2], [1.0, 2.0, 3.0, -4.5])
    assert np.array_equal(tensor_from_bytes(t.SerializeToString())[1], [[1, 2], [3, -4.5]])
    t = helper.make_tensor("u", onnx.TensorProto.UINT8, [3], [0, 7, 255])
    assert tensor_from_bytes(t.SerializeToString())[1].tolist() == [0, 7, 255]
    good = tensor_to_bytes(np.ones((2, 3), np.float32), "x")
    with pytest.raises(ValueError):
        tensor_from_bytes(good[:-3])  # raw_data shorter than its length prefix
    save_tensor(tmp_path / "bad.pb", np.ones(4, np.float32))
    (tmp_path / "bad.pb").write_bytes((tmp_path / "bad.pb").read_bytes()[:-1])
    with pytest.raises(GoldenError, match="not a valid TensorProto"):
        load_tensor(tmp_path / "bad.pb")


# ---------------------------------------------------------------- Predictor
def test_predictor_reads_everything_from_metadata(models, images):
    p = Predictor(models["cnn"], threads=1)
    assert (p.kind, p.input_kind, p.threshold, p.labels) == ("cnn", "image", 0.5, ("normal", "abnormal"))
    assert p.config.size == SIZE and p.has_cam and p.output_names == ["probability", "cam"]
    pred = p.predict(images[0], cam=True)
    assert 0.0 <= pred.probability <= 1.0
    assert pred.label == ("abnormal" if pred.probability > 0.5 else "normal")
    assert pred.image.shape == (SIZE, SIZE) and pred.cam.shape == (SIZE // 2, SIZE // 2)
    b = Predictor(models["baseline"])
    assert b.input_kind == "hog" and not b.has_cam
    x = b.model_input(b.preprocess(images[0]))
    assert x.dtype == np.float32 and x.shape == (1, b.hog.feature_dim(SIZE))
    assert 0.0 <= b.predict(images[0]).probability <= 1.0
    with pytest.raises(ModelError, match="threads"):
        Predictor(models["cnn"], threads=0)


# ---------------------------------------------------------------- edge-predict
def test_predict_json_schema_and_study_average(models, images, capsys):
    study = images[0].parent
    assert predict_main([str(images[0]), str(study), "--model", str(models["cnn"]), "--json"]) == 0
    first, second = [json.loads(line) for line in _lines(capsys.readouterr().out)]
    for d in (first, second):
        assert {"path", "probability", "label", "threshold", "preprocess_ms", "inference_ms"} <= set(d)
        assert 0.0 <= d["probability"] <= 1.0 and d["threshold"] == 0.5
        assert d["label"] == ("abnormal" if d["probability"] > 0.5 else "normal")
    assert first["type"] == "image" and first["path"] == str(images[0])
    pred = Predictor(models["cnn"])
    views = [pred.predict(i).probability for i in images]
    assert second["type"] == "study" and second["n_views"] == 3
    assert [v["probability"] for v in second["views"]] == pytest.approx(views, abs=1e-7)
    assert second["probability"] == pytest.approx(np.mean(views), abs=1e-7)
    assert len(set(np.round(views, 6))) > 1  # the average is over genuinely different views


def test_predict_text_output_and_threads(models, images, capsys):
    assert predict_main([str(images[1]), "--model", str(models["baseline"]), "--threads", "1"]) == 0
    line = _lines(capsys.readouterr().out)[0]
    assert line.startswith(str(images[1])) and "p=" in line and "threshold=0.5000" in line
    assert "preprocess" in line and "inference" in line and ("normal" in line)


def test_bad_images_are_reported_and_good_ones_still_predicted(models, images, tmp_path, capsys):
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(images[0].read_bytes()[:60])  # header survives, pixel data truncated
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    empty = tmp_path / "empty_study"
    empty.mkdir()
    argv = [str(images[0]), str(tmp_path / "missing.png"), str(corrupt), str(text), str(empty), str(images[1]),
            "--model", str(models["cnn"]), "--json"]
    assert predict_main(argv) == 1
    out, err = capsys.readouterr()
    assert [json.loads(line)["path"] for line in _lines(out)] == [str(images[0]), str(images[1])]
    errs = _lines(err)
    assert len(errs) == 4 and all(e.startswith("edge-predict: error: ") for e in errs)
    assert "no such file" in errs[0] and "corrupt" in errs[1] and "not a PNG" in errs[2]
    assert "no images" in errs[3] and "Traceback" not in err


def _no_metadata(path):
    cnn_model(path, meta=False)


def _truncated(path, src):
    path.write_bytes(src.read_bytes()[: src.stat().st_size // 2])


@pytest.mark.parametrize("kind,match", [
    ("text", "not a loadable ONNX model"), ("truncated", "not a loadable ONNX model"),
    ("nometa", "not a murakit model"), ("missing", "no such model file"),
])
def test_bad_model_is_one_line_and_exit_2(models, images, tmp_path, capsys, kind, match):
    path = tmp_path / "model.onnx"
    if kind == "text":
        path.write_text("definitely not protobuf\n")
    elif kind == "truncated":
        _truncated(path, models["cnn"])
    elif kind == "nometa":
        _no_metadata(path)
    assert predict_main([str(images[0]), "--model", str(path)]) == 2
    err = _lines(capsys.readouterr().err)
    assert len(err) == 1 and err[0].startswith("edge-predict: error: ") and match in err[0]
    assert verify_main([str(path)]) == 2
    assert len(_lines(capsys.readouterr().err)) == 1


def test_default_model_comes_from_env_then_runs_default(models, images, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MURAKIT_MODEL", raising=False)
    assert predict_main([str(images[0])]) == 2
    assert "runs/default/export/cnn.onnx" in capsys.readouterr().err
    monkeypatch.setenv("MURAKIT_MODEL", str(models["baseline"]))
    assert predict_main([str(images[0]), "--json"]) == 0
    p_base = json.loads(capsys.readouterr().out)["probability"]
    assert p_base == pytest.approx(Predictor(models["baseline"]).predict(images[0]).probability)
    monkeypatch.delenv("MURAKIT_MODEL")
    target = tmp_path / "runs" / "default" / "export" / "cnn.onnx"
    target.parent.mkdir(parents=True)
    target.write_bytes(models["cnn"].read_bytes())
    assert predict_main([str(images[0])]) == 0


# ---------------------------------------------------------------- CAM
def test_cam_overlays_for_cnn_and_note_for_baseline(models, images, tmp_path, capsys):
    cams = tmp_path / "cams"
    assert predict_main([str(images[0]), str(images[0].parent), "--model", str(models["cnn"]),
                         "--cam", str(cams), "--json"]) == 0
    files = sorted(cams.glob("*.png"))
    assert len(files) == 4  # one image + a study of three views
    img = cv2.imread(str(files[0]), cv2.IMREAD_UNCHANGED)
    assert img.shape == (SIZE, SIZE, 3) and img.dtype == np.uint8
    assert json.loads(_lines(capsys.readouterr().out)[0])["cam"] == str(files[0])
    assert predict_main([str(images[0]), "--model", str(models["baseline"]), "--cam", str(tmp_path / "b")]) == 0
    assert "CAM is not available for baseline" in capsys.readouterr().err
    assert not (tmp_path / "b").exists()


def test_overlay_normalisation_and_shapes():
    cam = np.arange(16, dtype=np.float32).reshape(4, 4) - 5.0
    n = normalise_cam(cam)
    assert n.min() == 0.0 and n.max() == 1.0 and n[3, 3] == 1.0
    assert not normalise_cam(np.full((3, 3), 2.0)).any()
    up = upsample_cam(cam, 32)
    assert up.shape == (32, 32) and 0.0 <= up.min() and up.max() <= 1.0
    assert up[-1, -1] > up[0, 0]  # the hot corner stays hot after upsampling
    grey = np.full((32, 32), 100, np.uint8)
    out = overlay(grey, cam)
    assert out.shape == (32, 32, 3) and out.dtype == np.uint8
    assert not np.array_equal(out[0, 0], out[-1, -1])  # cold and hot corners differ in colour
    with pytest.raises(ValueError):
        overlay(grey.astype(np.float32), cam)


# ---------------------------------------------------------------- edge-verify
@pytest.fixture()
def golden(models, images, tmp_path):
    model = tmp_path / "cnn.onnx"
    model.write_bytes(models["cnn"].read_bytes())
    manifest, _, _ = record_golden(model, tmp_path / "golden" / "cnn", images, [{"label": 1}] * 3)
    return model, tmp_path / "golden" / "cnn", manifest


def test_verify_passes_untouched_and_fails_on_perturbed_output(golden, capsys):
    model, gdir, manifest = golden
    assert manifest["tolerances"] == {"probability": 1e-4, "cam": 1e-4}
    assert sorted(p.name for p in (gdir / "test_data_set_0").iterdir()) == \
        ["input_0.pb", "output_0.pb", "output_1.pb", "source.png"]
    assert verify_main([str(model)]) == 0
    out = capsys.readouterr().out
    assert "PASS: 3/3" in out and "DRIFT" not in out
    pb = gdir / "test_data_set_1" / "output_0.pb"
    save_tensor(pb, load_tensor(pb) + np.float32(1e-3), "probability")
    assert verify_main([str(model), str(gdir)]) == 1
    out = capsys.readouterr().out
    assert "DRIFT" in out and "FAIL: 2/3" in out


def test_verify_detects_preprocessing_drift_from_source_png(golden, capsys):
    model, gdir, _ = golden
    src = gdir / "test_data_set_2" / "source.png"
    img = cv2.imread(str(src), cv2.IMREAD_UNCHANGED)
    assert cv2.imwrite(str(src), np.ascontiguousarray(img[:, ::-1]))  # same pixels, mirrored
    assert verify_main([str(model), "--json"]) == 1
    assert json.loads(capsys.readouterr().out)["passed"] is False


def test_verify_refuses_golden_of_another_model(golden, models, capsys):
    _, gdir, _ = golden
    assert verify_main([str(models["other"]), str(gdir)]) == 2
    err = _lines(capsys.readouterr().err)
    assert len(err) == 1 and "another model" in err[0]
    assert verify_main([str(models["other"])]) == 2  # no golden/ next to it
    assert "no golden folder" in capsys.readouterr().err


def test_verify_baseline_golden(models, images, tmp_path, capsys):
    model = tmp_path / "baseline.onnx"
    model.write_bytes(models["baseline"].read_bytes())
    manifest, x, _ = record_golden(model, tmp_path / "golden" / "baseline", images[:2])
    assert manifest["input_name"] == "features" and x.shape[0] == 2
    assert verify_main([str(model)]) == 0


# ---------------------------------------------------------------- dependency proof
def test_edge_imports_no_heavy_framework():
    heavy = ("tensorflow", "keras", "sklearn", "matplotlib", "skimage", "tf2onnx", "onnx")
    code = ("import sys, edge, edge.cli, edge.predictor, edge.golden, edge.cam, edge.hog, edge.card, "
            "edge.protobuf, edge.config, edge.metrics\n"
            f"print(','.join(m for m in {heavy!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
