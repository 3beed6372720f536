"""Writing: render every study (in any order, by any number of processes) into a MURA-v1.1 tree.

Randomness comes from ``SeedSequence([seed, study_index + 1])``, so studies can be rendered in
any order, by any number of processes, on any x86-64 CPU, and give byte-identical files. The tree is built under
a temporary name and renamed into place whole; ``synth.json`` records the generator version,
the seed and the settings, so an identical request is a no-op.
"""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np

from edge.atomic import atomic_dir
from edge.cpu import usable_cores
from edge.mura import MURA_DIRNAME
from murakit import pools
from murakit.data.synth.findings import study_spec
from murakit.data.synth.plan import StudyPlan, check_n_studies, plan_studies
from murakit.data.synth.render import render_view
from murakit.data.synth.settings import DEFAULT, SynthSettings
from murakit.errors import MurakitError

GENERATOR_VERSION = 8  # bump whenever the pixels or CSVs of a given seed change
# 8: rendering from CPU-independent operations (murakit.data.synth.exact), the same bytes on
#    any x86-64 CPU; 7's float OpenCV / numpy calls gave other pixels on AVX2 than on AVX-512


ANNOTATION_HEADER = "path,inverted,finding,x0,y0,x1,y1"


def _appledouble(rng) -> bytes:
    """A small AppleDouble resource-fork file (macOS ``._`` junk): not a PNG."""
    head = b"\x00\x05\x16\x07\x00\x02\x00\x00" + b"Mac OS X        " + b"\x00\x02"
    return head + rng.bytes(4096 - len(head))


def render_study(plan: StudyPlan, seed: int, mura_dir: Path,
                 settings: SynthSettings = DEFAULT) -> list[tuple]:
    """Render and write all views of one study into ``mura_dir`` (a MURA-v1.1 folder).

    Returns
    -------
    list of tuple
        One ``(path, inverted, finding, bbox)`` per view; path as in the image CSVs
        (``MURA-v1.1/train/...``).
    """
    rng = np.random.default_rng(np.random.SeedSequence([seed, plan.index + 1]))
    spec = study_spec(plan, rng, settings)
    folder = mura_dir / plan.study_dir.split("/", 1)[1]
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for v in range(plan.n_views):
        img, inverted, bbox = render_view(plan.part, spec, v, rng, settings)
        ok, buf = cv2.imencode(".png", img, [cv2.IMWRITE_PNG_COMPRESSION, 1])
        if not ok:
            raise MurakitError(f"could not encode {plan.study_dir}image{v + 1}.png")
        (folder / f"image{v + 1}.png").write_bytes(buf.tobytes())
        if rng.random() < settings.appledouble_prob:
            (folder / f"._image{v + 1}.png").write_bytes(_appledouble(rng))
        rows.append((f"{plan.study_dir}image{v + 1}.png", inverted,
                     spec.finding if bbox is not None else "", bbox))
    return rows


def _render_job(job) -> list[tuple]:
    cv2.setNumThreads(1)  # one process per core; OpenCV's own threads would oversubscribe
    return render_study(*job)


def _params(settings: SynthSettings, seed: int) -> dict:
    return {"generator": "murakit.synth", "version": GENERATOR_VERSION,
            "n_studies": settings.studies, "seed": int(seed), "settings": settings.to_dict()}


def resolve_settings(n_studies=None, settings: SynthSettings | None = None) -> SynthSettings:
    """``settings`` (default: the defaults) with ``studies`` replaced by ``n_studies`` when given."""
    settings = settings or SynthSettings()
    if n_studies is not None:
        check_n_studies(n_studies)
        settings = replace(settings, studies=int(n_studies))
    return settings


def existing_matches(out_dir, n_studies=None, seed: int = 0, settings: SynthSettings | None = None) -> bool:
    """True when ``out_dir/MURA-v1.1`` is a complete synth tree made with these parameters."""
    meta = Path(out_dir) / MURA_DIRNAME / "synth.json"
    try:
        stored = json.loads(meta.read_text())
    except (OSError, ValueError):
        return False
    want = _params(resolve_settings(n_studies, settings), seed)
    if "settings" not in stored and stored.get("n_studies") == want["n_studies"]:
        stored["settings"] = SynthSettings(studies=stored["n_studies"]).to_dict()  # written before settings existed
    return {k: stored.get(k) for k in want} == want and stored.get("complete") is True


def _older(mura: Path) -> str:
    """`` by this generator (version N)`` when ``mura`` was written by another generator version."""
    try:
        version = json.loads((mura / "synth.json").read_text()).get("version")
    except (OSError, ValueError, AttributeError):
        return ""
    if version is None or version == GENERATOR_VERSION:
        return ""
    return f" by this generator (version {GENERATOR_VERSION}; it holds version {version})"


def _write_text(path: Path, lines: list[str]) -> None:
    path.write_text("".join(line + "\n" for line in lines))


def _write_tables(mura: Path, plans: list[StudyPlan], rows: list[list[tuple]]) -> dict:
    """The four official CSVs + synth_annotations.csv; returns counts for synth.json."""
    ann = [ANNOTATION_HEADER]
    counts: dict = {}
    for split in ("train", "valid"):
        sel = [(p, r) for p, r in zip(plans, rows) if p.split == split]
        _write_text(mura / f"{split}_image_paths.csv", [v[0] for _, r in sel for v in r])
        _write_text(mura / f"{split}_labeled_studies.csv", [f"{p.study_dir},{p.label}" for p, _ in sel])
        counts[split] = {"studies": len(sel), "images": sum(len(r) for _, r in sel),
                         "abnormal_studies": sum(p.label for p, _ in sel),
                         "patients": len({p.patient for p, _ in sel})}
        for _, r in sel:
            for path, inv, finding, bbox in r:
                box = ",".join(map(str, bbox)) if bbox is not None else ",,,"
                ann.append(f"{path},{int(inv)},{finding},{box}")
    _write_text(mura / "synth_annotations.csv", ann)
    return counts


def remove_dead_temps(out_dir: Path, *patterns: str) -> None:
    """Delete temp trees named ``<prefix>-<pid>`` (glob ``patterns``) left by killed runs: those
    whose process no longer exists."""
    for pattern in patterns:
        for tmp in out_dir.glob(pattern):
            try:
                os.kill(int(tmp.name.rsplit("-", 1)[1]), 0)
            except (ValueError, ProcessLookupError):
                shutil.rmtree(tmp, ignore_errors=True)
            except PermissionError:
                pass


def _render_all(plans, seed, mura_dir: Path, workers: int, progress: bool, settings) -> list:
    from tqdm import tqdm

    jobs = [(p, seed, mura_dir, settings) for p in plans]
    bar = tqdm(total=len(plans), unit="study", desc="synth", disable=not progress)
    rows = []
    workers = pools.worker_count(workers if len(plans) >= 8 else 1)
    if workers <= 1:
        for job in jobs:
            rows.append(render_study(*job))
            bar.update()
    else:
        # spawn (murakit.pools): forking a parent whose OpenCV thread pool is live can deadlock the child
        with pools.SpawnPool(workers, "synth") as pool:
            for r in pool.imap(_render_job, jobs, chunksize=4):  # ordered -> deterministic
                rows.append(r)
                bar.update()
    bar.close()
    return rows


def describe(settings: SynthSettings, seed: int) -> str:
    """The request as CLI flags, for messages: ``--studies N --seed S [--setting value ...]``."""
    extra = "".join(f" --{k.replace('_', '-')} {v}" for k, v in settings.changed().items() if k != "studies")
    return f"--studies {settings.studies} --seed {seed}{extra}"


def generate(out_dir, n_studies: int | None = None, seed: int = 0, workers=None,
             progress: bool = True, force: bool = False, settings: SynthSettings | None = None) -> Path:
    """Write the synthetic MURA-v1.1 tree into ``out_dir``.

    Parameters
    ----------
    out_dir : str or Path
        Folder that will contain ``MURA-v1.1/`` (created if missing).
    n_studies : int, optional
        Number of studies (>= 1); overrides ``settings.studies`` (default 1500, ~4100 images).
    seed : int
        Same seed and settings -> byte-identical files, on any x86-64 CPU (the rendering uses
        only operations whose results IEEE 754 fixes, see ``murakit.data.synth.exact``).
    workers : int or None
        Processes (default: min(2, CPU count)); the output does not depend on it.
    progress : bool
        Show a tqdm progress bar on stderr.
    force : bool
        Replace an existing ``MURA-v1.1`` that was not made with these parameters.
    settings : SynthSettings, optional
        Generator settings (default: ``SynthSettings()``, the embedded default).

    Returns
    -------
    Path
        ``out_dir/MURA-v1.1``. If it already holds a complete tree made with the same
        parameters, nothing is written (unless ``force``).

    Raises
    ------
    MurakitError
        Bad ``n_studies``, or ``out_dir/MURA-v1.1`` exists, is not empty and ``force`` is off.
    """
    settings = resolve_settings(n_studies, settings)
    out_dir = Path(out_dir)
    target = out_dir / MURA_DIRNAME
    if not force and existing_matches(out_dir, seed=seed, settings=settings):
        return target
    pools.refuse_in_worker_start()  # a worker re-running an unguarded script: no second writer
    if target.exists() and not force and (not target.is_dir() or any(target.iterdir())):
        raise MurakitError(f"{target} already exists and was not generated with "
                           f"{describe(settings, seed)}{_older(target)}; use --force to replace it")
    out_dir.mkdir(parents=True, exist_ok=True)
    remove_dead_temps(out_dir, ".MURA-v1.1.tmp-*", ".MURA-v1.1.old-*")
    plans = plan_studies(settings.studies, seed, settings)
    workers = min(2, usable_cores()) if workers is None else int(workers)
    with atomic_dir(target) as tmp:  # a half-written tree never sits at OUT/MURA-v1.1
        rows = _render_all(plans, seed, tmp, workers, progress, settings)
        counts = _write_tables(tmp, plans, rows)
        meta = {**_params(settings, seed), "counts": counts, "complete": True}
        (tmp / "synth.json").write_text(json.dumps(meta, indent=2) + "\n")
    return target
