"""Read a bounded request body and split a multipart form into uploads, all in memory.

Nothing a request sends becomes a file path: the body is read into one bounded buffer and
parsed with python-multipart's streaming parser, whose parts stay in memory (Starlette's own
form parser spools larger files to temporary files on disk).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from edge.errors import UserError

FIELD = "file"
# parts that are not `file` fields (a client's extra form fields) allowed beyond max_files
EXTRA_PARTS = 8


class ApiError(UserError):
    """An error answered as JSON ``{"error": message}`` with an HTTP status.

    Parameters
    ----------
    status : int
        400 bad image, 408 upload too slow, 413 too large, 415 wrong type, 422 missing field,
        503 busy, 504 timeout.
    message : str
        One line for the client.
    headers : dict, optional
        Extra response headers (``Retry-After``).
    """

    def __init__(self, status: int, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


@dataclass
class Upload:
    """One ``file`` field: its sanitised file name and its bytes."""

    name: str
    data: bytes


async def read_body(request, limit: int, allowed_s=None) -> bytearray:
    """The request body, refused with 413 as soon as it exceeds ``limit`` bytes, and with 408
    (connection closed) as soon as it arrives too slowly.

    Parameters
    ----------
    allowed_s : callable, optional
        ``allowed_s(received_bytes) -> seconds`` the body may have taken so far
        (:meth:`edge.serve.limits.Limits.allowed_upload_s`); each wait for the next chunk
        ends when that time is up. None: no time rule.
    """
    import asyncio

    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise ApiError(413, f"request body is {int(declared):,} bytes, above the {limit:,}-byte limit")
    loop = asyncio.get_running_loop()
    t0, body = loop.time(), bytearray()
    while True:
        left = None if allowed_s is None else t0 + allowed_s(len(body)) - loop.time()
        if left is not None and left <= 0:
            raise _too_slow(len(body), loop.time() - t0)
        try:
            message = await asyncio.wait_for(request.receive(), left)
        except asyncio.TimeoutError:
            raise _too_slow(len(body), loop.time() - t0) from None
        if message["type"] == "http.disconnect":
            raise ApiError(400, "the client closed the connection before the body was complete")
        body += message.get("body", b"")
        if len(body) > limit:
            raise ApiError(413, f"request body is above the {limit:,}-byte limit")
        if not message.get("more_body", False):
            return body


def _too_slow(received: int, seconds: float) -> ApiError:
    return ApiError(408, f"upload too slow: {received:,} bytes in {seconds:.1f} s; the connection is closed",
                    {"Connection": "close"})


def safe_name(filename: str | None, index: int) -> str:
    """A client's file name reduced to a printable base name (never a path), or ``fileN``.

    ``C:\\x\\..\\a.png`` -> ``a.png``; control characters dropped; at most 128 characters.
    """
    base = re.split(r"[\\/]", filename or "")[-1]
    base = "".join(c for c in base if c.isprintable()).strip()[:128]
    return base if base not in ("", ".", "..") else f"file{index + 1}"


class _Parts:
    """Callbacks for python-multipart that collect every part's headers and bytes."""

    def __init__(self, max_parts: int):
        self.max_parts = max_parts
        self.parts: list = []  # [(headers dict, bytearray)]
        self.ended = False
        self._field = bytearray()
        self._value = bytearray()

    def callbacks(self) -> dict:
        return {"on_part_begin": self.begin, "on_header_field": self.field, "on_header_value": self.value,
                "on_header_end": self.header_end, "on_part_data": self.data, "on_end": self.end}

    def begin(self):
        if len(self.parts) >= self.max_parts:
            raise ApiError(413, f"too many form fields (at most {self.max_parts - EXTRA_PARTS} files per request)")
        self.parts.append(({}, bytearray()))

    def field(self, data, start, end):
        self._field += data[start:end]

    def value(self, data, start, end):
        self._value += data[start:end]

    def header_end(self):
        self.parts[-1][0][bytes(self._field).strip().lower()] = bytes(self._value).strip()
        self._field.clear()
        self._value.clear()

    def data(self, data, start, end):
        self.parts[-1][1].extend(data[start:end])

    def end(self):
        self.ended = True


def parse_uploads(body: bytes, content_type: str, max_files: int) -> list:
    """The ``file`` fields of a multipart/form-data body, in order.

    Returns
    -------
    list of Upload

    Raises
    ------
    ApiError
        415 not multipart/form-data; 400 malformed body; 422 no ``file`` field;
        413 more than ``max_files`` files.
    """
    from python_multipart.exceptions import FormParserError
    from python_multipart.multipart import MultipartParser, parse_options_header

    ctype, params = parse_options_header(content_type)
    if ctype != b"multipart/form-data":
        raise ApiError(415, f"send multipart/form-data with one or more '{FIELD}' fields "
                            f"(got {ctype.decode('latin-1')[:80] or 'no content type'})")
    boundary = params.get(b"boundary")
    if not boundary:
        raise ApiError(400, "multipart body without a boundary")
    parts = _Parts(max_files + EXTRA_PARTS)
    try:
        parser = MultipartParser(boundary, parts.callbacks())
        parser.write(bytes(body))
        parser.finalize()
    except FormParserError as e:
        raise ApiError(400, f"malformed multipart body ({str(e).splitlines()[0][:120]})") from None
    if not parts.ended:
        raise ApiError(400, "malformed multipart body (no closing boundary)")
    return _file_fields(parts.parts, max_files)


def _file_fields(parts: list, max_files: int) -> list:
    from python_multipart.multipart import parse_options_header

    uploads = []
    for headers, data in parts:
        _, disp = parse_options_header(headers.get(b"content-disposition", b""))
        if disp.get(b"name", b"").decode("latin-1") != FIELD:
            continue
        filename = disp.get(b"filename", b"").decode("utf-8", "replace")
        uploads.append(Upload(safe_name(filename, len(uploads)), bytes(data)))
    if not uploads:
        raise ApiError(422, f"missing field: send the image(s) as multipart '{FIELD}' fields")
    if len(uploads) > max_files:
        raise ApiError(413, f"{len(uploads)} files in one request, above the limit of {max_files}")
    return uploads
