"""The application's user-facing error: the CLI prints its message as one line and exits 2."""


class MurakitError(Exception):
    """Anything a user can cause: bad data, missing stage, mismatched cache or model."""
