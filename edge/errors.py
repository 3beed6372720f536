"""Exceptions of the edge runtime: one clear message each, never an OpenCV crash."""


class EdgeError(Exception):
    """Base class of every error a user can cause through the edge runtime."""


class ImageError(EdgeError):
    """An image that cannot be used: missing, empty, truncated, not an image, absurd size."""


class ModelError(EdgeError):
    """A model file that is not ONNX, is truncated, or lacks murakit metadata."""
