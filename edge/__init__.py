"""murakit's edge runtime: decode, preprocess and run exported models with onnxruntime.

Needs only numpy, opencv-python-headless and onnxruntime; never imports TensorFlow,
scikit-learn or matplotlib (a test proves it).

When numpy cannot be imported, ``import edge`` still succeeds (so that :mod:`edge.launch`
can name the broken package in one line); the names below then raise that ImportError.
"""

from edge.errors import EdgeError, ImageError, ModelError

__version__ = "0.1.0"  # the one home of the version: pyproject.toml reads it ([tool.setuptools.dynamic])

__all__ = [
    "MAX_PIXELS",
    "EdgeError",
    "ImageError",
    "ModelError",
    "PreprocessConfig",
    "PreprocessInfo",
    "__version__",
    "load_image",
    "preprocess",
    "preprocess_with_info",
    "to_model_input",
]

try:
    from edge.limits import MAX_PIXELS
    from edge.loader import load_image
    from edge.preprocess import PreprocessConfig, PreprocessInfo, preprocess, preprocess_with_info, to_model_input
except ImportError as _error:  # numpy missing or broken: edge.deps reports it; the names re-raise it
    _IMPORT_ERROR = _error

    def __getattr__(name):
        if name in __all__:
            raise ImportError(f"edge.{name} is unavailable: {_IMPORT_ERROR}") from _IMPORT_ERROR
        raise AttributeError(f"module 'edge' has no attribute {name!r}")
