"""The decode limits, in one place: how large an input may be before any decoder touches it.

Every reader (:mod:`edge.image` for PNG/JPEG, :mod:`edge.dicom` for DICOM, :mod:`edge.loader`
for files and in-memory arrays) refuses by these numbers and words them alike, so a limit is
changed here once and holds for every format. docs/dicom.md and docs/architecture.md explain
them; tests/test_image_memory.py measures that real peaks stay under the budget.
"""

from __future__ import annotations

from edge.errors import ImageError

# Refuse images above this many pixels (~ 8000 x 8000) whatever the budget says. Real MURA tops
# out near 512 x 512; the largest clinical detectors are ~ 4300 x 4300.
MAX_PIXELS = 64_000_000
# Peak memory one input may need: the file's bytes + the decoded array + the decoder's buffers
# + the preprocessing working set. A device with 2 GB can therefore always finish a batch.
MEMORY_BUDGET = 512 * 2**20
MAX_FILE_BYTES = 256 * 2**20
# Bytes per pixel that edge.preprocess needs on top of the decoded array (its float path, taken
# by colour images whose channels differ and by float arrays; the integer path needs less).
WORK_BYTES_PER_PIXEL = 20
# Structure walks are bounded, so a hostile file is refused in milliseconds.
MAX_PNG_CHUNKS = 100_000     # real files have tens to a few thousand; each step costs ~1 us
MAX_JPEG_SEGMENTS = 4_096    # marker segments before the frame header (APPn, DQT, DHT, COM)
# A deflated DICOM data set may inflate to at most this: the largest pixel data the memory budget
# admits (512 MiB / 20 bytes per pixel of working set = 26.8 M pixels, x 4 bytes = 107 MiB)
# plus room for a header. A 0.5 MB deflate bomb would otherwise become > 1 GB before any check.
INFLATE_LIMIT = 128 * 2**20


def check_pixels(width: int, height: int, name: str) -> None:
    """Refuse (one line) a zero-sized image or one above :data:`MAX_PIXELS`."""
    if width == 0 or height == 0:
        raise ImageError(f"{name}: image has zero size ({width}x{height})")
    if width * height > MAX_PIXELS:
        raise ImageError(f"{name}: image is {width}x{height}, above the {MAX_PIXELS:,}-pixel limit")

