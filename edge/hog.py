"""Histogram of Oriented Gradients in vectorised numpy, equal to ``skimage.feature.hog``.

The baseline is trained on these features and served on a device that has neither
scikit-image nor scikit-learn, so the edge runtime must compute the very same numbers.
OpenCV 5 has no ``cv2.HOGDescriptor``, and OpenCV 4's differs from scikit-image's anyway
(block order, Gaussian block weights), so this module reimplements scikit-image's
algorithm (grey images, no ``transform_sqrt``) on whole batches:

1. central-difference gradients, zero on the image border;
2. each pixel votes its gradient magnitude into one unsigned orientation bin of its cell
   (no interpolation); cells are the ``pixels_per_cell`` tiles from the top-left corner,
   a remainder at the right/bottom is ignored; cell histograms are means over the cell;
3. overlapping blocks of ``cells_per_block`` cells, each normalised on its own;
4. flattened in scikit-image's order (block row, block col, cell row, cell col, bin).

Parity with scikit-image (tested): max |difference| < 1e-5 on uint8 and float images.
The only difference is rounding: scikit-image sums each cell in float32, we in float64.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from edge.config import JsonConfig
from edge.errors import ImageError

BLOCK_NORMS = ("L1", "L1-sqrt", "L2", "L2-Hys")
_EPS = 1e-5  # scikit-image's block-normalisation epsilon
_CHUNK = 64  # images per vectorised step: keeps temporaries in cache


MAX_CELL = 512  # pixels per cell side; larger than any model input murakit makes


def _is_int(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def _pair(v, name: str) -> tuple[int, int]:
    """``8`` or ``(8, 8)`` or ``[8, 8]`` -> ``(8, 8)``; positive ints only."""
    pair = (v, v) if _is_int(v) else tuple(v) if isinstance(v, (tuple, list)) else ()
    if len(pair) != 2 or not all(_is_int(p) and 1 <= p <= MAX_CELL for p in pair):
        raise ValueError(f"{name} must be a positive int or a pair of them, got {v!r}")
    return int(pair[0]), int(pair[1])


@dataclass(frozen=True)
class HogConfig(JsonConfig):
    """Parameters of :func:`hog`; written into the baseline model's metadata.

    Attributes
    ----------
    orientations : int
        Unsigned orientation bins over [0, 180) degrees.
    pixels_per_cell : (int, int)
        Cell size (rows, cols); an int means a square cell.
    cells_per_block : (int, int)
        Block size in cells (rows, cols); an int means a square block.
    block_norm : {"L1", "L1-sqrt", "L2", "L2-Hys"}
        Block normalisation, as in scikit-image.
    """

    orientations: int = 9
    pixels_per_cell: tuple = (8, 8)
    cells_per_block: tuple = (2, 2)
    block_norm: str = "L2-Hys"

    def __post_init__(self):
        if not (_is_int(self.orientations) and 1 <= self.orientations <= 180):
            raise ValueError(f"orientations must be an int in [1, 180], got {self.orientations!r}")
        # frozen: normalise the pairs through object.__setattr__
        object.__setattr__(self, "orientations", int(self.orientations))
        object.__setattr__(self, "pixels_per_cell", _pair(self.pixels_per_cell, "pixels_per_cell"))
        object.__setattr__(self, "cells_per_block", _pair(self.cells_per_block, "cells_per_block"))
        if not isinstance(self.block_norm, str) or self.block_norm not in BLOCK_NORMS:
            raise ValueError(f"block_norm must be one of {BLOCK_NORMS}, got {self.block_norm!r}")

    def grid(self, shape) -> tuple[int, int, int, int]:
        """Cells and blocks per side for an image of ``shape`` (H, W).

        Returns
        -------
        (n_cells_row, n_cells_col, n_blocks_row, n_blocks_col)

        Raises
        ------
        ImageError
            If the image holds less than one block.
        """
        (h, w), (cr, cc), (br, bc) = shape[-2:], self.pixels_per_cell, self.cells_per_block
        ncr, ncc = h // cr, w // cc
        nbr, nbc = ncr - br + 1, ncc - bc + 1
        if nbr <= 0 or nbc <= 0:
            raise ImageError(f"image of {h}x{w} px is too small for HOG blocks of {br * cr}x{bc * cc} px")
        return ncr, ncc, nbr, nbc

    def feature_dim(self, shape) -> int:
        """Length D of the feature vector for an image of ``shape`` (H, W) or side ``S``."""
        shape = (shape, shape) if isinstance(shape, (int, np.integer)) else shape
        _, _, nbr, nbc = self.grid(shape)
        br, bc = self.cells_per_block
        return nbr * nbc * br * bc * self.orientations

    def to_dict(self) -> dict:
        d = super().to_dict()
        d["pixels_per_cell"] = list(self.pixels_per_cell)
        d["cells_per_block"] = list(self.cells_per_block)
        return d


def _bin_edges(n: int) -> np.ndarray:
    """Lower bin edges in degrees, float64 (n + 1,).

    scikit-image computes them in C ``float`` (float32) arithmetic and compares them with
    double angles; a pixel whose angle is >= the last edge votes nowhere. Copied exactly so
    that pixels on an edge fall into the same bin.
    """
    per = np.float32(180.0 / n)
    return np.array([per * np.float32(i) for i in range(n + 1)], dtype=np.float32).astype(np.float64)


def _orientation_bins(g_row: np.ndarray, g_col: np.ndarray, n: int) -> np.ndarray:
    """Bin index int (same shape) of each gradient; ``n`` means "votes nowhere"."""
    angle = np.rad2deg(np.arctan2(g_row, g_col)) % 180  # the same double formula as skimage
    return np.searchsorted(_bin_edges(n), angle, side="right") - 1


@functools.lru_cache(maxsize=4)
def _uint8_tables(n: int):
    """Orientation bin and magnitude of every integer gradient pair of a uint8 image.

    Returns
    -------
    bins : uint8 (511 * 511,)
        Bin index in [0, n); indexed by ``(g_row + 255) * 511 + (g_col + 255)``.
    magnitude : float32 (511 * 511,)
        ``hypot`` of the pair (0 where the pair votes nowhere).

    Looking both up once per pair instead of computing arctan2/hypot per pixel is most of
    our speed-up over scikit-image.
    """
    g = np.arange(-255, 256, dtype=np.float64)
    bins = _orientation_bins(g[:, None], g[None, :], n).ravel()
    mag = np.hypot(g[None, :], g[:, None]).ravel()
    mag = np.where(bins < n, mag, 0).astype(np.float32)  # past the last edge: no vote
    return np.minimum(bins, n - 1).astype(np.uint8), mag  # uint8: a 256 KiB table stays in cache


def _gradients(images: np.ndarray):
    """Central differences along rows and cols, zero on the border rows/cols.

    uint8 input gives exact int16 gradients; other input follows scikit-image's float type
    (float32 for float16/32, float64 otherwise).
    """
    if images.dtype == np.uint8:
        work = images.astype(np.int16)
    else:
        work = images.astype(np.float32 if images.dtype in (np.float16, np.float32) else np.float64)
    g_row, g_col = np.zeros_like(work), np.zeros_like(work)
    g_row[:, 1:-1, :] = work[:, 2:, :] - work[:, :-2, :]
    g_col[:, :, 1:-1] = work[:, :, 2:] - work[:, :, :-2]
    return g_row, g_col


def _votes(images: np.ndarray, n: int):
    """Per-pixel orientation bin (int in [0, n), (N, H, W)) and vote weight (float, (N, H, W))."""
    g_row, g_col = _gradients(images)
    if images.dtype == np.uint8:
        key = (g_row.astype(np.int32) + 255) * 511 + (g_col + 255)
        bins, mag = _uint8_tables(n)
        return bins[key], mag[key]
    g_row, g_col = g_row.astype(np.float64), g_col.astype(np.float64)
    bins = _orientation_bins(g_row, g_col, n)
    mag = np.where(bins < n, np.hypot(g_col, g_row), 0)  # past the last (float32) edge: no vote
    return np.minimum(bins, n - 1), mag


@functools.lru_cache(maxsize=8)
def _slot_index(n_images: int, h: int, w: int, cfg: HogConfig) -> np.ndarray:
    """int64 (n_images, h, w): the histogram slot (image, cell row, cell col, bin 0) of each pixel."""
    n, (cr, cc) = cfg.orientations, cfg.pixels_per_cell
    ncc = w // cc
    cell = (np.arange(h) // cr)[:, None] * ncc + (np.arange(w) // cc)[None, :]
    per_image = (h // cr) * ncc * n
    return (cell * n)[None] + (np.arange(n_images) * per_image)[:, None, None]


def _cell_histograms(images: np.ndarray, cfg: HogConfig) -> np.ndarray:
    """Mean magnitude per (cell, bin): float64 (N, n_cells_row, n_cells_col, orientations)."""
    n, (cr, cc) = cfg.orientations, cfg.pixels_per_cell
    ncr, ncc, _, _ = cfg.grid(images.shape)
    bins, mag = _votes(images, n)
    # cells tile the top-left ncr*cr x ncc*cc pixels; gradients were taken on the full image
    bins, mag = bins[:, : ncr * cr, : ncc * cc], mag[:, : ncr * cr, : ncc * cc]
    idx = _slot_index(len(images), ncr * cr, ncc * cc, cfg) + bins
    hist = np.bincount(idx.ravel(), weights=mag.ravel(), minlength=len(images) * ncr * ncc * n)
    return hist.reshape(len(images), ncr, ncc, n) / (cr * cc)


def _normalise(blocks: np.ndarray, method: str) -> np.ndarray:
    """scikit-image's block normalisation along the last axis of (..., K), in place."""
    if method in ("L1", "L1-sqrt"):
        blocks /= np.abs(blocks).sum(-1, keepdims=True) + _EPS
        return np.sqrt(blocks, out=blocks) if method == "L1-sqrt" else blocks
    blocks /= _l2(blocks)
    if method == "L2-Hys":  # clip, then renormalise
        np.minimum(blocks, 0.2, out=blocks)
        blocks /= _l2(blocks)
    return blocks


def _l2(blocks: np.ndarray) -> np.ndarray:
    # einsum beats (b**2).sum(-1) on short last axes (docs/performance.md, "Design choices")
    return np.sqrt(np.einsum("...k,...k->...", blocks, blocks)[..., None] + _EPS**2)


def _blocks(hist: np.ndarray, cfg: HogConfig) -> np.ndarray:
    """Overlapping blocks, flattened per block: float32 (N, n_blocks_row, n_blocks_col, br*bc*bins)."""
    br, bc = cfg.cells_per_block
    n, ncr, ncc, nb = hist.shape
    nbr, nbc = ncr - br + 1, ncc - bc + 1
    # float32 from here: normalisation rounding stays ~1e-7, far inside the parity tolerance
    hist = hist.astype(np.float32)
    parts = [hist[:, r : r + nbr, c : c + nbc, :] for r in range(br) for c in range(bc)]
    return np.stack(parts, axis=3).reshape(n, nbr, nbc, br * bc * nb)


def _check_images(images: np.ndarray) -> np.ndarray:
    images = np.asarray(images)
    if images.ndim != 3:
        raise ImageError(f"HOG needs grey images shaped (N, H, W), got shape {images.shape}")
    if images.dtype.kind not in "uif":
        raise ImageError(f"HOG needs numeric images, got dtype {images.dtype}")
    return images


def hog_batch(images, cfg: HogConfig = HogConfig()) -> np.ndarray:
    """HOG features of a batch of grey images.

    Parameters
    ----------
    images : array-like (N, H, W)
        uint8 (0-255; fastest path) or float (any range) grey images, all the same size.
        A ``np.memmap`` is read chunk by chunk.
    cfg : HogConfig

    Returns
    -------
    np.ndarray
        float32 (N, D), D = ``cfg.feature_dim((H, W))``; each block's values are >= 0 and,
        for "L2"/"L2-Hys", have unit L2 norm (or are all 0 on a flat block).

    Raises
    ------
    ImageError
        Wrong rank or dtype, or images smaller than one block.
    """
    images = _check_images(images)
    out = np.empty((len(images), cfg.feature_dim(images.shape[1:])), dtype=np.float32)
    for start in range(0, len(images), _CHUNK):
        chunk = np.asarray(images[start : start + _CHUNK])
        blocks = _normalise(_blocks(_cell_histograms(chunk, cfg), cfg), cfg.block_norm)
        out[start : start + len(chunk)] = blocks.reshape(len(chunk), -1)
    return out


def hog(image, cfg: HogConfig = HogConfig()) -> np.ndarray:
    """HOG features of one grey image (H, W) -> float32 (D,); see :func:`hog_batch`."""
    image = np.asarray(image)
    if image.ndim != 2:
        raise ImageError(f"HOG needs one grey image shaped (H, W), got shape {image.shape}")
    return hog_batch(image[None], cfg)[0]
