"""Bootstrap intervals of the protocol's study-level figures (murakit.evaluation.bootstrap)."""

import numpy as np
import pytest

from murakit.evaluation.bootstrap import paired_auroc_difference, study_intervals
from murakit.evaluation.metrics import auroc, study_level


def _data(n_studies: int, views: int = 2, signal: float = 1.0, seed: int = 0):
    """Image labels/probabilities/study ids; a study's views share its label, noisy scores."""
    rng = np.random.default_rng(seed)
    y_study = rng.integers(0, 2, n_studies)
    studies = np.repeat([f"s{i}" for i in range(n_studies)], views)
    labels = np.repeat(y_study, views)
    logits = signal * (labels - 0.5) * 2 + rng.normal(0, 1, len(labels))
    return labels, 1 / (1 + np.exp(-logits)), studies


def test_intervals_hold_the_estimate_and_are_seeded():
    labels, probs, studies = _data(200)
    ci = study_intervals(labels, probs, studies, 0.5, n=1000, seed=3)
    s = study_level(labels, probs, studies)
    est = auroc(s["label"], s["prob"])
    lo, hi = ci["auroc_ci"]
    assert 0 <= lo < est < hi <= 1 and ci["n_resamples"] == 1000
    assert ci == study_intervals(labels, probs, studies, 0.5, n=1000, seed=3)
    assert ci != study_intervals(labels, probs, studies, 0.5, n=1000, seed=4)
    klo, khi = ci["kappa_ci"]
    assert -1 <= klo < khi <= 1


def test_intervals_narrow_with_more_studies():
    small = study_intervals(*_data(60), 0.5, n=1000)["auroc_ci"]
    large = study_intervals(*_data(1200), 0.5, n=1000)["auroc_ci"]
    assert large[1] - large[0] < 0.6 * (small[1] - small[0])  # ~ 1/sqrt(n): 0.22x expected


def test_paired_difference_of_a_model_with_itself_is_zero_and_a_real_gap_is_found():
    labels, probs, studies = _data(300, signal=1.5)
    same = paired_auroc_difference(labels, probs, probs, studies, n=500)
    assert same["auroc_diff"] == 0 and same["ci"] == [0.0, 0.0]
    noise = np.random.default_rng(9).random(len(probs))
    gap = paired_auroc_difference(labels, probs, noise, studies, n=1000)
    assert gap["auroc_diff"] > 0.2 and gap["ci"][0] > 0  # the interval excludes 0
    assert gap["ci"][0] <= gap["auroc_diff"] <= gap["ci"][1]


def test_one_class_gives_nan_interval_not_an_error():
    labels, probs, studies = _data(30)
    ci = study_intervals(np.ones_like(labels), probs, studies, 0.5, n=200)
    assert all(np.isnan(ci["auroc_ci"]))


@pytest.mark.parametrize("n", [1, 50])
def test_tiny_resample_counts_still_return_intervals(n):
    ci = study_intervals(*_data(40), 0.5, n=n)
    assert len(ci["auroc_ci"]) == 2
