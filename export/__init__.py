"""Export trained models to self-describing ONNX, quantise to INT8, record golden outputs.

Knows nothing of MURA's files: it takes Keras models, arrays and metadata dicts and writes
models. ``murakit export`` (``murakit/cli/export.py``) drives it over a run directory.
"""

from export.errors import ExportError
from export.metadata import PREFIX, get_metadata, load_metadata, set_metadata

__all__ = ["PREFIX", "ExportError", "get_metadata", "load_metadata", "set_metadata"]
