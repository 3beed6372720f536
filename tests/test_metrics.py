"""Protocol metrics against hand-computed values."""

import math

import numpy as np
import pytest

from murakit.evaluation.metrics import (
    auroc,
    binary_metrics,
    choose_threshold,
    cohen_kappa,
    evaluate,
    json_safe,
    study_level,
)


def test_auroc_hand_computed():
    # positives 0.8, 0.4; negatives 0.5, 0.1: pairs (0.8>0.5, 0.8>0.1, 0.4<0.5, 0.4>0.1) -> 3/4
    assert auroc([1, 1, 0, 0], [0.8, 0.4, 0.5, 0.1]) == pytest.approx(0.75)
    assert auroc([1, 0], [0.5, 0.5]) == pytest.approx(0.5)  # a tie counts half
    assert auroc([1, 0, 1], [0.9, 0.1, 0.8]) == 1.0
    assert math.isnan(auroc([1, 1], [0.2, 0.3]))


def test_auroc_matches_pairwise_definition():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    p = np.round(rng.random(200), 1)  # many ties
    pos, neg = p[y == 1], p[y == 0]
    pairs = (pos[:, None] > neg[None, :]).mean() + 0.5 * (pos[:, None] == neg[None, :]).mean()
    assert auroc(y, p) == pytest.approx(pairs)


def test_kappa_hand_computed():
    # y = 1100, yhat = 1000: po = 3/4; pe = .5*.25 + .5*.75 = .5 -> kappa = .5
    assert cohen_kappa([1, 1, 0, 0], [1, 0, 0, 0]) == pytest.approx(0.5)
    assert cohen_kappa([1, 0, 1, 0], [1, 0, 1, 0]) == 1.0
    assert cohen_kappa([1, 0, 1, 0], [0, 1, 0, 1]) == pytest.approx(-1.0)


def test_binary_metrics_hand_computed():
    m = binary_metrics([1, 1, 1, 0, 0], [0.9, 0.6, 0.2, 0.7, 0.1], 0.5)
    assert m["sensitivity"] == pytest.approx(2 / 3)
    assert m["specificity"] == pytest.approx(1 / 2)
    assert m["accuracy"] == pytest.approx(3 / 5)
    assert m["f1"] == pytest.approx(2 * 2 / (2 * 2 + 1 + 1))
    assert set(m) == {"auroc", "kappa", "accuracy", "sensitivity", "specificity", "f1"}


def test_threshold_is_strict():
    assert binary_metrics([1, 0], [0.5, 0.4], 0.5)["sensitivity"] == 0.0


def test_study_level_means_views():
    s = study_level([1, 1, 0, 0, 0], [0.9, 0.3, 0.2, 0.4, 0.0], ["a", "a", "b", "b", "c"], ["X", "X", "Y", "Y", "X"])
    assert list(s["study"]) == ["a", "b", "c"]
    assert np.allclose(s["prob"], [0.6, 0.3, 0.0])
    assert list(s["label"]) == [1, 0, 0] and list(s["part"]) == ["X", "Y", "X"]
    with pytest.raises(ValueError, match="different labels"):
        study_level([1, 0], [0.1, 0.2], ["a", "a"])


def test_choose_threshold_separates_validation():
    y = [0, 0, 1, 1]
    p = [0.1, 0.3, 0.35, 0.9]
    t = choose_threshold(y, p, ["a", "b", "c", "d"])
    assert 0.3 < t < 0.35


def test_evaluate_schema_and_per_part():
    labels = [1, 1, 0, 0, 1, 0]
    probs = [0.9, 0.7, 0.2, 0.1, 0.6, 0.4]
    studies = ["s1", "s1", "s2", "s2", "s3", "s4"]
    parts = ["ELBOW", "ELBOW", "ELBOW", "ELBOW", "HAND", "HAND"]
    m = evaluate(labels, probs, studies, parts, 0.5)
    assert set(m) >= {"image", "study", "by_part", "threshold"}
    assert m["study"]["accuracy"] == 1.0 and m["study"]["kappa"] == 1.0
    assert set(m["by_part"]) == {"ELBOW", "HAND"}
    assert set(m["by_part"]["HAND"]) >= {"kappa", "auroc"}
    assert m["counts"] == {"images": 6, "studies": 4, "abnormal_studies": 2}


def test_json_safe_replaces_nan():
    assert json_safe({"a": float("nan"), "b": [np.float32(1.5), np.int64(2)]}) == {"a": None, "b": [1.5, 2]}
