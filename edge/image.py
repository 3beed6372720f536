"""Decode PNG / JPEG bytes safely, or fail with one clear line.

Radiographs arrive as 8- or 16-bit PNG or JPEG with 1, 3 or 4 channels, or as DICOM; this module
reads PNG and JPEG only (:mod:`edge.dicom` reads DICOM, and :mod:`edge.loader` recognises which
a file is and is the one entry point). A PNG/JPEG is trusted only after three checks, in this
order:

1. **Structure, before decoding.** The PNG chunk list (every chunk inside the file, no absurd
   length, ancillary CRCs correct, IHDR valid, IDAT present, IEND reached) or the JPEG marker
   segments up to the frame header (SOF) are walked with ``struct`` over the bytes, a bounded
   number of steps, so a hostile file is refused in milliseconds.
2. **Memory, before decoding.** The header gives the decoded array's size; together with the
   file, the decoder's own buffers and the preprocessing working set it must fit
   :data:`edge.limits.MEMORY_BUDGET` (512 MiB per input), else the file is refused without OpenCV
   allocating anything.
3. **Decoder complaints.** libpng and libjpeg report damaged data by writing to the process's
   stderr and still returning pixels (``Corrupt JPEG data: ...``). File descriptor 2 is
   captured around ``cv2.imdecode`` and what the decoder wrote is classified: benign notes
   (an iCCP profile remark) are dropped, any complaint about the data turns into an
   :class:`~edge.errors.ImageError` for that input, and nothing reaches the user's terminal.
   Decodes are serialised by a lock while fd 2 is redirected, so decoding is safe from many
   threads; lines that are not a decoder's (another thread's log) are passed on to stderr.

The decoded array keeps its stored type (uint8 / uint16); :func:`edge.loader.to_grey` makes the
float32 (H, W) [0, 1] view used by exploration tools, and :mod:`edge.preprocess` works on the
stored integers directly.
"""

from __future__ import annotations

import os
import re
import struct
import sys
import tempfile
import threading
import zlib
from dataclasses import dataclass

import numpy as np

from edge.errors import ImageError
from edge.limits import MAX_JPEG_SEGMENTS, MAX_PNG_CHUNKS, MEMORY_BUDGET, WORK_BYTES_PER_PIXEL, check_pixels

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
JPEG_SIGNATURE = b"\xff\xd8\xff"  # SOI and the first marker's 0xFF
_PNG_DEPTHS = {0: (1, 2, 4, 8, 16), 2: (8, 16), 3: (1, 2, 4, 8), 4: (8, 16), 6: (8, 16)}
_PNG_CHANNELS = {0: 1, 2: 3, 3: 3, 4: 4, 6: 4}  # what cv2.IMREAD_UNCHANGED returns (see below)
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_JPEG_STANDALONE = frozenset([0x01, *range(0xD0, 0xD8)])


@dataclass(frozen=True)
class ImageHeader:
    """What a file's header promises, read before decoding.

    Attributes
    ----------
    format : {"PNG", "JPEG"}
    width, height : int
        Pixels, both >= 1.
    channels : int
        Channels of the array ``cv2.imdecode(..., IMREAD_UNCHANGED)`` returns (1, 3 or 4).
    sample_bytes : int
        1 (8-bit or less) or 2 (16-bit PNG, 12/16-bit JPEG).
    decoder_bytes : int
        Extra buffers the decoder holds besides the output array (JPEG coefficients).
    """

    format: str
    width: int
    height: int
    channels: int
    sample_bytes: int
    decoder_bytes: int = 0

    @property
    def pixels(self) -> int:
        return self.width * self.height

    @property
    def decoded_bytes(self) -> int:
        return self.pixels * self.channels * self.sample_bytes


# ---------------------------------------------------------------- structure checks
def _png_fail(name: str, why: str):
    raise ImageError(f"{name}: corrupt or truncated PNG ({why})")


def _png_ihdr(data: bytes, name: str):
    if len(data) < 33:
        _png_fail(name, "file ends inside the IHDR header")
    length, ctype = struct.unpack_from(">I4s", data, 8)
    if ctype != b"IHDR" or length != 13:
        _png_fail(name, "first chunk is not a 13-byte IHDR")
    w, h, depth, colour, comp, filt, interlace = struct.unpack_from(">IIBBBBB", data, 16)
    check_pixels(w, h, name)
    if w > 2**31 - 1 or h > 2**31 - 1 or colour not in _PNG_DEPTHS or depth not in _PNG_DEPTHS[colour] \
            or comp != 0 or filt != 0 or interlace > 1:
        _png_fail(name, f"invalid IHDR: {w}x{h}, bit depth {depth}, colour type {colour}")
    return w, h, depth, colour


def _png_chunks(data: bytes, name: str) -> set:
    """Walk the chunk list; return the chunk types seen. Checks that every chunk lies inside
    the file and that the ancillary chunks' CRCs hold (libpng checks IDAT's itself, and would
    only warn about the others)."""
    n, pos, seen = len(data), 8, set()
    view = memoryview(data)
    for _ in range(MAX_PNG_CHUNKS):
        if pos + 12 > n:
            _png_fail(name, "file ends before the IEND chunk")
        length, ctype = struct.unpack_from(">I4s", data, pos)
        if not ctype.isalpha():
            _png_fail(name, f"bad chunk type {ctype!r} at byte {pos}")
        label = ctype.decode("ascii")
        if length > 2**31 - 1 or pos + 12 + length > n:
            _png_fail(name, f"chunk {label} claims {length:,} bytes, past the end of the file")
        if ctype != b"IDAT":
            crc = struct.unpack_from(">I", data, pos + 8 + length)[0]
            if zlib.crc32(view[pos + 4:pos + 8 + length]) != crc:
                _png_fail(name, f"chunk {label} fails its CRC check")
        seen.add(ctype)
        if ctype == b"IEND":
            return seen
        pos += 12 + length
    raise ImageError(f"{name}: PNG has more than {MAX_PNG_CHUNKS:,} chunks; refused as hostile")


def png_header(data: bytes, name: str = "<bytes>") -> ImageHeader:
    """Validate a PNG's structure and return its :class:`ImageHeader` (no pixel is decoded)."""
    w, h, depth, colour = _png_ihdr(data, name)
    seen = _png_chunks(data, name)
    if b"IDAT" not in seen:
        _png_fail(name, "no IDAT (pixel data) chunk")
    if colour == 3 and b"PLTE" not in seen:
        _png_fail(name, "palette image without a PLTE chunk")
    channels = _PNG_CHANNELS[colour] + (1 if b"tRNS" in seen and colour in (2, 3) else 0)
    # An animated PNG's frames are composed in full-size RGBA buffers beside the output.
    extra = 2 * w * h * 4 * (2 if depth == 16 else 1) if b"acTL" in seen else 0
    return ImageHeader("PNG", w, h, channels, 2 if depth == 16 else 1, extra)


_FILL = re.compile(rb"\xff+")


def _jpeg_fail(name: str, why: str):
    raise ImageError(f"{name}: corrupt or truncated JPEG ({why})")


def _jpeg_frame(data: bytes, pos: int, marker: int, name: str) -> ImageHeader:
    """Parse an SOF segment starting at ``pos`` (its 0xFF)."""
    if pos + 10 > len(data):
        _jpeg_fail(name, "file ends inside the frame header")
    precision, h, w, nf = struct.unpack_from(">BHHB", data, pos + 4)
    check_pixels(w, h, name)
    if nf not in (1, 3, 4) or precision not in (8, 12, 16):
        _jpeg_fail(name, f"unsupported frame: {nf} components, {precision}-bit")
    sample = 1 if precision == 8 else 2
    # libjpeg keeps whole-image DCT coefficients (2 bytes each) for progressive and
    # multi-scan files; we cannot tell those apart before the scans, so count them always.
    coefficients = 2 * w * h * nf
    return ImageHeader("JPEG", w, h, nf, sample, coefficients)  # CMYK counted as 4 channels


def jpeg_header(data: bytes, name: str = "<bytes>") -> ImageHeader:
    """Walk a JPEG's marker segments up to its frame header (SOF) and return its
    :class:`ImageHeader`. Refuses files whose scan data comes before any SOF, garbage where a
    marker belongs, or more than ``MAX_JPEG_SEGMENTS`` segments: bounded work on any input."""
    n, pos = len(data), 2
    for _ in range(MAX_JPEG_SEGMENTS):
        if pos + 2 > n:
            _jpeg_fail(name, "file ends before the frame header (SOF)")
        if data[pos] != 0xFF:
            _jpeg_fail(name, f"byte {pos} is not a marker")
        fill = _FILL.match(data, pos).end()  # 0xFF fill bytes may precede a marker
        if fill >= n:
            _jpeg_fail(name, "file ends before the frame header (SOF)")
        pos, marker = fill - 1, data[fill]
        if marker in _JPEG_STANDALONE:
            pos += 2
            continue
        if marker in (0x00, 0xD8, 0xD9, 0xDA):
            what = {0xD9: "image ends", 0xDA: "scan data starts"}.get(marker, "stray marker")
            _jpeg_fail(name, f"{what} before any frame header (SOF)")
        if pos + 4 > n:
            _jpeg_fail(name, "file ends inside a marker segment")
        length = struct.unpack_from(">H", data, pos + 2)[0]
        if length < 2:
            _jpeg_fail(name, f"marker 0x{marker:02X} has a bad length {length}")
        if marker in _JPEG_SOF:
            return _jpeg_frame(data, pos, marker, name)
        pos += 2 + length
    raise ImageError(f"{name}: JPEG has more than {MAX_JPEG_SEGMENTS:,} header segments; refused as hostile")


def image_header(data: bytes, name: str = "<bytes>") -> ImageHeader:
    """The header of PNG or JPEG bytes, structure-checked; :class:`ImageError` otherwise."""
    if len(data) == 0:
        raise ImageError(f"{name}: file is empty")
    if data[:8] == PNG_SIGNATURE:
        return png_header(data, name)
    if data[:3] == JPEG_SIGNATURE:
        return jpeg_header(data, name)
    raise ImageError(f"{name}: not a PNG or JPEG image")


def input_bytes(header: ImageHeader, file_bytes: int) -> int:
    """Peak bytes one input needs: file + decoded array + decoder buffers + preprocessing."""
    return file_bytes + header.decoded_bytes + header.decoder_bytes + WORK_BYTES_PER_PIXEL * header.pixels


def check_budget(header: ImageHeader, file_bytes: int, name: str) -> None:
    """Refuse (one line) an input whose decode + preprocessing would exceed the budget."""
    w, h = header.width, header.height
    check_pixels(w, h, name)
    need = input_bytes(header, file_bytes)
    if need > MEMORY_BUDGET:
        raise ImageError(f"{name}: a {w}x{h} {header.channels}-channel {8 * header.sample_bytes}-bit "
                         f"{header.format} needs ~{need / 2**20:,.0f} MiB to decode and preprocess, above "
                         f"the {MEMORY_BUDGET // 2**20} MiB per-image budget")


# ---------------------------------------------------------------- decoder output capture
_LOCK = threading.Lock()
_CAPTURE = {"pid": None, "fd": None}
_BENIGN_PNG = re.compile(r"libpng warning: (iCCP|sRGB|cHRM|gAMA|sBIT|tEXt|zTXt|iTXt|pHYs|tIME|bKGD|hIST|"
                         r"sPLT|eXIf|oFFs|pCAL|sCAL|Interlace handling)")
_BENIGN_JPEG = ("Warning: unknown JFIF revision", "Unknown Adobe color transform")
_CORRUPT_JPEG = ("Corrupt JPEG data", "Premature end of JPEG file", "Inconsistent progression sequence",
                 "Invalid SOS parameters", "Application transferred too many scanlines")
_OPENCV_LOG = re.compile(r"\[ ?(WARN|ERROR|INFO|DEBUG|FATAL):")


def classify_decoder_output(text: str):
    """Split what a decoder wrote to stderr.

    Returns
    -------
    complaint : str or None
        The first line saying the data is damaged (libpng warnings other than metadata notes,
        any libpng error, libjpeg's corrupt-data warnings, OpenCV error lines).
    foreign : list of str
        Lines no decoder writes (another thread's output), to be passed on unchanged.
    """
    complaint, foreign = None, []
    for line in text.splitlines():
        line = line.strip()
        if not line or _BENIGN_PNG.match(line) and "CRC" not in line or line.startswith(_BENIGN_JPEG):
            continue
        if line.startswith(("libpng", *_CORRUPT_JPEG)) or _OPENCV_LOG.match(line):
            complaint = complaint or line
        else:
            foreign.append(line)
    return complaint, foreign


def _capture_fd() -> int:
    """An unlinked temporary file that receives fd 2 during decodes (one per process: a
    forked child must not share its offset with the parent)."""
    if _CAPTURE["pid"] != os.getpid():
        with tempfile.TemporaryFile(prefix="edge-decode-") as f:  # unlinked: nothing left behind
            _CAPTURE.update(pid=os.getpid(), fd=os.dup(f.fileno()))
    return _CAPTURE["fd"]


def _cv2():
    import cv2

    if not getattr(_cv2, "quiet", False):
        try:  # OpenCV's own warnings duplicate what we report; its errors we still capture
            cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
        except AttributeError:  # very old OpenCV builds
            pass
        _cv2.quiet = True
    return cv2


def imdecode_captured(data: bytes):
    """``cv2.imdecode(data, IMREAD_UNCHANGED)`` with fd 2 captured.

    Returns
    -------
    (ndarray or None, str)
        The decoded array (None when OpenCV gave up) and what the decoders wrote to stderr.
    """
    cv2 = _cv2()
    buf = np.frombuffer(data, dtype=np.uint8)
    with _LOCK:
        fd = _capture_fd()
        sys.stderr.flush()
        os.lseek(fd, 0, os.SEEK_SET)
        os.ftruncate(fd, 0)
        try:
            saved = os.dup(2)
        except OSError:  # fd 2 closed: nothing could reach a terminal anyway
            saved = None
        os.dup2(fd, 2)
        try:
            arr = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
        except cv2.error:
            arr = None
        finally:
            if saved is None:
                os.close(2)
            else:
                os.dup2(saved, 2)
                os.close(saved)
        os.lseek(fd, 0, os.SEEK_SET)
        text = os.read(fd, 1 << 16).decode("utf-8", "replace")
    return arr, text


# ---------------------------------------------------------------- decoding
def decode(data: bytes, name: str = "<bytes>") -> np.ndarray:
    """Decode PNG/JPEG bytes to the stored array, after the structure and budget checks.

    Parameters
    ----------
    data : bytes
        The whole file.
    name : str
        Used in error messages.

    Returns
    -------
    ndarray of uint8 or uint16, shape (H, W) or (H, W, C) with C in (3, 4), BGR(A) order.

    Raises
    ------
    ImageError
        Not a PNG/JPEG, damaged structure, zero size, above ``MAX_PIXELS`` or the
        ``MEMORY_BUDGET``, or a decoder complaint about the data (one line, no decoder output).
    """
    header = image_header(data, name)
    check_budget(header, len(data), name)
    arr, text = imdecode_captured(data)
    complaint, foreign = classify_decoder_output(text)
    for line in foreign:
        print(line, file=sys.stderr)
    if complaint is not None:
        raise ImageError(f"{name}: corrupt {header.format} data ({complaint[:200]})")
    if arr is None or arr.size == 0:
        raise ImageError(f"{name}: corrupt or truncated {header.format} (the decoder gave up)")
    if arr.shape[:2] != (header.height, header.width):
        raise ImageError(f"{name}: decoded {arr.shape[1]}x{arr.shape[0]}, but the header says "
                         f"{header.width}x{header.height}")
    return arr
