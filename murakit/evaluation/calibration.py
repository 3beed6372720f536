"""Calibrators, expected calibration error and operating points, all fitted on the validation split.

The MURA protocol's study score (the mean of its views' probabilities) is a good ranking but
not a probability: views of an abnormal study that do not show the finding pull it down. So a
model card carries two Platt calibrators (``sigmoid(a * logit(score) + b)``, ``a > 0``): one
fitted on val views, one on val study means. Being increasing, they change no ranking and no
decision (``edge.trust``). Val sets can be small (30 studies on a small preset), so each is
fitted with Platt's smoothed targets and a prior, its form (temperature or full Platt) and prior
strength chosen by k-fold-by-study held-out log-loss on val (:func:`fit_calibrator`). The view
map's prior pulls toward the identity; the study map's toward the slope of a study of
independent views (:func:`fit_study_calibrator`), because a mean of views is under-dispersed.
Binned ECE on a small test set is biased upward; :func:`ece_floor` says how much ECE a
perfectly calibrated model would show there. The card also carries operating
points: the shipped threshold (``youden``, the kappa-maximising study threshold murakit has
always chosen), the thresholds that keep val sensitivity or specificity >= 0.90, and per-part
variants of each.
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

    The unregularised fit murakit used before :func:`fit_calibrator` (kept for comparisons:
    ``benchmarks/calibration_check.py``). A weak L2 penalty (``1 / c``) keeps a and b finite on
    separable data; ``a`` must be > 0 (a calibrator must not reverse the ranking: with a
    non-positive slope, or one class only, the identity a = 1, b = 0 is used).

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


# The calibrator's forms, simplest first. All are Platt maps sigmoid(a * logit(p) + b) (the card's
# one format): identity a = 1, b = 0; temperature b = 0; platt both free.
FORMS = ("identity", "temperature", "platt")
# Strengths of the Gaussian prior pulling (a, b) toward its centre ((1, 0), the identity, for views;
# (mean views per study, 0) for study means: fit_study_calibrator): the penalty
# prior / 2 * ((a - centre)^2 + b^2) is added to the summed log-loss, i.e. one, five or twenty
# observations' worth of belief in the centre. Negligible on hundreds of
# val studies, it keeps a 30-study fit from chasing a few points; which strength is chosen with
# the form, by held-out log-loss (a fixed 5 did best on simulated view-level models but pulled the
# study mean, which is under-dispersed by construction, too hard toward the identity).
PRIORS = (20.0, 5.0, 1.0, 0.2, 0.04)  # strongest (simplest) first
FOLDS = 10  # k-fold by study for choosing the form (leave-one-study-out below 10 studies)
# How many standard errors of held-out log-loss a simpler form may trail the best one by and still
# be chosen. 0: the lowest held-out loss wins (ties to the simpler form). The one-standard-error
# rule (1.0) is better when the model is calibrated already but worse when it is not (simulated
# models; benchmarks/calibration_check.py prints both on real runs, docs/trust.md).
SE_TOLERANCE = 0.0
A_MIN = 1e-3  # the slope's lower bound: calibrators stay strictly increasing


def _smoothed_targets(y: np.ndarray) -> np.ndarray:
    """Platt's (1999) targets: (N+ + 1) / (N+ + 2) for positives, 1 / (N- + 2) for negatives, so a
    small val set cannot push the map to 0 or 1 (the fit behaves as if one more example of each
    class were unseen)."""
    pos, neg = int((y == 1).sum()), int((y == 0).sum())
    return np.where(y == 1, (pos + 1.0) / (pos + 2.0), 1.0 / (neg + 2.0))


def _fit_form(x: np.ndarray, t: np.ndarray, form: str, prior: float | None = None,
              centre: float = 1.0, slope_prior: bool = True) -> tuple:
    """(a, b) minimising the log-loss of targets ``t`` at ``sigmoid(a x + b)`` plus the prior
    toward (``centre``, 0) (on ``b`` alone when ``slope_prior`` is false), with ``a >= A_MIN``.
    Damped Newton from the centre: the objective is strictly convex (the smoothed targets keep
    it bounded even on separable data, the prior makes it more so), so this is deterministic
    and converges in a few steps."""
    if form == "identity":
        return 1.0, 0.0
    prior = PRIORS[-1] if prior is None else prior
    free_b = form == "platt"
    X = np.stack([x, np.ones_like(x)], 1) if free_b else x[:, None]
    centre_ = np.array([centre, 0.0])[:X.shape[1]]
    weight = (prior * np.array([1.0 if slope_prior else 0.0, 1.0]))[:X.shape[1]]

    def objective(theta):
        z = X @ theta
        return (np.sum(t * np.logaddexp(0.0, -z) + (1.0 - t) * np.logaddexp(0.0, z))
                + 0.5 * np.sum(weight * (theta - centre_) ** 2))

    theta = centre_.copy()
    f = objective(theta)
    for _ in range(100):
        q = np.exp(-np.logaddexp(0.0, -(X @ theta)))
        grad = X.T @ (q - t) + weight * (theta - centre_)
        hess = (X * (q * (1.0 - q))[:, None]).T @ X + np.diag(weight)
        step = np.linalg.solve(hess, grad)
        lr = 1.0
        while lr > 1e-10:
            new = theta - lr * step
            new[0] = max(new[0], A_MIN)
            f_new = objective(new)
            if f_new <= f:
                break
            lr /= 2.0
        else:
            break
        done = abs(f - f_new) <= 1e-12 * max(1.0, abs(f))
        theta, f = new, f_new
        if done:
            break
    a, b = float(theta[0]), float(theta[1]) if free_b else 0.0
    if not (math.isfinite(a) and math.isfinite(b)):
        return 1.0, 0.0
    return a, b


def _log_loss(y: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Per-observation log-loss of 0/1 labels at logits z."""
    return np.where(y == 1, np.logaddexp(0.0, -z), np.logaddexp(0.0, z))


def _candidates(priors, centres=(1.0,), forms=FORMS[1:]) -> list:
    """(name, form, prior, centre) of every candidate calibrator, simplest first (per centre:
    forms, then strongest prior first). The identity is not one of them: it is the limit of an
    infinitely strong prior, and as a candidate it won near-ties (on about 100 val studies
    held-out log-loss cannot tell a real shift from none) that the strongest prior (20) settles
    with a shrunk correction instead (simulated models: mean test ECE 0.053 / 0.048 without it,
    0.053 / 0.049 with it; docs/trust.md). A centre other than 1 names itself: ``platt@5~a2.75``."""
    return [(f"{f}@{pr:g}" + ("" if c == 1.0 else f"~a{c:.3g}"), f, pr, c)
            for c in centres for f in forms for pr in priors]


def fit_calibrator(labels, scores, groups=None, folds: int = FOLDS, seed: int = 0,
                   se_tolerance: float = SE_TOLERANCE, priors=PRIORS, centres=(1.0,),
                   slope_prior: bool = True, forms=FORMS[1:]) -> dict:
    """A Platt-format calibrator whose form and prior strength are chosen on the fitting data alone.

    Candidates: temperature (b = 0) and full Platt maps, each fitted with Platt's smoothed
    targets and a prior toward (``centre``, 0) of each strength in ``priors`` and each slope
    centre in ``centres`` (the identity, 1, by default; the identity itself only when there is
    nothing to fit: one class, or fewer than 2 observations). The candidate with the lowest
    k-fold held-out log-loss wins (folds by ``groups``: studies, so views of a study never sit
    on both sides), or the simplest one within ``se_tolerance`` standard errors of it (paired
    over groups); ties go to the simpler. It is then refitted on all the data. ``a > 0`` always
    (increasing: rankings and AUROC unchanged).

    Parameters
    ----------
    labels : 0/1 array (N,)
    scores : array (N,) in [0, 1]
        Raw probabilities.
    groups : array (N,), optional
        The unit of the folds (study ids); default one group per observation.
    centres : tuple of float
        Slopes the prior pulls toward (b always toward 0).
    slope_prior : bool
        False: the prior holds ``b`` only and the slope is free (temperature then has no prior).
    forms : tuple of str
        Among ``"temperature"``, ``"platt"``.

    Returns
    -------
    dict
        ``{"method": "platt", "a", "b", "form", "prior"}`` (+ ``"centre"`` when not 1) plus
        ``"cv_log_loss"`` per candidate (``temperature@20``, ``platt@5``, ...: mean held-out
        log-loss per observation), the evidence the choice was made on.
    """
    y = np.asarray(labels).astype(int)
    x = _logit(scores)
    if len(y) != len(x) or (groups is not None and len(groups) != len(y)):
        raise ValueError("labels, scores and groups must have the same length")
    g = np.arange(len(y)) if groups is None else np.unique(np.asarray(groups).astype(str), return_inverse=True)[1]
    if len(np.unique(y)) < 2 or len(y) < 2:
        return {"method": "platt", "a": 1.0, "b": 0.0, "form": "identity", "prior": None}
    cands = _candidates(priors, centres, forms)
    n_groups = int(g.max()) + 1
    k = min(folds, n_groups)
    fold_of_group = np.random.default_rng(seed).permutation(n_groups) % k
    fold = fold_of_group[g]
    held = {name: np.zeros(len(y)) for name, *_ in cands}
    for i in range(k):
        test, train = fold == i, fold != i
        t = _smoothed_targets(y[train])
        for name, form, prior, centre in cands:
            a, b = _fit_form(x[train], t, form, prior, centre, slope_prior)
            held[name][test] = _log_loss(y[test], a * x[test] + b)
    # per-group held-out losses (views of a study are not independent), paired across candidates
    per_group = {name: np.bincount(g, weights=held[name], minlength=n_groups) for name in held}
    best = min(held, key=lambda name: per_group[name].sum())  # first (simplest) of equals
    chosen = next(c for c in cands if c[0] == best)
    for c in cands:  # simplest first
        d = per_group[c[0]] - per_group[best]
        se = d.std(ddof=1) * math.sqrt(n_groups) if n_groups > 1 else 0.0
        if d.sum() <= se_tolerance * se + 1e-12:
            chosen = c
            break
    _, form, prior, centre = chosen
    a, b = _fit_form(x, _smoothed_targets(y), form, prior, centre, slope_prior)
    out = {"method": "platt", "a": a, "b": b, "form": form, "prior": prior}
    if centre != 1.0:
        out["centre"] = float(centre)
    out["cv_log_loss"] = {name: float(v.mean()) for name, v in held.items()}
    return out


def apply_platt(c: dict, scores) -> np.ndarray:
    """Calibrated probabilities (float64) of raw scores (numpy twin of ``edge.trust.calibrate``)."""
    z = c["a"] * _logit(scores) + c["b"]
    return np.exp(-np.logaddexp(0.0, -z))


def fit_study_calibrator(labels, means, views_per_study: float) -> dict:
    """The study calibrator: :func:`fit_calibrator` on study means, its prior centred on slope
    ``views_per_study`` instead of 1.

    Why not the identity: averaging views' probabilities shrinks the evidence. A study of n views
    that each carried independent evidence would have log-odds about n times its mean view logit,
    and an abnormal study whose other views miss the finding is pulled toward normal, so a real
    study mean is under-dispersed (val study slopes of 1.3-4.5 on murakit's runs). The prior
    toward 1 pulled against that; centred on the mean view count, held-out log-loss still picks
    its strength (a strong prior at the centre, a weak one lets the data decide). Chosen over
    seven other rules by mean study ECE on both simulation families, the one where the study mean
    starts calibrated and the one where views miss the finding (benchmarks/calibration_rules.py:
    0.058 against the identity-centred rule's 0.067; docs/trust.md). Its cost: about 30 val
    studies of a model whose study mean is already calibrated (a strong prior toward n is wrong
    there; simulated 0.041 -> 0.076, and P4_small's re-splits).

    Parameters
    ----------
    labels : 0/1 array (S,)
    means : array (S,) in [0, 1]
        Each study's mean raw view probability (the MURA study score).
    views_per_study : float
        Mean views per study on the fitting data (>= 1; 1 gives the identity-centred rule).
    """
    if not (math.isfinite(views_per_study) and views_per_study >= 1.0):
        raise ValueError(f"views_per_study must be a finite number >= 1, got {views_per_study!r}")
    return fit_calibrator(labels, means, centres=(float(views_per_study),))


def fit_calibration(labels, probs, studies) -> dict:
    """The card's ``calibration``: a view calibrator and a study calibrator fitted on val
    (:func:`fit_calibrator`, folds by study; :func:`fit_study_calibrator` on study means, the
    MURA protocol's study score, so study AUROC is unchanged, with its prior centred on val's
    mean views per study)."""
    from murakit.evaluation.metrics import study_level

    s = study_level(labels, probs, studies)
    views = len(np.asarray(labels)) / max(len(s["label"]), 1)
    return {"image": fit_calibrator(labels, probs, studies),
            "study": fit_study_calibrator(s["label"], s["prob"], views)}


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


FLOOR_DRAWS = 500


def ece_floor(probs, bins: int = ECE_BINS, draws: int = FLOOR_DRAWS, seed: int = 0) -> dict:
    """The ECE a perfectly calibrated model would score on this test set, by chance alone.

    Binned ECE is biased upward on small sets: even when every label is drawn with exactly the
    stated probability, each bin's observed frequency misses its mean probability by sampling
    noise (about ``sqrt(p (1 - p) / n_bin)``). Labels are drawn ``draws`` times from the
    probabilities themselves (consistency resampling, Broecker & Smith 2007) and scored like the
    real ones. ``mean`` is the expected ECE under perfect calibration, ``q95`` its 95th
    percentile: an observed ECE below ``q95`` is not evidence of miscalibration at this n; the
    distance above ``mean`` is the part sampling noise does not explain. At image level views
    are drawn independently (views of a study share their label in reality), so the image floor
    understates the noise somewhat.

    Returns ``{"mean": float, "q95": float}`` (NaN for an empty set).
    """
    p = np.asarray(probs, np.float64)
    if len(p) == 0:
        return {"mean": float("nan"), "q95": float("nan")}
    rng = np.random.default_rng(seed)
    idx = np.minimum((p * bins).astype(int), bins - 1)
    onehot = np.zeros((len(p), bins))
    onehot[np.arange(len(p)), idx] = 1.0
    y = (rng.random((draws, len(p))) < p).astype(np.float64)
    # per bin: share * |mean y - mean p| = |sum y - sum p| / n
    e = np.abs(y @ onehot - p @ onehot).sum(1) / len(p)
    return {"mean": float(e.mean()), "q95": float(np.quantile(e, 0.95))}


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
