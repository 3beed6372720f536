"""The one loader (edge.loader) and the DICOM reader's fast routes: uncompressed pixels read in
place equal pydicom's own decode, wide stored values take the lookup-table route when their
range allows, the banded per-pixel fallback equals the whole-image maths, an already-read DICOM
picture passes through load_array, and every decode limit has one home (edge.limits)."""

from __future__ import annotations

import ast
import io
from pathlib import Path

import numpy as np
import pytest

pydicom = pytest.importorskip("pydicom")

from _edgefix import radiograph

from edge.dicom import (
    IndexedPicture,
    _banded_picture,
    _parse,
    _pydicom,
    displayed_picture,
    read_dicom,
    stored_values,
)
from edge.loader import load_array, read_any
from edge.preprocess import PreprocessConfig, preprocess_with_info
from murakit.data.dicom_write import DicomStyle, make_dataset, write_dicom

ROOT = Path(__file__).resolve().parents[1]
IDS = {"study_uid": "1.2.826.0.9.1", "series_uid": "1.2.826.0.9.1.1", "sop_uid": "1.2.826.0.9.1.1.1"}


def _file(tmp_path, stored: np.ndarray, implicit: bool = False, **elements) -> bytes:
    """DICOM bytes holding ``stored`` (uint16 words, or uint8 with BitsAllocated 8)."""
    ds = make_dataset(np.zeros(stored.shape, np.uint16), DicomStyle(window="none"), **IDS)
    ds.PixelData = stored.astype("<u2" if stored.dtype.itemsize == 2 else "u1").tobytes()
    if stored.dtype.itemsize == 1:
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
    for k, v in elements.items():
        setattr(ds, k, v)
    if implicit:
        ds.file_meta.TransferSyntaxUID = pydicom.uid.ImplicitVRLittleEndian
    path = tmp_path / "x.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path.read_bytes()


_RNG = np.random.default_rng(7)
# above edge.dicom.DEFER_BYTES (1 MiB) as 8-bit too, so the pixel data stays in the file's bytes
_WORDS = _RNG.integers(0, 65536, (1031, 1029)).astype(np.uint16)  # junk in every bit
WORD_CASES = {
    "16-bit unsigned": (_WORDS, {}),
    "12-bit with junk high bits": (_WORDS, {"BitsStored": 12, "HighBit": 11}),
    "12-bit signed": (_WORDS, {"BitsStored": 12, "HighBit": 11, "PixelRepresentation": 1}),
    "16-bit signed": (_WORDS, {"PixelRepresentation": 1}),
    "16-bit implicit VR": (_WORDS, {"implicit": True}),
    "8-bit": (_WORDS.astype(np.uint8), {}),
    "7-bit signed in 8": (_WORDS.astype(np.uint8), {"BitsStored": 7, "HighBit": 6, "PixelRepresentation": 1}),
}


@pytest.mark.parametrize("case", list(WORD_CASES))
def test_uncompressed_words_read_in_place_equal_pydicoms_decode(tmp_path, case):
    words, elements = WORD_CASES[case]
    data = _file(tmp_path, words, **elements)
    ds = _parse(_pydicom("x"), data, "x")
    fast = stored_values(ds, "x", data)
    assert np.shares_memory(fast, np.frombuffer(data, np.uint8)) == ("BitsStored" not in elements)  # in place
    want = pydicom.dcmread(io.BytesIO(data)).pixel_array
    assert fast.dtype == want.dtype and np.array_equal(fast, want)
    assert np.array_equal(stored_values(ds, "x"), want)  # pydicom's route, without the bytes


def test_a_truncated_uncompressed_file_is_still_one_clear_line(tmp_path):
    from edge.errors import ImageError

    data = _file(tmp_path, _WORDS)
    with pytest.raises(ImageError, match="truncated DICOM file"):
        read_dicom(data[:-100], "short.dcm")


def test_high_bit_words_take_the_table_route(tmp_path):
    """Values stored high in the word (HighBit 15, BitsStored 12) come out as int64; they span
    under 65,536 values, so they are indexed from their minimum and looked up, and the picture
    and model input equal the per-pixel maths."""
    v12 = radiograph(60, 50, 2).astype(np.uint16) * 16
    data = _file(tmp_path, v12 << 4, BitsStored=12, HighBit=15, RescaleSlope="2", RescaleIntercept="-5",
                 WindowCenter="4000", WindowWidth="6000")
    ds = _parse(_pydicom("x"), data, "x")
    stored = stored_values(ds, "x", data)
    assert stored.dtype == np.int64 and np.array_equal(stored, v12)
    for voi in ("window", "full"):
        picture = read_dicom(data, "x", voi, indexed=True)[0]
        assert isinstance(picture, IndexedPicture) and picture.index.dtype == np.uint16
        reference = displayed_picture(stored, ds, voi)
        assert np.array_equal(picture.picture(), reference)
        cfg = PreprocessConfig(size=32, dicom_voi=voi)
        assert np.array_equal(preprocess_with_info(picture, cfg)[0], preprocess_with_info(reference, cfg)[0])


@pytest.mark.parametrize("voi", ["window", "full"])
def test_banded_fallback_equals_the_whole_image_maths(voi):
    """Values spanning more than 65,536 (32-bit stored) take the per-pixel route in row bands;
    its "full" range is the whole image's, so the bands join into the whole-image picture."""
    ds = pydicom.Dataset()
    ds.PhotometricInterpretation, ds.BitsAllocated, ds.BitsStored, ds.PixelRepresentation = "MONOCHROME1", 32, 32, 1
    ds.RescaleSlope, ds.RescaleIntercept = "0.25", "100"
    ds.WindowCenter, ds.WindowWidth = "1000", "500000"
    stored = np.random.default_rng(3).integers(-400_000, 400_000, (300, 700)).astype(np.int32)
    stored[0, 0], stored[-1, -1] = -(2**31), 2**31 - 1
    banded = _banded_picture(stored, ds, voi)  # 300 rows of 700: several bands
    whole = displayed_picture(stored, ds, voi)
    assert banded.dtype == np.float32 and np.array_equal(banded, whole)
    assert 0.0 <= banded.min() and banded.max() <= 1.0 and banded[0, 0] > banded[-1, -1]  # MONOCHROME1


def test_load_array_passes_a_read_dicom_picture_through_and_read_any_gives_its_facts(tmp_path):
    path = write_dicom(tmp_path / "a.dcm", radiograph(40, 30, 1), DicomStyle(photometric="MONOCHROME1"),
                       body_part="WRIST", **IDS)
    picture, name, info = read_any(path.read_bytes(), indexed=True)
    assert isinstance(picture, IndexedPicture) and name == "<bytes>"
    assert info.part == "WRIST" and info.sop_uid == IDS["sop_uid"]
    assert load_array(picture)[0] is picture
    cfg = PreprocessConfig(size=32)
    assert np.array_equal(preprocess_with_info(picture, cfg)[0], preprocess_with_info(path, cfg)[0])
    png = tmp_path / "a.png"
    import cv2

    cv2.imwrite(str(png), radiograph(40, 30, 1))
    arr, _, info = read_any(png)
    assert arr.dtype == np.uint8 and info is None


LIMITS = ("MAX_PIXELS", "MEMORY_BUDGET", "MAX_FILE_BYTES", "WORK_BYTES_PER_PIXEL", "MAX_PNG_CHUNKS",
          "MAX_JPEG_SEGMENTS", "INFLATE_LIMIT")


def test_every_decode_limit_is_defined_in_edge_limits_only():
    homes = {}
    for path in sorted((ROOT / "edge").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Assign):
                for t in node.targets:
                    if isinstance(t, ast.Name) and t.id in LIMITS:
                        homes.setdefault(t.id, []).append(str(path.relative_to(ROOT)))
    assert homes == {name: ["edge/limits.py"] for name in LIMITS}
