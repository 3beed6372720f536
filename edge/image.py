"""Decode an image file (or array) into one grey float channel, or fail with one clear line.

Radiographs arrive as 8- or 16-bit PNG or JPEG with 1, 3 or 4 channels. Everything after this
module sees a float32 (H, W) array in [0, 1]. Sizes are checked from the file header *before*
decoding, so a hostile or absurd file is refused without OpenCV allocating gigabytes.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

import numpy as np

from edge.errors import ImageError

# Refuse images above this many pixels (~ 8000 x 8000). Real MURA tops out near 512 x 512;
# the largest clinical detectors are ~ 4300 x 4300. Decoding beyond this is a sign of a bad file.
MAX_PIXELS = 64_000_000
MAX_FILE_BYTES = 512 * 1024 * 1024
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def _png_size(data: bytes):
    if data[:8] != b"\x89PNG\r\n\x1a\n" or len(data) < 24 or data[12:16] != b"IHDR":
        return None
    return struct.unpack(">II", data[16:24])  # width, height


def _jpeg_size(data: bytes):
    """Width and height from the first SOF marker of a JPEG, or None."""
    if data[:2] != b"\xff\xd8":
        return None
    i = 2
    while i + 9 < len(data):
        if data[i] != 0xFF:
            i += 1
            continue
        marker = data[i + 1]
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7 or marker == 0xFF:
            i += 1 if marker == 0xFF else 2
            continue
        length = struct.unpack(">H", data[i + 2:i + 4])[0]
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            h, w = struct.unpack(">HH", data[i + 5:i + 9])
            return w, h
        i += 2 + length
    return None


def _header_size(data: bytes, name: str):
    size = _png_size(data) or _jpeg_size(data)
    if size is None:
        raise ImageError(f"{name}: not a PNG or JPEG image")
    w, h = size
    if w == 0 or h == 0:
        raise ImageError(f"{name}: image has zero size ({w}x{h})")
    if w * h > MAX_PIXELS:
        raise ImageError(f"{name}: image is {w}x{h}, above the {MAX_PIXELS:,}-pixel limit")
    return w, h


def read_bytes(path) -> bytes:
    """Read an image file's bytes with clear errors for missing, empty or huge files."""
    path = Path(path)
    if not path.exists():
        raise ImageError(f"{path}: no such file")
    if path.is_dir():
        raise ImageError(f"{path}: is a directory, not an image")
    size = path.stat().st_size
    if size == 0:
        raise ImageError(f"{path}: file is empty")
    if size > MAX_FILE_BYTES:
        raise ImageError(f"{path}: file is {size:,} bytes, above the {MAX_FILE_BYTES:,}-byte limit")
    try:
        return path.read_bytes()
    except OSError as e:
        raise ImageError(f"{path}: cannot read ({e.strerror or e})") from None


def _quiet_cv2():
    """Silence OpenCV's own warnings (e.g. 'PNG input buffer is incomplete'): we report
    bad files ourselves, in one line."""
    import cv2

    try:
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
    except AttributeError:  # very old OpenCV builds
        pass
    return cv2


def decode(data: bytes, name: str = "<bytes>") -> np.ndarray:
    """Decode PNG/JPEG bytes to the stored array (uint8 or uint16, 2-D or 3-D)."""
    cv2 = _quiet_cv2()

    if len(data) == 0:
        raise ImageError(f"{name}: file is empty")
    _header_size(data, name)
    buf = np.frombuffer(data, dtype=np.uint8)
    try:
        arr = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    except cv2.error:
        arr = None
    if arr is None or arr.size == 0:
        raise ImageError(f"{name}: corrupt or truncated image")
    return arr


def to_grey(arr: np.ndarray, name: str = "<array>") -> np.ndarray:
    """Convert a decoded array to float32 (H, W) in [0, 1].

    uint8 is divided by 255, uint16 by 65535; float input is taken as-is when within
    [0, 1] and scaled by its maximum otherwise. Colour (BGR, BGRA) becomes luminance; the
    alpha channel of a grey+alpha or BGRA image is dropped.
    """
    import cv2

    arr = np.asarray(arr)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim not in (2, 3) or arr.size == 0 or min(arr.shape[:2]) == 0:
        raise ImageError(f"{name}: expected a non-empty (H, W) or (H, W, C) image, got shape {arr.shape}")
    if arr.shape[0] * arr.shape[1] > MAX_PIXELS:
        raise ImageError(f"{name}: image is {arr.shape[1]}x{arr.shape[0]}, above the {MAX_PIXELS:,}-pixel limit")
    grey = _scale(arr, name)
    if grey.ndim == 3:
        c = grey.shape[2]
        if c == 2:
            grey = grey[:, :, 0]
        elif c in (3, 4):
            grey = cv2.cvtColor(np.ascontiguousarray(grey[:, :, :3]), cv2.COLOR_BGR2GRAY)
        else:
            raise ImageError(f"{name}: unsupported channel count {c}")
    return np.ascontiguousarray(grey, dtype=np.float32)


def _scale(arr: np.ndarray, name: str) -> np.ndarray:
    if arr.dtype == np.uint8:
        return arr.astype(np.float32) / 255.0
    if arr.dtype == np.uint16:
        return arr.astype(np.float32) / 65535.0
    if arr.dtype == np.bool_:
        return arr.astype(np.float32)
    if np.issubdtype(arr.dtype, np.number):
        f = arr.astype(np.float32)
        if not np.all(np.isfinite(f)):
            raise ImageError(f"{name}: image contains NaN or infinite values")
        lo, hi = float(f.min()), float(f.max())
        if lo >= 0.0 and hi <= 1.0:
            return f
        return (f - lo) / (hi - lo) if hi > lo else np.zeros_like(f)
    raise ImageError(f"{name}: unsupported pixel type {arr.dtype}")


def load_image(src, dicom_voi: str = "window") -> np.ndarray:
    """Load an image into one grey channel.

    Parameters
    ----------
    src : str, Path, bytes or ndarray
        A PNG/JPEG file (8- or 16-bit; 1, 3 or 4 channels), a DICOM file (recognised by
        content; read by :mod:`edge.dicom`), its bytes, or a decoded array of shape (H, W)
        or (H, W, C).
    dicom_voi : {"window", "full"}
        VOI policy for DICOM input (``PreprocessConfig.dicom_voi``); ignored otherwise.

    Returns
    -------
    ndarray of float32, shape (H, W), values in [0, 1]

    Raises
    ------
    ImageError
        Missing, empty, truncated or non-image file; zero size; above ``MAX_PIXELS``.
    """
    if isinstance(src, np.ndarray):
        return to_grey(src)
    if isinstance(src, (bytes, bytearray, memoryview)):
        return _from_bytes(bytes(src), "<bytes>", dicom_voi)
    if isinstance(src, (str, os.PathLike)):
        return _from_bytes(read_bytes(src), str(src), dicom_voi)
    raise ImageError(f"cannot load an image from {type(src).__name__}")


def _from_bytes(data: bytes, name: str, dicom_voi: str) -> np.ndarray:
    from edge.dicom import is_dicom, load_dicom  # imports pydicom only when a DICOM file comes

    if is_dicom(data):
        return load_dicom(data, name, dicom_voi)
    return to_grey(decode(data, name), name)


def is_image_file(path) -> bool:
    """True for a visible .png/.jpg/.jpeg/.dcm file, or any other visible file whose content
    is DICOM (PACS exports often have no extension, or a UID-like one). AppleDouble ``._*``
    and other hidden files are never images."""
    p = Path(path)
    if p.name.startswith("."):
        return False
    if p.suffix.lower() in IMAGE_SUFFIXES + (".dcm",):
        return True
    from edge.dicom import is_dicom_file

    return p.name != "DICOMDIR" and is_dicom_file(p)
