"""Exceptions of the edge runtime, and :class:`UserError`, the base of every user-facing error.

One clear message each, never an OpenCV crash.
"""


class UserError(Exception):
    """Base class of every error a user can cause, in every package of the repository.

    Its message is one line that says what is wrong and how to fix it; the command lines print
    it as ``<prog>: error: <message>`` and exit 2, and catch this one type to do so. Library
    callers catch it the same way (``except UserError``). Each package keeps its own subclass
    (:class:`EdgeError`, ``MurakitError``, ``DeepError``, ``ExportError``, ``BaselineError``)
    so a caller can still tell where it came from.
    """


class EdgeError(UserError):
    """Base class of every error a user can cause through the edge runtime."""


class ConfigError(EdgeError, ValueError):
    """A configuration value out of its range (a ``ValueError`` too, for generic callers)."""


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
