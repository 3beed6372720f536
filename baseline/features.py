"""HOG features of many images on all cores, computed by the edge runtime's own code."""

from __future__ import annotations

import contextlib
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from edge.errors import ImageError
from edge.hog import HogConfig, hog_batch

# Images per task: big enough that numpy's loops (which release the GIL) dominate,
# small enough for a smooth progress bar.
CHUNK = 256


def default_jobs() -> int:
    """Worker threads used when ``n_jobs`` is None: every usable core."""
    from edge.cpu import usable_cores

    return usable_cores()


def extract_features(images, hog_cfg: HogConfig | None = None, n_jobs: int | None = None,
                     progress=None, out: np.ndarray | None = None, rows=None) -> np.ndarray:
    """HOG features of every image, in parallel threads.

    Threads, not processes: :func:`edge.hog.hog_batch` spends its time in numpy loops that
    release the GIL, so threads scale (processes measured no better: docs/performance.md,
    "Design choices"), share a memory-mapped cache for free and need no pickling of results.

    Parameters
    ----------
    images : ndarray (R, S, S)
        uint8 grey images (a ``np.memmap`` of the prepared cache is fine; it is read in chunks).
    hog_cfg : HogConfig, optional
        Default ``HogConfig()``.
    n_jobs : int, optional
        Threads; default every core. 1 runs in the calling thread.
    progress : callable, optional
        Called with the number of images finished after each chunk (for a progress bar).
    out : ndarray float32 (N, D), optional
        Where to write (e.g. a ``np.lib.format.open_memmap`` feature cache).
    rows : int array (N,), optional
        Featurise ``images[rows]`` (in that order) without loading them all; default all R.

    Returns
    -------
    np.ndarray
        float32 (N, D), D = ``hog_cfg.feature_dim(S)``, row i = features of image
        ``rows[i]`` (or ``i``); ``out`` when given.

    Raises
    ------
    ValueError
        ``n_jobs`` < 1 or ``out`` of the wrong shape/dtype.
    edge.errors.ImageError
        Images of the wrong rank or smaller than one HOG block.
    """
    hog_cfg = HogConfig() if hog_cfg is None else hog_cfg
    n_jobs = default_jobs() if n_jobs is None else int(n_jobs)
    if n_jobs < 1:
        raise ValueError(f"n_jobs must be at least 1, got {n_jobs}")
    images = images if isinstance(images, np.ndarray) else np.asarray(images)
    if images.ndim != 3:
        raise ImageError(f"HOG needs grey images shaped (N, H, W), got shape {images.shape}")
    rows = np.arange(len(images)) if rows is None else np.asarray(rows, dtype=np.int64)
    shape = (len(rows), hog_cfg.feature_dim(tuple(images.shape[1:])))
    if out is None:
        out = np.empty(shape, dtype=np.float32)
    elif out.shape != shape or out.dtype != np.float32:
        raise ValueError(f"out must be float32 {shape}, got {out.dtype} {out.shape}")

    def work(start: int) -> int:
        stop = min(start + CHUNK, len(rows))
        out[start:stop] = hog_batch(np.asarray(images[rows[start:stop]]), hog_cfg)
        return stop - start

    starts = range(0, len(rows), CHUNK)
    with ThreadPoolExecutor(n_jobs) if n_jobs > 1 else contextlib.nullcontext() as pool:
        for n in (pool.map if pool else map)(work, starts):
            if progress is not None:
                progress(n)
    return out
