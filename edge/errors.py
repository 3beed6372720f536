"""Exceptions of the edge runtime: one clear message each, never an OpenCV crash."""


class EdgeError(Exception):
    """Base class of every error a user can cause through the edge runtime."""


class ImageError(EdgeError):
    """An image that cannot be used: missing, empty, truncated, not an image, absurd size."""


class ModelError(EdgeError):
    """A model file that is not ONNX, is truncated, or lacks murakit metadata."""


def first_line(error: BaseException, limit: int = 200) -> str:
    """The first non-empty line of an exception's message (or its type name), at most ``limit`` chars.

    Library exceptions often carry multi-line messages or whole tracebacks; a user sees one line.
    """
    text = str(error).strip()
    line = text.splitlines()[0].strip() if text else type(error).__name__
    return line[:limit]
