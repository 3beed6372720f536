"""The model card: strict round trips, validation of every field, and what loading a model checks.

A card read from a model file is untrusted input: every bad value is one ModelError line,
never a crash, a traceback, a huge allocation or a silently wrong answer.
"""

import json

import numpy as np
import onnx
import pytest
from _edgefix import SIZE, baseline_model, card, cnn_model, write_images
from onnx import TensorProto, helper, numpy_helper

from edge.card import ModelCard, attach_card, card_from_onnx_bytes, read_onnx_card
from edge.cli import verify_main
from edge.errors import ModelError
from edge.hog import HogConfig
from edge.predictor import Predictor
from edge.preprocess import PreprocessConfig
from export.golden import record_golden


@pytest.fixture()
def cnn_card():
    return card("cnn", PreprocessConfig(size=SIZE))


# ---------------------------------------------------------------- round trips
def test_card_round_trips_through_json_and_props(cnn_card):
    assert ModelCard.from_json(cnn_card.to_json()) == cnn_card
    assert ModelCard.from_props(cnn_card.to_props()) == cnn_card
    props = cnn_card.to_props()
    assert set(props) == {f"murakit.{k}" for k in cnn_card.to_dict()}
    assert all(isinstance(json.loads(v), (str, int, float, dict, list, type(None))) for v in props.values())
    b = card("baseline", PreprocessConfig(size=SIZE), hog=HogConfig())
    assert ModelCard.from_props(b.to_props()).hog == HogConfig() and b.input == "hog"


def test_identity_ignores_only_the_per_file_fields(cnn_card):
    int8 = cnn_card.replace(precision="int8", metrics={"x": 1.0}, weights_sha256="a" * 64)
    assert int8.differences(cnn_card) == []
    other = cnn_card.replace(preprocess=PreprocessConfig(size=SIZE, clahe=True))
    assert other.differences(cnn_card) == ["preprocess"]


def test_attach_card_hashes_the_graph_not_the_metadata(tmp_path, cnn_card):
    path = cnn_model(tmp_path / "m.onnx")
    model = onnx.load(str(path))
    data, written = attach_card(model, cnn_card.replace(threshold=0.25))
    again, _ = attach_card(model, cnn_card.replace(threshold=0.75))
    assert written.weights_sha256 == card_from_onnx_bytes(again).weights_sha256  # metadata not hashed
    assert card_from_onnx_bytes(data) == written and read_onnx_card(path).threshold == 0.5


# ---------------------------------------------------------------- strict validation
def _props_with(cnn_card, key, raw):
    props = cnn_card.to_props()
    props[f"murakit.{key}"] = raw
    return props


@pytest.mark.parametrize("key,raw,match", [
    ("threshold", "NaN", "not a number"),
    ("threshold", "5.0", "threshold"),
    ("threshold", "-1", "threshold"),
    ("threshold", "Infinity", "not a number"),
    ("threshold", '"0.5"', "threshold"),
    ("threshold", "true", "threshold"),
    ("labels", '"5"', "labels"),
    ("labels", '"ab"', "labels"),
    ("labels", '["a", "a"]', "differ"),
    ("labels", '["a", "b", "c"]', "labels"),
    ("labels", '["", "b"]', "label"),
    ("kind", '"rnn"', "kind"),
    ("input", '"hog"', "input"),
    ("precision", '"int4"', "precision"),
    ("weights_sha256", '"xyz"', "weights_sha256"),
    ("created", '"yesterday"', "created"),
    ("metrics", "[" * 5000 + "]" * 5000, "nested"),
    ("metrics", "{not json", "not valid JSON"),
    ("format", "3", "format"),
])
def test_bad_field_values_are_one_model_error(cnn_card, key, raw, match):
    with pytest.raises(ModelError, match=match) as e:
        ModelCard.from_props(_props_with(cnn_card, key, raw))
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("change,match", [
    ({"clahe": "no"}, "clahe must be true or false"),
    ({"clahe_grid": 0}, "clahe_grid"),
    ({"clahe_grid": 100000}, "clahe_grid"),
    ({"clahe_clip": -2.0}, "clahe_clip"),
    ({"size": 8.5}, "size must be an integer"),
    ({"size": True}, "size must be an integer"),
    ({"clip_low": 60.0, "clip_high": 40.0}, "clip_low"),
    ({"gamma": 2}, "unknown PreprocessConfig"),
])
def test_bad_preprocessing_in_a_card_is_refused(cnn_card, change, match):
    pre = {**cnn_card.preprocess.to_dict(), **change}
    with pytest.raises(ModelError, match=match):
        ModelCard.from_props(_props_with(cnn_card, "preprocess", json.dumps(pre)))


def test_unknown_and_missing_fields_are_refused(cnn_card):
    with pytest.raises(ModelError, match="unknown fields"):
        ModelCard.from_props({**cnn_card.to_props(), "murakit.extra": "1"})
    props = cnn_card.to_props()
    del props["murakit.threshold"]
    with pytest.raises(ModelError, match="missing fields"):
        ModelCard.from_props(props)
    with pytest.raises(ModelError, match="older murakit"):
        ModelCard.from_props({"murakit.kind": '"cnn"'})
    with pytest.raises(ModelError, match="not a murakit model"):
        ModelCard.from_props({"author": "x"})


def test_a_hog_config_no_image_fits_is_refused():
    with pytest.raises(ModelError, match="does not fit"):
        card("baseline", PreprocessConfig(size=SIZE), hog=HogConfig(pixels_per_cell=64))


# ---------------------------------------------------------------- what loading a model checks
def _flip_weight_bytes(src, dst, n=20):
    data = bytearray(src.read_bytes())
    model = onnx.load(str(src))
    w = numpy_helper.to_array(model.graph.initializer[0]).tobytes()
    at = bytes(data).find(w)
    assert at > 0
    for k in range(n):
        data[at + 3 * k] ^= 0x55
    dst.write_bytes(bytes(data))
    return dst


def test_flipped_weight_bytes_are_refused_at_load(tmp_path):
    good = cnn_model(tmp_path / "m.onnx")
    bad = _flip_weight_bytes(good, tmp_path / "bad.onnx")
    with pytest.raises(ModelError, match="does not match the hash"):
        Predictor(bad)


def _graph(inputs, nodes, outputs, inits=()):
    return helper.make_model(helper.make_graph(nodes, "g", inputs, outputs, list(inits)),
                             opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def _save(model, path, model_card):
    data, _ = attach_card(model, model_card)
    path.write_bytes(data)
    return path


def test_models_that_can_never_run_fail_at_load(tmp_path, cnn_card):
    fixed = _graph([helper.make_tensor_value_info("image", TensorProto.FLOAT, [7, SIZE, SIZE, 1])],
                   [helper.make_node("ReduceMean", ["image"], ["probability"], axes=[1, 2, 3], keepdims=0)],
                   [helper.make_tensor_value_info("probability", TensorProto.FLOAT, [7])])
    with pytest.raises(ModelError, match="cannot run"):
        Predictor(_save(fixed, tmp_path / "fixed.onnx", cnn_card))
    rank2 = _graph([helper.make_tensor_value_info("image", TensorProto.FLOAT, ["B", SIZE])],
                   [helper.make_node("ReduceMean", ["image"], ["probability"], axes=[1], keepdims=1)],
                   [helper.make_tensor_value_info("probability", TensorProto.FLOAT, ["B", 1])])
    with pytest.raises(ModelError, match="cannot run"):
        Predictor(_save(rank2, tmp_path / "rank2.onnx", cnn_card))


def test_a_nan_probability_is_an_error_not_a_label(tmp_path, cnn_card):
    nan = _graph([helper.make_tensor_value_info("image", TensorProto.FLOAT, ["B", SIZE, SIZE, 1])],
                 [helper.make_node("ReduceMean", ["image"], ["m"], axes=[1, 2, 3], keepdims=0),
                  helper.make_node("Div", ["m", "m"], ["r"]),  # 0/0 = NaN on any image of zeros...
                  helper.make_node("Mul", ["r", "zero"], ["z"]),  # ... and NaN * 0 = NaN
                  helper.make_node("Unsqueeze", ["z", "ax"], ["probability"])],
                 [helper.make_tensor_value_info("probability", TensorProto.FLOAT, ["B", 1])],
                 [numpy_helper.from_array(np.array(0, np.float32), "zero"),
                  numpy_helper.from_array(np.array([1], np.int64), "ax")])
    pred = Predictor(_save(nan, tmp_path / "nan.onnx", cnn_card))  # warm-up does not check values
    with pytest.raises(ModelError, match="not a number in"):
        pred.predict(np.zeros((SIZE, SIZE), np.uint8))


# ---------------------------------------------------------------- golden sets check the card
@pytest.fixture()
def golden(tmp_path):
    model = cnn_model(tmp_path / "cnn.onnx")
    images = write_images(tmp_path / "src", 3)
    record_golden(model, tmp_path / "golden" / "cnn", images, [{"label": 1}] * 3)
    return model, tmp_path / "golden" / "cnn"


def _edit(gdir, fn):
    path = gdir / "manifest.json"
    manifest = json.loads(path.read_text())
    fn(manifest)
    path.write_text(json.dumps(manifest))


def test_a_loosened_manifest_fails_edge_verify(golden, capsys):
    model, gdir = golden
    assert verify_main([str(model)]) == 0
    _edit(gdir, lambda m: m["tolerances"].update(probability=1.0))
    assert verify_main([str(model)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "tolerances" in err[0] and "edited" in err[0]


def test_a_golden_set_recording_another_card_fails(golden, capsys):
    model, gdir = golden
    _edit(gdir, lambda m: m["card"].update(threshold=0.9))
    assert verify_main([str(model)]) == 2
    assert "another model card" in capsys.readouterr().err


@pytest.mark.parametrize("edit,match", [
    (lambda m: m.clear(), "golden format None"),
    (lambda m: m["cases"][0].pop("dir"), "no valid 'dir'"),
    (lambda m: m["cases"][0].update(dir="../../etc"), "no valid 'dir'"),
    (lambda m: m["tolerances"].pop("cam"), "tolerance of 'cam'"),
    (lambda m: m["tolerances"].update(cam="1e-4"), "tolerance of 'cam'"),
    (lambda m: m.update(cases=[]), "no cases"),
])
def test_unusable_golden_folders_exit_2_with_one_line(golden, capsys, edit, match):
    model, gdir = golden
    _edit(gdir, edit)
    assert verify_main([str(model)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and match in err[0] and "Traceback" not in err[0]


def test_null_manifest_and_wrong_shape_input_exit_2(golden, capsys):
    from edge.golden import save_tensor

    model, gdir = golden
    save_tensor(gdir / "test_data_set_1" / "input_0.pb", np.zeros((1, 5, 5, 1), np.float32), "image")
    assert verify_main([str(model)]) == 2
    assert "input of shape" in capsys.readouterr().err
    (gdir / "manifest.json").write_text("null")
    assert verify_main([str(model)]) == 2
    assert "malformed" in capsys.readouterr().err


def test_a_missing_source_image_is_a_failure_not_a_skip(golden, capsys):
    model, gdir = golden
    (gdir / "test_data_set_0" / "source.png").unlink()
    assert verify_main([str(model)]) == 1
    assert "source image source.png is missing" in capsys.readouterr().out


def test_baseline_card_loads_with_its_hog(tmp_path):
    pred = Predictor(baseline_model(tmp_path / "b.onnx"))
    assert pred.hog == HogConfig(pixels_per_cell=(8, 8)) and pred.card.kind == "baseline"
