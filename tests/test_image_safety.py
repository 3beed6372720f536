"""edge.image: structure checks before decoding, bounded header scans, decoder complaints as
errors (benign notes not), one line per failure, thread-safe decoding."""

import os
import struct
import threading
import time
import zlib

import cv2
import numpy as np
import pytest
from _hostile import app_segment, chunk, png, radiograph, set_ihdr_size

from edge.errors import ImageError
from edge.image import classify_decoder_output, decode, image_header, imdecode_captured
from edge.limits import MEMORY_BUDGET
from edge.loader import load_array, read_bytes


@pytest.fixture(scope="module")
def grey():
    return radiograph(np.random.default_rng(0), 120, 100)


def test_header_reports_what_opencv_will_return(grey):
    for img, channels, sample in ((grey, 1, 1), (np.dstack([grey] * 3), 3, 1), (grey.astype(np.uint16) * 257, 1, 2)):
        data = png(img, 16 if img.dtype == np.uint16 else 8)
        h = image_header(data)
        arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
        assert (h.width, h.height, h.channels, h.sample_bytes) == (100, 120, channels, sample)
        assert h.decoded_bytes == arr.nbytes
    jpg = cv2.imencode(".jpg", np.dstack([grey] * 3))[1].tobytes()
    h = image_header(jpg)
    assert (h.format, h.width, h.height, h.channels) == ("JPEG", 100, 120, 3) and h.decoder_bytes > 0


def test_header_scan_of_a_huge_jpeg_without_frame_is_fast():
    data = b"\xff\xd8" + app_segment(b"JFIF\0", 0xE0) + b"\x01" * (128 * 2**20)
    t = time.perf_counter()
    with pytest.raises(ImageError, match="not a marker"):
        image_header(data)
    fill = b"\xff\xd8" + b"\xff" * (64 * 2**20)  # 0xFF fill bytes are skipped by a regex, not a loop
    with pytest.raises(ImageError, match="file ends"):
        image_header(fill)
    assert time.perf_counter() - t < 1.0


def test_budget_refuses_before_decoding(grey):
    big = set_ihdr_size(png(grey), 6000, 6000)  # valid structure, 36 M pixels, 4 KB of data
    with pytest.raises(ImageError, match=f"above the {MEMORY_BUDGET // 2**20} MiB per-image budget"):
        decode(big, "big.png")


def _flipped_jpeg(good: bytes) -> bytes:
    """A byte of entropy-coded data inverted and junk before EOI: libjpeg warns 'Corrupt JPEG
    data' and still returns pixels."""
    sos = good.rfind(b"\xff\xda")
    return good[:sos + 40] + bytes([good[sos + 40] ^ 0xFF]) + good[sos + 41:-2] + b"junk" + good[-2:]


def test_benign_libpng_note_passes_and_corrupt_data_fails(grey):
    iccp = chunk(b"iCCP", b"x\x00\x00" + zlib.compress(b"too short for a profile"))
    arr = decode(png(grey, before_idat=iccp), "icc.png")  # libpng warns about the profile only
    assert np.array_equal(arr, grey)
    flipped = _flipped_jpeg(cv2.imencode(".jpg", grey, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes())
    _, text = imdecode_captured(flipped)
    assert "Corrupt JPEG data" in text  # libjpeg says so, and still returns pixels
    with pytest.raises(ImageError, match="corrupt JPEG data"):
        decode(flipped, "flipped.jpg")


def test_classifier():
    text = ("libpng warning: iCCP: known incorrect sRGB profile\n"
            "some other thread's log line\n"
            "Corrupt JPEG data: bad Huffman code\n"
            "libpng warning: tEXt: CRC error\n")
    complaint, foreign = classify_decoder_output(text)
    assert complaint == "Corrupt JPEG data: bad Huffman code" and foreign == ["some other thread's log line"]
    assert classify_decoder_output("libpng warning: tEXt: CRC error")[0] is not None  # CRC: never benign
    assert classify_decoder_output("Warning: unknown JFIF revision number 3.01\n") == (None, [])
    assert classify_decoder_output("[ERROR:0@0.1] global loadsave.cpp imdecode_ failed")[0] is not None


def test_failures_print_nothing_themselves(grey, capfd):
    bad = png(grey)
    idat = bad.find(b"IDAT")
    for data in (bad[:idat + 40] + bytes(8) + bad[idat + 48:],  # damaged IDAT: libpng error
                 set_ihdr_size(bad, 100, 60)):  # too much data: libpng warning
        with pytest.raises(ImageError):
            decode(data)
    out, err = capfd.readouterr()
    assert out == "" and err == ""


def test_read_bytes_refuses_special_files(tmp_path):
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    with pytest.raises(ImageError, match="not a regular file"):
        read_bytes(fifo)  # would block forever if opened
    with pytest.raises(ImageError, match="is a directory"):
        read_bytes(tmp_path)
    with pytest.raises(ImageError, match="no such file"):
        load_array(tmp_path / "missing.png")


def test_decoding_from_many_threads_is_correct_and_quiet(grey, capfd):
    good = png(grey)
    jpg = cv2.imencode(".jpg", grey, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()
    corrupt = _flipped_jpeg(jpg)
    want_jpg = cv2.imdecode(np.frombuffer(jpg, np.uint8), cv2.IMREAD_UNCHANGED)
    results, errors = [], []

    def worker(i):
        for j in range(60):
            kind = (i + j) % 3
            try:
                arr = decode([good, jpg, corrupt][kind])
                results.append((kind, arr))
            except ImageError as e:
                errors.append((kind, str(e)))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert {k for k, _ in errors} == {2} and len(errors) == 120  # every corrupt one, nothing else
    assert all(np.array_equal(a, grey if k == 0 else want_jpg) for k, a in results) and len(results) == 240
    assert capfd.readouterr().err == ""


def test_png_chunk_walk_details(grey):
    good = png(grey)
    with pytest.raises(ImageError, match="past the end"):
        image_header(good[:33] + struct.pack(">I", 0xFFFFFFF0) + good[37:])
    with pytest.raises(ImageError, match="CRC"):
        image_header(good[:33] + chunk(b"tEXt", b"a\x00b", crc=7) + good[33:])
    with pytest.raises(ImageError, match="IEND"):
        image_header(good[:-12])
    assert image_header(good + b"trailing bytes after IEND").width == 100
