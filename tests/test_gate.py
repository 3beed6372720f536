"""The input gate: murakit's OOD sets, the gate graph, and what edge-predict / score / serve do with it.

The figures asserted on the quick demo's model (3 epochs at 64 px) are floors that a working gate
clears by a wide margin and a broken one (random, reversed, wrong threshold) does not; the
figures of a fully trained model are in docs/trust.md and report.json's ``gate``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from edge.errors import ModelError
from murakit.evaluation.ood import CATEGORIES, ood_images

REGRESSION_MODEL = Path(__file__).parent / "data" / "regression" / "model.onnx"


def _photo(name: str = "astronaut.png") -> str:
    import skimage.data

    return os.path.join(os.path.dirname(skimage.data.__file__), name)


def _source(name: str) -> str:
    return name.split("#")[0].split("[")[0]


def test_ood_test_set_is_large_deterministic_and_disjoint_from_the_fit_set():
    test, fit = ood_images("test"), ood_images("fit")
    assert len(test) >= 150
    counts = {c: sum(o.category == c for o in test) for c in CATEGORIES}
    assert min(counts.values()) >= 20, counts
    drawn = {o.name for o in test if o.name.startswith("drawn/")}
    # drawn frames share names across splits but not seeds: their pixels differ
    fit_by_name = {o.name: o.image for o in fit}
    assert all(not np.array_equal(o.image, fit_by_name[o.name]) for o in test if o.name in fit_by_name)
    files = {_source(o.name) for o in test} - drawn
    assert files.isdisjoint({_source(o.name) for o in fit}), "a sample file is in both splits"
    again = ood_images("test")
    assert [o.name for o in again] == [o.name for o in test]
    assert all(np.array_equal(a.image, b.image) for a, b in zip(again, test))
    assert all(o.image.dtype == np.uint8 and o.image.ndim in (2, 3) for o in test)
    with pytest.raises(ValueError, match="split"):
        ood_images("nope")


def test_ood_val_set_shares_no_source_with_fit_or_test():
    """The gate's variants are chosen on "val": none of its files is in "fit" or "test", and its
    drawn frames (seeds of their own) differ from theirs pixel for pixel."""
    val, fit, test = ood_images("val"), ood_images("fit"), ood_images("test")
    assert len(val) >= 100 and sum(o.category == "modality" for o in val) >= 40
    files = {_source(o.name) for o in val if not o.name.startswith("drawn/")}
    others = {_source(o.name) for o in fit + test if not o.name.startswith("drawn/")}
    assert files and files.isdisjoint(others), files & others
    drawn = {o.name: o.image for o in fit + test if o.name.startswith("drawn/")}
    assert all(not np.array_equal(o.image, drawn[o.name]) for o in val if o.name in drawn)
    assert [o.name for o in ood_images("val")] == [o.name for o in val]


def test_threshold_rule_keeps_refusal_under_one_percent_with_95_percent_confidence():
    """Over validation sets drawn from one distribution, the rule's true refusal rate exceeds 1 %
    in <= 5 % of draws; the bare 99.5th percentile of 341 scores (the first rule) exceeds it far
    more often, which is what refused 1.1 % of the demo's test radiographs."""
    from scipy.stats import binom, norm

    from export.gate import threshold_rule

    rng = np.random.default_rng(0)
    small = rng.normal(size=341)
    assert threshold_rule(small) == (small.max(), 1)  # too few for the confidence: the highest score
    big = rng.normal(size=5000)
    t, k = threshold_rule(big)
    assert k is None and t == pytest.approx(np.quantile(big, 0.995))  # large val: ~0.5 % refused
    t, k = threshold_rule(rng.normal(size=1000))
    assert binom.cdf(k - 1, 1000, 0.01) <= 0.05 < binom.cdf(k, 1000, 0.01)
    rule, percentile = [], []
    for _ in range(400):
        v = rng.normal(size=341)
        rule.append(norm.sf(threshold_rule(v)[0]) > 0.01)
        percentile.append(norm.sf(np.quantile(v, 0.995)) > 0.01)
    assert np.mean(rule) <= 0.06 and np.mean(percentile) >= 0.08


def test_out_of_fold_scores_can_raise_the_threshold_never_lower_it():
    """Training radiographs' out-of-fold scores (gate refitted without each patient's fold) join
    the rule: a tail the 40 validation radiographs missed raises the threshold; scores that sit
    low leave the validation rule's threshold alone; too few patients: val only."""
    from export.gate import OOF_FOLDS, _fit_constants, fit_gate, gate_scores, out_of_fold_scores

    rng = np.random.default_rng(3)
    train, val = rng.normal(size=(300, 6)), rng.normal(size=(40, 6))
    ood = rng.normal(4.0, 1.0, size=(60, 6))
    train[:6] += 2.5  # a few unusual radiographs: in training, none in val
    patients = np.repeat(np.arange(100), 3)
    sizes = [3, 3]
    oof = out_of_fold_scores(train, ood, sizes, patients)
    _, inv = np.unique(patients.astype(str), return_inverse=True)
    fold = (np.random.default_rng(0).permutation(100) % OOF_FOLDS)[inv]
    held = fold == 0  # each score comes from the gate fitted without its fold
    np.testing.assert_allclose(oof[held], gate_scores(train[held], _fit_constants(train[~held], ood, sizes, 0)))
    _, plain = fit_gate(train, val, ood, sizes)
    _, both = fit_gate(train, val, ood, sizes, train_groups=patients)
    assert "oof_threshold" not in plain["threshold_rule"]
    assert both["threshold_rule"]["val_threshold"] == pytest.approx(plain["threshold"])
    assert both["threshold"] == pytest.approx(max(oof.max(), plain["threshold"]))  # n < 299: the highest score
    assert both["threshold"] > plain["threshold"] + 0.5  # the training tail raised it
    many = rng.normal(size=(2000, 6))  # 2040 scores: the rule's percentile sits below val's highest
    _, low = fit_gate(many, val + 1.0, ood, sizes, train_groups=np.arange(2000) // 4)
    rule = low["threshold_rule"]
    assert rule["oof_threshold"] < rule["val_threshold"] == pytest.approx(low["threshold"])
    _, few = fit_gate(train, val, ood, sizes, train_groups=np.arange(300) % (OOF_FOLDS - 1))
    assert "oof_threshold" not in few["threshold_rule"]


def _gate_onnx(offset: float):
    """A stand-in model: image (N, S, S, 1) -> gate (N,) = 10 * mean(image) + offset."""
    from onnx import TensorProto, helper

    nodes = [helper.make_node("ReduceMean", ["image"], ["m"], axes=[1, 2, 3], keepdims=0),
             helper.make_node("Mul", ["m", "ten"], ["s"]), helper.make_node("Add", ["s", "off"], ["gate"])]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("image", TensorProto.FLOAT, [None, 4, 4, 1])],
        [helper.make_tensor_value_info("gate", TensorProto.FLOAT, [None])],
        [helper.make_tensor("ten", TensorProto.FLOAT, [], [10.0]), helper.make_tensor("off", TensorProto.FLOAT, [], [offset])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)


def test_int8_threshold_follows_the_float_rule_moved_by_quantization():
    """The INT8 card's threshold is the float rule's, on INT8 scores: when the out-of-fold training
    scores raised the float threshold above val's, the INT8 one is raised too, by the same scores
    moved by quantization's shift (re-choosing on INT8 val scores alone, the first INT8 rule, was
    looser than the float threshold moved by that shift); without out-of-fold scores, val only."""
    from export.gate import fit_gate, gate_scores, quantized_threshold, threshold_rule
    from murakit.pipeline.export import int8_gate_card

    rng = np.random.default_rng(5)
    val_x = rng.uniform(0.30, 0.50, (40, 4, 4, 1)).astype(np.float32)  # gate scores 3-5
    train_x = rng.uniform(0.30, 0.50, (300, 4, 4, 1)).astype(np.float32)
    train_x[:6] += 0.25  # unusual training radiographs (scores ~6.5-7.5), none in val
    f = _gate_onnx(0.0)
    oof = 10 * train_x.mean((1, 2, 3)).astype(np.float64)  # stand-in out-of-fold scores
    val_t, both = threshold_rule(10 * val_x.mean((1, 2, 3)))[0], threshold_rule(np.r_[oof, 10 * val_x.mean((1, 2, 3))])[0]
    gate = {"method": "m", "output": "gate", "threshold": max(val_t, both),
            "fit": {"threshold_rule": {"val_threshold": val_t, "oof_threshold": both}, "n_train": 300}}
    assert both > val_t + 1.0  # the training tail set the float threshold
    for shift in (0.3, -0.3):
        q = _gate_onnx(shift)
        card = int8_gate_card(gate, q, val_x, f, train_x, oof)
        assert card["threshold"] == pytest.approx(gate["threshold"] + shift, abs=1e-4)  # not looser, not tighter
        assert card["threshold"] > threshold_rule(10 * val_x.mean((1, 2, 3)) + shift)[0] + 1.0  # the old INT8 rule
        rule = card["fit"]["int8_threshold_rule"]
        assert rule["oof_shift_median"] == pytest.approx(shift, abs=1e-4) and rule["n_oof"] == 300
        assert card["fit"]["float_threshold"] == gate["threshold"] and not card["fit"]["int8_threshold_from_val"]
        assert card["fit"]["n_train"] == 300 and card["method"] == "m"  # the float card's keys are kept
    alone = int8_gate_card(gate, _gate_onnx(0.3), val_x)  # no folds: INT8 val scores alone
    assert alone["threshold"] == pytest.approx(val_t + 0.3, abs=1e-4) and alone["fit"]["int8_threshold_from_val"]
    assert int8_gate_card(None, f, val_x) is None
    # a shift that only touches the unusual radiographs moves the threshold with them, not with val
    int8_train = 10 * train_x.mean((1, 2, 3)) + np.where(np.arange(300) < 6, 0.8, 0.0)
    t, rule = quantized_threshold(10 * val_x.mean((1, 2, 3)), oof, 10 * train_x.mean((1, 2, 3)), int8_train)
    assert t == pytest.approx(both + 0.8) and rule["oof_threshold"] == t and rule["val_threshold"] < t
    # and fit_gate hands out the out-of-fold scores it read (export passes them to the INT8 card)
    v = rng.normal(size=(100, 4))
    params, info = fit_gate(v, v[:20], rng.normal(4, 1, (30, 4)), [2, 2], train_groups=np.arange(100) // 2)
    both, _ = threshold_rule(np.r_[info["oof_scores"], gate_scores(v[:20], params)])
    assert info["oof_scores"].shape == (100,) and info["threshold_rule"]["oof_threshold"] == pytest.approx(both)


def test_gate_graph_equals_its_numpy_twin_and_fit_separates():
    """deep.gate's Keras head computes what export.gate fitted (the ONNX parity is export's own check)."""
    import deep
    from deep.config import ModelConfig
    from export.gate import fit_gate, gate_scores

    model = deep.build_model(ModelConfig(size=32, width=4))
    rng = np.random.default_rng(0)
    x_in = rng.uniform(0.3, 0.5, (60, 32, 32, 1)).astype(np.float32)
    x_out = rng.uniform(0.0, 1.0, (40, 32, 32, 1)).astype(np.float32)
    pooled = deep.pooled_model(model)
    v_in, v_out = (np.asarray(pooled(x, training=False), np.float64) for x in (x_in, x_out))
    params, info = fit_gate(v_in[:40], v_in[40:], v_out, deep.block_sizes(model))
    gated = deep.with_gate(deep.cam_model(model), model, params)
    got = np.asarray(gated(x_in, training=False)[2], np.float64)
    np.testing.assert_allclose(got, gate_scores(v_in, params), rtol=1e-4, atol=1e-4)
    assert info["fit_auroc"] > 0.95 and 0.0 <= info["val_refusal_rate"] <= 0.1
    assert set(info) >= {"threshold", "threshold_rule", "n_train", "n_val", "n_outliers"}


def test_input_statistics_match_numpy():
    """The gate's input block (deep.gate.input_statistics) is what its docstring says: histograms
    that sum to 1 and put a constant frame in its own bins, edge energy, border and centre means."""
    import keras

    from deep.gate import GRADIENT_BINS, HISTOGRAM_SIZE, INTENSITY_BINS, input_statistics

    rng = np.random.default_rng(1)
    x = rng.uniform(0, 1, (3, 24, 24, 1)).astype(np.float32)
    x[1] = 0.5  # constant: intensity mass in the two bins around 0.5, gradients all in bin 0
    x[2, 3:-3, 3:-3] = 1.0  # bright centre, random border
    inp = keras.Input((24, 24, 1))
    got = np.asarray(keras.Model(inp, input_statistics(inp)[0])(x), np.float64)
    hist, grad = got[:, :INTENSITY_BINS], got[:, INTENSITY_BINS:INTENSITY_BINS + GRADIENT_BINS]
    np.testing.assert_allclose(hist.sum(1), 1.0, atol=1e-5)
    np.testing.assert_allclose(grad.sum(1), 1.0, atol=1e-5)
    centre = 0.5 * (INTENSITY_BINS - 1)
    np.testing.assert_allclose(hist[1, [int(centre), int(centre) + 1]], [0.5, 0.5], atol=1e-5)
    assert grad[1, 0] == pytest.approx(1.0, abs=1e-4) and grad[0, 0] < 0.5
    dx, dy, border, middle = got[:, -4:].T
    np.testing.assert_allclose(dx, np.abs(np.diff(x[..., 0], axis=2)).mean((1, 2)), rtol=1e-5)
    np.testing.assert_allclose(dy, np.abs(np.diff(x[..., 0], axis=1)).mean((1, 2)), rtol=1e-5)
    ring = np.ones((24, 24), bool)
    ring[3:-3, 3:-3] = False
    np.testing.assert_allclose(border, x[..., 0][:, ring].mean(1), rtol=1e-5)
    np.testing.assert_allclose(middle, x[..., 0][:, ~ring].mean(1), rtol=1e-5)
    assert middle[2] == pytest.approx(1.0) and border[2] < 0.7
    big = np.zeros((1, 64, 64, 1), np.float32)  # histograms of the input pooled to ~HISTOGRAM_SIZE px
    big[0, :, ::2] = 1.0  # stripes one pixel wide: at full size 0 and 1 only, pooled 2 x 2 all 0.5
    inp = keras.Input((64, 64, 1))
    got = np.asarray(keras.Model(inp, input_statistics(inp)[0])(big), np.float64)[0]
    assert HISTOGRAM_SIZE == 32 and got[int(centre)] == pytest.approx(0.5, abs=1e-5)
    assert got[INTENSITY_BINS] == pytest.approx(1.0, abs=1e-4)  # the pooled frame is flat
    assert got[-4] == pytest.approx(1.0) and got[-3] == pytest.approx(0.0)  # full-size |dx|, |dy|


def test_a_format_1_model_answers_without_a_gate(tmp_path, capsys):
    """The committed regression model predates the gate: it answers (no refusal, no gate key)."""
    from edge.cli import predict_main

    assert predict_main(["--model", str(REGRESSION_MODEL), "--json", _photo()]) == 0
    d = json.loads(capsys.readouterr().out)
    assert "gate" not in d and d["label"] in ("normal", "abnormal") and d["probability"] == d["score"]


@pytest.fixture(scope="module")
def demo_model(quick_demo) -> Path:
    return quick_demo.run / "export" / "cnn.onnx"


def test_gate_rates_on_the_ood_test_set_and_the_test_split(quick_demo, demo_model):
    """The card's threshold on images it was not fitted on: the OOD test set and the test split."""
    from edge.predictor import Predictor
    from murakit.data.prepared import load_prepared
    from murakit.evaluation.metrics import auroc
    from murakit.evaluation.trust import gate_scores

    pred = Predictor(demo_model)
    assert pred.has_gate and pred.card.gate["output"] == "gate"
    t = pred.card.gate["threshold"]
    prep = load_prepared(quick_demo.run)
    inlier = gate_scores(pred, np.asarray(prep.images[np.sort(prep.row[prep.select("test")])]))
    oods = ood_images("test")
    outlier = gate_scores(pred, np.stack([pred.preprocess(o.image) for o in oods]))
    # export.gate.threshold_rule on val; here (38 val views) that is their highest score, which a new
    # view exceeds with probability 1/(n_val + 1): 5 % of 62 test views is too tight to hold for every
    # correct gate (4 of 62 happen 7 % of the time); the binomial's 99th percentile holds
    from scipy.stats import binom

    fit = pred.card.gate["fit"]
    exceed = (fit["threshold_rule"]["val_order"] or 1) / (fit["n_val"] + 1)  # the k-th highest: k/(n+1)
    assert np.mean(inlier > t) <= max(0.05, binom.ppf(0.99, len(inlier), exceed) / len(inlier))
    assert auroc(np.r_[np.zeros(len(inlier)), np.ones(len(outlier))], np.r_[inlier, outlier]) >= 0.9
    assert np.mean(outlier > t) >= 0.5
    shuffled = np.random.default_rng(0).permutation(np.r_[inlier, outlier])  # the figure can fail
    assert auroc(np.r_[np.zeros(len(inlier)), np.ones(len(outlier))], shuffled) < 0.7
    report = json.loads((quick_demo.run / "report" / "report.json").read_text())
    g = report["gate"]
    assert g["threshold"] == pytest.approx(t)
    assert g["test_refusal_rate"] == pytest.approx(np.mean(inlier > t))
    assert set(g["ood_auroc"]) == set(CATEGORIES) | {"all"}
    assert all(lo <= auc <= hi for auc, lo, hi in g["ood_auroc"].values())


def test_edge_predict_refuses_a_photo_in_one_line_and_warn_scores_it(demo_model, capsys):
    from edge.cli import predict_main

    photo = _photo()
    assert predict_main(["--model", str(demo_model), photo]) == 1
    out, err = capsys.readouterr()
    assert out == "" and len(err.splitlines()) == 1
    assert f"{photo}: not scored: does not look like an upper-extremity radiograph (gate score " in err
    assert predict_main(["--model", str(demo_model), "--json", photo]) == 1
    d = json.loads(capsys.readouterr().out)
    assert d["label"] is None and d["probability"] is None
    assert d["gate"]["passed"] is False and d["gate"]["score"] > d["gate"]["threshold"]
    assert predict_main(["--model", str(demo_model), "--json", "--gate", "warn", photo]) == 0
    out, err = capsys.readouterr()
    d = json.loads(out)
    assert d["label"] in ("normal", "abnormal") and 0 <= d["probability"] <= 1 and d["gate"]["passed"] is False
    assert "warning" in err and "scored anyway" in err
    assert predict_main(["--model", str(demo_model), "--json", "--gate", "off", photo]) == 0
    out, err = capsys.readouterr()
    assert "gate" not in json.loads(out) and err == ""


def test_a_study_keeps_its_radiographs_and_drops_the_photo(quick_demo, demo_model, tmp_path, capsys):
    import shutil

    from edge.cli import predict_main

    study = next((quick_demo.run / "data" / "MURA-v1.1" / "valid").glob("XR_*/*/study*"))
    mixed = tmp_path / "study"
    shutil.copytree(study, mixed)
    shutil.copy(_photo(), mixed / "zz_photo.png")
    assert predict_main(["--model", str(demo_model), "--json", str(mixed)]) == 1
    out, err = capsys.readouterr()
    d = json.loads(out)
    views = d["views"]
    assert d["n_views"] == len(views) - 1 and d["label"] in ("normal", "abnormal")
    assert [v["path"].endswith("zz_photo.png") for v in views if v["probability"] is None] == [True]
    assert "zz_photo.png: not scored" in err and "study scored on" in err


def test_score_writes_gate_failures_and_gate_scores(quick_demo, demo_model, tmp_path):
    import shutil

    from murakit.scoring.run import score
    from murakit.scoring.tables import read_table

    folder = tmp_path / "in"
    study = next((quick_demo.run / "data" / "MURA-v1.1" / "valid").glob("XR_*/*/study*"))
    shutil.copytree(study, folder / "study")
    shutil.copy(_photo(), folder / "photo.png")
    s = score([str(folder)], demo_model, tmp_path / "out", workers=1, progress=False)
    failures = read_table(s.failures, "csv")
    assert [(Path(f["path"]).name, f["reason"]) for f in failures] == [("photo.png", "gate")]
    assert failures[0]["gate_score"] > 0 and "not scored" in failures[0]["error"]
    images = read_table(s.images, "csv")
    assert images and all(r["gate_score"] is not None and 0 <= r["probability"] <= 1 for r in images)
    warned = score([str(folder)], demo_model, tmp_path / "warn", workers=1, progress=False, gate="warn")
    assert warned.n_failed == 0 and warned.n_images == len(images) + 1
    from murakit.cli import main

    argv = ["score", str(folder), "--model", str(demo_model), "--workers", "1", "--no-progress"]
    assert main([*argv, "--out", str(tmp_path / "cli")]) == 0  # refusals alone are not an error
    assert s.n_refused == 1


def _a_view_the_gate_passes(quick_demo, demo_model) -> Path:
    """The first test view (sorted) the card's gate lets through: the quick demo's model refuses
    ~1-2% of test radiographs at its threshold, so a fixed pick could be one."""
    from edge.predictor import Predictor

    pred = Predictor(demo_model)
    for path in sorted((quick_demo.run / "data" / "MURA-v1.1" / "valid").glob("XR_*/*/study*/image1.png")):
        if not pred.predict(path).refused:
            return path
    raise AssertionError("the gate refused every test view")


def test_serve_answers_422_naming_the_refused_view(quick_demo, demo_model):
    import httpx
    from _servefix import Server

    with Server(demo_model) as srv:
        srv.wait_ready(60)
        data = Path(_photo()).read_bytes()
        r = httpx.post(srv.url + "/v1/predict", files={"file": ("astronaut.png", data, "image/png")}, timeout=30)
        assert r.status_code == 422
        assert "astronaut.png: not scored: does not look like an upper-extremity radiograph" in r.json()["error"]
        good = _a_view_the_gate_passes(quick_demo, demo_model).read_bytes()
        r = httpx.post(srv.url + "/v1/predict", files=[("file", ("a.png", good, "image/png")),
                                                       ("file", ("astronaut.png", data, "image/png"))], timeout=30)
        body = r.json()
        assert r.status_code == 200 and body["type"] == "study" and body["n_views"] == 1
        assert [v["probability"] is None for v in body["views"]] == [False, True]
        assert "astronaut.png: not scored" in body["warnings"][0]


def test_bad_gate_mode_and_operating_point_are_one_line_errors(demo_model):
    from edge.predictor import Predictor

    with pytest.raises(ModelError, match="--gate must be one of"):
        Predictor(demo_model, gate="maybe")
    with pytest.raises(ModelError, match="is not in this model's card") as e:
        Predictor(demo_model, operating_point="nonsense")
    assert "youden" in str(e.value) and "\n" not in str(e.value)


def test_answers_are_calibrated_name_the_part_and_follow_the_operating_point(quick_demo, demo_model, capsys):
    from edge.cli import predict_main
    from edge.predictor import Predictor
    from edge.trust import calibrate, default_operating_point, raw_threshold

    card = Predictor(demo_model).card
    assert card.calibration and {"youden", "sensitivity>=0.90", "specificity>=0.90"} <= set(card.operating_points)
    image = _a_view_the_gate_passes(quick_demo, demo_model)
    assert predict_main(["--model", str(demo_model), "--json", str(image)]) == 0
    d = json.loads(capsys.readouterr().out)
    op = default_operating_point(card)  # youden unless per-part thresholds won on val by the margin
    t = raw_threshold(card, op, d.get("part") or d["part_predicted"])
    assert d["probability"] == pytest.approx(calibrate(card, d["score"], "image"))
    assert d["threshold"] == pytest.approx(calibrate(card, t, "image"))
    assert d["operating_point"] == op and d["gate"]["passed"] is True
    assert d["part_predicted"] in card.part_labels and 0 < d["part_probability"] <= 1
    assert d["label"] == card.labels[int(d["score"] > t)]
    name = "sensitivity>=0.90"
    assert predict_main(["--model", str(demo_model), "--json", "--operating-point", name, str(image)]) == 0
    e = json.loads(capsys.readouterr().out)
    assert e["operating_point"] == name and e["score"] == d["score"]
    assert e["threshold"] == pytest.approx(calibrate(card, card.operating_points[name]["threshold"], "image"))
    report = json.loads((quick_demo.run / "report" / "report.json").read_text())
    m = report["models"]["cnn_onnx"]
    for level in ("image", "study"):
        lo, hi = m[level]["ece_ci"]
        assert 0 <= m[level]["ece"] <= 1 and lo <= hi
        assert 0 <= m[level]["ece_floor"] <= m[level]["ece_floor_q95"] <= 1  # what chance alone gives at this n
    assert set(m["operating_points"]) == set(card.operating_points)
    assert 0 <= m["part_accuracy"]["overall"] <= 1 and set(m["part_accuracy"]["by_part"]) <= set(card.part_labels)
