"""Decode and preprocess many image files in worker processes, in input order.

``edge-predict a.png b.png ...`` spends about nine tenths of each image in decoding and
preprocessing (one process, one image at a time) and a tenth in a batch-1 inference. The
:class:`Prefetcher` runs :func:`edge.preprocess.preprocess` for the plain files of the command
line in a small process pool, a bounded window ahead of the parent, while the parent keeps
doing everything else exactly as before (inference at batch 1, output, exit codes): its
:meth:`Prefetcher.preprocess` stands in for :meth:`edge.predictor.Predictor.preprocess` and
hands over the worker's result when the parent asks for the file the workers reached next, or
preprocesses in the parent otherwise (study folders, a file given twice out of order). The
model input is the same array either way, so every probability is bit-identical.

Failures keep their meaning: an :class:`edge.errors.EdgeError` raised in a worker is raised
again in the parent with the same class and message; anything else is redone in the parent,
so it fails there exactly as it would have without workers.

The pool is forked before the parent opens its onnxruntime session (no inference threads
exist yet to be copied), where the platform can fork; elsewhere it is spawned.
"""

from __future__ import annotations

import collections
import os
import time
from pathlib import Path

from edge.cpu import usable_cores

# Below this many plain files a pool does not pay for its start-up (tens of ms to fork and
# warm two workers, against ~2-3 ms per MURA-sized PNG): measured in docs/performance.md.
AUTO_MIN_FILES = 16
WINDOW_PER_WORKER = 8  # results in flight per worker: bounds memory, keeps workers busy


def auto_workers(n_files: int) -> int:
    """Workers for ``n_files`` plain files when ``--workers`` is not given: the usable cores
    from :data:`AUTO_MIN_FILES` files on, else 1 (no pool)."""
    return usable_cores() if n_files >= AUTO_MIN_FILES else 1


def _init_worker() -> None:
    import cv2

    cv2.setNumThreads(1)  # the pool is the parallelism; OpenCV's own threads would oversubscribe


def _work(path: str, cfg):
    """Worker: ("ok", uint8 image, ms) | ("edge", class name, message) | ("other",)."""
    from edge import errors
    from edge.preprocess import preprocess

    t0 = time.perf_counter()
    try:
        u8 = preprocess(path, cfg)
    except errors.EdgeError as e:
        return "edge", type(e).__name__, str(e)
    except Exception:  # noqa: BLE001  redone in the parent, which reports it as it always has
        return ("other",)
    return "ok", u8, (time.perf_counter() - t0) * 1e3


class Prefetcher:
    """Preprocess ``paths`` in ``workers`` processes, a window ahead of the consumer.

    Parameters
    ----------
    paths : list of str
        Plain image files, in the order the parent will ask for them.
    workers : int
        Processes (>= 2; one worker would only add a hand-off).

    Use as a context manager (the pool is closed on exit); call :meth:`start` with the
    preprocessing config once the model card is read, then pass :meth:`preprocess` where
    the predictor's own would be called.
    """

    def __init__(self, paths, workers: int):
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
        self._pool = ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker)
        self._todo = collections.deque(str(p) for p in paths)
        self._pending = collections.deque()  # (path, Future)
        self._window = WINDOW_PER_WORKER * workers
        self._cfg = None
        self._fallback = None
        self.last_ms = None  # preprocessing time of the last image handed over, measured in its worker

    def start(self, cfg, fallback) -> None:
        """Begin with preprocessing config ``cfg``; ``fallback(src)`` preprocesses in the parent."""
        self._cfg, self._fallback = cfg, fallback
        self._fill()

    def _fill(self) -> None:
        while self._todo and len(self._pending) < self._window:
            path = self._todo.popleft()
            self._pending.append((path, self._pool.submit(_work, path, self._cfg)))

    def preprocess(self, src):
        """The worker's uint8 image for ``src`` when it is the next prefetched file, else
        the parent's own preprocessing of it."""
        self.last_ms = None
        if not self._pending or not isinstance(src, (str, os.PathLike)) or str(src) != self._pending[0][0]:
            return self._fallback(src)
        _, future = self._pending.popleft()
        try:
            self._fill()
            out = future.result()
        except Exception:  # noqa: BLE001  a worker died (killed, out of memory): the parent does it
            out = ("other",)
        if out[0] == "ok":
            self.last_ms = out[2]
            return out[1]
        if out[0] == "edge":
            from edge import errors

            raise getattr(errors, out[1], errors.EdgeError)(out[2])
        return self._fallback(src)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._pool.shutdown(wait=True, cancel_futures=True)  # waits for at most one image per worker
        return False


def plain_files(inputs) -> list:
    """The inputs that are not folders (folders are studies, scored view by view in the parent)."""
    return [s for s in inputs if not Path(s).is_dir()]
