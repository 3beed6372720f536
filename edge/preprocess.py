"""The ONE preprocessing path: image file or array -> model input.

Training, calibration, golden outputs and ``edge-predict`` all call :func:`preprocess`, and
its parameters travel inside every exported model, so the device never guesses them.

Steps (each fixes a known problem of the raw radiographs):

1. decode to one grey float channel (8/16-bit, 1/3/4 channels);
2. robust intensity normalisation: clip to the image's own low/high percentiles and stretch
   to [0, 1] — robust to over/under-exposure and to a few saturated marker pixels, where
   min/max stretching is not;
3. inversion correction: radiographs show air dark and bone bright; some files are stored
   inverted. The border of a radiograph is mostly air or collimator, so in a correctly
   displayed image the border is darker than the image as a whole;
4. optional CLAHE (local contrast);
5. aspect-preserving resize so the long side is ``size``, centred on a ``size`` x ``size``
   canvas filled with ``pad_value``.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

from edge.config import JsonConfig
from edge.dicom import VOI_POLICIES, IndexedPicture
from edge.errors import ConfigError, ImageError
from edge.loader import load_array, to_grey
from edge.pixels import BAND, hist, lookup, row_bands

INVERT_POLICIES = ("auto", "never", "always")


@dataclass(frozen=True)
class PreprocessConfig(JsonConfig):
    """Parameters of :func:`preprocess`; written into every exported model's metadata.

    Attributes
    ----------
    size : int
        Output side S in pixels (output is S x S).
    clip_low, clip_high : float
        Percentiles (0-100) mapped to 0 and 1 before clipping.
    invert : {"auto", "never", "always"}
        Inversion policy; "auto" uses :func:`inversion_score`.
    clahe : bool
        Apply CLAHE after normalisation.
    clahe_clip : float
        CLAHE clip limit.
    clahe_grid : int
        CLAHE tiles per side.
    pad_value : int
        Canvas value (0-255) around the resized image; 0 is air after correction.
    border : float
        Width of the border band used by the inversion detector, as a fraction of each side.
    dicom_voi : {"window", "full"}
        DICOM input only (see :mod:`edge.dicom`): "window" applies the file's own VOI LUT or
        window (the display rendition a PACS exports as PNG, which is what MURA's PNGs are),
        falling back to the full range when the file has none; "full" ignores the window and
        maps the image's min..max to 0..1 (for files whose window is not trusted).
    """

    size: int = 128
    clip_low: float = 0.5
    clip_high: float = 99.5
    invert: str = "auto"
    clahe: bool = False
    clahe_clip: float = 2.0
    clahe_grid: int = 8
    pad_value: int = 0
    border: float = 0.08
    dicom_voi: str = "window"

    def __post_init__(self):
        self.check_types()
        if not 8 <= self.size <= 4096:
            raise ConfigError(f"size must be an integer in [8, 4096], got {self.size!r}")
        if not (0.0 <= self.clip_low < self.clip_high <= 100.0):
            raise ConfigError(f"need 0 <= clip_low < clip_high <= 100, got {self.clip_low}, {self.clip_high}")
        if self.invert not in INVERT_POLICIES:
            raise ConfigError(f"invert must be one of {INVERT_POLICIES}, got {self.invert!r}")
        if not 0 <= self.pad_value <= 255:
            raise ConfigError(f"pad_value must be in [0, 255], got {self.pad_value}")
        if not 0.0 < self.border < 0.5:
            raise ConfigError(f"border must be in (0, 0.5), got {self.border}")
        if not 0.0 < self.clahe_clip <= 40.0:  # OpenCV needs > 0; beyond ~40 CLAHE is plain equalisation
            raise ConfigError(f"clahe_clip must be in (0, 40], got {self.clahe_clip}")
        if not 1 <= self.clahe_grid <= 64:  # 0 divides by zero inside OpenCV; huge grids allocate GBs
            raise ConfigError(f"clahe_grid must be an integer in [1, 64], got {self.clahe_grid}")
        if self.dicom_voi not in VOI_POLICIES:
            raise ConfigError(f"dicom_voi must be one of {VOI_POLICIES}, got {self.dicom_voi!r}")


@dataclass(frozen=True)
class PreprocessInfo:
    """What :func:`preprocess_with_info` did to one image.

    An original pixel (x, y) lands at ``(x * scale + offset_x, y * scale + offset_y)``.
    """

    inverted: bool
    inversion_score: float
    scale: float
    offset_x: int
    offset_y: int
    orig_h: int
    orig_w: int
    low: float
    high: float



LEVELS = 65536  # percentiles are read off a 16-bit histogram: exact for 8/16-bit sources, O(N)


# ---------------------------------------------------------------- per-pixel expressions
# Each step is elementwise. The float path applies them to whole images; the integer path
# applies them once to the table of every value a stored pixel can take and then looks the
# results up. Same operations on the same float32 inputs give the same bits, so both paths
# return identical outputs (tests/test_preprocess_parity.py holds them to a frozen copy).
def _levels(grey: np.ndarray) -> np.ndarray:
    return np.rint(grey * (LEVELS - 1)).astype(np.int64)


def _stretch(grey: np.ndarray, lo: np.float64, hi: np.float64) -> np.ndarray:
    return np.clip((grey - lo) / (hi - lo), 0.0, 1.0, dtype=np.float32)


def _to_u8(norm: np.ndarray, inverted: bool) -> np.ndarray:
    if inverted:
        norm = 1.0 - norm
    return np.round(norm * 255.0).astype(np.uint8)


def _ranks(qs, n: int) -> np.ndarray:
    """1-based nearest ranks of percentiles ``qs`` among ``n`` pixels (float64, >= 1)."""
    return np.maximum(1, np.ceil(np.asarray(qs, dtype=np.float64) / 100.0 * n))


def _int_ranks(qs, n: int) -> list:
    """:func:`_ranks` as Python ints (the same float64 arithmetic, without array overhead)."""
    return [max(1, math.ceil(float(q) / 100.0 * n)) for q in qs]


def _bounds(levels) -> tuple:
    """Percentile levels -> (lo, hi) as float64 scalars in [0, 1]."""
    lo, hi = np.asarray(levels).astype(np.float64) / (LEVELS - 1)
    return lo, hi


def _is_flat(lo, hi) -> bool:
    return bool(hi - lo < 1e-6)  # a flat image carries no information; keep it flat, not noise


def _decide(cfg: PreprocessConfig, score: float) -> bool:
    return cfg.invert == "always" or (cfg.invert == "auto" and score > 0.0)


# ---------------------------------------------------------------- float path
def percentiles(grey: np.ndarray, qs) -> np.ndarray:
    """Percentiles ``qs`` (0-100) of a [0, 1] image, as the smallest 16-bit level whose
    cumulative count reaches q% of the pixels (nearest rank; no interpolation).

    A histogram instead of ``np.percentile``'s partial sort: exact for the 8- and 16-bit files
    radiographs come in, O(N), and built in row bands so no full-size integer copy is made.

    Returns
    -------
    ndarray of float64, shape (len(qs),), in [0, 1]
    """
    flat = np.ascontiguousarray(grey).reshape(-1)
    counts = np.zeros(LEVELS, np.int64)
    for s in range(0, flat.size, BAND):
        counts += np.bincount(_levels(flat[s:s + BAND]), minlength=LEVELS)
    cdf = np.cumsum(counts)
    return np.searchsorted(cdf, _ranks(qs, flat.size)).astype(np.float64) / (LEVELS - 1)


def normalise(grey: np.ndarray, cfg: PreprocessConfig):
    """Percentile-clip and stretch a float32 [0, 1] image to [0, 1]. Returns (image, low, high)."""
    lo, hi = percentiles(grey, [cfg.clip_low, cfg.clip_high])
    if _is_flat(lo, hi):
        return np.zeros_like(grey), float(lo), float(hi)
    out = np.empty(grey.shape, np.float32)
    for rows in row_bands(*grey.shape):
        out[rows] = _stretch(grey[rows], lo, hi)
    return out, float(lo), float(hi)


def inversion_score(norm: np.ndarray, border: float = 0.08) -> float:
    """Positive when the image looks inverted (bones dark on a light background).

    The border band of a radiograph is dominated by air, the darkest material in a correctly
    displayed image, while the centre holds the limb (soft tissue and bone, brighter). The
    score is the median of the border band minus the mean of the central half, in normalised
    units (-1 .. 1). Medians make burned-in position markers in a corner irrelevant.
    """
    h, w = norm.shape
    bh, bw = max(1, round(h * border)), max(1, round(w * border))
    band = np.concatenate([
        norm[:bh].ravel(), norm[-bh:].ravel(), norm[bh:-bh, :bw].ravel(), norm[bh:-bh, -bw:].ravel()
    ])
    centre = norm[h // 4: h - h // 4, w // 4: w - w // 4]
    return float(np.median(band) - centre.mean())


def _float_path(grey: np.ndarray, cfg: PreprocessConfig):
    """float32 (H, W) [0, 1] -> (uint8 (H, W), lo, hi, score, inverted)."""
    norm, lo, hi = normalise(grey, cfg)
    score = inversion_score(norm, cfg.border)
    inverted = _decide(cfg, score)
    u8 = np.empty(grey.shape, np.uint8)
    for rows in row_bands(*grey.shape):
        u8[rows] = _to_u8(norm[rows], inverted)
    return u8, lo, hi, score, inverted


# ---------------------------------------------------------------- integer path: value tables
@dataclass(frozen=True)
class _Tables:
    """Grey value of every stored value, per column: ``body[v]`` everywhere except the columns
    in ``extra`` ({column: table}), where OpenCV's colour conversion rounds differently.
    Every table maps value v strictly below value v + 1 (checked), which :func:`_kth` needs,
    unless ``order`` lists the values in grey order (a DICOM picture: MONOCHROME1, windows)."""

    body: np.ndarray
    extra: tuple = ()
    order: np.ndarray | None = None  # values in grey order, when body is not increasing (DICOM)
    counts: np.ndarray | None = None  # the whole image's value histogram, when already known


def _ordered(tables) -> bool:
    lo, hi = np.minimum.reduce(tables), np.maximum.reduce(tables)
    return bool(np.all(hi[:-1] < lo[1:]))


@functools.cache
def _grey_tables(dtype: str) -> _Tables:
    """A 1-channel image: the grey of value v is what edge.loader.to_grey makes of it."""
    return _Tables(to_grey(np.arange(np.iinfo(dtype).max + 1, dtype=dtype)[None])[0])


@functools.lru_cache(maxsize=1024)
def _bgr_tables(width: int):
    """8-bit BGR with equal channels, ``width`` pixels wide, or None (then the float path).

    ``cv2.cvtColor`` on float32 rounds its SIMD body and its row tail differently, and the
    tail depends on the row width; its result for a pixel depends only on the value, the
    column and the width (tests check this on many sizes). So one probe image per width, row v
    holding value v, gives every pixel's grey exactly: 256 x width conversions, cached.
    """
    values = np.repeat(np.arange(256, dtype=np.uint8)[:, None], width, axis=1)
    grey = to_grey(np.repeat(values[:, :, None], 3, axis=2))  # (256, width): grey[v, x]
    body = np.ascontiguousarray(grey[:, 0])
    odd = np.flatnonzero(np.any(grey != body[:, None], axis=0))
    tables = _Tables(body, tuple((int(x), np.ascontiguousarray(grey[:, x])) for x in odd))
    return tables if _ordered([body, *(t for _, t in tables.extra)]) else None


@functools.lru_cache(maxsize=64)
def _neighbour_mask(width: int, channels: int) -> np.ndarray:
    """uint8 (rows, channels * width - 1) mask for :func:`_grey_colour`: 1 where byte k of a
    pixel row is the B or G of a pixel (k % channels in {0, 1}), so byte k + 1 is its G or R;
    ``rows`` fills one :data:`BAND` of pixels (a few hundred KiB at most)."""
    rows = max(1, BAND // width)
    pattern = (np.arange(channels * width - 1) % channels < 2).astype(np.uint8)
    return np.ascontiguousarray(np.broadcast_to(pattern, (rows, pattern.size)))


def _grey_colour(arr: np.ndarray) -> bool:
    """True when every pixel of an 8-bit BGR(A) image has B == G == R (alpha is ignored).

    One masked ``cv2.norm`` per row band over the image's bytes as they lie, each byte compared
    with the next: B with G and G with R inside every pixel, the other pairs masked out. Four
    times less work than extracting the channels and comparing them."""
    import cv2

    h, w, c = arr.shape
    if not arr.flags.c_contiguous:  # a view from a caller: compare the channels one by one
        first = cv2.extractChannel(arr, 0)
        return all(cv2.norm(first, cv2.extractChannel(arr, k), cv2.NORM_INF) == 0 for k in (1, 2))
    flat = arr.reshape(h, w * c)
    mask = _neighbour_mask(w, c)
    for rows in row_bands(h, w):
        n = rows.stop - rows.start
        if cv2.norm(flat[rows, :-1], flat[rows, 1:], cv2.NORM_INF, mask[:n]) != 0:
            return False
    return True


def _table_source(arr: np.ndarray):
    """An integer image as (index image, :class:`_Tables`) such that the float grey of pixel
    (y, x) is the table of column x at ``index[y, x]``; None when no tables exist (float
    pixels, colour whose channels differ, 16-bit colour)."""
    import cv2

    if isinstance(arr, IndexedPicture):  # DICOM: the greys the image holds, in order
        return arr.index, _Tables(arr.table, order=arr.order, counts=arr.counts)
    if arr.dtype not in (np.uint8, np.uint16):
        return None
    if arr.ndim == 2:
        return arr, _grey_tables(arr.dtype.str)
    first = cv2.extractChannel(arr, 0)
    if arr.shape[2] == 2:  # grey + alpha: the alpha is dropped
        return first, _grey_tables(arr.dtype.str)
    if arr.dtype != np.uint8 or not _grey_colour(arr):
        return None
    tables = _bgr_tables(arr.shape[1])
    return None if tables is None else (first, tables)


def _parts(idx: np.ndarray, tables: _Tables, rows: slice, cols: slice) -> list:
    """The pixels of ``idx[rows, cols]`` as [(counts, table)] for :func:`_kth`: the body table
    first, then one entry per ``tables.extra`` column (zero counts when outside ``cols``), so
    lists of different regions line up and subtract."""
    n = len(tables.body)
    body = hist(idx[rows, cols], n)
    parts = []
    for x, table in tables.extra:
        counts = hist(idx[rows, x], n) if cols.start <= x < cols.stop else np.zeros(n, np.int64)
        body -= counts
        parts.append((counts, table))
    return [(body, tables.body), *parts]


def _compact(idx: np.ndarray, tables: _Tables):
    """Renumber the values a 16-bit image holds, in order, 0..k-1, so histograms and tables
    have k entries instead of 65536; k <= 256 (8-bit content stored as 16-bit, many 10-12-bit
    detectors' crops) even gives a uint8 image and OpenCV's 8-bit paths. Order is kept, so
    every order statistic and every per-value result is unchanged."""
    present = np.flatnonzero(hist(idx, LEVELS))
    n = max(256, present.size)
    remap = np.zeros(LEVELS, np.uint8 if n == 256 else np.uint16)
    remap[present] = np.arange(present.size)

    def squeeze(table):
        out = np.zeros(n, table.dtype)  # unused tail entries: never counted, never looked up
        out[:present.size] = table[present]
        return out

    return lookup(remap, idx), _Tables(squeeze(tables.body), tuple((x, squeeze(t)) for x, t in tables.extra))


def _kth(parts, ks, order=None) -> list:
    """Where the k-th smallest (0-based, for each k in ``ks``) grey of a pixel multiset lies.

    ``parts`` is [(counts, table)]: ``counts[v]`` pixels of stored value v whose grey is
    ``table[v]``. Every table maps value v below value v + 1, so value v's pixels sit together
    in sorted order, ordered among themselves by their grey.

    Returns
    -------
    list of (part index, value) pairs, one per k: the grey is ``parts[i][1][v]``.

    ``order`` (one part only): the values in grey order, for a table that is not increasing.
    """
    if order is not None:
        picked = np.searchsorted(np.cumsum(parts[0][0][order]), ks, side="right")
        return [(0, int(order[i])) for i in picked]
    if len(parts) == 1:  # one table: value order is grey order
        return [(0, int(v)) for v in np.searchsorted(np.cumsum(parts[0][0]), ks, side="right")]
    total = sum(c for c, _ in parts)
    cdf = np.cumsum(total)
    out = []
    for k in ks:
        v = int(np.searchsorted(cdf, k, side="right"))
        j = int(k) - (int(cdf[v]) - int(total[v]))
        for _, count, i in sorted((t[v], int(c[v]), i) for i, (c, t) in enumerate(parts) if c[v] > 0):
            if j < count:
                out.append((i, v))
                break
            j -= count
    return out


def _pick(tables: list, where: list) -> np.ndarray:
    """float32 values ``tables[i][v]`` for the (i, v) pairs of :func:`_kth`."""
    return np.array([tables[i][v] for i, v in where], dtype=np.float32)


def _apply(tables: _Tables, idx: np.ndarray, cols: slice, out: np.ndarray | None = None) -> np.ndarray:
    """Look ``idx[:, cols]`` up, each column in its own table; into ``out`` when given, else
    into a new array."""
    out = lookup(tables.body, idx[:, cols], out)
    for x, table in tables.extra:
        if cols.start <= x < cols.stop:
            out[:, x - cols.start] = lookup(table, idx[:, x])
    return out


def _map(tables: _Tables, fn) -> _Tables:
    return _Tables(fn(tables.body), tuple((x, fn(t)) for x, t in tables.extra), tables.order)


def _table_path(idx: np.ndarray, tables: _Tables, cfg: PreprocessConfig):
    """Integer image -> (uint8 (H, W), lo, hi, score, inverted), bit-identical to the float path.

    Percentiles and the band median are order statistics read off value histograms; the
    per-pixel steps are computed once per stored value that occurs and looked up.
    """
    h, w = idx.shape
    if idx.dtype == np.uint16 and tables.order is None:
        idx, tables = _compact(idx, tables)
    if not tables.extra and tables.order is None and tables.counts is None:
        return _plain_table_path(idx, tables.body, cfg)
    band = None
    if tables.counts is not None:
        everything = [(tables.counts, tables.body)]
    elif h * w >= _SPLIT_PIXELS:
        everything, band = _split_counts(idx, tables, cfg.border)
    else:
        everything = _parts(idx, tables, slice(0, h), slice(0, w))
    greys = [t for _, t in everything]  # body, then the extra columns' tables
    ranks = _int_ranks([cfg.clip_low, cfg.clip_high], h * w)
    lo, hi = _bounds(_levels(_pick(greys, _kth(everything, [r - 1 for r in ranks], tables.order))))
    flat = _is_flat(lo, hi)

    def norm_of(grey):  # tables hold <= 65536 values; values that do not occur cost little
        return np.zeros(grey.shape, np.float32) if flat else _stretch(grey, lo, hi)

    norms = _map(tables, norm_of)
    middle = _band_middle(idx, tables, everything, cfg.border, band)
    median = _median_of_two(_pick([norms.body, *(t for _, t in norms.extra)], middle))
    score = float(median - _centre_mean(idx, norms))
    inverted = _decide(cfg, score)
    u8 = _apply(_map(norms, lambda norm: _to_u8(norm, inverted)), idx, slice(0, w))
    return u8, float(lo), float(hi), score, inverted


_SPLIT_PIXELS = 1 << 15  # from here on, five histogram calls over one pass beat two over 1.7 passes


def _regions(h: int, w: int, border: float) -> tuple:
    """The border band of :func:`inversion_score` as four (rows, cols) strips (top, bottom, left,
    right), and the inner rectangle ``[bh:h-bh, bw:w-bw]``: together every pixel exactly once
    (``border`` < 0.5 keeps 2 * bh <= h and 2 * bw <= w)."""
    bh, bw = max(1, round(h * border)), max(1, round(w * border))
    mid, all_cols = slice(bh, max(bh, h - bh)), slice(0, w)
    strips = ((slice(0, bh), all_cols), (slice(h - bh, h), all_cols), (mid, slice(0, bw)), (mid, slice(w - bw, w)))
    return strips, (mid, slice(bw, max(bw, w - bw)))


def _add(part_lists: list) -> list:
    """Sum :func:`_parts` lists of several regions, part by part."""
    return [(sum(p[i][0] for p in part_lists), part_lists[0][i][1]) for i in range(len(part_lists[0]))]


def _split_counts(idx: np.ndarray, tables: _Tables, border: float) -> tuple:
    """(whole image, border band) as :func:`_parts` lists, read in one pass over the pixels:
    the band's four strips, plus the inner rectangle for the whole image."""
    strips, inner = _regions(*idx.shape, border)
    band = _add([_parts(idx, tables, rows, cols) for rows, cols in strips])
    return _add([band, _parts(idx, tables, *inner)]), band


def _plain_table_path(idx: np.ndarray, body: np.ndarray, cfg: PreprocessConfig):
    """:func:`_table_path` for one table (grey PNGs, colour ones whose width has no odd columns):
    the same statistics with plain histograms instead of part lists, ~15 us less per image of
    Python, which is ~1% of the decode floor (tests/test_preprocess_parity.py covers both)."""
    h, w = idx.shape
    n = len(body)
    strips, inner = _regions(h, w, cfg.border)
    if h * w >= _SPLIT_PIXELS:  # one pass: the band's strips, then the inner rectangle
        band = hist(idx[strips[0]], n) + hist(idx[strips[1]], n) + hist(idx[strips[2]], n) + hist(idx[strips[3]], n)
        counts = band + hist(idx[inner], n)
    else:
        counts = hist(idx, n)
        band = counts - hist(idx[inner], n)
    ks = [r - 1 for r in _int_ranks([cfg.clip_low, cfg.clip_high], h * w)]
    lo, hi = _bounds(_levels(body[np.searchsorted(np.cumsum(counts), ks, side="right")]))
    norm = np.zeros(n, np.float32) if _is_flat(lo, hi) else _stretch(body, lo, hi)
    m = int(band.sum())
    median = _median_of_two(norm[np.searchsorted(np.cumsum(band), [(m - 1) // 2, m // 2], side="right")])
    score = float(median - _centre_mean(idx, _Tables(norm)))
    inverted = _decide(cfg, score)
    return lookup(_to_u8(norm, inverted), idx), float(lo), float(hi), score, inverted


def _band_middle(idx: np.ndarray, tables: _Tables, everything: list, border: float, band=None) -> list:
    """Where (:func:`_kth` pairs) the two middle greys of the border band lie, the band taken as
    :func:`inversion_score` takes it: every pixel outside the inner rectangle
    ``[bh:h-bh, bw:w-bw]``. ``band``: its counts when already read (:func:`_split_counts`).
    Otherwise small images count it as all pixels minus the inner ones (one histogram call);
    large ones count its four strips (a third of the pixels to read)."""
    h, w = idx.shape
    strips, inner_rect = _regions(h, w, border)
    if band is None and h * w < 1 << 16:
        inner = _parts(idx, tables, *inner_rect)
        band = [(c_all - c_in, t) for (c_all, t), (c_in, _) in zip(everything, inner)]
    elif band is None:
        band = _add([_parts(idx, tables, rows, cols) for rows, cols in strips])
    n = int(sum(c.sum() for c, _ in band))
    return _kth(band, [(n - 1) // 2, n // 2], tables.order)


def _median_of_two(middle: np.ndarray) -> np.float32:
    """What ``np.median`` returns from the two middle float32 values: their float32 sum halved
    (for an odd count both are the middle value, and (x + x) / 2 == x)."""
    a, b = middle
    return (a + b) / np.float32(2)


def _centre_mean(idx: np.ndarray, norms: _Tables) -> np.float32:
    """Mean of the normalised centre, summed in the very order numpy sums the float path's
    ``norm[h//4:h-h//4, w//4:w-w//4]`` view. That view is not contiguous (unless it spans whole
    rows), so numpy adds one row's pairwise float32 sum after another; the centre is looked up
    into a buffer one column wider than itself, whose centre view numpy therefore sums row by
    row the same way, to the bit, while only the centre's pixels are looked up."""
    h, w = idx.shape
    rows, cols = slice(h // 4, h - h // 4), slice(w // 4, w - w // 4)
    n, cw = rows.stop - rows.start, cols.stop - cols.start
    spare = 0 if cw == w else 1  # whole rows: the float path's view is contiguous, and so is this
    view = np.empty((n, cw + spare), np.float32)[:, :cw]
    _apply(norms, idx[rows], cols, view)
    total = np.add.reduce(view, axis=None)  # ndarray.mean's own two steps, without its wrapper
    return total.dtype.type(total / np.intp(view.size))


# ---------------------------------------------------------------- the one function
def _resize_pad(img: np.ndarray, cfg: PreprocessConfig):
    import cv2

    h, w = img.shape
    scale = cfg.size / max(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    canvas = np.full((cfg.size, cfg.size), cfg.pad_value, dtype=np.uint8)
    oy, ox = (cfg.size - nh) // 2, (cfg.size - nw) // 2
    window = canvas[oy:oy + nh, ox:ox + nw]
    small = cv2.resize(img, (nw, nh), dst=window, interpolation=interp)  # straight into the canvas
    if small is not window:  # (OpenCV writes into a row-strided view; this only guards the binding)
        window[...] = small
    return canvas, scale, ox, oy


def preprocess_with_info(src, cfg: PreprocessConfig = PreprocessConfig()):
    """Turn an image into the cached model input, and say what was done.

    8- and 16-bit images (grey, or colour whose channels are equal, as radiographs are) take
    the integer path: histograms, order statistics and lookup tables, no float copy of the
    image. Other inputs (float arrays, genuinely coloured images) take the float path. Both
    give bit-identical results.

    Parameters
    ----------
    src : str, Path, bytes or ndarray
        See :func:`edge.loader.load_array`.
    cfg : PreprocessConfig

    Returns
    -------
    image : ndarray of uint8, shape (cfg.size, cfg.size)
    info : PreprocessInfo

    Raises
    ------
    ImageError
        Unreadable, damaged or absurd input (see :mod:`edge.loader`), or smaller than 2 x 2.
    """
    import cv2

    arr, name = load_array(src, dicom_voi=cfg.dicom_voi, indexed=True)
    h, w = arr.shape[:2]
    if min(h, w) < 2:
        raise ImageError(f"image is {w}x{h}, too small to be a radiograph")
    source = _table_source(arr)
    if source is not None:
        u8, lo, hi, score, inverted = _table_path(*source, cfg)
    else:
        u8, lo, hi, score, inverted = _float_path(to_grey(arr, name), cfg)
    if cfg.clahe:
        clahe = cv2.createCLAHE(clipLimit=cfg.clahe_clip, tileGridSize=(cfg.clahe_grid, cfg.clahe_grid))
        u8 = clahe.apply(u8)
    out, scale, ox, oy = _resize_pad(u8, cfg)
    info = PreprocessInfo(bool(inverted), score, float(scale), int(ox), int(oy), int(h), int(w), lo, hi)
    return out, info


def preprocess(src, cfg: PreprocessConfig = PreprocessConfig()) -> np.ndarray:
    """The one preprocessing function: image -> uint8 (S, S). Deterministic.

    See :func:`preprocess_with_info` for parameters; use :func:`to_model_input` to get the
    float32 tensor the models take.
    """
    return preprocess_with_info(src, cfg)[0]


def to_model_input(u8: np.ndarray) -> np.ndarray:
    """uint8 (..., S, S) -> float32 (..., S, S, 1) in [0, 1].

    Everything beyond /255 (mean/std normalisation) lives inside the model graph.
    """
    u8 = np.asarray(u8)
    if u8.dtype != np.uint8:
        raise ValueError(f"expected uint8 images, got {u8.dtype}")
    return (u8.astype(np.float32) / 255.0)[..., None]
