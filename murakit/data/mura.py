"""Index a MURA-v1.1 tree (or a plain class-folder tree) into one flat list of image records.

Three layouts are accepted, tried in this order:

``mura``
    ``[ROOT/]MURA-v1.1/{train,valid}/XR_<PART>/patientNNNNN/studyK_<positive|negative>/imageN.png``.
    Per MURA split, the header-less ``<split>_image_paths.csv`` (one path per line, relative to
    the folder that contains ``MURA-v1.1``) and ``<split>_labeled_studies.csv``
    (``MURA-v1.1/.../studyK_positive/,1``; label 1 = abnormal) are used when present. Without
    them the folders are walked and a study's label comes from its ``_positive`` /
    ``_negative`` suffix.
``classes``
    ``ROOT/normal/**/*.png`` and ``ROOT/abnormal/**/*.png`` (as the seed's
    ``dataset_preprocessor.py`` wrote them). Each image is its own study and patient, body part
    ``UNKNOWN``, MURA split ``all``; :func:`murakit.data.splits.assign_splits` then splits them at
    random (seeded) into train / val / test.

Files are parsed leniently (BOM, CRLF, blank lines, missing trailing slash, ``\\`` separators),
but nothing is dropped silently: listed-but-missing images, studies without a label, labels
without images, on-disk images absent from the CSV and label disagreements are counted in
:class:`Problems`. A CSV that is not UTF-8 text, or not CSV at all (a field over
``csv.field_size_limit()``), stops indexing with one line naming the file and line.

Every indexed image resolves inside the data root: a path with ``..`` segments, or one that a
symbolic link (to a file or a folder) leads outside the root, is refused and counted
(``outside_root``), never labelled and trained on.
"""

from __future__ import annotations

import csv
import io
import math
import os
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from edge.loader import is_image_file
from edge.mura import MURA_DIRNAME, MURA_SPLITS, is_part_folder
from murakit.errors import MurakitError

CLASS_DIRS = {"normal": 0, "abnormal": 1}
ANNOTATIONS_CSV = "synth_annotations.csv"
MAX_CSV_BYTES = 256 * 1024 * 1024  # MURA's largest CSV is ~3 MB


@dataclass(frozen=True)
class ImageRecord:
    """One radiograph (a view) of one study.

    Attributes
    ----------
    split : str
        MURA split: ``"train"`` or ``"valid"`` (``"all"`` for a class-folder tree).
    part : str
        Body part, e.g. ``"ELBOW"`` (``"UNKNOWN"`` for a class-folder tree).
    patient : str
        Patient id, e.g. ``"patient00011"``.
    study : str
        Unique study id, e.g. ``"XR_ELBOW/patient00011/study1_negative"``.
    path : str
        Absolute path of the image file.
    relpath : str
        Path relative to the data root, POSIX separators, as written in MURA's CSVs.
    label : int
        1 = abnormal, 0 = normal.
    """

    split: str
    part: str
    patient: str
    study: str
    path: str
    relpath: str
    label: int


@dataclass(frozen=True)
class Annotation:
    """Ground truth of a synthetic image (``synth_annotations.csv``), in original pixels.

    ``inverted`` is None when unknown; ``bbox`` is ``(x0, y0, x1, y1)`` or None when the
    image shows no finding.
    """

    inverted: bool | None
    finding: str
    bbox: tuple[float, float, float, float] | None


@dataclass
class Problems:
    """Data problems found while indexing; each list holds relative paths or study ids."""

    missing_images: list[str] = field(default_factory=list)
    unlabeled_studies: list[str] = field(default_factory=list)
    labels_without_images: list[str] = field(default_factory=list)
    unlisted_images: list[str] = field(default_factory=list)
    label_conflicts: list[str] = field(default_factory=list)
    bad_lines: list[str] = field(default_factory=list)
    patients_in_both_splits: list[str] = field(default_factory=list)
    not_images: list[str] = field(default_factory=list)
    outside_root: list[str] = field(default_factory=list)

    def counts(self) -> dict:
        """``{problem name: count}`` for every problem kind (zeros included)."""
        return {k: len(v) for k, v in vars(self).items()}

    def to_dict(self, max_examples: int = 20) -> dict:
        """Counts plus up to ``max_examples`` examples per non-empty kind (for JSON)."""
        return {k: {"count": len(v), "examples": v[:max_examples]} for k, v in vars(self).items()}

    def lines(self) -> list[str]:
        """Human-readable lines, one per non-empty problem kind."""
        texts = {
            "missing_images": "images listed in a CSV but missing on disk (skipped)",
            "unlabeled_studies": "studies without a label (their images are skipped)",
            "labels_without_images": "labelled studies with no image",
            "unlisted_images": "images on disk not listed in the image-paths CSV (ignored)",
            "label_conflicts": "studies whose CSV label contradicts the folder name (CSV wins)",
            "bad_lines": "unparseable CSV lines (skipped)",
            "patients_in_both_splits": "patients in both MURA train and valid",
            "not_images": "DICOM objects that are not images (SR, RT, ...; ignored)",
            "outside_root": "paths with ../ or symlinks leading outside the data root (refused)",
        }
        out = []
        for k, v in vars(self).items():
            if v:
                out.append(f"{len(v)} {texts[k]}, e.g. {v[0]}")
        return out


@dataclass
class Dataset:
    """An indexed data set.

    Attributes
    ----------
    root : Path
        Data root: the folder that ``ImageRecord.relpath`` is relative to.
    layout : str
        ``"mura-csv"``, ``"mura-folders"`` or ``"classes"``.
    records : list of ImageRecord
        Usable images (on disk, with a label), in a stable order.
    problems : Problems
    annotations : dict
        ``relpath -> Annotation`` from ``synth_annotations.csv``; empty for real data.
    """

    root: Path
    layout: str
    records: list[ImageRecord]
    problems: Problems
    annotations: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.records)


# ---------------------------------------------------------------------------- file helpers

def read_csv_text(path: Path) -> str:
    """The text of a data-set CSV (BOM dropped), or one MurakitError line naming file and line.

    Raises
    ------
    MurakitError
        Not a regular file, larger than :data:`MAX_CSV_BYTES`, unreadable, or not UTF-8.
    """
    path = Path(path)
    if not path.is_file():
        raise MurakitError(f"{path}: not a file (a MURA CSV is expected here)")
    try:
        if path.stat().st_size > MAX_CSV_BYTES:
            raise MurakitError(f"{path}: {path.stat().st_size:,} bytes, too large for a MURA CSV")
        data = path.read_bytes()
    except OSError as e:
        raise MurakitError(f"{path}: cannot read ({e.strerror or e})") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        raise MurakitError(f"{path} line {line}: not UTF-8 text ({e.reason} at byte {e.start}); "
                           "MURA's CSVs are UTF-8") from None


def csv_rows(path: Path, text: str, reader=csv.reader):
    """Yield (line number, row) of ``text`` read by ``reader``; csv errors become MurakitError."""
    it = reader(io.StringIO(text, newline=""))
    while True:
        try:
            row = next(it)
        except StopIteration:
            return
        except csv.Error as e:
            line = getattr(it, "line_num", 0) or getattr(getattr(it, "reader", None), "line_num", 0)
            raise MurakitError(f"{path} line {line}: not a MURA CSV ({e})") from None
        yield getattr(it, "line_num", 0), row


def read_csv_rows(path: Path) -> list[list[str]]:
    """Rows of a small CSV, tolerant of a BOM, CRLF, blank lines and stray whitespace."""
    rows = [[c.strip() for c in row] for _, row in csv_rows(path, read_csv_text(path))]
    return [r for r in rows if any(r)]


def _visible_dirs(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


# ---------------------------------------------------------------------------- MURA layout

def find_mura_dir(root: Path) -> Path | None:
    """The ``MURA-v1.1`` folder for ``root`` (root itself or its child), or None."""
    if (root / MURA_DIRNAME).is_dir():
        return root / MURA_DIRNAME
    has_csv = any((root / f"{s}_image_paths.csv").is_file() for s in MURA_SPLITS)
    has_split = any((root / s).is_dir() for s in MURA_SPLITS)
    if root.name == MURA_DIRNAME or has_csv or has_split:
        return root
    return None


def inside_root(root: Path, rel: str) -> bool:
    """True when ``root / rel`` has no ``..`` segment and resolves (symlinks followed) inside ``root``.

    ``root`` must be resolved already (:func:`index_dataset` resolves it).
    """
    if ".." in rel.replace("\\", "/").split("/"):
        return False
    return Path(os.path.realpath(root / rel)).is_relative_to(root)


def normalise_relpath(raw: str, mura_name: str) -> str | None:
    """Map a path from a MURA CSV to ``<mura_name>/<split>/...`` (POSIX), or None.

    The official files write ``MURA-v1.1/train/XR_.../image1.png``; copies differ in the
    leading folder name, separators or a ``./`` prefix, so we anchor on the split folder.
    """
    parts = [p for p in raw.replace("\\", "/").split("/") if p not in ("", ".")]
    for i, p in enumerate(parts):
        if p in MURA_SPLITS and i + 1 < len(parts):
            return str(PurePosixPath(mura_name, *parts[i:]))
    return None


def parse_study(relstudy: str) -> tuple[str, str, str, str]:
    """``MURA-v1.1/train/XR_ELBOW/patient00011/study1_negative`` ->
    (split, part, patient, study id ``XR_ELBOW/patient00011/study1_negative``)."""
    parts = relstudy.split("/")
    split, xr, patient, study = parts[1], parts[2], parts[3], parts[4]
    part = xr[3:] if is_part_folder(xr) else xr
    return split, part.upper(), patient, f"{xr}/{patient}/{study}"


def label_from_name(study_dir: str) -> int | None:
    """1 for ``*_positive``, 0 for ``*_negative``, else None."""
    name = study_dir.rstrip("/").rsplit("/", 1)[-1].lower()
    if name.endswith("_positive"):
        return 1
    if name.endswith("_negative"):
        return 0
    return None


def _walk_images(mura_dir: Path, split: str) -> list[str]:
    """Relative paths of the images in ``<split>/XR_*/patient*/study*/`` (sorted)."""
    out = []
    for part_dir in _visible_dirs(mura_dir / split):
        for patient_dir in _visible_dirs(part_dir):
            for study_dir in _visible_dirs(patient_dir):
                for f in sorted(os.listdir(study_dir)):
                    if is_image_file(f) and (study_dir / f).is_file():
                        out.append(f"{mura_dir.name}/{split}/{part_dir.name}/{patient_dir.name}/"
                                   f"{study_dir.name}/{f}")
    return out


def _listed_images(mura_dir: Path, split: str, problems: Problems) -> list[str] | None:
    """Relative image paths from ``<split>_image_paths.csv``, or None without that file."""
    path = mura_dir / f"{split}_image_paths.csv"
    if not path.exists():  # a folder or device in its place is an error, not "no CSV"
        return None
    out = []
    for row in read_csv_rows(path):
        rel = normalise_relpath(row[0], mura_dir.name)
        if rel is None or rel.count("/") < 5 or not is_image_file(rel.rsplit("/", 1)[-1]):
            problems.bad_lines.append(f"{path.name}: {','.join(row)[:200]}")
        elif not inside_root(mura_dir.parent, rel):
            problems.outside_root.append(rel)
        else:
            out.append(rel)
    return list(dict.fromkeys(out))  # drop duplicate lines, keep order


def _listed_labels(mura_dir: Path, split: str, problems: Problems) -> dict | None:
    """``relstudy -> label`` from ``<split>_labeled_studies.csv``, or None without it."""
    path = mura_dir / f"{split}_labeled_studies.csv"
    if not path.exists():  # a folder or device in its place is an error, not "no CSV"
        return None
    out = {}
    for row in read_csv_rows(path):
        rel = normalise_relpath(row[0], mura_dir.name)
        label = row[1] if len(row) > 1 else ""
        if rel is None or rel.count("/") != 4 or label not in ("0", "1") or ".." in rel.split("/"):
            problems.bad_lines.append(f"{path.name}: {','.join(row)[:200]}")
        else:
            out[rel] = int(label)
    return out


def _index_mura_split(mura_dir: Path, split: str, problems: Problems):
    """Records of one MURA split and whether its CSVs were used."""
    root = mura_dir.parent
    listed = _listed_images(mura_dir, split, problems)
    on_disk = []
    for rel in _walk_images(mura_dir, split):  # a symlinked folder or file may lead outside
        (on_disk if inside_root(root, rel) else problems.outside_root).append(rel)
    if listed is None:
        images = on_disk
    else:
        present = set(on_disk)
        images = []
        for rel in listed:
            # _walk_images skips odd folder depths; fall back to a stat for those
            if rel in present or (root / rel).is_file():
                images.append(rel)
            else:
                problems.missing_images.append(rel)
        listed_set = set(listed) | set(problems.outside_root)
        problems.unlisted_images.extend(r for r in on_disk if r not in listed_set)
        problems.outside_root = list(dict.fromkeys(problems.outside_root))
    labels = _listed_labels(mura_dir, split, problems)
    records = _records_from(images, labels, root, split, problems)
    return records, listed is not None or labels is not None


def _records_from(images, labels, root: Path, split: str, problems: Problems) -> list[ImageRecord]:
    """Attach a label to each image (CSV first, else the folder name); report the rest."""
    records, seen_studies = [], set()
    for rel in images:
        relstudy = rel.rsplit("/", 1)[0]
        seen_studies.add(relstudy)
        from_name = label_from_name(relstudy)
        label = labels.get(relstudy) if labels is not None else from_name
        conflict = labels is not None and None not in (label, from_name) and label != from_name
        if conflict and relstudy not in problems.label_conflicts:
            problems.label_conflicts.append(relstudy)
        if label is None:
            if relstudy not in problems.unlabeled_studies:
                problems.unlabeled_studies.append(relstudy)
            continue
        _, part, patient, study = parse_study(relstudy)
        records.append(ImageRecord(split, part, patient, study, str(root / rel), rel, label))
    if labels is not None:
        problems.labels_without_images.extend(s for s in labels if s not in seen_studies)
    return records


def index_mura(mura_dir: Path) -> Dataset:
    """Index a ``MURA-v1.1`` folder (see the module docstring)."""
    problems = Problems()
    records, used_csv = [], False
    for split in MURA_SPLITS:
        recs, csv_used = _index_mura_split(mura_dir, split, problems)
        records += recs
        used_csv |= csv_used
    by_split = {s: {r.patient for r in records if r.split == s} for s in MURA_SPLITS}
    problems.patients_in_both_splits = sorted(by_split["train"] & by_split["valid"])
    layout = "mura-csv" if used_csv else "mura-folders"
    return Dataset(mura_dir.parent, layout, records, problems, load_annotations(mura_dir, mura=True))


# ---------------------------------------------------------------------------- class folders

def find_class_dirs(root: Path) -> dict | None:
    """``{"normal": Path, "abnormal": Path}`` (case-insensitive names) or None."""
    found = {p.name.lower(): p for p in _visible_dirs(root) if p.name.lower() in CLASS_DIRS}
    return found if len(found) == len(CLASS_DIRS) else None


def index_class_folders(root: Path, class_dirs: dict) -> Dataset:
    """Index ``ROOT/normal/**`` and ``ROOT/abnormal/**``: each image its own study and patient."""
    records, problems = [], Problems()
    for name, folder in sorted(class_dirs.items()):
        for dirpath, dirnames, filenames in os.walk(folder):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for f in sorted(filenames):
                if not is_image_file(f):
                    continue
                full = Path(dirpath) / f
                rel = full.relative_to(root).as_posix()
                if not inside_root(root, rel):
                    problems.outside_root.append(rel)
                    continue
                ident = os.path.splitext(rel)[0]
                records.append(ImageRecord("all", "UNKNOWN", ident, ident, str(full), rel,
                                           CLASS_DIRS[name]))
    return Dataset(root, "classes", records, problems, load_annotations(root, mura=False))


# ---------------------------------------------------------------------------- annotations

def _float_or_none(s: str):
    """A finite float, or None for an unknown cell; ValueError for anything else."""
    if s in ("", "nan", "None"):
        return None
    v = float(s)
    if not math.isfinite(v):
        raise ValueError(f"{s!r} is not a finite number")
    return v


def _parse_inverted(s: str):
    s = s.strip().lower()
    if s in ("1", "true", "yes"):
        return True
    if s in ("0", "false", "no"):
        return False
    return None


def load_annotations(folder: Path, mura: bool) -> dict:
    """``relpath -> Annotation`` from ``folder/synth_annotations.csv`` (or its parent's).

    Header ``path,inverted,finding,x0,y0,x1,y1``; paths as in MURA's CSVs (``mura=True``:
    ``folder`` is the MURA-v1.1 folder) or relative to ``folder`` (class-folder tree).
    Returns an empty dict when there is no such file (real MURA).
    """
    path = next((p for p in (folder / ANNOTATIONS_CSV, folder.parent / ANNOTATIONS_CSV)
                 if p.is_file()), None)
    if path is None:
        return {}
    out = {}
    for line, row in csv_rows(path, read_csv_text(path), csv.DictReader):
        raw = (row.get("path") or "").strip()
        rel = normalise_relpath(raw, folder.name) if mura else raw
        try:
            coords = [_float_or_none((row.get(k) or "").strip()) for k in ("x0", "y0", "x1", "y1")]
        except ValueError as e:
            raise MurakitError(f"{path} line {line}: bad box coordinate ({str(e)[:80]})") from None
        bbox = tuple(coords) if all(c is not None for c in coords) else None
        finding = (row.get("finding") or "").strip()
        out[rel or raw] = Annotation(_parse_inverted(row.get("inverted") or ""), finding, bbox)
    return out


# ---------------------------------------------------------------------------- entry point

def index_dataset(root) -> Dataset:
    """Index a data set folder.

    Parameters
    ----------
    root : str or Path
        The folder containing ``MURA-v1.1/``, ``MURA-v1.1/`` itself, or a class-folder tree
        with ``normal/`` and ``abnormal/``.

    Returns
    -------
    Dataset

    Raises
    ------
    MurakitError
        The folder does not exist, has an unknown layout, or holds no usable image.
    """
    root = Path(root).expanduser().resolve()
    if not root.is_dir():
        raise MurakitError(f"{root}: no such data folder")
    mura_dir = find_mura_dir(root)
    class_dirs = None if mura_dir else find_class_dirs(root)
    if mura_dir is not None:
        ds = index_mura(mura_dir)
    elif class_dirs is not None:
        ds = index_class_folders(root, class_dirs)
    else:
        raise MurakitError(
            f"{root}: unknown data layout: expected a {MURA_DIRNAME}/ folder (with train/, valid/ "
            f"or their CSVs) or class folders normal/ and abnormal/ (a DICOM tree needs --labels CSV)")
    if not ds.records:
        extra = "; ".join(ds.problems.lines())
        raise MurakitError(f"{root}: found no usable images ({ds.layout} layout)"
                           + (f": {extra}" if extra else ""))
    return ds
