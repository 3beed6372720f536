"""Merge concurrent requests' images into one onnxruntime call.

A small CNN on a CPU scores a batch of 32 images in far less than 32 times the batch-1 time,
so under load the server runs one call for many requests. The wait to fill a batch is short
and bounded, and it is only taken while other admitted requests are still being decoded: a
lone request never waits.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np


@dataclass
class Result:
    """One job's share of a batch run.

    Attributes
    ----------
    outputs : dict of str -> ndarray
        The model outputs for this job's rows only (leading axis = the job's row count).
    run_ms : float
        Wall time of the onnxruntime call that scored the batch.
    batch_size : int
        Rows (images) in that call, this job's included.
    """

    outputs: dict
    run_ms: float
    batch_size: int


@dataclass
class _Job:
    x: np.ndarray
    future: asyncio.Future = field(repr=False)


class Batcher:
    """Run model inputs in batches on one inference thread.

    Parameters
    ----------
    run : callable
        ``run(x) -> {name: ndarray}`` for a float32 batch ``x`` of shape (N, ...); every output
        has leading axis N (``Predictor.run``). Called on one dedicated thread.
    max_batch : int
        Most rows per call (a job is never split, so a call can exceed this by one job).
    max_wait_s : float
        Longest wait for more jobs once the first has arrived.
    batching : bool
        False: one job per call, no waiting.
    expected : callable, optional
        Number of admitted requests that have not submitted yet; waiting stops when it is 0.
    on_batch : callable, optional
        ``on_batch(rows)`` after every call (metrics).
    """

    def __init__(self, run, max_batch: int = 32, max_wait_s: float = 0.005, batching: bool = True,
                 expected=lambda: 0, on_batch=None):
        self._run = run
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.batching = batching
        self._expected = expected
        self._on_batch = on_batch or (lambda rows: None)
        self._pending: list[_Job] = []
        self._wake = asyncio.Event()
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="edge-serve-infer")
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        """Start the batching loop on the running event loop."""
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        """Stop the loop; jobs still pending fail with RuntimeError."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        for job in self._pending:
            if not job.future.done():
                job.future.set_exception(RuntimeError("the server is shutting down"))
        self._pending.clear()
        self._executor.shutdown(wait=True)

    async def infer(self, x: np.ndarray) -> Result:
        """Score ``x`` (N, ...) float32 in some batch; returns this job's outputs."""
        if self._task is None or self._task.done():
            raise RuntimeError("the batcher is not running")
        job = _Job(np.asarray(x, dtype=np.float32), asyncio.get_running_loop().create_future())
        self._pending.append(job)
        self._wake.set()
        return await job.future

    def _rows(self) -> int:
        return sum(len(j.x) for j in self._pending)

    async def _fill(self) -> None:
        """Wait (bounded) while more jobs are expected and the batch is not full."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.max_wait_s
        while self._rows() < self.max_batch and self._expected() > 0:
            left = deadline - loop.time()
            if left <= 0:
                return
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), left)
            except asyncio.TimeoutError:
                return

    def _take(self) -> list:
        """Pop the jobs of the next call: one job, or as many as fit in ``max_batch`` rows."""
        jobs = [self._pending.pop(0)]
        rows = len(jobs[0].x)
        while self.batching and self._pending and rows + len(self._pending[0].x) <= self.max_batch:
            rows += len(self._pending[0].x)
            jobs.append(self._pending.pop(0))
        return jobs

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._pending:
                self._wake.clear()
                await self._wake.wait()
            if self.batching:
                await self._fill()
            jobs = [j for j in self._take() if not j.future.done()]  # drop timed-out requests
            if jobs:
                await self._run_jobs(loop, jobs)

    def _timed_run(self, x: np.ndarray):
        t0 = time.perf_counter()
        out = self._run(x)
        return out, (time.perf_counter() - t0) * 1e3

    async def _run_jobs(self, loop, jobs: list) -> None:
        x = jobs[0].x if len(jobs) == 1 else np.concatenate([j.x for j in jobs])
        try:
            out, ms = await loop.run_in_executor(self._executor, self._timed_run, x)
        except BaseException as e:  # every waiting request gets the error; the loop lives on unless stopped
            for j in jobs:
                if not j.future.done():
                    j.future.set_exception(e if isinstance(e, Exception) else RuntimeError("the server is stopping"))
            if not isinstance(e, Exception):
                raise
            return
        self._on_batch(len(x))
        start = 0
        for j in jobs:
            n = len(j.x)
            if not j.future.done():
                j.future.set_result(Result({k: v[start:start + n] for k, v in out.items()}, ms, len(x)))
            start += n
