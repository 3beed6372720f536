"""When is a stage's output complete? Shared by the commands so a rerun redoes nothing."""

from __future__ import annotations

from pathlib import Path


def is_fresh(output, inputs) -> bool:
    """True when ``output`` exists and is at least as new as every existing input file.

    Parameters
    ----------
    output : path of the artifact a stage writes last (its "done" marker)
    inputs : iterable of paths the stage read; missing ones are ignored
    """
    output = Path(output)
    if not output.exists():
        return False
    t = output.stat().st_mtime
    return all(Path(p).stat().st_mtime <= t for p in inputs if Path(p).exists())
