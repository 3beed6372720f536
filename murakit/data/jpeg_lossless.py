"""A small JPEG-lossless encoder (ITU-T T.81 process 14, selection value 1) for greyscale images.

DICOM's most common lossless syntax, "JPEG Lossless, Non-Hierarchical, First-Order Prediction"
(1.2.840.10008.1.2.4.70), has decoders on PyPI (pylibjpeg-libjpeg) but no encoder that pydicom
can call. murakit writes such files for its synthetic DICOM set, the tests and the benchmark,
so the DICOM path is exercised on the compressed files PACS actually send. Only writing lives
here; reading is pydicom's (``edge.dicom``), and the tests check that the decoder gives back
the exact input.

Coding (T.81 annex H): each sample is predicted from its left neighbour (the first row from the
left, the first column from above, the first sample from 2^(P-1)); the difference modulo 2^16
is coded as a Huffman-coded magnitude category SSSS (0-16) followed by SSSS raw bits. The
Huffman table is built for the image (T.81 annex K.2), so files are close to optimal size.
"""

from __future__ import annotations

import heapq
import struct

import numpy as np


def _differences(img: np.ndarray, precision: int) -> np.ndarray:
    """Prediction differences, int64 (H, W), in [-32767, 32768] (modulo 2^16)."""
    x = img.astype(np.int64)
    pred = np.empty_like(x)
    pred[:, 1:] = x[:, :-1]           # Ra: the left neighbour
    pred[1:, 0] = x[:-1, 0]           # first column: Rb, the sample above
    pred[0, 0] = 1 << (precision - 1)
    d = (x - pred) % 65536
    return np.where(d > 32768, d - 65536, d)


def _categories(d: np.ndarray) -> np.ndarray:
    """SSSS: the bit length of |d| (0 for 0; 16 only for 32768)."""
    a = np.abs(d)
    return np.where(a == 0, 0, np.floor(np.log2(np.maximum(a, 1))).astype(np.int64) + 1)


def _code_lengths(freq: np.ndarray) -> dict:
    """{symbol: code length <= 16} for the used symbols (T.81 K.2, with the all-ones code reserved)."""
    heap = [(int(f), s, [s]) for s, f in enumerate(freq) if f > 0]
    heap.append((1, 1000, [1000]))  # the reserved symbol: no real code is all ones
    heapq.heapify(heap)
    size = {s: 0 for _, s, _ in heap}
    while len(heap) > 1:
        f1, s1, m1 = heapq.heappop(heap)
        f2, s2, m2 = heapq.heappop(heap)
        for s in m1 + m2:
            size[s] += 1
        heapq.heappush(heap, (f1 + f2, min(s1, s2), m1 + m2))
    bits = np.zeros(40, dtype=np.int64)
    for length in size.values():
        bits[length] += 1
    for i in range(39, 16, -1):  # T.81 figure K.3: fold codes longer than 16 bits
        while bits[i] > 0:
            j = i - 2
            while bits[j] == 0:
                j -= 1
            bits[i] -= 2
            bits[i - 1] += 1
            bits[j + 1] += 2
            bits[j] -= 1
    i = 16
    while bits[i] == 0:
        i -= 1
    bits[i] -= 1  # drop the reserved code (the longest)
    order = sorted((s for s in size if s != 1000), key=lambda s: (-int(freq[s]), s))
    lengths, k = {}, 0
    for length in range(1, 17):
        for _ in range(int(bits[length])):
            lengths[order[k]] = length
            k += 1
    return lengths


def _canonical(lengths: dict):
    """Canonical codes (T.81 annex C): {symbol: code}, plus the DHT BITS and HUFFVAL lists."""
    symbols = sorted(lengths, key=lambda s: (lengths[s], s))
    codes, code, prev = {}, 0, 0
    for s in symbols:
        code <<= lengths[s] - prev
        prev = lengths[s]
        codes[s] = code
        code += 1
    counts = [sum(1 for s in symbols if lengths[s] == n) for n in range(1, 17)]
    return codes, counts, symbols


def _pack(values: np.ndarray, nbits: np.ndarray) -> bytes:
    """Concatenate fields (value, bit count <= 48) MSB first, pad with 1s, stuff 0x00 after 0xFF."""
    chunks = []
    step = 1 << 18
    for i in range(0, len(values), step):
        v, n = values[i:i + step], nbits[i:i + step]
        raw = np.unpackbits(v.astype(">u8").view(np.uint8)).reshape(-1, 64)
        keep = np.arange(64)[None, :] >= 64 - n[:, None]
        chunks.append(raw[keep])
    bitstream = np.concatenate(chunks) if chunks else np.zeros(0, np.uint8)
    pad = (-len(bitstream)) % 8
    data = np.packbits(np.concatenate([bitstream, np.ones(pad, np.uint8)]))
    ff = np.flatnonzero(data == 0xFF)
    return np.insert(data, ff + 1, 0).tobytes()


def encode(img: np.ndarray, precision: int | None = None) -> bytes:
    """Encode a greyscale image as a lossless JPEG (process 14, predictor 1).

    Parameters
    ----------
    img : ndarray of uint8 or uint16, shape (H, W)
        H, W in [1, 65535].
    precision : int, optional
        Sample precision P in [2, 16] (DICOM BitsStored); every value must be < 2^P.
        Default: 8 for uint8, 16 for uint16.

    Returns
    -------
    bytes
        A complete JPEG codestream (SOI ... EOI).
    """
    img = np.asarray(img)
    if img.ndim != 2 or img.dtype not in (np.uint8, np.uint16) or min(img.shape) < 1 or max(img.shape) > 65535:
        raise ValueError(f"expected a uint8/uint16 (H, W) image, got {img.dtype} {img.shape}")
    precision = precision or img.dtype.itemsize * 8
    if not 2 <= precision <= 16 or int(img.max()) >= 1 << precision:
        raise ValueError(f"values do not fit {precision}-bit precision")
    d = _differences(img, precision).ravel()
    cat = _categories(d)
    lengths = _code_lengths(np.bincount(cat, minlength=17))
    codes, counts, symbols = _canonical(lengths)
    code_of = np.array([codes.get(s, 0) for s in range(17)], dtype=np.uint64)
    len_of = np.array([lengths.get(s, 0) for s in range(17)], dtype=np.int64)
    extra_n = np.where(cat == 16, 0, cat)  # SSSS 16 (difference 32768) has no extra bits
    extra = np.where(d >= 0, d, d + (1 << extra_n) - 1) & ((1 << extra_n) - 1)
    values = (code_of[cat] << extra_n.astype(np.uint64)) | extra.astype(np.uint64)
    scan = _pack(values, len_of[cat] + extra_n)
    h, w = img.shape
    dht = bytes([0x00]) + bytes(counts) + bytes(symbols)
    out = [b"\xff\xd8",
           b"\xff\xc4" + struct.pack(">H", 2 + len(dht)) + dht,
           b"\xff\xc3" + struct.pack(">HBHHB", 11, precision, h, w, 1) + bytes([1, 0x11, 0]),
           b"\xff\xda" + struct.pack(">HB", 8, 1) + bytes([1, 0x00, 1, 0, 0]),
           scan, b"\xff\xd9"]
    return b"".join(out)

