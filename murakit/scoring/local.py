"""The local engine: a pool of worker processes, each decoding, preprocessing and scoring batches.

Each worker (``spawn`` start method: no inherited locks or onnxruntime state) loads the model
once and runs one batch at a time: read + decode + the model's preprocessing for every image of
the batch, then one onnxruntime call for the whole batch. Only result rows travel back to the
parent, which commits them to disk. Every library runs single-threaded inside a worker (OpenCV,
onnxruntime intra-op, OpenMP/BLAS), so ``workers`` processes use ``workers`` cores and nothing
oversubscribes. Scoring in the workers rather than in the parent measured faster on this
project's 2-core machine (see docs/scoring.md): the parent would compete for a core and every
image would cross a pipe.
"""

from __future__ import annotations

import multiprocessing as mp
import os
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool

from murakit.errors import MurakitError

THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")

_PREDICTOR = None


def usable_cores() -> int:
    """Cores this process may run on (CPU affinity, else the CPU count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _load(model_path: str) -> None:
    global _PREDICTOR
    from edge.predictor import Predictor

    _PREDICTOR = Predictor(model_path, threads=1)


def _init_worker(model_path: str) -> None:
    """Pool initializer: single-threaded libraries, Ctrl-C left to the parent, the model loaded once."""
    import signal

    import cv2

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent commits finished batches and stops the pool
    cv2.setNumThreads(1)
    _load(model_path)


def _score_batch(jobs: list) -> list:
    from murakit.scoring.work import score_jobs

    return score_jobs(_PREDICTOR, jobs)


def run_local(batches: list, model_path, workers: int, emit) -> None:
    """Score ``batches`` (lists of Job) and call ``emit(rows)`` in the parent for each, as they finish.

    Parameters
    ----------
    batches : list of list of Job
    model_path : str or Path
    workers : int
        Worker processes; 1 scores in this process (no pool).
    emit : callable
        Receives the result rows of one whole batch.

    Raises
    ------
    MurakitError
        A worker died (killed, out of memory, a crash inside a decoder); the batches already
        emitted are kept, so a rerun continues.
    """
    if workers == 1:
        _load(str(model_path))
        for batch in batches:
            emit(_score_batch(batch))
        return
    for name in THREAD_VARIABLES:  # inherited by the spawned workers before they import numpy
        os.environ.setdefault(name, "1")
    ctx = mp.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker,
                             initargs=(str(model_path),)) as pool:
        try:
            _drive(pool, batches, workers, emit)
        except BrokenProcessPool:
            raise MurakitError("a scoring worker process died (killed, out of memory, or a crash while "
                               "decoding an image); finished batches are saved: rerun to continue") from None
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise


def _drive(pool, batches: list, workers: int, emit) -> None:
    """Keep 2 batches per worker in flight (bounded memory), emit results as they complete."""
    todo = iter(batches)
    pending = set()
    for batch in todo:
        pending.add(pool.submit(_score_batch, batch))
        if len(pending) >= 2 * workers:
            break
    while pending:
        finished, pending = wait(pending, return_when=FIRST_COMPLETED)
        for future in finished:
            emit(future.result())
            batch = next(todo, None)
            if batch is not None:
                pending.add(pool.submit(_score_batch, batch))
