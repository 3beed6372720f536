"""The output folder of ``murakit score``: committed parts, resume, and the final files.

::

    DIR/job.json                  what this folder scores: model hash, format, inputs
    DIR/parts/part-NNNNN.<fmt>    result rows of whole batches, each file committed by rename
    DIR/images.<fmt>              path, study, part, probability, label, threshold, score, gate_score
    DIR/studies.<fmt>             study, part, n_views, probability (mean of views), label
    DIR/failures.csv              path, error, reason (gate: refused by the input gate), gate_score

Resume: a part is written under a temporary name and renamed, so after any kill the folder holds
only complete parts. A rerun reads them, skips every image they hold (scored or failed) and
scores the rest in the same batches an uninterrupted run would have used. The final files are
assembled from all parts in job order and written atomically, so a resumed run ends with exactly
the rows of an uninterrupted one.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

from edge.atomic import write_text
from murakit.errors import MurakitError
from murakit.scoring.tables import read_table, write_table
from murakit.scoring.work import FAILURE_COLUMNS, IMAGE_COLUMNS, PART_COLUMNS, STUDY_COLUMNS

KEY_FIELDS = ("model_sha256", "format", "inputs")


@dataclass
class Summary:
    """What a scoring run produced."""

    images: Path
    studies: Path
    failures: Path
    n_images: int
    n_studies: int
    n_failed: int
    n_scored_now: int
    seconds: float
    n_refused: int = 0  # of n_failed: refused by the input gate (failures.csv reason "gate")

    @property
    def images_per_second(self) -> float:
        return self.n_scored_now / max(self.seconds, 1e-9)


class ResultStore:
    """The output folder ``out`` for tables in ``fmt`` (see the module docstring)."""

    def __init__(self, out, fmt: str):
        self.root, self.fmt = Path(out), fmt
        self.parts = self.root / "parts"
        self.job_file = self.root / "job.json"
        self.images = self.root / f"images.{fmt}"
        self.studies = self.root / f"studies.{fmt}"
        self.failures = self.root / "failures.csv"

    def open(self, key: dict) -> None:
        """Create the folder, or check that it holds this job; drop temporary files of a killed run.

        Raises
        ------
        MurakitError
            The folder holds the results of another model, format or inputs.
        """
        if self.job_file.is_file():
            old = json.loads(self.job_file.read_text(encoding="utf-8"))
            differ = [k for k in KEY_FIELDS if old.get(k) != key[k]]
            if differ:
                raise MurakitError(f"{self.root} holds the results of another job ({', '.join(differ)} "
                                   "differ); choose another --out, or delete it to start over")
        elif self.root.exists() and any(self.root.iterdir()):
            raise MurakitError(f"{self.root} is not empty and holds no murakit score job; choose another --out")
        self.parts.mkdir(parents=True, exist_ok=True)
        for tmp in self.parts.glob(".tmp-*"):
            tmp.unlink()
        write_text(self.job_file, json.dumps(key, indent=2) + "\n")

    def part_files(self) -> list:
        return sorted(self.parts.glob(f"part-*.{self.fmt}"))

    def read_parts(self) -> list:
        """Every committed row, part by part."""
        return [row for p in self.part_files() for row in read_table(p, self.fmt)]

    def commit(self, rows: list) -> Path:
        """Write ``rows`` as the next part (atomically). Returns its path."""
        numbers = [int(p.name.split(".")[0].split("-")[1]) for p in self.part_files()]
        path = self.parts / f"part-{max(numbers, default=-1) + 1:05d}.{self.fmt}"
        write_table(path, rows, PART_COLUMNS, self.fmt)
        return path

    def assemble(self, jobs, predictor, n_scored_now: int, seconds: float) -> Summary:
        """Write the final files from the parts, in job order. Returns the summary.

        Raises
        ------
        MurakitError
            A job has no row in the parts (the run did not finish).
        """
        by_path = {r["path"]: r for r in self.read_parts()}
        missing = [j.path for j in jobs if j.path not in by_path]
        if missing:
            raise MurakitError(f"{len(missing)} images have no result yet (e.g. {missing[0]}); "
                               "rerun the same command to finish")
        rows = [by_path[j.path] for j in jobs]
        for r in rows:  # parts committed by a murakit before the gate lack its columns
            r.setdefault("score", r["probability"])
            r.setdefault("gate_score", None)
            r.setdefault("reason", "error" if r["error"] else "")
        images = [r for r in rows if not r["error"]]
        failures = [r for r in rows if r["error"]]
        studies = study_rows(images, predictor)
        write_table(self.images, images, IMAGE_COLUMNS, self.fmt)
        write_table(self.studies, studies, STUDY_COLUMNS, self.fmt)
        write_table(self.failures, failures, FAILURE_COLUMNS, "csv")
        return Summary(self.images, self.studies, self.failures, len(images), len(studies),
                       len(failures), n_scored_now, seconds, sum(f.get("reason") == "gate" for f in failures))


def study_rows(images: list, predictor) -> list:
    """Studies from image rows: mean of the views' raw scores (MURA protocol), sorted by id.

    The study's probability is that mean through the card's study calibrator, and it is
    labelled ``labels[1]`` when the mean is strictly above the operating point's raw threshold
    (the study part's own one for a per-part operating point). The mean is ``math.fsum``-exact,
    so it does not depend on the order the views were scored in. Failed and refused views are
    not counted: ``n_views`` says how many views the mean is over.
    """
    from edge.trust import calibrate

    groups = {}
    for r in images:
        groups.setdefault(r["study"], []).append(r)
    out = []
    for study in sorted(groups):
        views = groups[study]
        raw = math.fsum(v["probability"] if v.get("score") is None else v["score"] for v in views) / len(views)
        part = views[0]["part"]
        out.append({"study": study, "part": part, "n_views": len(views),
                    "probability": calibrate(predictor.card, raw, "study"),
                    "label": predictor.labels[int(raw > predictor.raw_threshold(part or None))]})
    return out


class PartWriter:
    """Collects result rows of whole batches and commits them as parts.

    A part is committed when it holds ``rows`` rows or ``seconds`` passed since the last one,
    and on :meth:`close` (also after Ctrl-C or an error, so finished batches are never lost).
    """

    def __init__(self, store: ResultStore, rows: int = 4096, seconds: float = 10.0):
        self.store, self.max_rows, self.seconds = store, rows, seconds
        self.buffer, self.last = [], time.monotonic()

    def add(self, rows: list) -> None:
        self.buffer.extend(rows)
        if len(self.buffer) >= self.max_rows or time.monotonic() - self.last >= self.seconds:
            self.flush()

    def flush(self) -> None:
        if self.buffer:
            self.store.commit(self.buffer)
        self.buffer, self.last = [], time.monotonic()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.flush()
        return False


def job_key(inputs, card, fmt: str, answer: dict | None = None) -> dict:
    """What identifies a scoring job (a rerun with the same key resumes); ``answer``: the gate
    mode and operating point when not the defaults (so older output folders keep their key)."""
    answer = answer or {}
    return {"model_sha256": card.weights_sha256, "format": fmt,
            "inputs": [os.path.abspath(str(i)) for i in inputs],
            "threshold": card.threshold, "labels": list(card.labels), **answer}
