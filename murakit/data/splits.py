"""Patient-disjoint train / val / test splits.

MURA's ``valid`` split is the held-out test set (the real test set is hidden). MURA's
``train`` is split by patient into ``train`` and ``val`` (val picks the epoch and the
threshold). A class-folder tree (MURA split ``all``, one patient per image) is split at random
into train / val / test with ``val_fraction`` and ``test_fraction``.

Patients are shuffled with a seeded generator within two strata (patients with any abnormal
study, and the rest), so the label mix of val roughly matches train. Same records + same
seed -> same split.
"""

from __future__ import annotations

import numpy as np

SPLITS = ("train", "val", "test")


def _patient_strata(records) -> dict:
    """``{0: [patients...], 1: [patients...]}``: 1 = the patient has an abnormal image."""
    worst = {}
    for r in records:
        worst[r.patient] = max(worst.get(r.patient, 0), int(r.label))
    strata = {0: [], 1: []}
    for patient in sorted(worst):
        strata[worst[patient]].append(patient)
    return strata


def _take(total: int, left: int, fraction: float) -> int:
    """How many patients (of ``total``, ``left`` still free) a held-out split gets:
    ``round(total * fraction)``, at least 1 if ``fraction > 0``, always leaving 1 for train."""
    if fraction <= 0 or left < 2:
        return 0
    return min(left - 1, max(1, round(total * fraction)))


def split_patients(records, seed: int, fractions: dict) -> dict:
    """Assign every patient of ``records`` to a split.

    Parameters
    ----------
    records : sequence of ImageRecord
    seed : int
    fractions : dict
        ``{held-out split name: fraction of patients}``, assigned in order; the remainder
        goes to ``"train"``.

    Returns
    -------
    dict
        ``patient -> split name``.
    """
    rng = np.random.default_rng(seed)
    out = {}
    for patients in _patient_strata(records).values():
        order = [patients[i] for i in rng.permutation(len(patients))]
        start = 0
        for name, fraction in fractions.items():
            k = _take(len(order), len(order) - start, fraction)
            out.update((p, name) for p in order[start:start + k])
            start += k
        out.update((p, "train") for p in order[start:])
    return out


def assign_splits(records, seed: int = 0, val_fraction: float = 0.1,
                  test_fraction: float = 0.2) -> np.ndarray:
    """The train / val / test split of every record.

    Parameters
    ----------
    records : sequence of ImageRecord
        From :func:`murakit.data.mura.index_dataset`.
    seed : int
        Seed of the patient shuffle.
    val_fraction : float
        Fraction of MURA-train patients (per label stratum) that go to ``val``.
    test_fraction : float
        Only for class-folder trees (MURA split ``all``): fraction that goes to ``test``.

    Returns
    -------
    ndarray of str, shape (N,)
        ``"train"``, ``"val"`` or ``"test"``, aligned with ``records``.
    """
    if not 0.0 <= val_fraction < 1.0 or not 0.0 <= test_fraction < 1.0:
        raise ValueError("val_fraction and test_fraction must be in [0, 1)")
    mura_train = [r for r in records if r.split == "train"]
    pooled = [r for r in records if r.split == "all"]
    assigned = split_patients(mura_train, seed, {"val": val_fraction})
    assigned.update(split_patients(pooled, seed, {"test": test_fraction, "val": val_fraction}))
    out = [("test" if r.split == "valid" else assigned[r.patient]) for r in records]
    return np.array(out, dtype="<U5")
