"""Export trained models to self-describing ONNX, quantise to INT8, record golden outputs.

Knows nothing of MURA's files: it takes Keras models, arrays and metadata dicts and writes
models. ``murakit export`` (``murakit/cli/export.py``) drives it over a run directory.
"""

from export.errors import ExportError

__all__ = ["ExportError"]
