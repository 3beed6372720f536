"""murakit's edge runtime: decode, preprocess and run exported models with onnxruntime.

Needs only numpy, opencv-python-headless and onnxruntime; never imports TensorFlow,
scikit-learn or matplotlib (a test proves it).
"""

from edge.errors import EdgeError, ImageError, ModelError
from edge.image import MAX_PIXELS, load_image
from edge.preprocess import PreprocessConfig, PreprocessInfo, preprocess, preprocess_with_info, to_model_input

__version__ = "0.1.0"

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
