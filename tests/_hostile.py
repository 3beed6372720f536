"""Seeded generators of valid and hostile PNG/JPEG files, shared by the fast fuzz slice
(tests/test_fuzz_images.py), the memory test and the full campaign (benchmarks/fuzz_images.py).

Every case is ``(name, data, expect)`` with ``expect`` one of:

* ``"valid"``  - a well-formed image edge-predict must score;
* ``"refuse"`` - damaged, absurd or hostile: edge-predict must fail it with one clean line;
* ``"either"`` - a change no decoder can always see (a flipped bit inside JPEG entropy data
  may decode to other, valid coefficients): a result or one clean line are both fine.
"""

from __future__ import annotations

import struct
import zlib

import cv2
import numpy as np

SIGNATURE = b"\x89PNG\r\n\x1a\n"


# ---------------------------------------------------------------- PNG by hand
def chunk(ctype: bytes, data: bytes, crc: int | None = None, length: int | None = None) -> bytes:
    """One PNG chunk; ``crc`` / ``length`` override the correct values (for damage)."""
    good = zlib.crc32(ctype + data)
    return struct.pack(">I", len(data) if length is None else length) + ctype + data \
        + struct.pack(">I", good if crc is None else crc)


def ihdr(w: int, h: int, depth: int = 8, colour: int = 0, interlace: int = 0) -> bytes:
    return chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, depth, colour, 0, 0, interlace))


def _rows(img: np.ndarray, depth: int) -> list:
    """Filter-0 scanlines of a (h, w[, c]) array at ``depth`` bits (1/2/4 pack, 16 big-endian)."""
    if depth == 16:
        img = img.astype(">u2")
    elif depth < 8:
        img = np.packbits(np.unpackbits(img.astype(np.uint8)[..., None], axis=-1)[..., 8 - depth:]
                          .reshape(img.shape[0], -1), axis=1)
    flat = img.reshape(img.shape[0], -1)
    return [b"\x00" + row.tobytes() for row in flat]


def _adam7(img: np.ndarray, depth: int) -> bytes:
    passes = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)]
    out = []
    for x0, y0, dx, dy in passes:
        sub = img[y0::dy, x0::dx]
        if sub.size:
            out += _rows(sub, depth)
    return b"".join(out)


def png(img: np.ndarray, depth: int = 8, colour: int | None = None, interlace: int = 0,
        before_idat: bytes = b"", idat_pieces: int = 1, after_iend: bytes = b"", level: int = 6) -> bytes:
    """A PNG of ``img`` (channels in RGB(A) order as stored), written without libpng."""
    h, w = img.shape[:2]
    c = 1 if img.ndim == 2 else img.shape[2]
    colour = {1: 0, 2: 4, 3: 2, 4: 6}[c] if colour is None else colour
    raw = _adam7(img, depth) if interlace else b"".join(_rows(img, depth))
    z = zlib.compress(raw, level)
    step = max(1, -(-len(z) // idat_pieces))
    idats = b"".join(chunk(b"IDAT", z[i:i + step]) for i in range(0, len(z), step))
    return SIGNATURE + ihdr(w, h, depth, colour, interlace) + before_idat + idats + chunk(b"IEND", b"") + after_iend


def streamed_png(w: int, h: int, row: bytes, depth: int, colour: int, level: int = 1) -> bytes:
    """A large PNG whose every scanline is ``row`` (filter byte included), compressed row by
    row so the caller never holds the raw image."""
    z = zlib.compressobj(level)
    parts = [z.compress(row) for _ in range(h)] + [z.flush()]
    return SIGNATURE + ihdr(w, h, depth, colour) + chunk(b"IDAT", b"".join(parts)) + chunk(b"IEND", b"")


def chunks_of(data: bytes) -> list:
    """[(offset, length, type)] of a well-formed PNG."""
    out, pos = [], 8
    while pos + 12 <= len(data):
        length, ctype = struct.unpack_from(">I4s", data, pos)
        out.append((pos, length, ctype))
        pos += 12 + length
    return out


def set_ihdr_size(data: bytes, w: int, h: int) -> bytes:
    """Patch IHDR's width/height and fix its CRC (only the size is wrong)."""
    b = bytearray(data)
    b[16:24] = struct.pack(">II", w, h)
    b[29:33] = struct.pack(">I", zlib.crc32(bytes(b[12:29])))
    return bytes(b)


# ---------------------------------------------------------------- JPEG helpers
def segments(data: bytes) -> list:
    """[(offset, marker, length)] of a JPEG's header segments up to and including SOS."""
    out, pos = [], 2
    while pos + 4 <= len(data) and data[pos] == 0xFF:
        marker = data[pos + 1]
        length = struct.unpack_from(">H", data, pos + 2)[0]
        out.append((pos, marker, length))
        if marker == 0xDA:
            break
        pos += 2 + length
    return out


def set_sof_size(data: bytes, w: int, h: int) -> bytes:
    b = bytearray(data)
    for pos, marker, _ in segments(data):
        if 0xC0 <= marker <= 0xC2:
            b[pos + 5:pos + 9] = struct.pack(">HH", h, w)
    return bytes(b)


def without_sof(data: bytes) -> bytes:
    for pos, marker, length in segments(data):
        if 0xC0 <= marker <= 0xC2:
            return data[:pos] + data[pos + 2 + length:]
    return data


def app_segment(payload: bytes, marker: int = 0xE9) -> bytes:
    return bytes([0xFF, marker]) + struct.pack(">H", len(payload) + 2) + payload


# ---------------------------------------------------------------- images
def radiograph(rng, h: int = 96, w: int = 80) -> np.ndarray:
    """uint8 (h, w): dark air, grey limb, bright bone, noise."""
    img = np.full((h, w), 20.0)
    cv2.ellipse(img, (w // 2, h // 2), (w // 4, int(h * 0.45)), 0, 0, 360, 90, -1)
    cv2.rectangle(img, (w // 2 - w // 10, h // 8), (w // 2 + w // 10, h - h // 8), 200, -1)
    return np.clip(img + rng.normal(0, 6, img.shape), 0, 255).astype(np.uint8)


def valid_files(rng) -> list:
    """Well-formed images of every kind radiographs (and odd exporters) produce."""
    g = radiograph(rng)
    g16 = g.astype(np.uint16) * 257
    rgb = np.stack([g] * 3, -1)

    def jpg(img, *params):
        return cv2.imencode(".jpg", img, list(params))[1].tobytes()

    palette = chunk(b"PLTE", bytes(np.repeat(np.arange(256, dtype=np.uint8), 3)))
    iccp = chunk(b"iCCP", b"bogus\x00\x00" + zlib.compress(b"not an ICC profile at all"))
    cases = [
        ("grey8.png", png(g)), ("rgb8.png", png(rgb)), ("rgba8.png", png(np.dstack([rgb, np.full_like(g, 255)]))),
        ("grey16.png", png(g16, 16)), ("rgba16.png", png(np.dstack([np.stack([g16] * 3, -1), g16]), 16)),
        ("greyalpha.png", png(np.dstack([g, np.full_like(g, 200)]))),
        ("grey4bit.png", png(g >> 4, 4)), ("grey1bit.png", png((g > 100).astype(np.uint8), 1)),
        ("palette.png", png(g, 8, colour=3, before_idat=palette)),
        ("palette_trns.png", png(g, 8, colour=3, before_idat=palette + chunk(b"tRNS", b"\x00"))),
        ("interlaced.png", png(g, interlace=1)), ("interlaced16.png", png(g16, 16, interlace=1)),
        ("many_idat.png", png(g, idat_pieces=40)),
        ("text_chunk.png", png(g, before_idat=chunk(b"tEXt", b"Comment\x00made by hand"))),
        ("bad_icc_profile.png", png(g, before_idat=iccp)),
        ("baseline.jpg", jpg(g, cv2.IMWRITE_JPEG_QUALITY, 92)), ("colour.jpg", jpg(rgb)),
        ("progressive.jpg", jpg(g, cv2.IMWRITE_JPEG_PROGRESSIVE, 1)),
        ("progressive_colour.jpg", jpg(rgb, cv2.IMWRITE_JPEG_PROGRESSIVE, 1)),
        ("restart.jpg", jpg(g, cv2.IMWRITE_JPEG_RST_INTERVAL, 2)),
        ("png_named.jpg", png(g)), ("jpeg_named.png", jpg(g)),
    ]
    return [(name, data, "valid") for name, data in cases]


def _flip(rng, data: bytes, lo: int, hi: int, n: int = 1) -> bytes:
    b = bytearray(data)
    for pos in rng.integers(lo, max(lo + 1, hi), n):
        b[int(pos)] ^= int(rng.integers(1, 256))
    return bytes(b)


def hostile_files(rng, per_kind: int = 4) -> list:
    """Damaged and hostile variants of the valid files, ``per_kind`` random ones per kind."""
    g = radiograph(rng)
    good_png, good_jpg = png(g), cv2.imencode(".jpg", g, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()
    prog_jpg = cv2.imencode(".jpg", g, [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])[1].tobytes()
    idat = next(c for c in chunks_of(good_png) if c[2] == b"IDAT")
    sos = segments(good_jpg)[-1][0]
    out = []
    for i in range(per_kind):
        for fmt, data in (("png", good_png), ("jpg", good_jpg), ("prog.jpg", prog_jpg)):
            cut = int(rng.integers(1, len(data) - 1))
            out.append((f"truncated{i}.{fmt}", data[:cut], "refuse"))
        out.append((f"flip_png{i}.png", _flip(rng, good_png, 8, len(good_png), int(rng.integers(1, 4))), "refuse"))
        out.append((f"flip_png_header{i}.png", _flip(rng, good_png, 8, idat[0]), "refuse"))
        out.append((f"flip_jpg_header{i}.jpg", _flip(rng, good_jpg, 2, sos), "either"))
        out.append((f"flip_jpg_data{i}.jpg", _flip(rng, good_jpg, sos + 20, len(good_jpg) - 2, 3), "either"))
        out.append((f"random{i}.png", rng.bytes(int(rng.integers(1, 5000))), "refuse"))
        out.append((f"random_after_sig{i}.png", SIGNATURE + rng.bytes(int(rng.integers(1, 500))), "refuse"))
        out.append((f"random_after_soi{i}.jpg", b"\xff\xd8\xff" + rng.bytes(int(rng.integers(1, 500))), "refuse"))
        w, h = (int(v) for v in rng.choice([0, 1, 70_000, 100_000, 2**31 - 1, 2**32 - 1], 2))
        out.append((f"ihdr_size{i}.png", set_ihdr_size(good_png, w, h), "refuse"))
        w, h = (int(v) for v in rng.choice([0, 9000, 40_000, 65_535], 2))
        out.append((f"sof_size{i}.jpg", set_sof_size(good_jpg, w, h), "refuse"))
    b = bytearray(good_png)
    pos = idat[0]
    for name, length in (("idat_len_huge", 0xFFFFFFF0), ("idat_len_plus1", idat[1] + 1),
                         ("idat_len_minus1", idat[1] - 1), ("idat_len_2gb", 2**31)):
        bb = bytearray(b)
        bb[pos:pos + 4] = struct.pack(">I", length)
        out.append((f"{name}.png", bytes(bb), "refuse"))
    body = good_png[8 + 25:]
    out += [
        ("empty.png", b"", "refuse"), ("empty.jpg", b"", "refuse"), ("text.png", b"just some notes\n" * 20, "refuse"),
        ("only_signature.png", SIGNATURE, "refuse"), ("only_soi.jpg", b"\xff\xd8", "refuse"),
        ("bad_idat_crc.png", good_png[:idat[0] + 8 + idat[1]] + b"\0\0\0\0" + good_png[idat[0] + 12 + idat[1]:], "refuse"),
        ("bad_ihdr_crc.png", good_png[:29] + b"\0\0\0\0" + good_png[33:], "refuse"),
        ("bad_text_crc.png", png(g, before_idat=chunk(b"tEXt", b"a\x00b", crc=1)), "refuse"),
        ("no_iend.png", good_png[:-12], "refuse"), ("no_idat.png", SIGNATURE + good_png[8:33] + chunk(b"IEND", b""), "refuse"),
        ("two_ihdr.png", good_png[:33] + good_png[8:33] + body, "refuse"),
        ("bad_chunk_type.png", good_png[:33] + chunk(b"t\x00X\x01", b"x") + body, "refuse"),
        ("palette_without_plte.png", png(g, 8, colour=3), "refuse"),
        ("bad_depth.png", png(g, 8)[:24] + b"\x03" + png(g, 8)[25:], "refuse"),
        ("zlib_garbage.png", SIGNATURE + good_png[8:33] + chunk(b"IDAT", rng.bytes(400)) + chunk(b"IEND", b""), "refuse"),
        ("too_much_data.png", set_ihdr_size(good_png, 80, 50), "refuse"),
        ("too_little_data.png", set_ihdr_size(good_png, 80, 150), "refuse"),
        ("trailing_after_iend.png", good_png + b"trailing junk", "either"),
        ("jpeg_no_sof.jpg", without_sof(good_jpg), "refuse"),
        ("jpeg_sos_first.jpg", b"\xff\xd8" + good_jpg[sos:], "refuse"),
        ("jpeg_no_eoi.jpg", good_jpg[:-2], "refuse"),
        ("jpeg_many_segments.jpg", b"\xff\xd8" + app_segment(b"x") * 5000 + good_jpg[2:], "refuse"),
        ("jpeg_garbage_between.jpg", good_jpg[:sos] + b"garbage!" + good_jpg[sos:], "refuse"),
        ("png_too_many_chunks.png", good_png[:33] + chunk(b"tEXt", b"k\x00v") * 120_000 + body, "refuse"),
    ]
    return out


def big_files() -> list:
    """Large hostile/absurd files of the issue (cheap to build: compressible or sparse)."""
    rgba16_row = b"\x00" + bytes(8000 * 8)
    no_sof = b"\xff\xd8" + app_segment(b"\0" * 65_000) * 1 + b"\xff\xda" + bytes(64 * 2**20)
    return [
        ("rgba16_8000.png", streamed_png(8000, 8000, rgba16_row, 16, 6), "refuse"),
        ("grey_60000x1000.png", streamed_png(60_000, 1_000, b"\x00" + bytes(60_000), 8, 0), "refuse"),
        ("jpeg_no_sof_64mb.jpg", no_sof, "refuse"),
        ("jpeg_zero_fill_64mb.jpg", b"\xff\xd8" + bytes(64 * 2**20), "refuse"),
        ("jpeg_no_marker_64mb.jpg", b"\xff\xd8" + app_segment(b"JFIF\0", 0xE0) + b"\x01" * (64 * 2**20), "refuse"),
    ]
