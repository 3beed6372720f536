"""Range checks for the numbers a user gives murakit: one MurakitError line naming the flag.

The function or options dataclass that takes a value declares its constraint by calling one
of these at its top (``prepare``, ``train_baseline``, ``CnnOptions.check``, ``explore``,
``benchmark``, the ``synth`` command); callers never re-check. Values come from argparse
(already ``int`` / ``float``) or from Python callers, so ``bool`` and non-finite floats are
refused too.
"""

from __future__ import annotations

import math

from murakit.errors import MurakitError

# numpy's legacy seeding (keras.utils.set_random_seed, np.random.seed) takes [0, 2**32 - 1]
MAX_SEED = 2**32 - 1


def max_workers() -> int:
    """The most worker processes / threads a command may start: 4 per core (8 on 2 cores).

    More only adds start-up time and memory: an unbounded ``--workers 100000`` spawned
    interpreters until the machine gave up.
    """
    from edge.cpu import usable_cores

    return 4 * usable_cores()


def check_int(flag: str, value, lo: int, hi: int) -> int:
    """``value`` as an int in ``[lo, hi]``, else MurakitError naming ``flag``."""
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise MurakitError(f"{flag} must be an integer in [{lo}, {hi}], got {value!r}")
    return int(value)


def check_float(flag: str, value, lo: float, hi: float, lo_open: bool = False, hi_open: bool = False) -> float:
    """``value`` as a finite float in ``[lo, hi]`` (``lo_open`` / ``hi_open``: excluded ends)."""
    ok = not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
    ok = ok and (lo < value if lo_open else lo <= value) and (value < hi if hi_open else value <= hi)
    if not ok:
        bounds = f"{'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"
        raise MurakitError(f"{flag} must be a number in {bounds}, got {value!r}")
    return float(value)


def check_seed(value, flag: str = "--seed") -> int:
    """A seed in ``[0, 2**32 - 1]``."""
    return check_int(flag, value, 0, MAX_SEED)


def check_workers(value, flag: str = "--workers") -> int:
    """A worker count in ``[1, max_workers()]``."""
    return check_int(flag, value, 1, max_workers())
