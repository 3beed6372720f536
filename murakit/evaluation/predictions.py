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


def read_predictions(path) -> dict:
    """The columns of a predictions file as arrays (a clear error when it is not one).

    Returns
    -------
    dict
        ``path``, ``study``, ``part`` (str arrays), ``label`` (int 0/1), ``probability``
        (float64 in [0, 1]), each of shape (N,), in file order.
    """
    import numpy as np

    from murakit.errors import MurakitError

    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            missing = set(COLUMNS) - set(reader.fieldnames or ())
            if missing:
                raise MurakitError(f"{path}: not a predictions file (missing columns: {', '.join(sorted(missing))})")
            rows = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise MurakitError(f"{path}: cannot read predictions ({e})") from None
    if not rows:
        raise MurakitError(f"{path}: no predictions in it")
    try:
        out = {"label": np.array([int(r["label"]) for r in rows]),
               "probability": np.array([float(r["probability"]) for r in rows])}
    except (TypeError, ValueError) as e:
        raise MurakitError(f"{path}: a label or probability is not a number ({e})") from None
    if not np.isin(out["label"], (0, 1)).all() or not (np.isfinite(out["probability"]).all()
                                                       and (0 <= out["probability"]).all()
                                                       and (out["probability"] <= 1).all()):
        raise MurakitError(f"{path}: labels must be 0/1 and probabilities in [0, 1]")
    for k in ("path", "study", "part"):
        out[k] = np.array([r[k] for r in rows])
    return out
