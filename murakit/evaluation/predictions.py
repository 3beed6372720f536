"""Per-image predictions of a trained model on a split, as one CSV format.

``RUN/<model>/predictions_<split>.csv``: ``path,study,part,label,probability`` (probability with
8 decimals), one row per image in the order given.
"""

from __future__ import annotations

import csv
from pathlib import Path

from edge.atomic import atomic_write

COLUMNS = ("path", "study", "part", "label", "probability")


def write_predictions(path, prep, positions, probs) -> Path:
    """Write predictions of the prepared images at ``positions`` atomically; returns ``path``.

    Parameters
    ----------
    path : str or Path
    prep : murakit.data.prepared.Prepared
    positions : int array (M,)
        Positions into the cache's per-image arrays.
    probs : float array (M,) in [0, 1]
    """
    path = Path(path)
    with atomic_write(path, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(COLUMNS)
        for i, p in zip(positions, probs):
            w.writerow([prep.path[i], prep.study[i], prep.part[i], int(prep.label[i]), f"{float(p):.8f}"])
    return path
