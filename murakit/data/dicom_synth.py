"""``murakit synth OUT --format dicom``: the synthetic MURA-v1.1 set, written as DICOM.

The PNG set is generated first (the same pixels, CSVs and annotations for a given seed), then
every ``imageN.png`` becomes ``imageN.dcm`` in the same layout, stored in a mix of the ways
PACS exports look: MONOCHROME1 and MONOCHROME2; 10-, 12-, 14- and 16-bit; with and without a
rescale slope / intercept; a full-range LINEAR window, a SIGMOID window or no window tags;
uncompressed explicit / implicit VR and, where this machine can read them back, RLE Lossless,
JPEG-lossless and JPEG 2000 lossless (see :func:`murakit.data.dicom_write.random_style`).
Each study gets its own StudyInstanceUID, each image a SOPInstanceUID (deterministic for a
seed), BodyPartExamined in one of several spellings (some absent) and a laterality drawn per
study. Each file is a valid DX or CR object per ``dciodvfy``: the Type 2 patient and study
attributes murakit cannot know are present and empty (see :mod:`murakit.data.dicom_write`). The CSVs name the
``.dcm`` files; AppleDouble ``._`` junk files are kept (renamed to ``._imageN.dcm``).

A picture stored inverted in the PNG set stays inverted in the DICOM picture (after the header
is honoured), so ``synth_annotations.csv``'s ``inverted`` column still holds.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import time
import zlib
from pathlib import Path

import numpy as np

from edge.mura import MURA_DIRNAME
from murakit import pools
from murakit.data.synth.write import remove_dead_temps
from murakit.errors import MurakitError

GENERATOR = "murakit.synth.dicom"
FORMAT_VERSION = 2  # bump whenever the DICOM files of a given seed change
# BodyPartExamined spellings per part (all map back through edge.dicom.map_body_part).
SPELLINGS = {"ELBOW": ["ELBOW"], "FINGER": ["FINGER", "THUMB"], "FOREARM": ["FOREARM", "LOWER ARM"],
             "HAND": ["HAND"], "HUMERUS": ["HUMERUS", "UPPER ARM", "ARM"], "SHOULDER": ["SHOULDER"],
             "WRIST": ["WRIST", "SCAPHOID"]}
NO_BODY_PART_PROB = 0.05


def _uid(*parts) -> str:
    """A deterministic UID under 2.25 (a 128-bit number, PS3.5 B.2) from the parts: the same
    seed and file give the same UID. (pydicom's generate_uid ignores its entropy sources when
    the prefix is 2.25, so it cannot be used here.)"""
    digest = hashlib.sha256("\x1f".join(["murakit-synth", *map(str, parts)]).encode()).digest()
    return f"2.25.{int.from_bytes(digest[:16], 'big')}"


def _meta_matches(target: Path, params: dict) -> bool:
    try:
        stored = json.loads((target / "synth.json").read_text())
    except (OSError, ValueError):
        return False
    return stored.get("complete") is True and all(stored.get(k) == v for k, v in params.items())


def _params(n_studies: int, seed: int) -> dict:
    from murakit.data import synth

    return {"generator": GENERATOR, "version": synth.GENERATOR_VERSION, "dicom_version": FORMAT_VERSION,
            "n_studies": int(n_studies), "seed": int(seed)}


def convert_image(png: Path, dcm: Path, rel: str, seed: int, compressed: tuple) -> str:
    """Write one synthetic PNG as DICOM; returns the transfer syntax used (for the summary)."""
    import cv2

    from edge.loader import to_grey
    from murakit.data.dicom_write import random_style, write_dicom

    img = cv2.imread(str(png), cv2.IMREAD_UNCHANGED)
    if img.ndim == 3:  # the RGB-saved greys of the PNG set: DICOM radiographs are MONOCHROME
        img = np.rint(to_grey(img) * 255).astype(np.uint8)
    rng = np.random.default_rng([seed, zlib.crc32(rel.encode())])
    style = random_style(rng, compressed, img.shape)
    study_dir, name = rel.rsplit("/", 1)
    part, patient = study_dir.split("/")[2][3:], study_dir.split("/")[3]
    spelling = None if rng.random() < NO_BODY_PART_PROB else str(rng.choice(SPELLINGS[part]))
    laterality = "RL"[zlib.crc32(f"{seed}/{study_dir}".encode()) % 2]  # one side per study, drawn like the rest
    write_dicom(dcm, img, style, study_uid=_uid(seed, study_dir), series_uid=_uid(seed, study_dir, "series"),
                sop_uid=_uid(seed, rel), body_part=spelling, laterality=laterality,
                tags={"PatientID": patient, "PatientName": f"SYNTHETIC^{patient.upper()}",
                      "SeriesNumber": 1, "InstanceNumber": int(name[5:].split(".")[0])})
    return style.syntax


def _convert_study(job) -> list:
    src_dir, dst_dir, rel_dir, seed, compressed = job
    import cv2

    cv2.setNumThreads(1)
    dst_dir.mkdir(parents=True, exist_ok=True)
    used = []
    for f in sorted(os.listdir(src_dir)):
        stem = f.removesuffix(".png")
        if f.startswith("._"):
            shutil.copyfile(src_dir / f, dst_dir / f"{stem}.dcm")
        elif f.endswith(".png"):
            used.append(convert_image(src_dir / f, dst_dir / f"{stem}.dcm", f"{rel_dir}/{f}", seed, compressed))
    return used


def _study_dirs(mura: Path) -> list:
    return [d for split in ("train", "valid") for d in sorted(mura.glob(f"{split}/XR_*/patient*/study*"))]


def _convert_tree(src: Path, dst: Path, seed: int, workers: int, progress: bool) -> dict:
    """Convert every study of ``src`` (a MURA-v1.1 PNG folder) into ``dst``; returns syntax counts."""
    from tqdm import tqdm

    from murakit.data.dicom_write import available_syntaxes

    compressed = available_syntaxes()
    jobs = [(d, dst / d.relative_to(src), f"{MURA_DIRNAME}/{d.relative_to(src).as_posix()}", seed, compressed)
            for d in _study_dirs(src)]
    counts: dict = {}
    bar = tqdm(total=len(jobs), unit="study", desc="dicom", disable=not progress)
    workers = pools.worker_count(workers if len(jobs) >= 8 else 1)
    with pools.SpawnPool(workers, "dicom") if workers > 1 else contextlib.nullcontext() as pool:
        results = pool.imap(_convert_study, jobs, chunksize=4) if pool else map(_convert_study, jobs)
        try:
            for used in results:
                for s in used:
                    counts[s] = counts.get(s, 0) + 1
                bar.update()
        finally:
            bar.close()
    return counts


def _copy_tables(src: Path, dst: Path) -> None:
    """The CSVs with ``.png`` -> ``.dcm`` in every path."""
    for f in ("train_image_paths.csv", "valid_image_paths.csv", "synth_annotations.csv",
              "train_labeled_studies.csv", "valid_labeled_studies.csv"):
        if (src / f).exists():
            text = (src / f).read_text()
            (dst / f).write_text(text.replace(".png\n", ".dcm\n").replace(".png,", ".dcm,"))


def generate_dicom(out_dir, n_studies: int, seed: int = 0, workers=None, progress: bool = True,
                   force: bool = False) -> tuple:
    """Write the synthetic set as DICOM into ``out_dir/MURA-v1.1``.

    Returns
    -------
    (Path, dict)
        The MURA-v1.1 folder and ``{transfer syntax: image count}`` (empty when the folder
        already held this set).

    Raises
    ------
    MurakitError
        pydicom missing, or ``out_dir/MURA-v1.1`` holds something else and ``force`` is off.
    """
    from edge.atomic import atomic_dir
    from edge.cpu import usable_cores
    from murakit.data import synth

    try:
        import pydicom  # noqa: F401
    except ImportError:
        raise MurakitError("--format dicom needs the dicom extra: pip install 'murakit[dicom]'") from None
    out_dir = Path(out_dir)
    target = out_dir / MURA_DIRNAME
    params = _params(n_studies, seed)
    if not force and _meta_matches(target, params):
        return target, {}
    pools.refuse_in_worker_start()  # a worker re-running an unguarded script: no second writer
    if target.exists() and not force and (not target.is_dir() or any(target.iterdir())):
        raise MurakitError(f"{target} already exists and is not the DICOM synthetic set for --studies "
                           f"{n_studies} --seed {seed}; use --force to replace it")
    workers = min(2, usable_cores()) if workers is None else int(workers)
    remove_dead_temps(out_dir, ".murakit-synth-png-*")
    png_root = out_dir / f".murakit-synth-png-{os.getpid()}"
    try:
        src = synth.generate(png_root, n_studies=n_studies, seed=seed, workers=workers, progress=progress,
                             force=True)
        with atomic_dir(target) as tmp:
            counts = _convert_tree(src, Path(tmp), seed, workers, progress)
            _copy_tables(src, Path(tmp))
            meta = json.loads((src / "synth.json").read_text())
            meta.update(params, syntaxes=counts, complete=True)
            (Path(tmp) / "synth.json").write_text(json.dumps(meta, indent=2) + "\n")
    finally:
        shutil.rmtree(png_root, ignore_errors=True)
    return target, counts


def run(args) -> int:
    """The ``murakit synth --format dicom`` command body (called by ``murakit.cli.synth``)."""
    from murakit.data import synth

    n = synth.DEFAULT_STUDIES if args.studies is None else args.studies
    t0 = time.perf_counter()
    root, counts = generate_dicom(args.out, n, args.seed, args.workers, not args.no_progress, args.force)
    if not counts:
        print(f"{root} is already the DICOM synthetic set for --studies {n} --seed {args.seed}; nothing to do")
        return 0
    n_img = sum(counts.values())
    dt = time.perf_counter() - t0
    mix = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
    print(f"wrote {n} studies, {n_img} DICOM images to {root} in {dt:.1f} s ({mix})")
    return 0
