"""The data set's structure before any pixel: patients, studies, views, splits and labels.

Numbers follow MURA-v1.1 (Rajpurkar et al., table 1): studies per body part, abnormal
share per part, views per study, studies per patient.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edge.mura import MURA_DIRNAME, MURA_PARTS, PART_PREFIX
from murakit.data.synth.settings import SynthSettings
from murakit.errors import MurakitError

PARTS = MURA_PARTS  # the generator draws every MURA part
# Train studies per part and abnormal share per part in MURA-v1.1 (Rajpurkar et al., table 1).
PART_STUDIES = np.array([1754, 1935, 877, 2018, 592, 2821, 3460], dtype=float)
PART_ABNORMAL = {"ELBOW": 0.38, "FINGER": 0.34, "FOREARM": 0.33, "HAND": 0.26,
                 "HUMERUS": 0.46, "SHOULDER": 0.52, "WRIST": 0.38}
VIEW_COUNTS = (1, 2, 3, 4, 5)
VIEW_PROBS = (0.10, 0.30, 0.40, 0.15, 0.05)  # mean 2.75 views/study (MURA: 2.73)
STUDIES_PER_PATIENT = ((1, 2, 3), (0.82, 0.14, 0.04))


@dataclass(frozen=True)
class StudyPlan:
    """One study to render: where it goes and what it is (no pixels yet)."""

    index: int        # position in the plan; seeds the study's randomness
    split: str        # "train" | "valid"
    part: str         # one of PARTS
    patient: int      # 5-digit patient number, distinct between splits
    study: int        # study number within (patient, part), from 1
    label: int        # 1 = abnormal
    n_views: int

    @property
    def study_dir(self) -> str:
        """Study folder relative to the folder holding MURA-v1.1, with trailing slash."""
        kind = "positive" if self.label else "negative"
        return (f"{MURA_DIRNAME}/{self.split}/{PART_PREFIX}{self.part}/patient{self.patient:05d}/"
                f"study{self.study}_{kind}/")


def plan_studies(n_studies: int, seed: int = 0, settings: SynthSettings | None = None) -> list[StudyPlan]:
    """Draw the patient / study / view structure of the data set.

    Parameters
    ----------
    n_studies : int
        Number of studies (>= 1).
    seed : int
        Seed; the same seed gives the same plan.
    settings : SynthSettings, optional
        Uses ``valid_fraction`` and ``abnormal_scale`` (default: the defaults).

    Returns
    -------
    list of StudyPlan
        Sorted like the MURA CSVs (split, part, patient, study). Train patients are numbered
        from 1, valid patients continue after the last train patient.
    """
    check_n_studies(n_studies)
    settings = settings or SynthSettings()
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x5EED]))
    patients = []  # list of lists of (part, label, n_views)
    total = 0
    while total < n_studies:
        k = min(int(rng.choice(STUDIES_PER_PATIENT[0], p=STUDIES_PER_PATIENT[1])), n_studies - total)
        studies = []
        for _ in range(k):
            part = PARTS[int(rng.choice(len(PARTS), p=PART_STUDIES / PART_STUDIES.sum()))]
            label = int(rng.random() < min(0.95, PART_ABNORMAL[part] * settings.abnormal_scale))
            studies.append((part, label, int(rng.choice(VIEW_COUNTS, p=VIEW_PROBS))))
        patients.append(studies)
        total += k
    n_valid_patients = _valid_patient_count(patients, n_studies, settings.valid_fraction)
    plans = []
    for p_idx, studies in enumerate(patients):
        split = "valid" if p_idx >= len(patients) - n_valid_patients else "train"
        seen: dict[str, int] = {}
        for part, label, n_views in studies:
            seen[part] = seen.get(part, 0) + 1
            plans.append((split, part, p_idx + 1, seen[part], label, n_views))
    plans.sort(key=lambda p: (p[0] != "train", p[1], p[2], p[3]))
    return [StudyPlan(i, *p) for i, p in enumerate(plans)]


def check_n_studies(n_studies) -> None:
    """Raise MurakitError unless ``n_studies`` is a positive integer."""
    if isinstance(n_studies, bool) or not isinstance(n_studies, (int, np.integer)) \
            or n_studies < 1:
        raise MurakitError(f"number of studies must be a positive integer, got {n_studies!r}")


def _valid_patient_count(patients: list, n_studies: int, fraction: float) -> int:
    """Take patients from the end until ~``fraction`` of studies are valid (>=1 if n>=2 and fraction>0)."""
    target = max(1, round(fraction * n_studies)) if n_studies >= 2 and fraction > 0 else 0
    count, got = 0, 0
    for studies in reversed(patients[1:]):  # the first patient always stays in train
        if got >= target:
            break
        got += len(studies)
        count += 1
    return count
