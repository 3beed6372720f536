"""Worker pools that end, whatever the caller's ``__main__`` is: one line instead of a respawn loop.

Every stage that uses processes (``synth``, the DICOM synth, ``prepare``, the local ``score``
engine) starts them with the ``spawn`` method: the parent may hold OpenCV, TensorFlow or
onnxruntime threads, which ``fork`` would copy half-locked. A spawn worker is a fresh
interpreter that first re-imports the parent's main module under the name ``__mp_main__``,
and only then runs the task. What that means for each way of running a stage:

==============================  ================================================================
how the stage is called         outcome
==============================  ================================================================
script / ``python -m mod``      workers re-import it; top-level code that is not the stage
with ``if __name__ ==           runs again in each worker (once, at its start); the pool works.
"__main__":``
script without the guard        each worker re-runs the script, reaches the stage again while it
                                is still starting and would die there, forever (Pool replaces
                                dead workers). Here the worker ends at once (:data:`GUARD_EXIT`)
                                and the stage stops with one error naming the fix.
``python -`` / ``python <       ``__main__`` names the file ``<stdin>``, which no worker can read.
file`` (program on stdin)       Known before any worker starts: the stage runs in this process
                                (one worker) after a one-line notice, given once per process.
``python -c``, the              ``__main__`` has no file, so workers do not re-import it; murakit's
interactive interpreter,        worker functions live in importable modules: the pool works as
Jupyter / IPython               usual.
a worker that dies starting     (crash, out of memory, an error in its initializer): counted;
                                :data:`START_ATTEMPTS` such deaths, or one whose cause is known,
                                end the stage with one line.
a worker that dies working      ``multiprocessing.Pool`` would wait for its lost task forever: the
                                stage ends with one line (``score`` instead retries the batch's
                                images one by one, see :mod:`murakit.scoring.local`).
==============================  ================================================================

Why an error for the unguarded script but the in-process run for stdin: for the script, by
the time the stage knows, its workers have already re-run the script's top level (whatever it
does before the stage call); running on in-process would hide that, and every later stage
would start workers that do it again. The fix is one line, so the error names it. A program
on stdin has nothing wrong with it and no file to put a guard in; every stage's output is
the same for any worker count, so only the speed differs.

How the guard case is recognised: in the worker, while it re-imports ``__main__``
(multiprocessing's bootstrap), a stage that starts work (a pool, a run-folder lock, data
generation) calls :func:`refuse_in_worker_start`. That is exactly the state in which Python
itself refuses to start processes; a worker that merely imports murakit, or a guarded script,
never reaches it, so there are no false alarms. The parent sees the exit code.

Workers report to the parent through a queue when their initializer has run, so the parent
tells a death at start-up from a death while working.
"""

from __future__ import annotations

import itertools
import multiprocessing
import multiprocessing.context
import multiprocessing.pool
import os
import signal
import sys

from murakit.errors import MurakitError

GUARD_EXIT = 86  # a worker re-entered a stage while importing the parent's __main__
START_FAILED = 87  # the worker's initializer raised; its message went to the parent's queue
START_ATTEMPTS = 3  # deaths at start-up (cause unknown) tolerated per stage before it stops
POLL_SECONDS = 0.2  # how often a parent waiting for results looks at its workers

GUARD_FIX = ('this script calls a murakit stage at its top level, so every worker process re-runs it; '
             'put the calls under  if __name__ == "__main__":  (see "Python API" in the README)')

_told_in_process = False


def in_worker_start() -> bool:
    """True in a spawn (or forkserver) worker while it re-imports the parent's ``__main__``.

    ``_inheriting`` is the flag multiprocessing itself checks before refusing to start a
    process during that phase (``spawn._check_not_importing_main``); it is set only then.
    (``multiprocessing.parent_process()`` cannot tell: it is still None in that phase.)
    """
    return bool(getattr(multiprocessing.current_process(), "_inheriting", False))


def refuse_in_worker_start() -> None:
    """End this process at once (exit :data:`GUARD_EXIT`) when it is a worker re-running an
    unguarded script's call to a stage: the stage must not start (files, locks, pools) in a
    process that exists only to import the script. The parent prints the one line."""
    if in_worker_start():
        sys.stdout.flush()
        os._exit(GUARD_EXIT)


def main_unreadable() -> str | None:
    """Why spawn workers could not re-import ``__main__``, or None when they can (or need not).

    Workers import a ``python -m`` module by name, and re-run a script from its path; without
    a path (``python -c``, interactive, Jupyter) they skip it. A path that names no file
    (``<stdin>``, a deleted script) would make every worker die at start.
    """
    main = sys.modules.get("__main__")
    if getattr(getattr(main, "__spec__", None), "name", None):
        return None
    path = getattr(main, "__file__", None)
    if path is None:
        return None
    if path == "<stdin>":
        return "the program was read from standard input"
    full = path if os.path.isabs(path) else os.path.join(multiprocessing.process.ORIGINAL_DIR or os.getcwd(), path)
    return None if os.path.isfile(full) else f"the main script {path} no longer exists"


def worker_count(workers: int) -> int:
    """The worker processes a stage may start: ``workers``, or 1 when spawn workers could not
    re-import ``__main__`` (see :func:`main_unreadable`; a one-line notice on stderr, once per
    process). In a worker re-running an unguarded script, ends the process
    (:func:`refuse_in_worker_start`)."""
    global _told_in_process
    refuse_in_worker_start()
    if workers <= 1:
        return workers
    reason = main_unreadable()
    if reason is None:
        return workers
    if not _told_in_process:
        _told_in_process = True
        fix = (f' (save it as a .py file with the calls under  if __name__ == "__main__":  to use {workers} workers)'
               if "standard input" in reason else "")
        print(f"murakit: {reason}, which worker processes cannot re-read: stages run in this process{fix}",
              file=sys.stderr, flush=True)
    return 1


def _start_worker(status, initializer, initargs) -> None:
    """Pool initializer of every worker: the stage's own initializer, then "ready" to the parent;
    an exception's first line goes to the parent instead of a traceback to stderr."""
    try:
        if initializer is not None:
            initializer(*initargs)
    except BaseException as e:  # noqa: BLE001  KeyboardInterrupt or SystemExit too: the worker is unusable
        from edge.errors import first_line

        status.put(("failed", os.getpid(), f"{type(e).__name__}: {first_line(e)}"))
        os._exit(START_FAILED)
    status.put(("ready", os.getpid(), ""))


class _SpawnContext(multiprocessing.context.SpawnContext):
    """The spawn context, keeping every process it makes: their exit codes tell how workers ended
    (``multiprocessing.Pool`` and ``ProcessPoolExecutor`` create their workers through it)."""

    def __init__(self):
        super().__init__()
        self.processes: list = []

    def Process(self, *args, **kwargs):  # the context API's name
        p = multiprocessing.context.SpawnProcess(*args, **kwargs)
        self.processes.append(p)
        return p


def _ended(exitcode: int) -> str:
    if exitcode < 0:
        try:
            return f"killed by {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"killed by signal {-exitcode}"
    return f"exit code {exitcode}"


def _one_line_uncaught() -> None:
    """Make an uncaught :class:`MurakitError` print as the CLI prints it (one line, no traceback).

    Installed only when a pool stops for a reason that arises in scripts (the missing guard, a
    worker that cannot start), so a script run as ``python script.py`` fails in one line. Other
    exceptions keep the previous hook; Jupyter does not use ``sys.excepthook``.
    """
    previous = sys.excepthook
    if getattr(previous, "murakit_one_line", False):
        return

    def hook(kind, value, tb):
        if isinstance(value, MurakitError):
            print(f"murakit: error: {value}", file=sys.stderr, flush=True)
        else:
            previous(kind, value, tb)

    hook.murakit_one_line = True
    sys.excepthook = hook


class Watch:
    """The workers of one stage's pools: a context that records them, a queue they report to,
    and the count of deaths at start-up (shared by the stage's successive pools).

    Parameters
    ----------
    what : str
        The stage, for messages (``synth``, ``prepare``, ``score`` ...).
    """

    def __init__(self, what: str):
        self.what = what
        self.context = _SpawnContext()
        self.status = self.context.SimpleQueue()
        self.ready: set = set()
        self.failed: dict = {}
        self.seen: set = set()
        self.start_deaths = 0

    def initializer(self, initializer=None, initargs=()) -> tuple:
        """``(initializer, initargs)`` for a pool: the stage's own, wrapped to report to the parent."""
        return _start_worker, (self.status, initializer, tuple(initargs))

    def _new_deaths(self) -> list:
        dead = [p for p in list(self.context.processes) if p.pid not in self.seen and p.exitcode is not None]
        while not self.status.empty():  # after the snapshot: a report sent before dying is read
            kind, pid, message = self.status.get()
            if kind == "ready":
                self.ready.add(pid)
            else:
                self.failed[pid] = message
        self.seen.update(p.pid for p in dead)
        return dead

    def stop(self, message: str):
        """Raise the stage's one-line error (one line too when a script leaves it uncaught)."""
        _one_line_uncaught()
        raise MurakitError(message)

    def check(self, ignore_terminated: bool = False):
        """Look at the workers that ended since the last call.

        Returns one of them that had started (it died while working), or None.
        ``ignore_terminated``: SIGTERM deaths before start are not counted (a broken
        ``ProcessPoolExecutor`` stops its other workers that way).

        Raises
        ------
        MurakitError
            A worker re-ran an unguarded script (:data:`GUARD_EXIT`), a worker's initializer
            failed, or :data:`START_ATTEMPTS` workers died at start-up.
        """
        worked = None
        deaths = self._new_deaths()
        # a SIGTERM is the executor stopping the rest of a broken pool, unless nothing else died
        others = any(p.exitcode != -signal.SIGTERM or p.pid in self.ready for p in deaths)
        for p in deaths:
            if p.pid in self.ready:
                worked = worked or p
            elif p.exitcode == GUARD_EXIT:
                self.stop(GUARD_FIX)
            elif p.pid in self.failed:
                self.stop(f"a {self.what} worker process could not start: {self.failed[p.pid]}")
            elif ignore_terminated and others and p.exitcode == -signal.SIGTERM:
                continue  # stopped by its broken pool, not a death of its own
            else:
                self.start_deaths += 1
                if self.start_deaths >= START_ATTEMPTS:
                    self.stop(f"{self.start_deaths} {self.what} worker processes died while starting "
                               f"(the last: {_ended(p.exitcode)})")
        return worked


class SpawnPool:
    """A ``multiprocessing.Pool`` of spawn workers whose results never wait for a dead worker.

    ``imap`` and ``imap_unordered`` poll the workers while they wait (:data:`POLL_SECONDS`): a
    death at start-up is counted (see :meth:`Watch.check`), a death while working ends the stage
    with one line (``Pool`` would wait for the lost task forever). Leaving the ``with`` block
    terminates the workers, as ``Pool`` does.

    Parameters
    ----------
    workers : int
        Processes, after :func:`worker_count`.
    what : str
        The stage, for messages.
    initializer, initargs
        As for ``multiprocessing.Pool``.
    """

    def __init__(self, workers: int, what: str, initializer=None, initargs=()):
        self.watch = Watch(what)
        init, args = self.watch.initializer(initializer, initargs)
        self.pool = multiprocessing.pool.Pool(workers, init, args, context=self.watch.context)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.pool.terminate()
        self.pool.join()

    def imap(self, fn, iterable, chunksize: int = 1):
        """``Pool.imap``, watched."""
        return self._results(self.pool.imap, fn, iterable, chunksize)

    def imap_unordered(self, fn, iterable, chunksize: int = 1):
        """``Pool.imap_unordered``, watched."""
        return self._results(self.pool.imap_unordered, fn, iterable, chunksize)

    def _results(self, imap, fn, iterable, chunksize: int):
        # Chunks travel as single tasks, as Pool does it, but through chunksize=1: only that
        # iterator's next() takes a timeout.
        it = iter(iterable)
        chunks = iter(lambda: tuple(itertools.islice(it, chunksize)), ())
        results = imap(_run_chunk, ((fn, chunk) for chunk in chunks))
        while True:
            try:
                done = results.next(POLL_SECONDS)
            except StopIteration:
                return
            except multiprocessing.TimeoutError:
                dead = self.watch.check()
                if dead is not None:
                    self.watch.stop(f"a {self.watch.what} worker process died while working "
                                    f"({_ended(dead.exitcode)}: out of memory, or killed); rerun the same call")
                continue
            yield from done


def _run_chunk(task) -> list:
    fn, items = task
    return [fn(item) for item in items]
