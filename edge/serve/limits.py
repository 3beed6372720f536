"""The bounds of ``edge-serve`` and its bind rule (no web framework imported here).

Every resource a request can consume has a limit: body bytes, files per request, pixels per
image, connections uploading at once, requests scored at once, seconds for the headers, upload
rate, seconds per request. Beyond an admission limit a request gets 503 with ``Retry-After``
instead of queueing in memory without end; a client too slow to send its headers or its body
gets 408 and its connection is closed, so stalled clients cannot hold the capacity scoring needs.
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
        Requests being scored at once (body received, being decoded, batched, answered);
        beyond: 503 + Retry-After.
    max_uploading : int
        Requests still receiving their body at once (larger: a slow upload costs a socket and a
        partial buffer, not a scoring slot); beyond: 503 + Retry-After. Worst-case body memory
        is ``(max_uploading + max_inflight) * max_body_bytes``.
    header_timeout_s : float
        Seconds a connection has to send a request's complete headers (from its first byte, or
        from the connection's opening); beyond: 408 and the connection is closed.
    min_upload_kbps : float
        Lowest average upload rate, in kilobits per second, once ``header_timeout_s`` of the
        body's time has passed (the body may take ``header_timeout_s + bits / rate`` seconds);
        beyond: 408 and close. 0 turns the rate rule off (``timeout_s`` still bounds the upload).
    keep_alive_s : float
        Seconds an idle kept-alive connection stays open between requests.
    timeout_s : float
        Seconds for the upload (408 beyond), then again seconds for scoring (504 beyond).
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
    max_uploading: int = 256
    header_timeout_s: float = 5.0
    min_upload_kbps: float = 64.0
    keep_alive_s: float = 5.0
    timeout_s: float = 30.0
    max_batch: int = 32
    max_wait_ms: float = 5.0
    batching: bool = True
    workers: int = 2

    def allowed_upload_s(self, received: int) -> float:
        """Seconds a body may have taken once ``received`` bytes have arrived (rate rule and
        ``timeout_s``, whichever is shorter)."""
        if self.min_upload_kbps <= 0:
            return self.timeout_s
        return min(self.timeout_s, self.header_timeout_s + received * 8 / (self.min_upload_kbps * 1000))

    def __post_init__(self):
        for name, (flag, lo, hi) in _RANGES.items():
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and not isinstance(value, bool) and lo <= value <= hi):
                raise ServeError(f"{flag}: {name} must be in [{lo}, {hi}], got {value!r}")


# field -> (command-line flag, lowest, highest); NaN fails every comparison, so it is refused too
_RANGES = {"max_body_bytes": ("--max-body-mb", 1024, 2**31), "max_files": ("--max-files", 1, 1024),
           "max_pixels": ("--max-pixels", 64, 10**9), "max_inflight": ("--max-inflight", 1, 10_000),
           "max_uploading": ("--max-uploading", 1, 10_000), "header_timeout_s": ("--header-timeout", 0.1, 600),
           "min_upload_kbps": ("--min-upload-kbps", 0, 10**7), "keep_alive_s": ("--keep-alive", 0.1, 3600),
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
