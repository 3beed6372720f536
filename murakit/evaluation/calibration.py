"""Calibrators, expected calibration error and operating points, all fitted on the validation split.

The MURA protocol's study score (the mean of its views' probabilities) is a good ranking but
not a probability: views of an abnormal study that do not show the finding pull it down. So a
model card carries two Platt calibrators (``sigmoid(a * logit(score) + b)``, ``a > 0``): one
fitted on val views, one on val study means. Being increasing, they change no ranking and no
decision (``edge.trust``). The card also carries operating points: the shipped threshold
(``youden``, the kappa-maximising study threshold murakit has always chosen), the thresholds
that keep val sensitivity or specificity >= 0.90, and per-part variants of each.
"""

from __future__ import annotations

import math

import numpy as np

ECE_BINS = 10
TARGET = 0.90
MIN_PART_STUDIES = 10  # a part with fewer val studies (or one class only) uses the global threshold
# Fixed before any test figure was looked at: per-part thresholds become the default only when they
# beat the global one's val study kappa by this much (they are fitted on the same val studies, so
# a small gain is mostly the fit itself).
PER_PART_MARGIN = 0.05
OPERATING_POINTS = ("youden", f"sensitivity>={TARGET:.2f}", f"specificity>={TARGET:.2f}")


LOW, HIGH = np.finfo(np.float64).tiny, np.nextafter(1.0, 0.0)  # clip only 0 and 1: no ties made


def _logit(p) -> np.ndarray:
    p = np.clip(np.asarray(p, np.float64), LOW, HIGH)
    return np.log(p) - np.log1p(-p)


def platt(labels, scores, c: float = 1e4) -> dict:
    """Fit ``sigmoid(a * logit(score) + b)`` to binary labels (logistic regression on the logit).

    A weak L2 penalty (``1 / c``) keeps a and b finite on separable data; ``a`` must be > 0 (a
    calibrator must not reverse the ranking: with a non-positive slope, or one class only, the
    identity a = 1, b = 0 is used).

    Returns ``{"method": "platt", "a": float, "b": float}``.
    """
    from sklearn.linear_model import LogisticRegression

    y = np.asarray(labels).astype(int)
    if len(np.unique(y)) < 2:
        return {"method": "platt", "a": 1.0, "b": 0.0}
    x = _logit(scores).reshape(-1, 1)
    clf = LogisticRegression(C=c, max_iter=1000).fit(x, y)
    a, b = float(clf.coef_[0, 0]), float(clf.intercept_[0])
    if not (math.isfinite(a) and math.isfinite(b)) or a <= 1e-6:
        a, b = 1.0, 0.0
    return {"method": "platt", "a": a, "b": b}


def apply_platt(c: dict, scores) -> np.ndarray:
    """Calibrated probabilities (float64) of raw scores (numpy twin of ``edge.trust.calibrate``)."""
    z = c["a"] * _logit(scores) + c["b"]
    return np.exp(-np.logaddexp(0.0, -z))


def fit_calibration(labels, probs, studies) -> dict:
    """The card's ``calibration``: a view calibrator and a study calibrator fitted on val."""
    from murakit.evaluation.metrics import study_level

    s = study_level(labels, probs, studies)
    return {"image": platt(labels, probs), "study": platt(s["label"], s["prob"])}


def ece(labels, probs, bins: int = ECE_BINS) -> float:
    """Expected calibration error: sum over equal-width probability bins of
    (bin share) x |mean label - mean probability|. 0 is perfectly calibrated, up to 1."""
    y = np.asarray(labels, np.float64)
    p = np.asarray(probs, np.float64)
    if len(y) == 0:
        return float("nan")
    idx = np.minimum((p * bins).astype(int), bins - 1)
    total = 0.0
    for k in range(bins):
        m = idx == k
        if m.any():
            total += m.mean() * abs(y[m].mean() - p[m].mean())
    return float(total)


def reliability(labels, probs, bins: int = ECE_BINS) -> dict:
    """Per-bin mean probability, observed frequency and count (for a reliability diagram)."""
    y, p = np.asarray(labels, np.float64), np.asarray(probs, np.float64)
    idx = np.minimum((p * bins).astype(int), bins - 1)
    out = {"confidence": [], "frequency": [], "count": []}
    for k in range(bins):
        m = idx == k
        out["confidence"].append(float(p[m].mean()) if m.any() else None)
        out["frequency"].append(float(y[m].mean()) if m.any() else None)
        out["count"].append(int(m.sum()))
    return out


def threshold_for(labels, probs, name: str, youden: float) -> float | None:
    """The threshold of operating point ``name`` on study scores (None when it cannot be met).

    ``sensitivity>=0.90``: the highest threshold whose sensitivity is >= 0.90 (best specificity
    at that sensitivity); ``specificity>=0.90``: the lowest whose specificity is >= 0.90.
    Candidates are midpoints between consecutive distinct scores (and just below/above them).
    """
    y, p = np.asarray(labels), np.asarray(probs, np.float64)
    if name == "youden":
        return float(youden)
    if (y == 1).sum() == 0 or (y == 0).sum() == 0:
        return None
    ps = np.unique(p)
    cands = np.clip(np.concatenate([[ps[0] - 1e-6], (ps[:-1] + ps[1:]) / 2.0, [ps[-1]]]), 0.0, 1.0)
    sens = np.array([(p[y == 1] > t).mean() for t in cands])
    spec = np.array([(p[y == 0] <= t).mean() for t in cands])
    if name.startswith("sensitivity"):
        ok = cands[sens >= TARGET]
        return float(ok.max()) if len(ok) else None
    ok = cands[spec >= TARGET]
    return float(ok.min()) if len(ok) else None


def fit_operating_points(labels, probs, studies, parts, youden: float) -> dict:
    """The card's ``operating_points``: each of :data:`OPERATING_POINTS` and its ``/part``
    variant (one threshold per body part with >= :data:`MIN_PART_STUDIES` val studies of both
    classes; the other parts use the global threshold). ``youden/part`` records its val kappa
    gain over ``youden`` and is marked ``"default": true`` (what answers use without
    ``--operating-point``) only when the gain is >= :data:`PER_PART_MARGIN`."""
    from murakit.evaluation.metrics import study_level

    s = study_level(labels, probs, studies, parts)
    out = {}
    for name in OPERATING_POINTS:
        t = threshold_for(s["label"], s["prob"], name, youden)
        if t is None:
            continue
        by_part = {}
        for part in sorted(set(s["part"])):
            m = s["part"] == part
            if m.sum() >= MIN_PART_STUDIES and len(np.unique(s["label"][m])) == 2:
                youden_part = _kappa_threshold(s["label"][m], s["prob"][m])
                tp = threshold_for(s["label"][m], s["prob"][m], name, youden_part)
                if tp is not None:
                    by_part[part] = tp
        out[name] = {"threshold": t}
        out[f"{name}/part"] = {"threshold": t, "thresholds_by_part": by_part}
    gain = _kappa_gain(s, out["youden"], out["youden/part"])
    out["youden/part"]["val_kappa_gain"] = gain
    if gain >= PER_PART_MARGIN:
        out["youden/part"]["default"] = True
    return out


def _kappa_gain(s: dict, global_op: dict, part_op: dict) -> float:
    """Val study kappa of a per-part operating point minus the global one's."""
    from murakit.evaluation.metrics import cohen_kappa

    t_part = np.array([part_op["thresholds_by_part"].get(q, part_op["threshold"]) for q in s["part"]])
    return float(cohen_kappa(s["label"], s["prob"] > t_part) - cohen_kappa(s["label"], s["prob"] > global_op["threshold"]))


def _kappa_threshold(labels, probs) -> float:
    """The kappa-maximising threshold of already study-level scores."""
    from murakit.evaluation.metrics import choose_threshold

    return choose_threshold(labels, probs, np.arange(len(labels)))
