"""Errors raised by the deep package for problems a user can cause."""

from edge.errors import UserError


class DeepError(UserError):
    """A user-facing failure in model building, training or explanation (one-line message)."""
