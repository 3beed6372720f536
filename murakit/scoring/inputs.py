"""What to score: INPUT arguments -> a deterministic list of (path, study, part) jobs.

An INPUT is one of

* an image file;
* a folder, walked recursively (hidden folders and AppleDouble ``._*`` files skipped). A MURA-v1.1
  root is a folder like any other: its views sit in ``patientNNNNN/studyK_*/`` folders;
* a ``.csv`` file listing image paths in its first column, one per line, header optional
  (MURA's header-less ``*_image_paths.csv`` works as is). Relative paths are resolved against
  the CSV's folder or, failing that, the nearest of its parent folders where they exist (MURA's
  paths start with ``MURA-v1.1/``, one level above the CSV).

A folder of views is a study (the MURA protocol averages a study's views). The study id is the
view's folder as written, except in the MURA layout (``.../<train|valid>/XR_<PART>/<patient>/
<study>/<image>``), where it is MURA's own relative study path, ``MURA-v1.1/valid/XR_ELBOW/
patient11186/study1_positive``, the key of ``*_labeled_studies.csv``. The part is ``<PART>`` of
the nearest ``XR_<PART>`` folder, "" when unknown.

:func:`study_key` is the hook that lets a file's content override that grouping: DICOM views
group by StudyInstanceUID. The engines call it in their workers, where the file is read anyway.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath

from edge.loader import is_image_file
from edge.mura import MURA_DIRNAME, MURA_SPLITS, is_part_folder
from murakit.errors import MurakitError


@dataclass(frozen=True)
class Job:
    """One image to score.

    Attributes
    ----------
    path : str
        The file, as the user wrote it (joined with the walked folders); the row key of every
        output file.
    study : str
        Study id (see the module docstring).
    part : str
        Body part (``"ELBOW"``, ...), "" when unknown.
    """

    path: str
    study: str
    part: str


def _posix(path: str) -> str:
    return path.replace(os.sep, "/") if os.sep != "/" else path


def study_and_part(path: str) -> tuple[str, str]:
    """The default (study, part) of an image path (see the module docstring)."""
    parts = PurePosixPath(_posix(os.path.normpath(path))).parts
    part = next((p[3:].upper() for p in reversed(parts[:-1]) if is_part_folder(p)), "")
    if len(parts) >= 5 and parts[-5] in MURA_SPLITS and is_part_folder(parts[-4]):
        top = parts[-6] if len(parts) >= 6 else MURA_DIRNAME
        return "/".join((top, *parts[-5:-1])), part
    return str(PurePosixPath(*parts[:-1])) if len(parts) > 1 else ".", part


def study_key(job: Job) -> Job:
    """Hook: the job's final study and part, decided from the file itself.

    Runs in the scoring workers. A DICOM file (recognised by content, as ``edge-predict`` does)
    with a StudyInstanceUID joins the study of that UID wherever it lies, with the MURA part of
    its BodyPartExamined when that maps to one; PNG/JPEG views (and DICOM without a UID) keep
    their folder's study.

    Raises
    ------
    edge.errors.ImageError
        A DICOM header pydicom cannot parse, or pydicom not installed (names the ``dicom`` extra).
    """
    from edge.predictor import dicom_info

    info = dicom_info(job.path)
    if info is None or info.study_uid is None:
        return job
    return replace(job, study=info.study_uid, part=info.part or job.part)


def make_job(path: str) -> Job:
    study, part = study_and_part(path)
    return Job(path, study, part)


def _walk(folder: str):
    """Image files under ``folder`` in sorted order (hidden folders skipped)."""
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            path = os.path.join(dirpath, name)
            if is_image_file(path):  # by suffix, or by content for extension-less DICOM
                yield path


def read_path_list(csv_path: str) -> list[str]:
    """Image paths listed in a CSV's first column (header ``path`` or none), resolved."""
    with open(csv_path, encoding="utf-8-sig", newline="") as f:
        cells = [row[0].strip() for row in csv.reader(f) if row and row[0].strip()]
    if cells and cells[0].lower() in ("path", "paths", "image", "filename", "file"):
        cells = cells[1:]
    bases = [os.path.dirname(csv_path) or "."]
    parent = Path(bases[0]).resolve().parent
    bases += [os.path.relpath(p) if not os.path.isabs(csv_path) else str(p)
              for p in (parent, *parent.parents)]
    return [_resolve(cell, bases) for cell in cells]


def _resolve(cell: str, bases: list) -> str:
    """``cell`` joined with the first base where it exists (the CSV's folder when none does);
    the base that worked is moved to the front, so a long list resolves in one stat per line."""
    if os.path.isabs(cell):
        return cell
    for i, base in enumerate(bases):
        candidate = os.path.normpath(os.path.join(base, cell))
        if os.path.exists(candidate):
            bases.insert(0, bases.pop(i))
            return candidate
    return os.path.normpath(os.path.join(bases[0], cell))


def _paths_of(arg: str) -> list[str]:
    if os.path.isdir(arg):
        return list(_walk(arg))
    if not os.path.exists(arg):
        raise MurakitError(f"{arg}: no such file or folder")
    if arg.lower().endswith(".csv"):
        try:
            return read_path_list(arg)
        except (OSError, UnicodeDecodeError, csv.Error) as e:
            raise MurakitError(f"{arg}: cannot read this list of image paths ({e})") from None
    return [arg]


def collect_jobs(inputs) -> list[Job]:
    """Jobs for INPUT arguments, in input order, each file once.

    Parameters
    ----------
    inputs : list of str
        Image files, folders (walked) and CSV lists of image paths.

    Returns
    -------
    list of Job
        Deterministic for the same inputs and files on disk. Listed files that do not exist are
        kept: scoring reports them in ``failures.csv``.

    Raises
    ------
    MurakitError
        An INPUT that does not exist, an unreadable CSV, or no image at all.
    """
    jobs, seen = [], set()
    for arg in inputs:
        for path in _paths_of(str(arg)):
            key = os.path.abspath(path)
            if key not in seen:
                seen.add(key)
                jobs.append(make_job(path))
    if not jobs:
        raise MurakitError(f"no images (PNG, JPEG, DICOM) found in {', '.join(map(str, inputs))}")
    return jobs

