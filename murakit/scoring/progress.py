"""A one-line progress display on stderr: done/total, failures, images/s and ETA.

Kept tiny and dependency-free (tqdm belongs to the ``train`` extra; ``murakit score`` runs with
the edge runtime only). The rate counts only images scored in this run, so a resumed run's ETA
is not flattered by the images it skipped.
"""

from __future__ import annotations

import sys
import time


def _clock(seconds: float) -> str:
    seconds = int(max(0, round(seconds)))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class Progress:
    """``\\r``-updated status line, redrawn at most every ``every`` seconds.

    Parameters
    ----------
    total : int
        Images in the job.
    done : int
        Images already done before this run (resume).
    enabled : bool
        False: print nothing.
    stream : file, optional
        Default ``sys.stderr``.
    """

    def __init__(self, total: int, done: int = 0, enabled: bool = True, stream=None, every: float = 0.5):
        self.total, self.start_done, self.done, self.failed = total, done, done, 0
        self.enabled, self.stream, self.every = enabled, stream or sys.stderr, every
        self.t0 = self.last = time.perf_counter()
        self.width = 0  # of the last line drawn: a shorter one is padded over it

    @property
    def rate(self) -> float:
        """Images per second scored in this run."""
        return (self.done - self.start_done) / max(time.perf_counter() - self.t0, 1e-9)

    def line(self) -> str:
        rate = self.rate
        failed = f" ({self.failed} failed)" if self.failed else ""
        eta_text = _clock((self.total - self.done) / rate) if rate > 0 else "?"
        return (f"score: {self.done}/{self.total} images{failed} | {rate:.0f} img/s | "
                f"elapsed {_clock(time.perf_counter() - self.t0)} | ETA {eta_text}")

    def update(self, n: int, failed: int = 0) -> None:
        """Count ``n`` more images, ``failed`` of them failures."""
        self.done += n
        self.failed += failed
        now = time.perf_counter()
        if self.enabled and now - self.last >= self.every:
            self.last = now
            self._draw("")

    def _draw(self, end: str) -> None:
        text = self.line()
        self.stream.write("\r" + text.ljust(self.width) + end)
        self.stream.flush()
        self.width = len(text)

    def close(self) -> None:
        if self.enabled:
            self._draw("\n")
