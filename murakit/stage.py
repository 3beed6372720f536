"""What a stage of a run returns: one shape for prepare, explore, train, export, verify and bench.

Every stage is one function ``stage(run, options, *, force=False, log=print) -> StageResult``:
it holds the run's lock for what it writes (:mod:`murakit.lock`), decides inside that lock
whether its outputs are still fresh, and returns what it did. The CLI prints the result, the
Python API (:mod:`murakit.api`) wraps it in a displayable object, the demo chains them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

STATUSES = ("done", "up-to-date", "resumed")


@dataclass(frozen=True)
class StageResult:
    """What one stage did.

    Attributes
    ----------
    stage : str
        The stage's name (``"bench"``, ...).
    status : str
        ``"done"`` (the work ran), ``"up-to-date"`` (outputs newer than every input: nothing ran)
        or ``"resumed"`` (an interrupted run was completed).
    paths : tuple of Path
        The files (or folders) the stage wrote or, when up to date, would have written.
    seconds : float
        Wall-clock time of the stage, lock and freshness check included.
    figures : dict
        The stage's headline numbers (plain JSON-able values), e.g. the report for bench.
    """

    stage: str
    status: str
    paths: tuple = ()
    seconds: float = 0.0
    figures: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.status not in STATUSES:
            raise ValueError(f"stage status must be one of {STATUSES}, not {self.status!r}")
        object.__setattr__(self, "paths", tuple(Path(p) for p in self.paths))

    @property
    def up_to_date(self) -> bool:
        """True when nothing ran because the outputs were already fresh."""
        return self.status == "up-to-date"


__all__ = ["STATUSES", "StageResult"]
