"""Confidence intervals of the protocol's study-level figures: the bootstrap over studies.

A test split of a few hundred studies gives AUROC a standard error of 0.02-0.05, so a figure
without an interval cannot say whether a difference between runs or models matters. Studies
(not images) are the unit the protocol scores, so studies are what is resampled, with
replacement; a paired bootstrap resamples the same studies for two models, which is what the
difference between them needs (their errors on a study are correlated).

Intervals are percentile intervals (2.5th and 97.5th of the resampled statistic), seeded, so
the same predictions always give the same interval.
"""

from __future__ import annotations

import numpy as np

from murakit.evaluation.metrics import auroc, cohen_kappa, study_level

N_RESAMPLES = 2000
LEVEL = 0.95


def _resamples(n_studies: int, n: int, seed: int) -> np.ndarray:
    """int (n, n_studies): row k holds the study indices of resample k."""
    return np.random.default_rng(seed).integers(0, n_studies, size=(n, n_studies))


def _interval(values: np.ndarray, level: float) -> list:
    """Percentile interval of the finite values, ``[lo, hi]`` (NaNs when none are finite)."""
    v = values[np.isfinite(values)]
    if v.size == 0:
        return [float("nan"), float("nan")]
    a = (1.0 - level) / 2.0
    return [float(np.quantile(v, a)), float(np.quantile(v, 1.0 - a))]


def study_intervals(labels, probs, studies, threshold: float, n: int = N_RESAMPLES, seed: int = 0,
                    level: float = LEVEL) -> dict:
    """95% bootstrap intervals of study AUROC and study kappa.

    Parameters
    ----------
    labels, probs, studies : arrays (N,)
        Image labels (0/1), probabilities in [0, 1] and study ids.
    threshold : float
        The model's study-level threshold (kappa is at this threshold).
    n : int
        Resamples (>= 1,000 for a stable 95% interval).
    seed : int

    Returns
    -------
    dict
        ``{"auroc_ci": [lo, hi], "kappa_ci": [lo, hi], "n_resamples": n, "level": 0.95}``.
        Resamples with one class only (no AUROC) are dropped.
    """
    s = study_level(labels, probs, studies)
    y, p = s["label"], s["prob"]
    idx = _resamples(len(y), n, seed)
    aucs = np.array([auroc(y[i], p[i]) for i in idx])
    kappas = np.array([cohen_kappa(y[i], p[i] > threshold) for i in idx])
    return {"auroc_ci": _interval(aucs, level), "kappa_ci": _interval(kappas, level), "n_resamples": n,
            "level": level}


def paired_auroc_difference(labels, probs_a, probs_b, studies, n: int = N_RESAMPLES, seed: int = 0,
                            level: float = LEVEL) -> dict:
    """Study AUROC of model A minus model B, with a paired bootstrap interval.

    Both models are scored on the same resampled studies, so the interval reflects the
    difference, not two independent uncertainties.

    Returns
    -------
    dict
        ``{"auroc_diff": d, "ci": [lo, hi], "n_resamples": n, "level": 0.95}``; the difference is
        significant at that level when the interval excludes 0.
    """
    a = study_level(labels, probs_a, studies)
    b = study_level(labels, probs_b, studies)
    y = a["label"]
    idx = _resamples(len(y), n, seed)
    diffs = np.array([auroc(y[i], a["prob"][i]) - auroc(y[i], b["prob"][i]) for i in idx])
    return {"auroc_diff": auroc(y, a["prob"]) - auroc(y, b["prob"]), "ci": _interval(diffs, level),
            "n_resamples": n, "level": level}
