"""One writer per stage of a run folder, refused at once, released when the holder dies.

Every command that writes a run folder holds, while it runs, an exclusive lock on the stage
it writes and shared locks on the stages it reads:

==================  ============  ===============================
command             writes        reads
==================  ============  ===============================
``prepare``         ``prepared``
``explore``         ``explore``   ``prepared``
``train baseline``  ``baseline``  ``prepared``
``train cnn``       ``cnn``       ``prepared``
``export``          ``export``    ``prepared``, ``baseline``, ``cnn``
``bench``           ``report``    ``prepared``, ``baseline``, ``cnn``, ``export``
``explain``         ``explain``   ``cnn``
``calibrate``       ``cnn`` and   (rewrites each trained model's card; one lock at a time)
                    ``baseline``
==================  ============  ===============================

So two ``prepare`` on one run cannot interleave, ``prepare`` cannot replace the cache under a
running ``train``, and ``train baseline`` and ``train cnn`` may run side by side. A command
that needs a stage another process holds does not wait: it stops before doing anything, with
``run folder RUN is in use by PID n (murakit prepare)`` (exit 2).

The locks are ``fcntl.flock`` locks on ``RUN/.locks/<stage>.lock``: the kernel drops them when
their process ends, however it ends (``kill -9`` included), so a lock file left behind never
blocks anyone. For the message, each holder also writes ``RUN/.locks/<stage>.<pid>.holder``
(its command), removed on release; one left by a killed process names a dead PID and is
ignored. Locks are re-entrant within a process (``murakit demo`` runs the stages in one
process).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from pathlib import Path

from murakit.errors import MurakitError
from murakit.layout import RunLayout, ensure_dir

COMMAND_OF_STAGE = {"prepared": "murakit prepare", "explore": "murakit explore", "baseline": "murakit train baseline",
                    "cnn": "murakit train cnn", "export": "murakit export", "report": "murakit bench",
                    "explain": "murakit explain"}

_held: dict = {}  # lock file -> [fd, exclusive, depth] for this process


class RunInUse(MurakitError):
    """Another process holds a stage this command needs."""


def _holder_file(path: Path, pid: int) -> Path:
    return path.with_name(f"{path.stem}.{pid}.holder")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: alive, another user's
        return True
    return True


def _holders(path: Path):
    """(pid, mode, command, file) of every holder file of ``path``."""
    for f in path.parent.glob(f"{path.stem}.*.holder"):
        try:
            pid = int(f.name.split(".")[-2])
            mode, command = f.read_text(encoding="utf-8").strip().split("\t", 1)
        except (OSError, ValueError):
            continue
        yield pid, mode, command, f


def _holder(path: Path) -> str:
    """``PID n (command)`` of a live process holding ``path`` (writers first), for the message."""
    found = []
    for pid, mode, command, _ in _holders(path):
        if pid != os.getpid() and _alive(pid):
            found.append((mode != "exclusive", pid, command))
    if not found:
        return "another murakit process"
    _, pid, command = min(found)
    return f"PID {pid} ({command})"


def _announce(path: Path, exclusive: bool, command: str) -> None:
    """Write this process's holder file (and drop those of killed holders)."""
    for pid, _, _, f in _holders(path):
        if not _alive(pid):
            f.unlink(missing_ok=True)
    try:
        _holder_file(path, os.getpid()).write_text(
            f"{'exclusive' if exclusive else 'shared'}\t{command}\n", encoding="utf-8")
    except OSError:
        pass  # only the message would miss it


def _acquire(path: Path, exclusive: bool, root: Path, command: str) -> None:
    """Take (or re-enter) one stage's lock without waiting; RunInUse when another process has it."""
    held = _held.get(path)
    if held is not None and (held[1] or not exclusive):
        held[2] += 1
        return
    try:
        fd = held[0] if held else os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise MurakitError(f"run folder {root}: cannot create {path.name} ({e.strerror or e})") from None
    try:
        fcntl.flock(fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
    except OSError as e:
        if not held:
            os.close(fd)
        if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            raise RunInUse(f"run folder {root} is in use by {_holder(path)}; wait for it to finish "
                           "(or stop it) and rerun") from None
        raise MurakitError(f"run folder {root}: cannot lock {path.name} ({e.strerror or e})") from None
    _announce(path, exclusive, command)
    if held:
        held[1], held[2] = True, held[2] + 1
    else:
        _held[path] = [fd, exclusive, 1]


def _release(path: Path) -> None:
    held = _held[path]
    held[2] -= 1
    if held[2] == 0:
        _holder_file(path, os.getpid()).unlink(missing_ok=True)
        os.close(held[0])  # closing the last descriptor drops the flock
        del _held[path]


@contextlib.contextmanager
def stage_lock(run, writes: str, reads=(), create: bool = False, command: str | None = None):
    """Hold ``writes`` exclusively and ``reads`` shared for the block (see the module docstring).

    Parameters
    ----------
    run : str or Path
        The run folder.
    writes : str
        The stage this command writes, a key of :data:`COMMAND_OF_STAGE`.
    reads : iterable of str
        Stages it reads.
    create : bool
        Create a missing run folder (the stages that can start a run: prepare, explore).
        Otherwise a missing run folder holds nothing to lock: the block runs unlocked and
        the stage reports what is missing in its own words (no folder is created by a
        command that then fails).
    command : str, optional
        The command named to a process that finds the stage held; default the stage's own
        (:data:`COMMAND_OF_STAGE`: ``murakit calibrate`` writes ``cnn`` too).

    Raises
    ------
    RunInUse
        Another process holds one of the stages (exit 2, one line).
    MurakitError
        The run folder is a file, cannot be created or is not writable.
    """
    from murakit.pools import refuse_in_worker_start

    refuse_in_worker_start()  # a worker re-running an unguarded script: no stage starts there
    layout = RunLayout(run)
    if not create and not layout.root.exists():
        yield layout
        return
    ensure_dir(layout.locks, "run folder", shown=layout.root)
    command = command or COMMAND_OF_STAGE[writes]
    wanted = sorted({writes: True, **{r: False for r in reads if r != writes}}.items())  # one order: no deadlock
    taken = []
    try:
        for stage, exclusive in wanted:
            path = layout.lock_file(stage)
            _acquire(path, exclusive, layout.root, command)
            taken.append(path)
        yield layout
    finally:
        for path in reversed(taken):
            _release(path)
