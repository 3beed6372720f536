"""The bounds of ``edge-serve`` and its bind rule (no web framework imported here).

Every resource a request can consume has a limit: body bytes, files per request, pixels per
image, requests admitted at once, seconds per request. Beyond the admission limit a request
gets 503 with ``Retry-After`` instead of queueing in memory without end.
"""

from __future__ import annotations

import hmac
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from edge.errors import EdgeError


class ServeError(EdgeError):
    """A server setting that cannot be used (bad limit, unsafe bind, unreadable token file)."""


@dataclass(frozen=True)
class Limits:
    """Bounds of one server process.

    Attributes
    ----------
    max_body_bytes : int
        Largest request body accepted (413 beyond).
    max_files : int
        Most ``file`` fields in one request, i.e. views per study (413 beyond).
    max_pixels : int
        Most pixels (width x height) in one decoded image (413 beyond).
    max_inflight : int
        Requests admitted at once, waiting ones included; beyond: 503 + Retry-After.
        Worst-case body memory is ``max_inflight * max_body_bytes``.
    timeout_s : float
        Seconds from admission to response, body upload included (504 beyond).
    max_batch : int
        Most images in one onnxruntime call.
    max_wait_ms : float
        Longest wait for other requests to fill a batch; only waited while other admitted
        requests are still being decoded (a lone request never waits).
    batching : bool
        False: each request gets its own onnxruntime call (for comparison).
    workers : int
        Threads that decode and preprocess uploads (off the event loop).
    """

    max_body_bytes: int = 32 * 1024 * 1024
    max_files: int = 16
    max_pixels: int = 36_000_000
    max_inflight: int = 32
    timeout_s: float = 30.0
    max_batch: int = 32
    max_wait_ms: float = 5.0
    batching: bool = True
    workers: int = 2

    def __post_init__(self):
        for name, (flag, lo, hi) in _RANGES.items():
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and not isinstance(value, bool) and lo <= value <= hi):
                raise ServeError(f"{flag}: {name} must be in [{lo}, {hi}], got {value!r}")


# field -> (command-line flag, lowest, highest); NaN fails every comparison, so it is refused too
_RANGES = {"max_body_bytes": ("--max-body-mb", 1024, 2**31), "max_files": ("--max-files", 1, 1024),
           "max_pixels": ("--max-pixels", 64, 10**9), "max_inflight": ("--max-inflight", 1, 10_000),
           "timeout_s": ("--timeout", 0.1, 3600), "max_batch": ("--max-batch", 1, 1024),
           "max_wait_ms": ("--max-wait-ms", 0, 1000), "workers": ("--workers", 1, 64)}

LOCAL_NAMES = ("localhost",)


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and ``localhost``; any other name or address is not."""
    if host.lower() in LOCAL_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name could resolve anywhere: treat it as exposed


def check_bind(host: str, token_file, insecure: bool) -> None:
    """Refuse a non-loopback bind without a token (unless ``insecure``).

    Raises
    ------
    ServeError
        ``host`` is not loopback, no ``token_file`` and not ``insecure``.
    """
    if is_loopback(host) or token_file or insecure:
        return
    raise ServeError(f"--host {host} is reachable from the network: give --token-file FILE "
                     "(clients send 'Authorization: Bearer <token>') or, on a trusted network, --insecure")


MIN_TOKEN_CHARS = 16


def read_token(path) -> str:
    """The bearer token in ``path`` (surrounding whitespace stripped), at least 16 characters."""
    path = Path(path)
    try:
        token = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as e:
        raise ServeError(f"{path}: cannot read the token file ({getattr(e, 'strerror', None) or e})") from None
    if len(token) < MIN_TOKEN_CHARS or any(c.isspace() for c in token):
        raise ServeError(f"{path}: the token must be one word of at least {MIN_TOKEN_CHARS} characters")
    return token


def token_matches(header: str | None, token: str) -> bool:
    """Constant-time check of an ``Authorization: Bearer <token>`` header value."""
    scheme, _, given = (header or "").partition(" ")
    ok_scheme = scheme.lower() == "bearer"
    # compare_digest takes the same time wherever the first difference is
    return hmac.compare_digest(given.strip().encode(), token.encode()) and ok_scheme
