"""Fit the input gate (``deep.gate``) on the CNN's pooled statistics and choose its threshold.

In-distribution: the training split's radiographs. Outliers: non-radiographs the caller
hands in (murakit's ``evaluation.ood`` fit set; never its test set). The threshold is read off
the gate scores of the validation radiographs, which the fit never saw (:func:`threshold_rule`):
the higher of their :data:`REFUSAL_QUANTILE` quantile and the smallest order statistic that keeps
the refusal rate of radiographs like them <= :data:`MAX_REFUSAL` with :data:`CONFIDENCE`
confidence. On a small validation split the second one decides: with 341 validation radiographs it
is their highest score, where the 99.5th percentile alone refused 1.1 % of the demo's test
radiographs (the percentile of a few hundred scores is too noisy to hold 1 %). Given the training
radiographs' patients, the same rule also reads their out-of-fold scores with val's, and the
higher threshold of the two wins (:func:`fit_gate`).
"""

from __future__ import annotations

import numpy as np

from export.errors import ExportError

REFUSAL_QUANTILE = 0.995
MAX_REFUSAL, CONFIDENCE = 0.01, 0.95
SHRINKAGE = 1e-3  # added to each block covariance's eigenvalues, as a fraction of their mean
LOGISTIC_C = 0.1
MIN_IN, MIN_VAL, MIN_OUT = 20, 10, 20
OOF_FOLDS = 5


def whitening(x: np.ndarray) -> tuple:
    """(mu (d,), W (d, d)) with ``(x - mu) @ W`` of identity covariance (shrunk eigenvalues)."""
    x = np.asarray(x, np.float64)
    mu = x.mean(0)
    lam, v = np.linalg.eigh(np.cov(x - mu, rowvar=False).reshape(x.shape[1], x.shape[1]))
    lam = np.maximum(lam, 0) + SHRINKAGE * max(float(lam.mean()), 1e-12)
    return mu, v / np.sqrt(lam)


def threshold_rule(val_scores: np.ndarray) -> tuple:
    """(threshold, order) from the validation radiographs' gate scores.

    With n exchangeable scores, the share of future radiographs above the k-th highest exceeds
    p with probability ``BinomCDF(k - 1; n, p)``; the largest k with that <= 1 - CONFIDENCE for
    p = MAX_REFUSAL (at least 1: the highest score when n is too small for that confidence) gives
    a tolerance bound, and the threshold is the higher of it and the REFUSAL_QUANTILE quantile
    (so a large validation split still refuses no more than ~0.5 %). ``order`` is k, or None
    when the quantile was the higher.
    """
    from scipy.stats import binom

    s = np.sort(np.asarray(val_scores, np.float64))[::-1]
    n = len(s)
    k = 1
    while k < n and binom.cdf(k, n, MAX_REFUSAL) <= 1 - CONFIDENCE:  # BinomCDF((k + 1) - 1) still small
        k += 1
    q = float(np.quantile(s, REFUSAL_QUANTILE))
    return (float(s[k - 1]), k) if s[k - 1] >= q else (q, None)


def log_distances(v: np.ndarray, params: dict) -> np.ndarray:
    """(N, K) log Mahalanobis distances per block (numpy twin of ``deep.gate.GateHead``)."""
    out = []
    for k, (a, b) in enumerate(params["blocks"]):
        z = (v[:, a:b] - params[f"mu_{k}"]) @ params[f"w_{k}"]
        out.append(0.5 * np.log((z ** 2).mean(1) + 1e-12))
    return np.column_stack(out)


def gate_scores(v: np.ndarray, params: dict) -> np.ndarray:
    """float64 (N,) gate scores of pooled statistics ``v`` (N, P): numpy twin of the graph."""
    v = np.asarray(v, np.float64)
    x = np.hstack([v, log_distances(v, params)])
    return ((x - params["x_mean"]) / params["x_scale"]) @ params["coef"] + float(params["intercept"][0])


def _fit_constants(train_v: np.ndarray, ood_v: np.ndarray, block_sizes, seed: int) -> dict:
    """Whitening per block on ``train_v``, then the outlier-exposure logistic (the GateHead constants)."""
    from sklearn.linear_model import LogisticRegression

    edges = np.cumsum([0, *block_sizes])
    params = {"blocks": np.column_stack([edges[:-1], edges[1:]]).astype(np.int64)}
    for k, (a, b) in enumerate(params["blocks"]):
        params[f"mu_{k}"], params[f"w_{k}"] = whitening(train_v[:, a:b])
    x = np.vstack([np.hstack([v, log_distances(v, params)]) for v in (train_v, ood_v)])
    y = np.r_[np.zeros(len(train_v)), np.ones(len(ood_v))]
    mean, scale = x.mean(0), x.std(0)
    scale = np.where(scale > 1e-12, scale, 1.0)
    weight = np.where(y == 1, len(y) / (2 * len(ood_v)), len(y) / (2 * len(train_v)))  # balanced classes
    clf = LogisticRegression(C=LOGISTIC_C, max_iter=5000, random_state=seed)
    clf.fit((x - mean) / scale, y, sample_weight=weight)
    params.update(x_mean=mean, x_scale=scale, coef=clf.coef_[0].astype(np.float64),
                  intercept=np.asarray(clf.intercept_, np.float64))
    return params


def out_of_fold_scores(train_v: np.ndarray, ood_v: np.ndarray, block_sizes, groups, folds: int = OOF_FOLDS,
                       seed: int = 0) -> np.ndarray:
    """float64 (N,) gate scores of the training radiographs, each from a gate fitted without its fold.

    Folds are whole groups (patients: views of one patient never on both sides), assigned by a
    seeded permutation. Each score comes from a gate that never saw that radiograph; the CNN
    whose features the gate reads did see it in training, so these scores may sit lower than a
    new radiograph's (:func:`fit_gate` never lets them lower the threshold).
    """
    uniq, inv = np.unique(np.asarray(groups).astype(str), return_inverse=True)
    fold = (np.random.default_rng(seed).permutation(len(uniq)) % folds)[inv]
    out = np.empty(len(train_v))
    for k in range(folds):
        held = fold == k
        if held.any():
            out[held] = gate_scores(train_v[held], _fit_constants(train_v[~held], ood_v, block_sizes, seed))
    return out


def fit_gate(train_v: np.ndarray, val_v: np.ndarray, ood_v: np.ndarray, block_sizes, seed: int = 0,
             train_groups=None) -> tuple:
    """Fit the gate's constants and threshold.

    Parameters
    ----------
    train_v, val_v : ndarray float (N, P)
        Pooled statistics of training / validation radiographs.
    ood_v : ndarray float (M, P)
        Pooled statistics of non-radiographs (outlier exposure).
    block_sizes : list of int
        Widths of the blocks of P (``deep.gate.block_sizes``).
    train_groups : array-like (N,), optional
        The patient of each training radiograph. Given (and >= OOF_FOLDS patients), the
        threshold is the higher of the rule on the validation scores and the rule on those
        together with the training radiographs' out-of-fold scores (:func:`out_of_fold_scores`):
        two estimates of the radiographs' upper tail, the more cautious one wins. A few hundred
        validation scores can miss a tail that thousands of training scores show; out-of-fold
        scores alone can also sit too low (the CNN was trained on those images), so they never
        lower the threshold.

    Returns
    -------
    params : dict of ndarray
        For ``deep.gate.GateHead``.
    info : dict
        ``threshold``, ``threshold_rule``, ``val_refusal_rate``, ``fit_auroc`` (train
        radiographs vs outliers), counts; ``oof_scores`` (N,) the out-of-fold scores (None without
        ``train_groups``): not for the card, for :func:`quantized_threshold` (the INT8 export).
    """
    if len(train_v) < MIN_IN or len(val_v) < MIN_VAL or len(ood_v) < MIN_OUT:
        raise ExportError(f"the gate needs >= {MIN_IN} training and {MIN_VAL} validation radiographs and >= "
                          f"{MIN_OUT} non-radiographs, got {len(train_v)}, {len(val_v)} and {len(ood_v)}")
    params = _fit_constants(train_v, ood_v, block_sizes, seed)
    val_s, train_s, ood_s = (gate_scores(v, params) for v in (val_v, train_v, ood_v))
    threshold, order = threshold_rule(val_s)
    rule = {"quantile": REFUSAL_QUANTILE, "max_refusal": MAX_REFUSAL, "confidence": CONFIDENCE, "val_order": order,
            "val_threshold": threshold}
    if train_groups is not None and len(np.unique(np.asarray(train_groups).astype(str))) >= OOF_FOLDS:
        oof = out_of_fold_scores(train_v, ood_v, block_sizes, train_groups, seed=seed)
        both, _ = threshold_rule(np.r_[oof, val_s])
        threshold = max(threshold, both)
        rule.update(oof_folds=OOF_FOLDS, oof_threshold=both, n_oof=len(oof),
                    oof_refusal_rate=float(np.mean(oof > threshold)))
    else:
        oof = None
    return params, {"threshold": threshold, "threshold_rule": rule, "oof_scores": oof,
                    "val_refusal_rate": float(np.mean(val_s > threshold)),
                    "fit_auroc": _auroc(train_s, ood_s), "fit_outliers_refused": float(np.mean(ood_s > threshold)),
                    "n_train": len(train_v), "n_val": len(val_v), "n_outliers": len(ood_v)}


def quantized_threshold(int8_val: np.ndarray, oof=None, float_train=None, int8_train=None) -> tuple:
    """The INT8 model's gate threshold, by the rule the float one follows (:func:`fit_gate`).

    Quantization moves every gate score, so the float threshold cannot be reused; but choosing it
    again on the INT8 model's validation scores alone would drop what the out-of-fold training
    scores added (a tail a few hundred validation radiographs miss), and refitting the gate per
    fold on quantized models is not possible (the INT8 graph's gate constants are the float
    fit's). So each training radiograph's out-of-fold score is moved by what quantization does to
    *that* radiograph's score under the shipped gate (INT8 minus float output of the same image):
    the per-fold gates differ from the shipped one by a fifth of the training data, the
    quantization of the features they read does not. The threshold is then the higher of the rule
    on the INT8 validation scores and the rule on those with the moved out-of-fold scores: as for
    float, they can raise it, never lower it.

    Parameters
    ----------
    int8_val : ndarray float (V,)
        The INT8 model's gate scores of the validation radiographs.
    oof, float_train, int8_train : ndarray float (N,), optional
        Out-of-fold scores of the training radiographs (``info["oof_scores"]`` of
        :func:`fit_gate`), and the float and INT8 models' gate scores of the same radiographs, in
        the same order. Without them (a run with too few patients for folds): val only.

    Returns
    -------
    threshold : float
    rule : dict
        ``val_threshold``, ``val_order``; with out-of-fold scores also ``oof_threshold``,
        ``n_oof``, ``oof_shift_median`` and ``oof_shift_max_abs`` (the per-image shifts applied).
    """
    threshold, order = threshold_rule(int8_val)
    rule = {"val_threshold": threshold, "val_order": order}
    if oof is not None:
        oof, float_train, int8_train = (np.asarray(a, np.float64) for a in (oof, float_train, int8_train))
        if not oof.shape == float_train.shape == int8_train.shape:
            raise ExportError(f"out-of-fold, float and INT8 training scores differ in shape: {oof.shape}, "
                              f"{float_train.shape}, {int8_train.shape}")
        shift = int8_train - float_train
        both, _ = threshold_rule(np.r_[oof + shift, int8_val])
        rule.update(oof_threshold=both, n_oof=len(oof), oof_shift_median=float(np.median(shift)),
                    oof_shift_max_abs=float(np.max(np.abs(shift))))
        threshold = max(threshold, both)
    return threshold, rule


def _auroc(inlier: np.ndarray, outlier: np.ndarray) -> float:
    """P(outlier score > inlier score) (ties count half): AUROC of the score as an outlier detector."""
    s = np.r_[inlier, outlier]
    order = s.argsort(kind="mergesort")
    ranks = np.empty(len(s))
    ranks[order] = np.arange(1, len(s) + 1)
    for value in np.unique(s):  # average ranks of ties
        tie = s == value
        ranks[tie] = ranks[tie].mean()
    n0, n1 = len(inlier), len(outlier)
    return float((ranks[n0:].sum() - n1 * (n1 + 1) / 2) / (n0 * n1))


def fit_part_head(train_v: np.ndarray, train_parts, val_v: np.ndarray, val_parts, seed: int = 0) -> tuple:
    """A multinomial logistic regression from pooled statistics to the body part.

    Returns
    -------
    params : dict of ndarray
        For ``deep.gate.PartHead``: ``x_mean``, ``x_scale`` (P,), ``coef`` (P, K), ``intercept`` (K,).
    info : dict
        ``labels`` (the K part names, sorted), ``val_accuracy``, ``n_train``.
    """
    from sklearn.linear_model import LogisticRegression

    labels = sorted(set(map(str, train_parts)))
    if len(labels) < 2:
        raise ExportError(f"the part head needs training images of >= 2 body parts, got {labels}")
    y = np.searchsorted(labels, np.asarray(train_parts).astype(str))
    mean, scale = train_v.mean(0), train_v.std(0)
    scale = np.where(scale > 1e-12, scale, 1.0)
    clf = LogisticRegression(C=LOGISTIC_C, max_iter=5000, random_state=seed).fit((train_v - mean) / scale, y)
    params = {"x_mean": mean, "x_scale": scale, "coef": clf.coef_.T.astype(np.float64),
              "intercept": clf.intercept_.astype(np.float64)}
    if clf.coef_.shape[0] == 1:  # two classes: sklearn fits one column; the softmax needs both
        params["coef"] = np.hstack([-clf.coef_.T / 2, clf.coef_.T / 2])
        params["intercept"] = np.array([-clf.intercept_[0] / 2, clf.intercept_[0] / 2])
    z = ((val_v - mean) / scale) @ params["coef"] + params["intercept"]
    val_acc = float(np.mean(np.asarray(labels)[z.argmax(1)] == np.asarray(val_parts).astype(str))) if len(val_v) else None
    return params, {"labels": labels, "val_accuracy": val_acc, "n_train": len(train_v)}
