"""Start a real ``edge-serve`` process on a free 127.0.0.1 port, and malformed uploads to feed it.

Shared by tests/test_serve*.py and benchmarks/bench_serve.py. The server is started with
``--port 0`` (the kernel picks a free port; no race between choosing and binding) and prints
its URL as the first stdout line.
"""

from __future__ import annotations

import os
import signal
import struct
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import cv2
import numpy as np


def server_command() -> list:
    """The installed ``edge-serve`` script next to this Python, else ``python -m edge.serve.cli``."""
    script = Path(sys.executable).parent / "edge-serve"
    return [str(script)] if script.exists() else [sys.executable, "-m", "edge.serve.cli"]


class Server:
    """A running ``edge-serve`` subprocess; ``url`` is ``http://127.0.0.1:PORT``."""

    def __init__(self, model, *args, timeout: float = 60.0, env: dict | None = None):
        cmd = [*server_command(), "--model", str(model), "--port", "0", *map(str, args)]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     env={**os.environ, **(env or {})})
        self.lines: list = []
        first = self._first_line(timeout)
        if not first.startswith("edge-serve: serving"):
            self.stop()
            raise RuntimeError(f"edge-serve did not start: {first!r}\n{self.proc.stderr.read()}")
        self.url = first.rsplit(" ", 1)[-1].rstrip("/")
        self.port = int(self.url.rsplit(":", 1)[1])
        threading.Thread(target=self._drain, daemon=True).start()
        self.wait_ready(timeout)

    def _first_line(self, timeout: float) -> str:
        box = []
        reader = threading.Thread(target=lambda: box.append(self.proc.stdout.readline()), daemon=True)
        reader.start()
        reader.join(timeout)
        return box[0].strip() if box else ""

    def _drain(self) -> None:  # keep the pipe from filling up; keep the log for assertions
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_ready(self, timeout: float) -> None:
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/readyz", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise RuntimeError("edge-serve never became ready")

    def terminate(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM, wait (kill after ``timeout``); returns the exit code."""
        self.terminate()
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()

    def rss_kb(self) -> int:
        """Resident set size of the server process in KiB (Linux /proc)."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise RuntimeError("no VmRSS")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def png_bytes(img: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", img)
    assert ok
    return buf.tobytes()


def jpeg_bytes(img: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok
    return buf.tobytes()


def _chunk(kind: bytes, data: bytes, length: int | None = None) -> bytes:
    n = len(data) if length is None else length
    return struct.pack(">I", n) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_with_header(width: int, height: int, idat: bytes = b"", idat_length: int | None = None,
                    depth: int = 8, colour: int = 0) -> bytes:
    """A hand-made PNG: any IHDR size, any IDAT payload and declared length."""
    ihdr = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat, idat_length)
            + _chunk(b"IEND", b""))


def _patched_sof(jpeg: bytes, width: int, height: int) -> bytes:
    i = jpeg.find(b"\xff\xc0")
    if i < 0:
        return jpeg
    return jpeg[:i + 5] + struct.pack(">HH", height, width) + jpeg[i + 9:]


def malformed_uploads(png: bytes, jpeg: bytes, n: int, seed: int = 0) -> list:
    """``n`` malformed uploads ``(class, bytes)`` cycling over the hardening issue's classes.

    Classes: empty, random bytes, text, truncated PNG/JPEG, byte-flipped PNG/JPEG, PNG whose
    IDAT length field is 0xFFFFFFF0, PNG/JPEG headers claiming huge or zero sizes, a PNG
    signature alone, a JPEG without SOF, a DICOM preamble with nothing after it.
    """
    rng = np.random.default_rng(seed)

    def flipped(data: bytes) -> bytes:
        b = bytearray(data)
        for i in rng.integers(20, len(b), size=12):
            b[i] ^= 0xFF
        return bytes(b)

    makers = {
        "empty": lambda: b"",
        "random": lambda: rng.integers(0, 256, int(rng.integers(1, 4096)), dtype=np.uint8).tobytes(),
        "text": lambda: b"patient,study\n" * int(rng.integers(1, 50)),
        "png_truncated": lambda: png[:int(rng.integers(8, len(png) - 1))],
        "jpeg_truncated": lambda: jpeg[:int(rng.integers(4, len(jpeg) - 1))],
        "png_flipped": lambda: flipped(png),
        "jpeg_flipped": lambda: flipped(jpeg),
        "png_idat_length": lambda: png_with_header(512, 512, b"\x00" * 64, 0xFFFFFFF0),
        "png_huge_header": lambda: png_with_header(100_000, 100_000, zlib.compress(b"\x00" * 1000)),
        "png_zero_size": lambda: png_with_header(0, 10),
        "png_16bit_rgba_huge": lambda: png_with_header(8000, 8000, zlib.compress(b"\x00" * 4096), depth=16,
                                                       colour=6),
        "png_signature_only": lambda: b"\x89PNG\r\n\x1a\n",
        "jpeg_huge_sof": lambda: _patched_sof(jpeg, 65000, 65000),
        "jpeg_no_sof": lambda: b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + b"\x00" * int(rng.integers(10, 3000)),
        "dicom_preamble_only": lambda: b"\x00" * 128 + b"DICM",
    }
    kinds = list(makers)
    return [(kinds[i % len(kinds)], makers[kinds[i % len(kinds)]]()) for i in range(n)]
