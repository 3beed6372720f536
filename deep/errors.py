"""Errors raised by the deep package for problems a user can cause."""


class DeepError(Exception):
    """A user-facing failure in model building, training or explanation (one-line message)."""
