"""Index a DICOM tree (any folder layout) plus a labels CSV into murakit's image records.

``murakit prepare DICOM_ROOT --labels labels.csv`` reads every DICOM file under the root (by
content, so extension-less PACS exports count; hidden / AppleDouble files and DICOMDIR are
skipped) and labels each study from the CSV::

    study,label
    1.2.840.113619.2.55.3.2831164356.1001.1,1      <- a StudyInstanceUID
    patient7/2021-03-01,0                          <- or a folder, relative to DICOM_ROOT

A header row is optional; labels are ``0``/``1`` (or ``normal``/``abnormal``,
``negative``/``positive``). A folder label covers every file below that folder; a UID label
wins over a folder label. The study id is the StudyInstanceUID (the folder when a file has
none), the body part comes from BodyPartExamined (``UNKNOWN`` when it does not map to a MURA
part), and the MURA split is ``all`` (split by patient into train / val / test later).

Privacy: patients are told apart by PatientID only in memory, to keep every patient's studies
in one split; the index holds pseudonyms (``patient00001``, ... in the order the walk first
meets each patient), never an identifying value.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

from murakit.errors import MurakitError

LABEL_WORDS = {"0": 0, "1": 1, "normal": 0, "abnormal": 1, "negative": 0, "positive": 1}
_TAGS = ["StudyInstanceUID", "PatientID", "BodyPartExamined", "Rows", "Columns", "SOPClassUID"]


def read_labels(path) -> dict:
    """``{study UID or folder (POSIX, no leading/trailing slash): 0/1}`` from a labels CSV.

    Raises
    ------
    MurakitError
        Missing file, a row without a valid label (the header row excepted), or no rows.
    """
    from murakit.data.mura import read_csv_rows

    path = Path(path)
    if not path.is_file():
        raise MurakitError(f"{path}: no such labels file")
    out = {}
    for i, row in enumerate(read_csv_rows(path)):
        label = LABEL_WORDS.get(row[1].strip().lower()) if len(row) > 1 else None
        if label is None:
            if i == 0:
                continue  # a header such as "study,label"
            raise MurakitError(f"{path}: line {i + 1}: expected 'study UID or folder,label' with label 0/1")
        out[_key(row[0])] = label
    if not out:
        raise MurakitError(f"{path}: no labelled studies")
    return out


def _key(s: str) -> str:
    return s.strip().replace("\\", "/").strip("/").removeprefix("./")


def _header(path: Path) -> dict | None:
    """The few elements the index needs (PatientID stays in memory), or None if unparseable."""
    import pydicom

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(path, stop_before_pixels=True, force=True, specific_tags=_TAGS)
            return {t: ds.get(t) for t in _TAGS}
    except Exception:  # noqa: BLE001  any unparseable file is reported by path, never by content
        return None


def _walk(root: Path):
    """Sorted DICOM files under ``root`` (by content), skipping hidden entries and DICOMDIR."""
    from edge.dicom import is_dicom_file

    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for f in sorted(filenames):
            p = Path(dirpath) / f
            if not f.startswith(".") and f != "DICOMDIR" and is_dicom_file(p):
                yield p


def _label_for(study: str, rel: str, labels: dict):
    if study in labels:
        return labels[study]
    parts = rel.split("/")[:-1]
    for k in range(len(parts), 0, -1):  # the nearest labelled ancestor folder
        folder = "/".join(parts[:k])
        if folder in labels:
            return labels[folder]
    return None


def index_dicom_tree(root, labels_csv):
    """Index a DICOM tree with a labels CSV (see the module docstring).

    Returns
    -------
    murakit.data.mura.Dataset
        ``layout = "dicom"``; problems list unlabelled studies, labels without images,
        unreadable files (``bad_lines``) and non-image DICOM objects (``not_images``).

    Raises
    ------
    MurakitError
        Missing root, pydicom not installed, a bad labels file, or no usable image.
    """
    from edge.dicom import map_body_part
    from murakit.data.mura import Dataset, ImageRecord, Problems

    root = Path(root).expanduser().resolve()
    if not root.is_dir():
        raise MurakitError(f"{root}: no such data folder")
    try:
        import pydicom  # noqa: F401
    except ImportError:
        raise MurakitError("reading DICOM needs the dicom extra: pip install 'murakit[dicom]'") from None
    labels = read_labels(labels_csv)
    problems, records, patients, seen = Problems(), [], {}, set()
    for path in _walk(root):
        rel = path.relative_to(root).as_posix()
        h = _header(path)
        if h is None:
            problems.bad_lines.append(f"{rel}: unreadable DICOM header")
            continue
        if not h["Rows"] or not h["Columns"]:
            problems.not_images.append(rel)
            continue
        study = str(h["StudyInstanceUID"] or "").strip() or rel.rsplit("/", 1)[0]
        seen.add(study)
        label = _label_for(study, rel, labels)
        if label is None:
            if study not in problems.unlabeled_studies:
                problems.unlabeled_studies.append(study)
            continue
        who = str(h["PatientID"] or "").strip() or f"study:{study}"
        patient = patients.setdefault(who, f"patient{len(patients) + 1:05d}")
        part = map_body_part(h["BodyPartExamined"]) or "UNKNOWN"
        records.append(ImageRecord("all", part, patient, study, str(path), rel, label))
    used_folders = {"/".join(r.relpath.split("/")[:k]) for r in records for k in range(1, r.relpath.count("/") + 1)}
    problems.labels_without_images.extend(k for k in labels if k not in seen and k not in used_folders)
    if not records:
        extra = "; ".join(problems.lines())
        raise MurakitError(f"{root}: found no labelled DICOM images" + (f": {extra}" if extra else ""))
    return Dataset(root, "dicom", records, problems)
