"""Pixel operations whose results do not depend on the CPU's instruction set.

OpenCV's float ``GaussianBlur``, ``resize``, ``warpAffine``, ``exp`` and ``pow``, numpy's
transcendental functions (``exp``, ``sin``, ``power``) and BLAS's small matrix products are
dispatched to SSE, AVX2 or AVX-512 code that accumulates in another order or fuses
multiply-adds, so the same seed gave other pixels on an AMD EPYC (AVX2) than on an Intel Xeon
(AVX-512). The versions here use only numpy's element-wise ``+ - * /``, ``floor``, ``rint``,
integer and bit operations, comparisons and indexing, one ufunc call per operation, in a
fixed order: IEEE 754 defines each of those results exactly (correct rounding, no fused
multiply-add across calls), so every x86-64 CPU computes the same bits whatever SIMD width
numpy picks. They work in float32, the precision of the OpenCV calls they replace; the
polynomials' errors (< 2e-9) sit below it, and the 8- and 16-bit output far below that.

They imitate those OpenCV calls (same kernels, borders and interpolation formulas; they agree
with them to float32 rounding, < 2e-7 on random [0, 1) images, ``tests/test_synth.py``), not
their exact bits:
the generator's pixels changed once, in version 8 (by at most one grey level, in ~0.01% of
the pixels). The price is CPU time per image (measured in docs/performance.md, "Design
choices"), a small share of the demo. Chosen over speed: a seed that names the data on every
CPU is what the generator is for.
"""
from __future__ import annotations

import functools
import math

import numpy as np

_INV_LN2 = 1.44269504088896338700e+00
_LN2_HI32 = 0.693145751953125     # ln 2 in float32 halves: k * _LN2_HI32 exact for |k| < 2**12
_LN2_LO32 = 1.4286068202862268e-06
_SQRT_HALF_BITS = 0x3F3504F3           # float32 sqrt(1/2)


def exp(x: np.ndarray) -> np.ndarray:
    """e**x (float32, x clipped to [-87, 88]): range reduction and a degree-7 Taylor polynomial.

    x = k ln2 + r with |r| <= ln2 / 2; e**r's truncation error (< 2e-9 relative) is below
    float32's resolution. 2**k is built from its exponent bits (exact, and cheaper than
    ``ldexp``). Temporaries are reused: fresh large arrays cost page faults.
    """
    r = np.clip(np.asarray(x, np.float32), np.float32(-87), np.float32(88))
    k = r * np.float32(_INV_LN2)
    np.rint(k, out=k)
    p = k * np.float32(_LN2_HI32)
    r -= p
    np.multiply(k, np.float32(_LN2_LO32), out=p)
    r -= p
    p.fill(1 / math.factorial(7))
    for n in range(6, -1, -1):
        p *= r
        p += np.float32(1 / math.factorial(n))
    scale = k.astype(np.int32)
    scale += 127
    scale <<= 23
    p *= scale.view(np.float32)
    return p


def log(x: np.ndarray) -> np.ndarray:
    """Natural log (float32) of normal x > 0: x = m 2**e, m in [sqrt(1/2), sqrt(2)), atanh series.

    m and e are taken from the float's bits (integer arithmetic, exact); log m = 2 atanh(s),
    s = (m - 1) / (m + 1), |s| <= 0.172, terms to s**9 (error < 2e-9). Entries <= 0 or
    subnormal give a finite meaningless value; callers mask them.
    """
    ix = np.ascontiguousarray(x, np.float32).view(np.int32) - np.int32(_SQRT_HALF_BITS)
    e = (ix >> 23).astype(np.float32)
    ix &= 0x7FFFFF
    ix += np.int32(_SQRT_HALF_BITS)
    m = ix.view(np.float32)
    s = m + 1
    m -= 1
    np.divide(m, s, out=s)
    s2 = np.multiply(s, s, out=m)
    p = np.full_like(s, 1 / 9)
    for n in range(7, 0, -2):
        p *= s2
        p += np.float32(1 / n)
    p *= s
    p *= 2
    np.multiply(e, np.float32(_LN2_HI32), out=s)
    p += s
    e *= np.float32(_LN2_LO32)
    p += e
    return p


def power(x: np.ndarray, g: float) -> np.ndarray:
    """x**g (float32) for x >= 0 and g > 0 (0 where x <= 0)."""
    x = np.asarray(x, np.float32)
    pos = x > 0
    y = log(np.where(pos, x, np.float32(1)))
    y *= np.float32(g)
    y = exp(y)
    y[~pos] = 0
    return y


def sin(x) -> np.ndarray:
    """sin (float64) of |x| < 1e4: Cody-Waite reduction by pi/2 and Taylor polynomials."""
    x = np.asarray(x, np.float64)
    k = np.rint(x * (2 / math.pi))
    # pi/2 in three parts, each with few enough bits that k * part is exact for |k| < 2**20
    r = ((x - k * 1.57079632673412561417e+00) - k * 6.07710050630396597660e-11) - k * 2.02226624879595063154e-21
    r2 = r * r
    s = np.full_like(r, -1 / math.factorial(19))  # sin r = r (1 - r2/3! + ...), |r| <= pi/4
    c = np.full_like(r, 1 / math.factorial(20))   # cos r = 1 - r2/2! + ...
    for n in range(17, 0, -2):
        s *= r2
        s += (-1) ** (n // 2) / math.factorial(n)
    for n in range(18, -1, -2):
        c *= r2
        c += (-1) ** (n // 2) / math.factorial(n)
    s *= r
    q = np.mod(k, 4)
    return np.where(q == 0, s, np.where(q == 1, c, np.where(q == 2, -s, -c)))


@functools.lru_cache(maxsize=64)
def _kernel(sigma: float) -> tuple:
    n = round(sigma * 8 + 1) | 1
    c = (n - 1) / 2
    w = exp(np.array([-(i - c) * (i - c) / (2 * sigma * sigma) for i in range(n)]))
    total = 0.0
    for v in w:
        total += float(v)
    return tuple(float(v) / total for v in w)


def gaussian_kernel(sigma: float) -> np.ndarray:
    """OpenCV's float Gaussian kernel: ``ksize = round(8 sigma + 1) | 1``, weights summing to 1
    (the sum taken in a fixed order, not by numpy's pairwise ``sum``); float32."""
    return np.array(_kernel(float(sigma)), np.float32)


def _along(a: np.ndarray, axis: int, start: int, n: int) -> np.ndarray:
    return a[start:start + n] if axis == 0 else a[:, start:start + n]


def _convolve(a: np.ndarray, k: np.ndarray, axis: int) -> np.ndarray:
    """Symmetric 1-D convolution of float64 ``a`` along ``axis``, borders reflected (OpenCV's
    BORDER_REFLECT_101). Taps are added from the outside in, a fixed order."""
    r = len(k) // 2
    n = a.shape[axis]
    pad = [(0, 0), (0, 0)]
    pad[axis] = (r, r)
    p = np.pad(a, pad, mode="reflect")
    out = np.zeros(a.shape, a.dtype)
    tmp = np.empty(a.shape, a.dtype)
    for i in range(r):
        np.add(_along(p, axis, i, n), _along(p, axis, 2 * r - i, n), out=tmp)
        tmp *= k[i]
        out += tmp
    np.multiply(_along(p, axis, r, n), k[r], out=tmp)
    out += tmp
    return out


def gaussian_blur(img: np.ndarray, sigma: float) -> np.ndarray:
    """Like ``cv2.GaussianBlur(img, (0, 0), sigma)`` on a 2-D float image; float32."""
    k = gaussian_kernel(sigma)
    return _convolve(_convolve(np.asarray(img, np.float32), k, 1), k, 0)


def _cubic(t: np.ndarray) -> list:
    """OpenCV's bicubic weights (A = -0.75) for the taps at -1, 0, 1, 2 of fraction t."""
    a = -0.75
    w0 = ((a * (t + 1) - 5 * a) * (t + 1) + 8 * a) * (t + 1) - 4 * a
    w1 = ((a + 2) * t - (a + 3)) * t * t + 1
    w2 = ((a + 2) * (1 - t) - (a + 3)) * (1 - t) * (1 - t) + 1
    return [w0, w1, w2, 1 - w0 - w1 - w2]


def _resize_axis(a: np.ndarray, n_out: int, axis: int, cubic: bool) -> np.ndarray:
    n_in = a.shape[axis]
    f = (np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5
    s = np.floor(f)
    t = f - s
    s = s.astype(np.int64)
    if cubic:
        offsets, weights = (-1, 0, 1, 2), _cubic(t)
    else:
        offsets, weights = (0, 1), [1 - t, t]
    out = None
    for o, w in zip(offsets, weights):
        idx = np.clip(s + o, 0, n_in - 1)  # BORDER_REPLICATE, as cv2.resize
        w = w.astype(a.dtype)
        term = np.take(a, idx, axis=axis)
        term *= w[:, None] if axis == 0 else w[None, :]
        if out is None:
            out = term
        else:
            out += term
    return out


def resize(img: np.ndarray, size: tuple[int, int], cubic: bool = False) -> np.ndarray:
    """Like ``cv2.resize(img, (w, h), interpolation=INTER_LINEAR or INTER_CUBIC)`` on a 2-D
    float image; float32 (weights in float64, rounded to float32)."""
    w, h = size
    a = np.asarray(img, np.float32)
    return _resize_axis(_resize_axis(a, w, 1, cubic), h, 0, cubic)


def warp_affine(img: np.ndarray, m, size: tuple[int, int]) -> np.ndarray:
    """Like ``cv2.warpAffine(img, m, (w, h), flags=INTER_LINEAR, borderValue=0)``; float32 out.

    Each output pixel (x, y) samples the source at M^-1 (x, y) with bilinear weights; samples
    outside the source read 0.
    """
    w, h = size
    (a, b, c), (d, e, f) = (tuple(float(v) for v in row) for row in np.asarray(m, np.float64))
    det = a * e - b * d
    ia, ib, id_, ie = e / det, -b / det, -d / det, a / det
    ic, if_ = -(ia * c + ib * f), -(id_ * c + ie * f)
    xs, ys = np.arange(w, dtype=np.float64), np.arange(h, dtype=np.float64)
    # rows and columns in float64, the (h, w) grid in float32 (1e-4 px at 1024 px)
    sx = (ia * xs).astype(np.float32)[None, :] + (ib * ys + ic).astype(np.float32)[:, None]
    sy = (id_ * xs).astype(np.float32)[None, :] + (ie * ys + if_).astype(np.float32)[:, None]
    x0, y0 = np.floor(sx), np.floor(sy)
    sx -= x0
    sy -= y0
    fx, fy = sx, sy
    sh, sw = img.shape
    # two rings of zeros: a corner clipped to -2 or to the far edge and its +1 neighbour
    # both read 0, as BORDER_CONSTANT does
    src = np.pad(np.asarray(img, np.float32), 2).ravel()
    stride = sw + 4
    i00 = np.clip(y0, -2, sh, out=y0).astype(np.int32)
    i00 += 2
    i00 *= stride
    i00 += np.clip(x0, -2, sw, out=x0).astype(np.int32)
    i00 += 2
    v00, v01 = src.take(i00), src.take(i00 + 1)
    i00 += stride
    v10, v11 = src.take(i00), src.take(i00 + 1)
    v01 -= v00  # top = v00 + fx (v01 - v00), bottom likewise, out = top + fy (bottom - top)
    v01 *= fx
    v00 += v01
    v11 -= v10
    v11 *= fx
    v10 += v11
    v10 -= v00
    v10 *= fy
    v00 += v10
    return v00
