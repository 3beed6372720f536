"""AUROC, the one implementation every package uses (training, export gates, the protocol).

It lives at the bottom of the dependency chain (numpy only) so that ``deep`` (validation
during training), ``export`` (the INT8 gate) and ``murakit`` (the MURA protocol) share it.
"""

from __future__ import annotations

import numpy as np


def auroc(y, p) -> float:
    """Area under the ROC curve (Mann-Whitney U with average ranks for ties).

    Parameters
    ----------
    y : array-like of {0, 1}, shape (N,)
    p : array-like of float, shape (N,)

    Returns
    -------
    float in [0, 1], or NaN when only one class is present.
    """
    y = np.asarray(y).astype(bool)
    p = np.asarray(p, dtype=np.float64)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(p, kind="mergesort")
    sp = p[order]
    ranks = np.empty(len(p), dtype=np.float64)
    # average rank within each run of tied scores
    _, start, counts = np.unique(sp, return_index=True, return_counts=True)
    avg = start + (counts + 1) / 2.0
    ranks[order] = np.repeat(avg, counts)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))
