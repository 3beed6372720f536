"""murakit: detect abnormal upper-extremity radiographs (MURA-v1.1 layout).

The application layer: data index, synthetic data, prepared cache, protocol metrics,
benchmarks and the ``murakit`` command line. The functions below are the Python API, one call
per stage (see :mod:`murakit.api` and docs/walkthrough.ipynb)::

    import murakit as mk
    data = mk.synthesize("data/synth", studies=200)
    mk.prepare(data, run="runs/nb", size=64)
    mk.train_baseline(run="runs/nb")

Heavy frameworks load only inside the functions and subcommands that need them, and the API
module itself only on first use, so ``murakit synth`` starts as fast as before.

Every error a user can cause is a :class:`UserError` (one line, what to change): catch that.
"""

from edge import __version__
from edge.errors import UserError
from murakit.errors import MurakitError

__all__ = ["MurakitError", "UserError", "__version__", "calibrate", "evaluate", "explain", "explore", "export", "load_dataset", "predict",
           "prepare", "synthesize", "train_baseline", "train_cnn"]
API = frozenset(__all__[3:])


def __getattr__(name):
    """``murakit.prepare`` & co. come from :mod:`murakit.api`, imported on first use (PEP 562)."""
    if name in API:
        from murakit import api

        return getattr(api, name)
    raise AttributeError(f"module 'murakit' has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *API])
