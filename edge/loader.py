"""The one entry point for reading a radiograph: a file, its bytes or an array -> pixels.

:func:`load_array` (the stored array, what :mod:`edge.preprocess` takes), :func:`load_image`
(float32 grey [0, 1], what exploration tools show) and :func:`is_image_file` (which files a
folder walk reads) recognise the format by content and hand the bytes to the one reader of it:
:mod:`edge.dicom` for DICOM, :mod:`edge.image` for PNG / JPEG. Neither reader imports the
other or this module, and every size limit they apply is :mod:`edge.limits`'s.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np

from edge.dicom import IndexedPicture, is_dicom, is_dicom_file, read_dicom
from edge.errors import ImageError
from edge.image import decode
from edge.limits import MAX_FILE_BYTES, MEMORY_BUDGET, WORK_BYTES_PER_PIXEL, check_pixels

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def read_bytes(path) -> bytes:
    """Read an image file's bytes with clear errors for missing, empty, huge or special files
    (a FIFO or a device is never opened: reading it could block or never end)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise ImageError(f"{path}: no such file") from None
    except (OSError, ValueError) as e:  # a name too long, a permission problem on a parent folder
        raise ImageError(f"{path}: cannot read ({getattr(e, 'strerror', None) or e})") from None
    if stat.S_ISDIR(st.st_mode):
        raise ImageError(f"{path}: is a directory, not an image")
    if not stat.S_ISREG(st.st_mode):
        raise ImageError(f"{path}: not a regular file")
    if st.st_size == 0:
        raise ImageError(f"{path}: file is empty")
    if st.st_size > MAX_FILE_BYTES:
        raise ImageError(f"{path}: file is {st.st_size:,} bytes, above the {MAX_FILE_BYTES:,}-byte limit")
    try:
        with open(path, "rb") as f:
            return f.read(st.st_size + 1)  # sized read: one buffer, no growth, no huge reservation
    except OSError as e:
        raise ImageError(f"{path}: cannot read ({e.strerror or e})") from None


def check_array(arr, name: str = "<array>") -> np.ndarray:
    """Validate an in-memory image: (H, W) or (H, W, C) with C in 1..4, non-empty, numeric,
    at most ``MAX_PIXELS`` and within the working budget. Returns a (H, W[, C]) ndarray."""
    arr = np.asarray(arr)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim not in (2, 3) or arr.size == 0 or min(arr.shape[:2]) == 0:
        raise ImageError(f"{name}: expected a non-empty (H, W) or (H, W, C) image, got shape {arr.shape}")
    if arr.ndim == 3 and arr.shape[2] > 4:
        raise ImageError(f"{name}: unsupported channel count {arr.shape[2]}")
    if not (arr.dtype == np.bool_ or np.issubdtype(arr.dtype, np.number)) or np.iscomplexobj(arr):
        raise ImageError(f"{name}: unsupported pixel type {arr.dtype}")
    h, w = arr.shape[:2]
    check_pixels(w, h, name)
    if WORK_BYTES_PER_PIXEL * h * w > MEMORY_BUDGET:
        raise ImageError(f"{name}: a {w}x{h} image needs more than the {MEMORY_BUDGET // 2**20} MiB "
                         "per-image budget to preprocess")
    return arr


def load_array(src, dicom_voi: str = "window", indexed: bool = False):
    """Load an image as its stored array, without converting its pixel type.

    Parameters
    ----------
    src : str, Path, bytes, ndarray or IndexedPicture
        A PNG/JPEG file, a DICOM file (recognised by content), its bytes, an array of shape
        (H, W) or (H, W, C), or a DICOM picture already read with ``indexed=True``.
    dicom_voi : {"window", "full"}
        VOI policy for DICOM input (``PreprocessConfig.dicom_voi``); ignored otherwise.
    indexed : bool
        DICOM input only: return an :class:`edge.dicom.IndexedPicture` (index image + grey
        table, no float copy) when the file's stored values allow one; :mod:`edge.preprocess`
        asks for it.

    Returns
    -------
    (ndarray, str)
        The array (uint8/uint16 from PNG/JPEG; float32 in [0, 1] from DICOM, or its
        IndexedPicture; arrays are returned as given, checked) and the name used in error
        messages.
    """
    arr, name, _ = read_any(src, dicom_voi, indexed)
    return arr, name


def read_any(src, dicom_voi: str = "window", indexed: bool = False):
    """:func:`load_array` that also returns a DICOM file's non-identifying facts.

    Returns
    -------
    (array, name, DicomInfo or None)
        ``DicomInfo`` for DICOM input (read from the same parse as the pixels), else None.
    """
    if isinstance(src, IndexedPicture):
        check_array(src.index, "<array>")
        return src, "<array>", None
    if isinstance(src, np.ndarray):
        return check_array(src), "<array>", None
    if isinstance(src, (bytes, bytearray, memoryview)):
        name, data = "<bytes>", bytes(src)
    elif isinstance(src, (str, os.PathLike)):
        name = str(src)
        data = read_bytes(src)
    else:
        raise ImageError(f"cannot load an image from {type(src).__name__}")
    if is_dicom(data):
        arr, info = read_dicom(data, name, dicom_voi, indexed=indexed)
    else:
        arr, info = decode(data, name), None
    if isinstance(arr, IndexedPicture):  # checked through its index image (same shape)
        check_array(arr.index, name)
    else:
        arr = check_array(arr, name)
    return arr, name, info


def to_grey(arr: np.ndarray, name: str = "<array>") -> np.ndarray:
    """Convert a decoded array to float32 (H, W) in [0, 1].

    uint8 is divided by 255, uint16 by 65535; float input is taken as-is when within
    [0, 1] and scaled by its maximum otherwise. Colour (BGR, BGRA) becomes luminance; the
    alpha channel of a grey+alpha or BGRA image is dropped.
    """
    arr = check_array(arr, name)
    if arr.ndim == 2:
        return np.ascontiguousarray(_scale(arr, name), dtype=np.float32)
    if arr.dtype not in (np.uint8, np.uint16, np.bool_):
        return _colour_to_grey(_scale(arr, name))  # float pixels scale by the whole array's range
    # integer pixels scale one by one and cvtColor works row by row, so row bands give the
    # same values without a float copy of the whole colour image
    out = np.empty(arr.shape[:2], np.float32)
    step = max(1, 65536 // arr.shape[1])
    for r in range(0, arr.shape[0], step):
        out[r:r + step] = _colour_to_grey(_scale(arr[r:r + step], name))
    return out


def _colour_to_grey(scaled: np.ndarray) -> np.ndarray:
    """float32 (H, W, C) -> float32 (H, W): channel 0 of grey + alpha, else BGR luminance."""
    import cv2

    if scaled.shape[2] == 2:
        return np.ascontiguousarray(scaled[:, :, 0])
    return cv2.cvtColor(np.ascontiguousarray(scaled[:, :, :3]), cv2.COLOR_BGR2GRAY)


def _scale(arr: np.ndarray, name: str) -> np.ndarray:
    if arr.dtype == np.uint8:
        return arr.astype(np.float32) / 255.0
    if arr.dtype == np.uint16:
        return arr.astype(np.float32) / 65535.0
    if arr.dtype == np.bool_:
        return arr.astype(np.float32)
    f = arr.astype(np.float32)
    if not np.all(np.isfinite(f)):
        raise ImageError(f"{name}: image contains NaN or infinite values")
    lo, hi = float(f.min()), float(f.max())
    if lo >= 0.0 and hi <= 1.0:
        return f
    return (f - lo) / (hi - lo) if hi > lo else np.zeros_like(f)


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
        Missing, empty, truncated, damaged or non-image file; zero size; above ``MAX_PIXELS``
        or the ``MEMORY_BUDGET``.
    """
    arr, name = load_array(src, dicom_voi)
    return to_grey(arr, name)


def is_image_file(path) -> bool:
    """True for a visible .png/.jpg/.jpeg/.dcm file, or any other visible file whose content
    is DICOM (PACS exports often have no extension, or a UID-like one). AppleDouble ``._*``
    and other hidden files are never images."""
    p = Path(path)
    if p.name.startswith("."):
        return False
    if p.suffix.lower() in IMAGE_SUFFIXES + (".dcm",):
        return True
    return p.name != "DICOMDIR" and is_dicom_file(p)
