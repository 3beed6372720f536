"""The per-image work both engines run: the model's own preprocessing, then onnxruntime in batches.

Everything about how an image becomes a probability comes from the model's card through
:class:`edge.predictor.Predictor` and :func:`edge.preprocess.preprocess` (the one preprocessing
path ``edge-predict`` uses), so ``murakit score`` and ``edge-predict`` agree per image.

A result row is a dict with the columns of :data:`PART_COLUMNS`: ``error`` is "" for a scored
image; a failed image has ``probability`` and ``threshold`` None, ``label`` "" and a one-line
``error``, and ``reason`` says why: ``gate`` (the input gate refused it: not an upper-extremity
radiograph) or ``error`` (unreadable, damaged model output, ...). ``probability`` is calibrated,
``score`` the model's raw output, ``gate_score`` the input gate's score (None without a gate).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edge.errors import EdgeError, first_line
from edge.preprocess import preprocess
from edge.trust import refusal_text
from murakit.scoring.inputs import Job, study_key

IMAGE_COLUMNS = ("path", "study", "part", "probability", "label", "threshold", "score", "gate_score")
STUDY_COLUMNS = ("study", "part", "n_views", "probability", "label")
FAILURE_COLUMNS = ("path", "error", "reason", "gate_score")
PART_COLUMNS = (*IMAGE_COLUMNS, "error", "reason")


@dataclass(frozen=True)
class ModelSpec:
    """What each scoring worker loads: the model file and how to answer (gate mode, operating point)."""

    path: str
    gate: str = "refuse"
    operating_point: str | None = None

    def load(self, threads: int = 1):
        from edge.predictor import Predictor

        return Predictor(self.path, threads=threads, gate=self.gate, operating_point=self.operating_point)


def failure_row(job: Job, error: str, reason: str = "error", gate_score=None) -> dict:
    return {"path": job.path, "study": job.study, "part": job.part, "probability": None,
            "label": "", "threshold": None, "score": None, "gate_score": gate_score, "error": error,
            "reason": reason}


def error_text(job: Job, e: Exception) -> str:
    """One line for a failed image: edge's own message, or the exception's first line."""
    if isinstance(e, EdgeError):
        return first_line(e, 300)
    return f"{job.path}: unexpected failure ({type(e).__name__}: {first_line(e)})"


def preprocess_jobs(jobs, config):
    """Preprocess a batch of jobs with the model's config.

    Parameters
    ----------
    jobs : list of Job
    config : edge.preprocess.PreprocessConfig
        The card's preprocessing.

    Returns
    -------
    kept : list of Job
        The jobs that decoded, after :func:`~murakit.scoring.inputs.study_key`.
    images : ndarray of uint8, shape (len(kept), S, S)
    failures : list of dict
        Failure rows of the jobs that did not decode.
    """
    kept, images, failures = [], [], []
    for job in jobs:
        try:
            job = study_key(job)
            images.append(preprocess(job.path, config))
            kept.append(job)
        except Exception as e:  # noqa: BLE001  one bad file never stops the run
            failures.append(failure_row(job, error_text(job, e)))
    size = config.size
    stack = np.stack(images) if images else np.zeros((0, size, size), np.uint8)
    return kept, stack, failures


def score_images(predictor, jobs, images: np.ndarray) -> list:
    """Rows for preprocessed images: one onnxruntime call for the whole batch.

    Parameters
    ----------
    predictor : edge.predictor.Predictor
    jobs : list of Job
        One per image.
    images : ndarray of uint8, shape (N, S, S)

    Returns
    -------
    list of dict
        A scored row per image, or a failure row where the model's output is not a number in
        [0, 1] (a damaged model is an error for the image, never a label).
    """
    if not jobs:
        return []
    outputs = predictor.run(predictor.model_input(images))
    rows = []
    for i, job in enumerate(jobs):
        try:
            a = predictor.answer(job.path, outputs, i)  # calibrated; checks the output is in [0, 1]
        except EdgeError as e:
            rows.append(failure_row(job, first_line(e, 300)))
            continue
        gate_score = a.gate["score"] if a.gate else None
        if a.refused:
            rows.append(failure_row(job, refusal_text(job.path, a.gate), "gate", gate_score))
            continue
        rows.append({"path": job.path, "study": job.study, "part": job.part, "probability": a.probability,
                     "label": a.label, "threshold": a.threshold, "score": a.score, "gate_score": gate_score,
                     "error": "", "reason": ""})
    return rows


def score_jobs(predictor, jobs) -> list:
    """Preprocess and score a batch of jobs; rows in the jobs' order (failures included)."""
    kept, images, failures = preprocess_jobs(jobs, predictor.config)
    by_path = {r["path"]: r for r in failures + score_images(predictor, kept, images)}
    return [by_path[j.path] for j in jobs]
