"""Integer pixel primitives shared by the DICOM reader and preprocessing: the value histogram and
the table lookup of a uint8 / uint16 image.

Both run over every pixel of a picture of up to tens of megapixels, so each is the fastest
exact route numpy + OpenCV offer (``cv2.calcHist`` / ``cv2.LUT``, or numpy in row bands that
bound the temporaries), and they live below :mod:`edge.dicom` and :mod:`edge.preprocess` so
that neither imports the other.
"""

from __future__ import annotations

import numpy as np

BAND = 1 << 16  # pixels per row band: bounds temporaries, never changes a result


def row_bands(h: int, w: int) -> list:
    """Row slices of about :data:`BAND` pixels covering ``h`` rows of width ``w``."""
    step = max(1, BAND // max(1, w))
    return [slice(r, min(h, r + step)) for r in range(0, h, step)]


def hist(idx: np.ndarray, n: int) -> np.ndarray:
    """int64 counts of the values 0..n-1 in a uint8/uint16 region (any strides)."""
    import cv2

    if idx.size == 0:
        return np.zeros(n, np.int64)
    if idx.ndim == 2 and idx.size < 2**24:  # calcHist counts in float32: exact below 2**24
        return cv2.calcHist([idx], [0], None, [n], [0, n]).ravel().astype(np.int64)
    return np.bincount(idx.ravel(), minlength=n)


def lookup(table: np.ndarray, idx: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """``table[idx]`` for a uint8/uint16 index image, without an intp copy of the index;
    written into ``out`` (any strides, shape of ``idx``) when given."""
    import cv2

    if idx.dtype == np.uint8 and idx.ndim == 2 and len(table) == 256:
        if out is None:
            return cv2.LUT(idx, table)
        if out.dtype == table.dtype and out.strides[1] == out.itemsize and out.strides[0] >= out.shape[1] * out.itemsize:
            # a row-strided view (a region of a larger buffer) is a cv::Mat with a step
            done = cv2.LUT(idx, table, dst=out)  # OpenCV writes into out's own memory
            if done is not out:
                out[...] = done
            return out
    out = np.empty(idx.shape, table.dtype) if out is None else out
    for rows in row_bands(idx.shape[0], idx.shape[1] if idx.ndim == 2 else 1):
        np.take(table, idx[rows], out=out[rows], mode="clip")
    return out
