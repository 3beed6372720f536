"""Export failures a user can cause or must hear about (parity broken, bad model, ...)."""

from edge.errors import UserError


class ExportError(UserError):
    """One clear line: why a model was not exported. ``murakit`` reports it without a traceback."""
