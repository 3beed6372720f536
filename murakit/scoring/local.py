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

import itertools
import os
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool

THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")

_PREDICTOR = None


def _load(model) -> None:
    """Load the worker's predictor: ``model`` is a ``work.ModelSpec`` or a model path."""
    global _PREDICTOR
    from murakit.scoring.work import ModelSpec

    _PREDICTOR = (model if isinstance(model, ModelSpec) else ModelSpec(str(model))).load(threads=1)


def _init_worker(model_path) -> None:
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
    model_path : work.ModelSpec, str or Path
    workers : int
        Worker processes; 1 scores in this process (no pool).
    emit : callable
        Receives the result rows of one whole batch.

    A worker process that dies (killed, out of memory, a crash inside a decoder) does not stop
    the run: the batches it and its siblings had in flight are scored again one image at a time
    in a fresh single-worker pool, so an image that kills its worker again is found and becomes a
    failure row, and every other image gets its result. A worker that dies before it has loaded
    the model is no image's fault: such deaths are counted, and the run stops with one line
    (:class:`murakit.pools.Watch`) instead of starting workers without end.
    """
    from murakit import pools

    workers = pools.worker_count(workers)
    if workers == 1:
        _load(model_path)
        for batch in batches:
            emit(_score_batch(batch))
        return
    for name in THREAD_VARIABLES:  # inherited by the spawned workers before they import numpy
        os.environ.setdefault(name, "1")
    watch = pools.Watch("score")
    rest = list(batches)
    while rest:
        lost, rest = _run_pool(rest, model_path, workers, emit, watch)
        if lost:
            watch.check(ignore_terminated=True)  # raises when workers cannot start
        _isolate([job for batch in lost for job in batch], model_path, emit, watch)


def _pool(model_path: str, workers: int, watch) -> ProcessPoolExecutor:
    """Spawn workers (``watch.context``) that report to ``watch`` once the model is loaded."""
    init, args = watch.initializer(_init_worker, (model_path,))
    return ProcessPoolExecutor(workers, mp_context=watch.context, initializer=init, initargs=args)


def _run_pool(batches: list, model_path: str, workers: int, emit, watch) -> tuple:
    """Score ``batches`` with 2 batches per worker in flight (bounded memory), emitting results as
    they complete. Returns ([], []) when done, or (batches lost, batches not started) when a
    worker died (its batches, and every batch in flight whose result was not emitted yet)."""
    pool, todo, pending, lost = _pool(model_path, workers, watch), iter(batches), {}, []

    def submit(batch):
        try:
            pending[pool.submit(_score_batch, batch)] = batch
        except BrokenProcessPool:  # the pool broke between two results
            lost.append(batch)

    try:
        for batch in itertools.islice(todo, 2 * workers):
            submit(batch)
        while pending and not lost:
            finished, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in finished:
                batch = pending.pop(future)
                try:
                    rows = future.result()
                except BrokenProcessPool:
                    lost.append(batch)
                    continue
                emit(rows)
                nxt = None if lost else next(todo, None)
                if nxt is not None:
                    submit(nxt)
        return (lost + list(pending.values()), list(todo)) if lost else ([], [])
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _isolate(jobs: list, model_path: str, emit, watch) -> None:
    """Score the jobs that were in flight when a worker died, one image per task in a one-worker
    pool: an image whose task kills the (started) worker again is a failure row; a worker that
    dies before it started is counted by ``watch`` and the image tried again."""
    from murakit.scoring.work import failure_row

    if not jobs:
        return
    pool = _pool(model_path, 1, watch)
    try:
        for job in jobs:
            while True:
                try:
                    emit(pool.submit(_score_batch, [job]).result())
                    break
                except BrokenProcessPool:
                    pool.shutdown(wait=True)
                    pool = _pool(model_path, 1, watch)
                    if watch.check(ignore_terminated=True) is not None:  # raises past the start-up bound
                        emit([failure_row(job, f"{job.path}: the worker process died while scoring this file "
                                               "(a crash in a decoder, or out of memory)")])
                        break
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
