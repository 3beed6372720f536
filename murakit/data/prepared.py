"""The prepared cache: every image preprocessed once into a memory-mappable uint8 array.

Layout (see docs/architecture.md)::

    RUN/prepared/images.npy    uint8 (N, S, S), .npy format, opened with mmap_mode="r"
    RUN/prepared/index.csv     split,part,patient,study,path,label,row,inverted, then
                               orig_h,orig_w,scale,offset_x,offset_y,inversion_score,raw_mean,raw_std
                               [, finding,bx0,by0,bx1,by1,true_inverted  (synthetic data only)]
    RUN/prepared/config.json   {"preprocess": .., "murakit_version": .., "data_root": .., "seed": ..,
                                "complete": true, ...}
    RUN/prepared/failed.csv    path,error

Crash safety: the cache is built in ``RUN/prepared.partial/``. The main process writes each
finished row into the memmap, flushes it, then records the row in ``progress.npz`` (a per-row
done bitmap plus the per-row geometry, saved atomically every few seconds), so a row is
never marked done before its pixels are on disk. An interrupted run resumes from the bitmap.
Only a complete cache is renamed to ``RUN/prepared/``; ``load_prepared`` also refuses a
``config.json`` without ``"complete": true``.

Rows of unreadable images stay zero in ``images.npy`` and are absent from ``index.csv``
(``row`` indexes ``images.npy``, so gaps are allowed); they are listed in ``failed.csv``.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edge.atomic import atomic_write, write_text
from edge.preprocess import PreprocessConfig
from murakit.errors import MurakitError
from murakit.layout import RunLayout
from murakit.stage import StageResult

INDEX_COLUMNS = ["split", "part", "patient", "study", "path", "label", "row", "inverted"]
# Per-row numbers kept in progress.npz and written as extra index columns, in this order.
INFO_COLUMNS = ["orig_h", "orig_w", "scale", "offset_x", "offset_y", "inversion_score",
                "raw_mean", "raw_std"]
ANNOTATION_COLUMNS = ["finding", "bx0", "by0", "bx1", "by1", "true_inverted"]
# Below this many images a pool costs more (spawning interpreters, ~1 s) than it saves.
MIN_TASKS_FOR_POOL = 64
# Fields of config.json that must match for a cache to be reused.
KEY_FIELDS = ("preprocess", "data_root", "seed", "val_fraction", "test_fraction",
              "data_fingerprint")


# ============================================================================ reading

@dataclass
class Prepared:
    """A loaded prepared cache.

    Attributes
    ----------
    root : Path
        ``RUN/prepared``.
    images : np.memmap
        uint8, shape (R, S, S), read-only; index it with ``row``.
    config : PreprocessConfig
    meta : dict
        The whole ``config.json``.
    split, part, patient, study, path : ndarray of str, shape (N,)
        One entry per usable image; ``path`` is relative to ``meta["data_root"]``.
    label : ndarray of int8, shape (N,)
        1 = abnormal.
    row : ndarray of int64, shape (N,)
        Row of each image in ``images``.
    inverted : ndarray of bool, shape (N,)
        The preprocessing's inversion detector fired.
    columns : dict
        Every column of ``index.csv`` as an ndarray of str, shape (N,).
    annotations : dict or None
        Synthetic ground truth, None for real data: ``"finding"`` str (N,) (``""`` = none or
        unknown), ``"bbox"`` float32 (N, 4) ``x0, y0, x1, y1`` in prepared-image pixels (NaN
        when unknown), ``"true_inverted"`` int8 (N,) (1, 0, or -1 when unknown).
    """

    root: Path
    images: np.ndarray
    config: PreprocessConfig
    meta: dict
    split: np.ndarray
    part: np.ndarray
    patient: np.ndarray
    study: np.ndarray
    path: np.ndarray
    label: np.ndarray
    row: np.ndarray
    inverted: np.ndarray
    columns: dict = field(repr=False)
    annotations: dict | None = None

    def __len__(self) -> int:
        return len(self.row)

    def select(self, split: str) -> np.ndarray:
        """Positions (int64, into the per-image arrays, not ``images``) of one split."""
        return np.flatnonzero(self.split == split)

    def image(self, position: int) -> np.ndarray:
        """uint8 (S, S) image at ``position`` (an index into the per-image arrays)."""
        return np.asarray(self.images[self.row[position]])

    def fingerprint(self) -> str:
        """Hex SHA-256 of what a model trained on this cache saw: its preprocessing config
        and its index (paths, labels, splits, rows). Recorded in every model card."""
        h = hashlib.sha256(self.config.to_json().encode())
        h.update((self.root / "index.csv").read_bytes())
        return h.hexdigest()


def _incomplete(layout: RunLayout) -> MurakitError:
    run = layout.root
    if layout.prepared_partial.exists():
        return MurakitError(f"the prepared cache in {run} is incomplete (interrupted?): rerun "
                            f"murakit prepare DATA --run {run} to finish it")
    return MurakitError(f"no prepared cache in {run}: run murakit prepare DATA --run {run} first")


def read_meta(prepared_dir: Path) -> dict | None:
    """``config.json`` of a cache folder if it is marked complete, else None."""
    try:
        meta = json.loads((prepared_dir / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) and meta.get("complete") is True else None


def config_mismatch(built: PreprocessConfig, wanted: PreprocessConfig) -> str | None:
    """One line saying how the cache's preprocessing differs from a model's, or None when equal.

    The line names the differing fields and the two ways out: re-prepare the cache with the
    model's settings, or retrain the model on this cache.
    """
    b, w = built.to_dict(), wanted.to_dict()
    diffs = [k for k in w if b.get(k) != w[k]]
    if not diffs:
        return None
    flags = []
    for k in diffs:
        if k == "size":
            flags.append(f"--size {w[k]}")
        elif k == "clahe":
            flags.append("--clahe" if w[k] else "without --clahe")
        elif k == "invert":
            flags.append(f"--invert {w[k]}")
        else:
            flags.append(f"{k}={w[k]!r}")
    got = ", ".join(f"{k} {b.get(k)}" for k in diffs)
    want = ", ".join(f"{k} {w[k]}" for k in diffs)
    return (f"the prepared cache was built with {got} but the model was trained with {want}: "
            f"rerun murakit prepare DATA {' '.join(flags)}, or retrain the model on this cache (--force)")


def _read_index(path: Path) -> dict:
    """Every column of index.csv as an ndarray of str (N,); a damaged file is one MurakitError."""
    try:
        with open(path, encoding="utf-8", newline="") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            rows = list(reader)
        if header is None or header[:len(INDEX_COLUMNS)] != INDEX_COLUMNS:
            raise MurakitError(f"{path}: not a murakit index (header {str(header)[:80]}); rerun murakit prepare")
        data = np.array(rows, dtype=str).reshape(len(rows), len(header))
    except (OSError, UnicodeDecodeError, csv.Error, ValueError) as e:
        raise MurakitError(f"{path}: unreadable index ({str(e)[:100]}); rerun murakit prepare") from None
    return {name: data[:, i] for i, name in enumerate(header)}


def _annotations_from(cols: dict) -> dict | None:
    if "true_inverted" not in cols:
        return None
    bbox = np.full((len(cols["row"]), 4), np.nan, dtype=np.float32)
    for j, k in enumerate(("bx0", "by0", "bx1", "by1")):
        known = cols[k] != ""
        bbox[known, j] = cols[k][known].astype(np.float32)
    ti = np.where(cols["true_inverted"] == "", "-1", cols["true_inverted"]).astype(np.int8)
    return {"finding": cols["finding"], "bbox": bbox, "true_inverted": ti}


def load_prepared(run, expect_config: PreprocessConfig | dict | None = None) -> Prepared:
    """Open ``RUN/prepared``.

    Parameters
    ----------
    run : str or Path
        The run folder.
    expect_config : PreprocessConfig or dict, optional
        The preprocessing a model needs; a cache built differently is refused.

    Returns
    -------
    Prepared

    Raises
    ------
    MurakitError
        The cache is missing, incomplete or inconsistent, or differs from ``expect_config``.
    """
    layout = RunLayout(run)
    root = layout.prepared
    meta = read_meta(root)
    if meta is None:
        raise _incomplete(layout)
    try:
        cfg = PreprocessConfig.from_dict(meta["preprocess"])
    except (KeyError, TypeError, ValueError) as e:
        raise MurakitError(f"{layout.prepared_config}: invalid preprocessing config ({e}); rerun murakit prepare") from None
    if expect_config is not None:
        if isinstance(expect_config, dict):
            expect_config = PreprocessConfig.from_dict(expect_config)
        msg = config_mismatch(cfg, expect_config)
        if msg:
            raise MurakitError(msg)
    try:
        images = np.load(root / "images.npy", mmap_mode="r")
    except (OSError, ValueError) as e:
        raise MurakitError(f"{root / 'images.npy'}: unreadable cache ({e}); rerun murakit prepare") from None
    if images.dtype != np.uint8 or images.shape[1:] != (cfg.size, cfg.size):
        raise MurakitError(f"{root / 'images.npy'}: expected uint8 (N, {cfg.size}, {cfg.size}), "
                           f"got {images.dtype} {images.shape}; rerun murakit prepare")
    cols = _read_index(root / "index.csv")
    try:
        row, label = cols["row"].astype(np.int64), cols["label"].astype(np.int8)
        annotations = _annotations_from(cols)
    except ValueError as e:
        raise MurakitError(f"{root / 'index.csv'}: unreadable index ({str(e)[:100]}); rerun murakit prepare") from None
    if len(row) and (row.min() < 0 or row.max() >= len(images)):
        raise MurakitError(f"{root / 'index.csv'}: rows outside images.npy; rerun murakit prepare")
    return Prepared(
        root=root, images=images, config=cfg, meta=meta, split=cols["split"], part=cols["part"],
        patient=cols["patient"], study=cols["study"], path=cols["path"],
        label=label, row=row, inverted=cols["inverted"] == "1",
        columns=cols, annotations=annotations)


# ============================================================================ planning

def data_fingerprint(records) -> str:
    """SHA-256 over (relative path, label, MURA split, file size) of every record."""
    h = hashlib.sha256()
    for r in records:
        try:
            size = os.stat(r.path).st_size
        except OSError:
            size = -1
        h.update(f"{r.relpath}\t{r.label}\t{r.split}\t{size}\n".encode())
    return h.hexdigest()


def make_key(dataset, cfg: PreprocessConfig, seed: int, val_fraction: float,
             test_fraction: float) -> dict:
    """The fields that decide whether an existing cache can be reused."""
    return {"preprocess": cfg.to_dict(), "data_root": str(dataset.root), "seed": int(seed),
            "val_fraction": float(val_fraction), "test_fraction": float(test_fraction),
            "data_fingerprint": data_fingerprint(dataset.records)}


def describe_change(old: dict, new: dict) -> str:
    """Why a cache with key ``old`` cannot serve key ``new`` (one short phrase)."""
    if old.get("preprocess") != new["preprocess"]:
        o, n = old.get("preprocess") or {}, new["preprocess"]
        return "preprocessing changed (" + ", ".join(
            f"{k} {o.get(k)} -> {n[k]}" for k in n if o.get(k) != n[k]) + ")"
    if old.get("data_root") != new["data_root"]:
        return f"data root changed ({old.get('data_root')} -> {new['data_root']})"
    if old.get("data_fingerprint") != new["data_fingerprint"]:
        return "the data changed (files, labels or sizes)"
    return "the split settings changed (seed or fractions)"


def same_key(meta: dict, key: dict) -> bool:
    return all(meta.get(k) == key[k] for k in KEY_FIELDS)


# ============================================================================ workers

_CFG = None
_MM = None


def _init_worker(cfg_dict: dict, images_path: str | None, in_pool: bool) -> None:
    """Pool initializer: the config, and the memmap when workers write rows themselves."""
    global _CFG, _MM
    import signal

    import cv2

    if in_pool:
        # a pool worker: Ctrl-C is the main process's to handle (it saves progress and
        # terminates the pool); workers printing their own tracebacks would only add noise
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        cv2.setNumThreads(1)  # one OpenCV thread per process: the pool owns the cores
    _CFG = PreprocessConfig.from_dict(cfg_dict)
    _MM = np.load(images_path, mmap_mode="r+") if images_path else None


def process_one(task):
    """Preprocess one image.

    Parameters
    ----------
    task : (int, str)
        Row and absolute path.

    Returns
    -------
    (row, image or None, info or None, error or None)
        ``image`` uint8 (S, S) unless the worker wrote it into the memmap itself; ``info``
        float64 (len(INFO_COLUMNS),) plus the inverted flag appended.
    """
    from edge.loader import load_array, to_grey
    from edge.preprocess import preprocess_with_info

    row, path = task
    try:
        # decoded once; the stored array (not a float copy) takes preprocessing's integer fast path
        arr, name = load_array(path, dicom_voi=_CFG.dicom_voi)
        u8, info = preprocess_with_info(arr, _CFG)
        grey = to_grey(arr, name)  # raw exposure statistics for explore
    except Exception as e:  # noqa: BLE001 - any unreadable image is reported, not fatal
        return row, None, None, str(e) or type(e).__name__
    vec = np.array([info.orig_h, info.orig_w, info.scale, info.offset_x, info.offset_y,
                    info.inversion_score, float(grey.mean()), float(grey.std()),
                    float(info.inverted)])
    if _MM is not None:
        _MM[row] = u8
        return row, None, vec, None
    return row, u8, vec, None


# ============================================================================ progress state

class _State:
    """Per-row progress of a partial cache: done bitmap, geometry and errors."""

    def __init__(self, n: int):
        self.done = np.zeros(n, dtype=bool)
        self.failed = np.zeros(n, dtype=bool)
        self.info = np.zeros((n, len(INFO_COLUMNS) + 1), dtype=np.float64)
        self.errors: dict[int, str] = {}

    def save(self, path: Path) -> None:
        buf = io.BytesIO()
        np.savez(buf, done=self.done, failed=self.failed, info=self.info,
                 errors=np.array(json.dumps({str(k): v for k, v in self.errors.items()})))
        with atomic_write(path, "wb") as f:
            f.write(buf.getvalue())

    @classmethod
    def load(cls, path: Path, n: int) -> _State:
        st = cls(n)
        try:
            with np.load(path) as z:
                if z["done"].shape == (n,):
                    st.done, st.failed, st.info = z["done"], z["failed"], z["info"]
                    st.errors = {int(k): v for k, v in json.loads(str(z["errors"])).items()}
        except (OSError, ValueError, KeyError):
            pass  # no usable progress: start the partial cache from row 0
        return st


def _sync(images: np.memmap, path: Path) -> None:
    """Make every written row durable before the bitmap says it is done."""
    images.flush()
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# ============================================================================ writing

def _annotation_cells(ann, info_row: np.ndarray, size: int) -> list[str]:
    """``finding,bx0,by0,bx1,by1,true_inverted`` for one image (empty cells when unknown)."""
    if ann is None:
        return [""] * len(ANNOTATION_COLUMNS)
    scale, ox, oy = info_row[2], info_row[3], info_row[4]
    box = [""] * 4
    if ann.bbox is not None:
        x0, y0, x1, y1 = ann.bbox
        mapped = [x0 * scale + ox, y0 * scale + oy, x1 * scale + ox, y1 * scale + oy]
        box = [f"{min(max(v, 0.0), size):.2f}" for v in mapped]
    ti = "" if ann.inverted is None else str(int(ann.inverted))
    return [ann.finding, *box, ti]


def _fmt(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else f"{v:.6g}"


def _write_index(path: Path, dataset, split: np.ndarray, st: _State, size: int) -> int:
    """Write index.csv (usable rows only); returns the number of rows written."""
    with_ann = bool(dataset.annotations)
    header = INDEX_COLUMNS + INFO_COLUMNS + (ANNOTATION_COLUMNS if with_ann else [])
    n = 0
    with atomic_write(path, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(header)
        for i, r in enumerate(dataset.records):
            if st.failed[i]:
                continue
            info = st.info[i]
            cells = [split[i], r.part, r.patient, r.study, r.relpath, r.label, i, int(info[-1])]
            cells += [_fmt(v) for v in info[:len(INFO_COLUMNS)]]
            if with_ann:
                cells += _annotation_cells(dataset.annotations.get(r.relpath), info, size)
            w.writerow(cells)
            n += 1
    return n


def _write_failed(path: Path, dataset, st: _State) -> None:
    with atomic_write(path, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["path", "error"])
        for i in np.flatnonzero(st.failed):
            w.writerow([dataset.records[i].relpath, st.errors.get(int(i), "")])


def _finalise(partial: Path, final: Path, dataset, split, st: _State, key: dict, layout: str) -> int:
    """Write index/failed/config into ``partial`` and rename it to ``final``."""
    from murakit import __version__

    size = key["preprocess"]["size"]
    n_ok = _write_index(partial / "index.csv", dataset, split, st, size)
    _write_failed(partial / "failed.csv", dataset, st)
    meta = {**key, "murakit_version": __version__, "layout": layout, "n_rows": len(st.done),
            "n_images": n_ok, "n_failed": int(st.failed.sum()),
            "annotations": bool(dataset.annotations), "problems": dataset.problems.counts(),
            "complete": True}
    for stray in partial.glob(".*tmp-*"):  # temp files of a writer killed mid-write
        stray.unlink()
    write_text(partial / "config.json", json.dumps(meta, indent=2) + "\n")  # last: marks complete
    old = final.with_name(f".{final.name}.old-{os.getpid()}")
    if final.exists():
        os.replace(final, old)
    os.replace(partial, final)
    for leftover in (final / "progress.npz", final / "plan.json", old):
        if leftover.is_dir():
            shutil.rmtree(leftover)
        elif leftover.exists():
            leftover.unlink()
    return n_ok


def _open_partial(partial: Path, key: dict, n: int, size: int, log):
    """Open (resume) or create the partial cache; returns (memmap, state, resumed)."""
    plan = partial / "plan.json"
    images_path = partial / "images.npy"
    if partial.exists():
        try:
            old = json.loads(plan.read_text(encoding="utf-8"))
            mm = np.load(images_path, mmap_mode="r+")
            if same_key(old, key) and mm.shape == (n, size, size) and mm.dtype == np.uint8:
                st = _State.load(partial / "progress.npz", n)
                log(f"resuming the interrupted prepare: {int(st.done.sum())}/{n} images already done")
                return mm, st, True
            del mm
            log("found an interrupted prepare with other settings or data; starting over")
        except (OSError, ValueError):
            log("found an unreadable interrupted prepare; starting over")
        shutil.rmtree(partial)
    partial.mkdir(parents=True)
    mm = np.lib.format.open_memmap(images_path, mode="w+", dtype=np.uint8, shape=(n, size, size))
    write_text(plan, json.dumps(key) + "\n")
    st = _State(n)
    st.save(partial / "progress.npz")
    return mm, st, False


def _run_pool(tasks, cfg: PreprocessConfig, workers: int, images_path: Path, worker_writes: bool):
    """Yield results of :func:`process_one` for ``tasks``, in any order."""
    global _MM
    mm_path = str(images_path) if worker_writes else None
    if not tasks:
        return
    from murakit import pools

    workers = pools.worker_count(workers if len(tasks) >= MIN_TASKS_FOR_POOL else 1)
    if workers <= 1:
        _init_worker(cfg.to_dict(), mm_path, in_pool=False)
        try:
            yield from map(process_one, tasks)
        finally:
            _MM = None  # drop this process's writable view of the cache
        return
    import signal
    import threading

    # spawn (murakit.pools), not fork: the caller may have TensorFlow or other threads loaded.
    chunk = max(1, min(32, len(tasks) // (workers * 8)))
    # Workers are born ignoring Ctrl-C (an ignored signal stays ignored across exec, and Python
    # then installs no handler): one arriving while they import would print their tracebacks.
    main = threading.current_thread() is threading.main_thread()  # only it may set handlers
    handler = signal.signal(signal.SIGINT, signal.SIG_IGN) if main else None
    try:
        pool = pools.SpawnPool(workers, "prepare", _init_worker, (cfg.to_dict(), mm_path, True))
    finally:
        if main:
            signal.signal(signal.SIGINT, handler)
    with pool:
        yield from pool.imap_unordered(process_one, tasks, chunksize=chunk)


def _fill(mm, st: _State, dataset, cfg, workers, partial, progress, checkpoint_seconds,
          worker_writes) -> int:
    """Preprocess every row not yet done; checkpoints progress. Returns rows processed."""
    from tqdm import tqdm

    todo = np.flatnonzero(~st.done)
    tasks = [(int(i), dataset.records[i].path) for i in todo]
    images_path, progress_path = partial / "images.npy", partial / "progress.npz"
    last, n = time.monotonic(), 0
    bar = tqdm(total=len(st.done), initial=int(st.done.sum()), unit="img", desc="prepare",
               disable=not progress, dynamic_ncols=True)
    try:
        for row, u8, vec, err in _run_pool(tasks, cfg, workers, images_path, worker_writes):
            if err is not None:
                st.failed[row], st.errors[row] = True, err
            else:
                if u8 is not None:
                    mm[row] = u8
                st.info[row] = vec
            st.done[row] = True
            n += 1
            bar.update(1)
            if time.monotonic() - last >= checkpoint_seconds:
                _sync(mm, images_path)
                st.save(progress_path)
                last = time.monotonic()
    finally:
        bar.close()
        _sync(mm, images_path)  # on any exit, so a rerun resumes from here
        st.save(progress_path)
    return n


def check_split_settings(seed: int, val_fraction: float, test_fraction: float) -> None:
    """The constraints of :func:`prepare`'s split settings (one MurakitError line each)."""
    from murakit.checks import check_float, check_seed

    check_seed(seed)
    check_float("--val-fraction", val_fraction, 0.0, 1.0, hi_open=True)
    check_float("--test-fraction", test_fraction, 0.0, 1.0, hi_open=True)
    if val_fraction + test_fraction >= 1.0:
        raise MurakitError(f"--val-fraction + --test-fraction must be below 1, got {val_fraction + test_fraction:g}")


def prepare(data, run, cfg: PreprocessConfig | None = None, seed: int = 0,
            val_fraction: float = 0.1, test_fraction: float = 0.2, workers: int | None = None,
            progress: bool = True, checkpoint_seconds: float = 5.0, worker_writes: bool = False,
            log=print, dataset=None, labels=None, *, force: bool = False) -> StageResult:
    """The prepare stage: build (or resume, or confirm) ``RUN/prepared`` for a data set.

    Parameters
    ----------
    data : str or Path
        Data folder (see :func:`murakit.data.mura.index_dataset`).
    run : str or Path
        Run folder; the cache goes to ``RUN/prepared``.
    cfg : PreprocessConfig, optional
        Default ``PreprocessConfig()``.
    seed, val_fraction, test_fraction
        Passed to :func:`murakit.data.splits.assign_splits`; checked by
        :func:`check_split_settings`.
    workers : int, optional
        Processes, 1 to :func:`murakit.checks.max_workers`; default :func:`edge.cpu.usable_cores`.
        1 runs in this process.
    progress : bool
        Show a tqdm progress bar.
    checkpoint_seconds : float
        How often the done bitmap is saved (0 = after every image).
    worker_writes : bool
        Workers write rows into the memmap themselves instead of returning them.
    log : callable
        Receives one-line status messages (the data set's size and its problems first).
    dataset : Dataset, optional
        An already indexed ``data`` (saves indexing twice).
    labels : str or Path, optional
        ``data`` is a DICOM tree in any layout and this CSV maps a StudyInstanceUID or a folder
        under ``data`` to a label (:func:`murakit.data.dicom_index.index_dicom_tree`).
    force : bool
        Rebuild a cache that is up to date.

    Returns
    -------
    StageResult
        ``status`` "done", "resumed" or "up-to-date"; ``paths``: the cache folder; ``figures``:
        ``n_images`` (cached), ``n_failed`` (unreadable, skipped), ``n_processed`` (decoded by
        this call), ``images_per_second`` (of those) and ``reason`` (why a cache was rebuilt).

    Raises
    ------
    MurakitError
        Bad settings, unusable data, or a run folder that another process is preparing
        (:mod:`murakit.lock`).
    """
    from edge.cpu import usable_cores
    from murakit.checks import check_workers
    from murakit.data.mura import index_dataset
    from murakit.lock import stage_lock

    check_split_settings(seed, val_fraction, test_fraction)
    workers = check_workers(workers if workers is not None else usable_cores())
    t0 = time.perf_counter()
    with stage_lock(run, writes="prepared", create=True):
        if dataset is not None:
            ds = dataset
        elif labels is not None:
            from murakit.data.dicom_index import index_dicom_tree

            ds = index_dicom_tree(data, labels)
        else:
            ds = index_dataset(data)
        log(f"{ds.root}: {len(ds)} images ({ds.layout} layout)")
        for line in ds.problems.lines():
            log(f"  data problem: {line}")
        status, final, figures = _prepare(ds, run, cfg if cfg is not None else PreprocessConfig(), seed,
                                          val_fraction, test_fraction, workers, progress, checkpoint_seconds,
                                          worker_writes, force, log)
    return StageResult("prepare", status, (final,), time.perf_counter() - t0, figures)


def _figures(n_images: int, n_failed: int, n_processed: int, seconds: float, reason: str = "") -> dict:
    rate = n_processed / seconds if seconds > 0 else float("nan")
    return {"n_images": int(n_images), "n_failed": int(n_failed), "n_processed": int(n_processed),
            "images_per_second": rate, "reason": reason}


def _prepare(ds, run, cfg: PreprocessConfig, seed, val_fraction, test_fraction, workers, progress,
             checkpoint_seconds, worker_writes, force, log) -> tuple:
    """:func:`prepare` once the settings are checked and the run folder is locked.

    Returns (status, cache folder, figures).
    """
    from murakit.data.splits import assign_splits

    layout = RunLayout(run)
    key = make_key(ds, cfg, seed, val_fraction, test_fraction)
    final, partial = layout.prepared, layout.prepared_partial
    for stale in layout.root.glob(".prepared.old-*"):
        shutil.rmtree(stale, ignore_errors=True)
    meta = read_meta(final)
    reason = ""
    if not force and meta is not None and same_key(meta, key) and (final / "images.npy").is_file():
        log(f"{final}: cache is up to date ({meta['n_images']} images, {meta['n_failed']} failed); "
            "nothing to do")
        return "up-to-date", final, _figures(meta["n_images"], meta["n_failed"], 0, 0.0)
    if force and meta is not None:
        reason = "rebuild forced"
        log(f"{final}: {reason}; rebuilding the cache")
    elif meta is not None:
        reason = describe_change(meta, key)
        log(f"{final}: {reason}; rebuilding the cache")
    elif final.exists():
        reason = "the existing cache is incomplete"
        log(f"{final}: {reason}; rebuilding it")
    split = assign_splits(ds.records, seed, val_fraction, test_fraction)
    mm, st, resumed = _open_partial(partial, key, len(ds.records), cfg.size, log)
    t0 = time.perf_counter()
    n = _fill(mm, st, ds, cfg, workers, partial, progress, checkpoint_seconds, worker_writes)
    seconds = time.perf_counter() - t0
    del mm  # close the memmap before the folder is renamed
    n_ok = _finalise(partial, final, ds, split, st, key, ds.layout)
    return ("resumed" if resumed else "done"), final, _figures(n_ok, st.failed.sum(), n, seconds, reason)
