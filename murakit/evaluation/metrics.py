"""The MURA protocol: image- and study-level metrics, per body part, threshold choice.

As in the MURA paper, a study's probability is the mean of its views' probabilities and a
study (or image) is called abnormal when its probability is strictly above the threshold.
Pure numpy so every stage (and its tests) can use it without scikit-learn.
"""

from __future__ import annotations

import math

import numpy as np

from edge.metrics import auroc

__all__ = ["auroc", "binary_metrics", "choose_threshold", "cohen_kappa", "evaluate", "json_safe",
           "study_level"]

METRIC_KEYS = ("auroc", "kappa", "accuracy", "sensitivity", "specificity", "f1")


def cohen_kappa(y, yhat) -> float:
    """Cohen's kappa between two binary label vectors (0 when agreement is only chance
    and both raters are constant and identical, NaN never)."""
    y = np.asarray(y).astype(bool)
    yhat = np.asarray(yhat).astype(bool)
    n = len(y)
    if n == 0:
        return float("nan")
    po = float(np.mean(y == yhat))
    pe = float(y.mean() * yhat.mean() + (1 - y.mean()) * (1 - yhat.mean()))
    if pe >= 1.0:
        return 1.0 if po == 1.0 else 0.0
    return (po - pe) / (1.0 - pe)


def binary_metrics(y, p, threshold: float) -> dict:
    """The protocol's metric set ``M`` for scores ``p`` against labels ``y``."""
    y = np.asarray(y).astype(bool)
    p = np.asarray(p, dtype=np.float64)
    yhat = p > threshold
    tp = int(np.sum(y & yhat))
    tn = int(np.sum(~y & ~yhat))
    fp = int(np.sum(~y & yhat))
    fn = int(np.sum(y & ~yhat))
    sens = tp / (tp + fn) if tp + fn else float("nan")
    spec = tn / (tn + fp) if tn + fp else float("nan")
    f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else float("nan")
    return {
        "auroc": auroc(y, p),
        "kappa": cohen_kappa(y, yhat),
        "accuracy": (tp + tn) / len(y) if len(y) else float("nan"),
        "sensitivity": sens,
        "specificity": spec,
        "f1": f1,
    }


def study_level(labels, probs, studies, parts=None):
    """Average view probabilities per study.

    Returns
    -------
    dict with arrays ``study`` (sorted unique ids), ``label`` (int), ``prob`` (float64) and,
    when ``parts`` is given, ``part``. A study's label is taken from its views (they agree
    by construction; a study with mixed labels is an error).
    """
    studies = np.asarray(studies).astype(str)
    labels = np.asarray(labels).astype(int)
    probs = np.asarray(probs, dtype=np.float64)
    if not (len(studies) == len(labels) == len(probs)):
        raise ValueError("labels, probs and studies must have the same length")
    uniq, inv = np.unique(studies, return_inverse=True)
    counts = np.bincount(inv, minlength=len(uniq))
    mean_p = np.bincount(inv, weights=probs, minlength=len(uniq)) / counts
    lab_sum = np.bincount(inv, weights=labels, minlength=len(uniq))
    if np.any((lab_sum != 0) & (lab_sum != counts)):
        raise ValueError("a study has views with different labels")
    out = {"study": uniq, "label": (lab_sum > 0).astype(int), "prob": mean_p}
    if parts is not None:
        first = np.zeros(len(uniq), dtype=int)
        first[inv[::-1]] = np.arange(len(inv))[::-1]  # index of each study's first view
        out["part"] = np.asarray(parts).astype(str)[first]
    return out


def choose_threshold(labels, probs, studies) -> float:
    """Study-level threshold that maximises Cohen's kappa (ties: the one closest to 0.5).

    Candidates are midpoints between consecutive distinct study probabilities, so the
    chosen value separates the validation studies the way that scored best.
    """
    s = study_level(labels, probs, studies)
    ps = np.unique(s["prob"])
    if len(ps) < 2:
        return 0.5
    cands = np.concatenate([[ps[0] - 1e-6], (ps[:-1] + ps[1:]) / 2.0])
    best, best_t = -math.inf, 0.5
    for t in cands:
        k = cohen_kappa(s["label"], s["prob"] > t)
        if k > best + 1e-12 or (abs(k - best) <= 1e-12 and abs(t - 0.5) < abs(best_t - 0.5)):
            best, best_t = k, float(t)
    return best_t


def evaluate(labels, probs, studies, parts, threshold: float) -> dict:
    """Metrics in the ``metrics.json`` schema.

    Returns
    -------
    dict ``{"image": M, "study": M, "by_part": {PART: {"kappa", "auroc"}}, "threshold": t,
    "counts": {...}}`` with ``M`` as in :func:`binary_metrics`; per-part figures are study
    level, as the MURA paper reports them.
    """
    s = study_level(labels, probs, studies, parts)
    by_part = {}
    for part in sorted(set(s["part"])):
        m = s["part"] == part
        by_part[part] = {
            "kappa": cohen_kappa(s["label"][m], s["prob"][m] > threshold),
            "auroc": auroc(s["label"][m], s["prob"][m]),
            "studies": int(m.sum()),
        }
    return {
        "image": binary_metrics(labels, probs, threshold),
        "study": binary_metrics(s["label"], s["prob"], threshold),
        "by_part": by_part,
        "threshold": float(threshold),
        "counts": {"images": len(labels), "studies": len(s["study"]),
                   "abnormal_studies": int(s["label"].sum())},
    }


def json_safe(obj):
    """Replace NaN/inf floats by None so the result is strict JSON."""
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, np.integer):
        return int(obj)
    return obj
