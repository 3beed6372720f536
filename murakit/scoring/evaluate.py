"""The MURA protocol's metrics from a scored folder, without the prepared cache.

Labels come from a CSV of ``study,label`` rows (header optional; label 1 = abnormal, or the words
``normal``/``abnormal``, ``negative``/``positive``; a DICOM study is its StudyInstanceUID), such as
MURA's header-less ``{train,valid}_labeled_studies.csv`` (``MURA-v1.1/valid/.../study1_positive/,1``),
or are found next to the scored data: the nearest folder at or above an INPUT (or its
``MURA-v1.1/`` child) holding ``*_labeled_studies.csv``. Study ids match in MURA's form whatever
the top folder is called, with or without the trailing slash.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path, PurePosixPath

from edge.mura import MURA_DIRNAME, MURA_SPLITS, is_part_folder
from murakit.data.dicom_index import LABEL_WORDS
from murakit.errors import MurakitError
from murakit.scoring.tables import read_table

LABEL_GLOB = "*_labeled_studies.csv"


def label_key(study: str) -> str:
    """Study id as a lookup key: ``<split>/XR_<PART>/<patient>/<study>`` in the MURA layout,
    else the normalised path."""
    parts = PurePosixPath(os.path.normpath(study.replace("\\", "/").rstrip("/"))).parts
    if len(parts) >= 4 and parts[-4] in MURA_SPLITS and is_part_folder(parts[-3]):
        return "/".join(parts[-4:])
    return "/".join(parts)


def read_labels(paths) -> dict:
    """``{label_key(study): 0 or 1}`` from label CSVs.

    Raises
    ------
    MurakitError
        Unreadable file, or a row whose label is not 0 or 1.
    """
    out = {}
    for path in paths:
        try:
            with open(path, encoding="utf-8-sig", newline="") as f:
                rows = [[c.strip() for c in r] for r in csv.reader(f) if any(c.strip() for c in r)]
        except (OSError, UnicodeDecodeError, csv.Error) as e:
            raise MurakitError(f"{path}: cannot read labels ({e})") from None
        if rows and rows[0][-1].lower() == "label":
            rows = rows[1:]
        for n, row in enumerate(rows, 1):
            label = LABEL_WORDS.get(row[1].lower()) if len(row) > 1 else None
            if label is None:
                raise MurakitError(f"{path}: row {n} is not 'study,label' with label 0 or 1: {','.join(row)}")
            out[label_key(row[0])] = label
    return out


def find_label_files(inputs) -> list:
    """``*_labeled_studies.csv`` files next to the scored data (see the module docstring)."""
    found = []
    for arg in inputs:
        start = Path(arg).resolve()
        folders = [start] if start.is_dir() else []
        folders += [start / MURA_DIRNAME] if start.is_dir() else []
        folders += list(start.parents)
        for folder in folders:
            files = sorted(folder.glob(LABEL_GLOB)) if folder.is_dir() else []
            if files:
                found += [f for f in files if f not in found]
                break
    return found


def evaluate_rows(images: list, labels: dict) -> dict:
    """Protocol metrics (``metrics.json`` schema) of scored image rows against study labels.

    Images whose study has no label are left out and counted in ``counts.unlabeled_images``.

    Raises
    ------
    MurakitError
        No scored image has a label.
    """
    from murakit.evaluation.metrics import evaluate

    rows = [r for r in images if label_key(r["study"]) in labels]
    if not rows:
        raise MurakitError("none of the scored studies has a label (do the label file's study ids "
                           "match the images' folders?)")
    metrics = evaluate([labels[label_key(r["study"])] for r in rows], [r["probability"] for r in rows],
                       [r["study"] for r in rows], [r["part"] or "UNKNOWN" for r in rows],
                       rows[0]["threshold"])
    metrics["counts"]["unlabeled_images"] = len(images) - len(rows)
    return metrics


def evaluate_folder(out, labels=None) -> tuple:
    """Metrics of a ``murakit score`` folder; writes ``out/metrics.json``.

    Parameters
    ----------
    out : str or Path
        The folder ``murakit score --out`` wrote.
    labels : str or Path, optional
        Labels CSV; default: found next to the job's inputs.

    Returns
    -------
    (metrics dict, list of label files used)
    """
    from edge.atomic import write_text
    from murakit.evaluation.metrics import json_safe

    out = Path(out)
    job_file = out / "job.json"
    if not job_file.is_file():
        raise MurakitError(f"{out}: not a murakit score folder (no job.json)")
    job = json.loads(job_file.read_text(encoding="utf-8"))
    images = out / f"images.{job['format']}"
    if not images.is_file():
        raise MurakitError(f"{images}: missing; rerun murakit score to finish the job")
    files = [Path(labels)] if labels else find_label_files(job["inputs"])
    if not files:
        raise MurakitError(f"no {LABEL_GLOB} found next to the scored data; pass --labels CSV "
                           "(rows: study,label with label 1 = abnormal)")
    metrics = evaluate_rows(read_table(images, job["format"]), read_labels(files))
    metrics["labels"] = [str(f) for f in files]
    write_text(out / "metrics.json", json.dumps(json_safe(metrics), indent=2) + "\n")
    return metrics, files


def format_metrics(m: dict) -> str:
    """A few lines for the terminal: image and study metrics, kappa per body part."""
    keys = ("auroc", "kappa", "accuracy", "sensitivity", "specificity", "f1")
    c = m["counts"]
    lines = [(f"{c['images']} labelled images ({c['unlabeled_images']} without a label), {c['studies']} studies "
              f"({c['abnormal_studies']} abnormal), threshold {m['threshold']:.4f}"),
             f"{'':6s}" + "".join(f"{k:>12s}" for k in keys)]
    for level in ("image", "study"):
        lines.append(f"{level:6s}" + "".join(f"{m[level][k] + 0.0:12.4f}" for k in keys))
    parts = "  ".join(f"{p} {v['kappa']:.3f} (n={v['studies']})" for p, v in m["by_part"].items())
    lines.append(f"study kappa by part: {parts}")
    return "\n".join(lines)
