"""Errors the baseline raises for input a user can cause (empty split, one class, ...)."""


class BaselineError(ValueError):
    """Training data or a model the baseline cannot use; the message is one clear line.

    A ``ValueError`` subclass, so library callers can catch it generically; ``murakit``
    turns it into ``murakit: error: <message>`` and exit code 2.
    """
