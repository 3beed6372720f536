"""Peak memory of one input stays under edge.limits.MEMORY_BUDGET, measured, not assumed.

Each input is decoded and preprocessed in a fresh subprocess; its peak resident size minus the
peak after a warm-up image is what that input cost. The peak is read as ``VmHWM`` from
/proc/self/status, the high-water mark of the process's own memory: ``ru_maxrss`` would do
on a quiet machine, but Linux carries the *parent's* resident size into a child's
``ru_maxrss`` across fork + exec, so under a big pytest process it hides the child's peak. The
worst inputs the budget still accepts (largest 8-bit grey, 8-bit colour whose channels differ
= the float path, 16-bit RGBA) must stay under the budget *and* under the estimate the
pre-decode check made; the issue's hostile files must be refused cheaply.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from _hostile import big_files, chunk, chunks_of, png, radiograph, streamed_png

from edge.image import image_header, input_bytes
from edge.limits import MEMORY_BUDGET, WORK_BYTES_PER_PIXEL

ROOT = Path(__file__).resolve().parents[1]
PROBE = r"""
import json, re, resource, sys
import numpy as np
from edge.errors import ImageError
from edge.preprocess import PreprocessConfig, preprocess

def peak_kib():
    try:
        with open("/proc/self/status") as f:
            return int(re.search(r"VmHWM:\s+(\d+)", f.read()).group(1))
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

preprocess(np.tile(np.arange(64, dtype=np.uint8), (64, 1)), PreprocessConfig(clahe=True))  # warm-up
base = peak_kib()
try:
    preprocess(sys.argv[1], PreprocessConfig(clahe=True)); error = None
except ImageError as e:
    error = str(e)
print(json.dumps({"delta": (peak_kib() - base) * 1024, "error": error}))
"""


def _measure(path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", PROBE, str(path)], capture_output=True, env=env, timeout=120,
                         check=False)
    assert out.returncode == 0 and out.stderr == b"", out.stderr.decode()[-2000:]
    return json.loads(out.stdout)


def _largest(bytes_per_pixel: int, width: int, file_bytes: int) -> int:
    """Rows of the tallest ``width``-wide image the budget still accepts."""
    return (MEMORY_BUDGET - file_bytes - 1) // ((bytes_per_pixel + WORK_BYTES_PER_PIXEL) * width)


def worst_cases():
    """[(name, PNG bytes)]: the largest 8-bit grey, 8-bit unequal colour and 16-bit RGBA PNGs
    that the budget accepts (4000 px wide)."""
    w = 4000
    ramp = np.arange(w, dtype=np.uint32)
    grey_row = b"\x00" + (ramp % 251).astype(np.uint8).tobytes()
    colour_row = b"\x00" + np.stack([ramp % 251, ramp % 241, ramp % 239], -1).astype(np.uint8).tobytes()
    rgba16_row = b"\x00" + np.stack([ramp * 16] * 3 + [ramp], -1).astype(">u2").tobytes()
    cases = []
    for name, row, bpp, depth, colour in (("grey8_largest.png", grey_row, 1, 8, 0),
                                          ("colour8_float_path_largest.png", colour_row, 3, 8, 2),
                                          ("rgba16_largest.png", rgba16_row, 8, 16, 6)):
        size = len(streamed_png(w, _largest(bpp, w, 0), row, depth, colour))  # the file's own bytes count
        cases.append((name, streamed_png(w, _largest(bpp, w, size + 2**20), row, depth, colour)))
    return cases


@pytest.mark.slow
@pytest.mark.parametrize("index", range(3))
def test_worst_accepted_inputs_stay_under_the_budget_and_the_estimate(tmp_path, index):
    name, data = worst_cases()[index]
    path = tmp_path / name
    path.write_bytes(data)
    header = image_header(data)
    estimate = input_bytes(header, len(data))
    assert MEMORY_BUDGET * 0.9 < estimate <= MEMORY_BUDGET  # really the largest accepted
    got = _measure(path)
    assert got["error"] is None
    assert got["delta"] <= estimate <= MEMORY_BUDGET, (name, got["delta"] / 2**20, estimate / 2**20)


def hostile_cases():
    """[(name, bytes)]: the issue's memory and time bombs."""
    g = radiograph(np.random.default_rng(0))
    good = png(g)
    pos = next(c for c in chunks_of(good) if c[2] == b"IDAT")[0]
    huge_idat = good[:pos] + b"\xff\xff\xff\xf0" + good[pos + 4:]
    return [("idat_length_0xfffffff0.png", huge_idat),
            ("many_chunks.png", good[:33] + chunk(b"tEXt", b"k\x00v") * 120_000 + good[33:]),
            *[(name, data) for name, data, _ in big_files()]]


@pytest.mark.slow
def test_hostile_inputs_are_refused_within_the_budget(tmp_path):
    for name, data in hostile_cases():
        _refused_cheaply(tmp_path / name, data)


def _refused_cheaply(path, data):
    path.write_bytes(data)
    got = _measure(path)
    assert got["error"] is not None and "\n" not in got["error"], path.name
    assert got["delta"] <= len(data) + 64 * 2**20, (path.name, got)  # the file itself, not a decode
