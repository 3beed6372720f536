"""baseline: parallel features, calibrated grouped-CV SVM, ONNX export, `murakit train baseline`."""

import csv
import json

import numpy as np
import onnx
import pytest

from baseline import (
    BaselineError,
    build_onnx,
    extract_features,
    fit_baseline,
    onnx_probabilities,
    predict_proba,
    to_onnx,
)
from edge.hog import HogConfig, hog_batch
from edge.preprocess import PreprocessConfig

SIZE = 32
HOG = HogConfig()  # 8 px cells at 32 px: D = 3 * 3 * 36 = 324
ONNX_TOL = 1e-5  # ONNX float32 graph vs scikit-learn float64 probabilities


def _image(label: int, rng) -> np.ndarray:
    """uint8 (SIZE, SIZE): smooth 'soft tissue' + noise; abnormal adds a bright oblique bar."""
    yy, xx = np.mgrid[:SIZE, :SIZE]
    img = 60 + 80 * np.exp(-((yy - 16) ** 2 + (xx - 16) ** 2) / 150.0) + rng.normal(0, 8, (SIZE, SIZE))
    if label:
        c = int(rng.integers(12, 20))
        img[np.abs(yy - xx - (c - 16)) < 2] = 230
    return np.clip(img, 0, 255).astype(np.uint8)


def _dataset(n_patients=60, views=2, seed=0, p_abnormal=0.4):
    """Images (N, S, S), labels (N,) and patient ids (N,); a patient's views share a label."""
    rng = np.random.default_rng(seed)
    labels = np.repeat((rng.random(n_patients) < p_abnormal).astype(int), views)
    labels[:views], labels[views:2 * views] = 0, 1  # both classes, whatever the draw
    images = np.stack([_image(lab, rng) for lab in labels])
    return images, labels, np.repeat(np.arange(n_patients), views).astype(str)


@pytest.fixture(scope="module")
def data():
    images, y, g = _dataset(90)
    X = hog_batch(images, HOG)
    return {"images": images, "X": X, "y": y, "groups": g, "train": slice(0, 120), "held": slice(120, None)}


@pytest.fixture(scope="module")
def model(data):
    tr = data["train"]
    return fit_baseline(data["X"][tr], data["y"][tr], data["groups"][tr], seed=3)


# ------------------------------------------------------------------ features

def test_extract_features_equals_hog_any_threads_and_rows(data):
    images = data["images"]
    rows = np.array([5, 0, 179, 3, 3])
    seen = []
    feats = extract_features(images, HOG, n_jobs=2, progress=seen.append, rows=rows)
    np.testing.assert_array_equal(feats, hog_batch(images[rows], HOG))
    assert sum(seen) == len(rows)
    out = np.zeros((len(images), 324), np.float32)
    assert extract_features(images, HOG, n_jobs=1, out=out) is out
    np.testing.assert_array_equal(out, data["X"])


def test_extract_features_bad_arguments(data):
    with pytest.raises(ValueError, match="n_jobs"):
        extract_features(data["images"], HOG, n_jobs=0)
    with pytest.raises(ValueError, match="out must be"):
        extract_features(data["images"], HOG, out=np.zeros((3, 324), np.float32))


# ------------------------------------------------------------------ model

def test_model_learns_and_gives_probabilities(data, model):
    held = data["held"]
    p = predict_proba(model, data["X"][held])
    assert p.shape == (60,) and np.all((p >= 0) & (p <= 1))
    from sklearn.metrics import roc_auc_score

    assert roc_auc_score(data["y"][held], p) > 0.9  # the bar is visible to a linear HOG model
    sel = model.selection_
    assert sel["alpha"] in [row["alpha"] for row in sel["table"]] and sel["n_patients"] == 60
    assert sel["alpha"] == max(sel["table"], key=lambda r: (round(r["auroc_mean"], 6), r["alpha"]))["alpha"]


def test_same_seed_same_model_other_seed_other_model(data, model):
    tr, held = data["train"], data["held"]
    again = fit_baseline(data["X"][tr], data["y"][tr], data["groups"][tr], seed=3)
    np.testing.assert_array_equal(predict_proba(again, data["X"][held]), predict_proba(model, data["X"][held]))
    other = fit_baseline(data["X"][tr], data["y"][tr], data["groups"][tr], seed=4)
    assert not np.array_equal(predict_proba(other, data["X"][held]), predict_proba(model, data["X"][held]))


def test_folds_never_split_a_patient(data):
    from baseline.model import patient_folds

    y, g = data["y"], data["groups"]
    for train, val in patient_folds(y, g, 3, seed=1):
        assert not set(g[train]) & set(g[val])


def test_alpha_search_subset_keeps_whole_patients(data):
    from baseline.model import selection_subset

    g = data["groups"]
    sub = selection_subset(g, 50, seed=2)
    assert 50 <= len(sub) <= 51 and np.array_equal(sub, np.sort(sub))
    assert set(g[sub]).isdisjoint(set(np.delete(g, sub)))  # every patient all in or all out
    np.testing.assert_array_equal(sub, selection_subset(g, 50, seed=2))
    assert len(selection_subset(g, 10_000)) == len(g)
    tr = data["train"]
    small = fit_baseline(data["X"][tr], data["y"][tr], g[tr], seed=3, select_samples=60)
    assert small.selection_["n_select"] in (60, 61) and small.selection_["n_train"] == 120


@pytest.mark.parametrize("case, match", [
    ("empty", "no training samples"),
    ("one_class", "need both classes"),
    ("few_patients", "only 2 patients"),
    ("fold_without_class", "too few patients of each class"),
    ("nan", "NaN"),
    ("lengths", "labels"),
    ("labels", "0 \\(normal\\) or 1"),
])
def test_bad_training_data_is_a_clear_error(data, case, match):
    X, y, g = data["X"][:40], data["y"][:40].copy(), data["groups"][:40]
    if case == "empty":
        X, y, g = X[:0], y[:0], g[:0]
    elif case == "one_class":
        y[:] = 0
    elif case == "few_patients":
        g = np.where(np.arange(40) < 20, "a", "b")
    elif case == "fold_without_class":
        y = np.where(g == g[0], 1, 0)  # one abnormal patient: two folds lack the class
    elif case == "nan":
        X = X.copy()
        X[3, 7] = np.nan
    elif case == "lengths":
        y = y[:-1]
    elif case == "labels":
        y = y * 2
    with pytest.raises(BaselineError, match=match):
        fit_baseline(X, y, g, seed=0)
    assert issubclass(BaselineError, ValueError)


# ------------------------------------------------------------------ ONNX

def _card(pre, threshold=0.42, hog=HOG):
    from _edgefix import card

    return card("baseline", pre, hog=hog, threshold=threshold, metrics={"study": {"auroc": 0.9}})


def test_onnx_matches_sklearn_and_describes_itself(tmp_path, data, model):
    from edge.card import read_onnx_card

    pre = PreprocessConfig(size=SIZE)
    written = to_onnx(model, _card(pre), tmp_path / "b.onnx")
    path = tmp_path / "b.onnx"
    held = data["X"][data["held"]]
    assert np.max(np.abs(onnx_probabilities(path, held) - predict_proba(model, held))) < ONNX_TOL
    m = onnx.load(str(path))
    assert [i.name for i in m.graph.input] == ["features"] and [o.name for o in m.graph.output] == ["probability"]
    card = read_onnx_card(path)
    assert card == written and (card.kind, card.input, card.hog, card.preprocess) == ("baseline", "hog", HOG, pre)
    assert card.threshold == 0.42 and card.labels == ("normal", "abnormal") and card.metrics["study"]["auroc"] == 0.9
    assert not list(tmp_path.glob(".*tmp*"))
    again = to_onnx(model, _card(pre), tmp_path / "again.onnx")  # same fit -> same graph, same hash
    assert again.weights_sha256 == written.weights_sha256


def test_edge_predictor_serves_the_baseline_like_sklearn(tmp_path, data, model):
    from edge.predictor import Predictor
    from edge.preprocess import preprocess

    pre = PreprocessConfig(size=SIZE, invert="never")
    to_onnx(model, _card(pre, threshold=0.5), tmp_path / "b.onnx")
    path = tmp_path / "b.onnx"
    img = np.kron(data["images"][150], np.ones((3, 3), np.uint8))  # a 96 px "original"
    pred = Predictor(path).predict(img)
    expected = predict_proba(model, hog_batch(preprocess(img, pre)[None], HOG))[0]
    assert abs(pred.probability - expected) < ONNX_TOL


def test_onnx_refuses_mismatched_hog_or_threshold(data, model):
    from edge.errors import ModelError

    with pytest.raises(BaselineError, match="features"):
        build_onnx(model, _card(PreprocessConfig(size=SIZE), hog=HogConfig(pixels_per_cell=4)))
    with pytest.raises(ModelError, match="threshold"):
        _card(PreprocessConfig(size=SIZE), threshold=1.5)


# ------------------------------------------------------------------ murakit train baseline

def _write_cache(run, splits=(("train", 44), ("val", 14), ("test", 14)), one_class=False, seed=1):
    """A prepared cache by hand, per docs/architecture.md: images.npy, index.csv, config.json."""
    root = run / "prepared"
    root.mkdir(parents=True)
    rows, images, rng, pid = [], [], np.random.default_rng(seed), 0
    for split, n_patients in splits:
        for _ in range(n_patients):
            pid += 1
            label = 0 if one_class and split == "train" else int(pid % 5 < 2)
            part = ("ELBOW", "HAND")[pid % 2]
            study = f"MURA-v1.1/x/XR_{part}/patient{pid:05d}/study1_{'positive' if label else 'negative'}"
            for v in range(2):
                rows.append([split, part, f"patient{pid:05d}", study, f"{study}/image{v + 1}.png", label,
                             len(images), 0])
                images.append(_image(label, rng))
    np.save(root / "images.npy", np.stack(images))
    with open(root / "index.csv", "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["split", "part", "patient", "study", "path", "label", "row", "inverted"])
        w.writerows(rows)
    meta = {"preprocess": PreprocessConfig(size=SIZE).to_dict(), "murakit_version": "test",
            "data_root": "x", "seed": 0, "complete": True}
    (root / "config.json").write_text(json.dumps(meta))
    return run


def _train(run, *extra):
    from murakit.cli import main

    return main(["train", "baseline", "--run", str(run), "--no-progress", *extra])


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    run = _write_cache(tmp_path_factory.mktemp("run") / "run")
    assert _train(run) == 0
    return run


def test_train_writes_model_metrics_and_predictions(trained):
    from murakit.evaluation.metrics import choose_threshold

    out = trained / "baseline"
    m = json.loads((out / "metrics.json").read_text())
    for level in ("image", "study"):
        assert set(m[level]) >= {"auroc", "kappa", "accuracy", "sensitivity", "specificity", "f1"}
    assert set(m["by_part"]) == {"ELBOW", "HAND"} and m["train_seconds"] > 0
    assert m["study"]["auroc"] > 0.9 and m["counts"]["images"] == 28
    with open(out / "predictions_val.csv") as f:
        val = list(csv.DictReader(f))
    assert list(val[0]) == ["path", "study", "part", "label", "probability"] and len(val) == 28
    probs = np.array([float(r["probability"]) for r in val])
    assert np.all((probs >= 0) & (probs <= 1))
    # the threshold is the study-level choice on val, not a default
    assert m["threshold"] == pytest.approx(choose_threshold([int(r["label"]) for r in val], probs,
                                                            [r["study"] for r in val]), abs=1e-6)
    from edge.card import read_card, read_onnx_card

    card = read_onnx_card(out / "baseline.onnx")
    assert card == read_card(out / "card.json") and card.threshold == m["threshold"]
    assert card.metrics["test"]["study"]["auroc"] == m["study"]["auroc"] and card.data_fingerprint
    assert len(list(out.glob("features_*.npy"))) == 1 and not list(out.glob(".*tmp*"))


def test_rerun_is_a_no_op_and_force_reproduces(trained, capsys):
    out = trained / "baseline"
    before = (out / "metrics.json").stat().st_mtime_ns
    assert _train(trained) == 0
    assert "nothing to do" in capsys.readouterr().out
    assert (out / "metrics.json").stat().st_mtime_ns == before
    old = json.loads((out / "metrics.json").read_text())
    from murakit.pipeline.train_baseline import train_baseline

    res = train_baseline(trained, workers=1, progress=False, log=lambda *_: None)  # the stage's own answer
    assert (res.stage, res.status, res.figures) == ("train baseline", "up-to-date", old)
    assert res.paths == (out / "baseline.onnx", out / "card.json", out / "metrics.json")
    card_before = (out / "card.json").read_text()
    assert _train(trained, "--force") == 0
    assert "reusing cached HOG features" in capsys.readouterr().out
    new = json.loads((out / "metrics.json").read_text())
    assert new["study"] == old["study"] and new["threshold"] == old["threshold"]
    assert json.loads((out / "card.json").read_text())["weights_sha256"] == json.loads(card_before)["weights_sha256"]


@pytest.mark.parametrize("kind, match", [
    ("missing", "no prepared cache"),
    ("one_class", "need both classes"),
    ("empty_val", "val split"),
    ("big_cell", "--hog-cell"),
])
def test_bad_runs_exit_2_with_one_line_and_no_model(tmp_path, capsys, kind, match):
    run = tmp_path / "run"
    extra = []
    if kind == "one_class":
        _write_cache(run, one_class=True)
    elif kind == "empty_val":
        _write_cache(run, splits=(("train", 20), ("test", 6)))
    elif kind == "big_cell":
        _write_cache(run, splits=(("train", 6), ("val", 2), ("test", 2)))
        extra = ["--hog-cell", "24"]
    assert _train(run, *extra) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("murakit: error:") and match in err[0]
    assert not (run / "baseline" / "metrics.json").exists() and not (run / "baseline" / "baseline.onnx").exists()
