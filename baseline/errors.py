"""Errors the baseline raises for input a user can cause (empty split, one class, ...)."""

from edge.errors import UserError


class BaselineError(UserError, ValueError):
    """Training data or a model the baseline cannot use; the message is one clear line.

    A :class:`edge.errors.UserError` (``murakit`` prints ``murakit: error: <message>`` and exits 2)
    and a ``ValueError``, so library callers can catch it generically.
    """
