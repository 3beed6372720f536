"""The application's user-facing error: the CLI prints its message as one line and exits 2."""

from edge.errors import UserError


class MurakitError(UserError):
    """Anything a user can cause: bad data, missing stage, mismatched cache or model."""
