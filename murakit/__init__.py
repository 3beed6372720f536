"""murakit: detect abnormal upper-extremity radiographs (MURA-v1.1 layout).

The application layer: data index, synthetic data, prepared cache, protocol metrics,
benchmarks and the ``murakit`` command line. Heavy frameworks load only inside the
subcommands that need them.
"""

from edge import __version__
from murakit.errors import MurakitError

__all__ = ["MurakitError", "__version__"]
