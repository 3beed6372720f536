"""HOG + linear SVM baseline on image arrays; knows nothing of MURA's files.

Features come from :mod:`edge.hog` (the edge runtime's own numpy HOG, equal to
``skimage.feature.hog``), so a device without scikit-learn or scikit-image serves the
exported model with the very same numbers.
"""

from baseline.errors import BaselineError
from baseline.features import extract_features
from baseline.model import ALPHAS, fit_baseline, predict_proba
from baseline.onnx_export import build_onnx, onnx_probabilities, to_onnx
from edge.hog import HogConfig

__all__ = ["ALPHAS", "BaselineError", "HogConfig", "build_onnx", "extract_features", "fit_baseline",
           "onnx_probabilities", "predict_proba", "to_onnx"]
