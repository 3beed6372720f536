"""The DICOM class of the fuzz campaign: seeded headers that lie, each through its own
``edge-predict`` process and judged like every other case (:mod:`_fuzz`): clean / traceback /
hang / wrong / memory.

Files are written here with pydicom and raw bytes only (never with the tree under test), so the
same files go to an older checkout for the "before" table. Kinds:

``rule_*``      one header value per standard rule of docs/dicom.md (window width 0 / NaN,
                RescaleSlope 0, a VOI LUT promising 65,535 entries and holding 3, a 40-bit LUT,
                HighBit beyond BitsAllocated, ...): refused in one line, or scored with the
                fallback named in a warning line;
``value_*``     a random header element set to a random hostile value (0, 65535, NaN, inf,
                text, 1000 characters, several values): a result or one error line;
``length_*``    a random element's length field rewritten (0, odd, past the end, undefined);
``deflate_*``   deflated transfer syntax: a 1 GiB bomb in ~1 MB, a 100 MB inflation that must
                still be read, a corrupt and a truncated deflate stream;
``deep_*``      private sequences nested hundreds to tens of thousands deep (defined and
                undefined lengths);
``private_*``   a private element of 64-200 MB in an otherwise valid image: must be scored
                under the 512 MB edge budget.

A scored file must print one JSON line with a probability in [0, 1] and, on stderr, only
``edge-predict:`` warning or note lines.
"""

from __future__ import annotations

import io
import json
import random
import re
import struct
import zlib
from pathlib import Path

import numpy as np
from _fuzz import EDGE_BUDGET_MB, Case

FILE = "case.dcm"
DEFLATED = "1.2.840.10008.1.2.1.99"
EXPLICIT_LE = "1.2.840.10008.1.2.1"
LONG_VR = {b"OB", b"OW", b"OF", b"OD", b"OL", b"OV", b"SQ", b"UT", b"UN", b"UC", b"UR", b"SV", b"UV"}
MB = 2**20

# element -> hostile values a header could carry (US elements only hold 0..65535 on disk)
US_VALUES = (0, 1, 2, 7, 8, 15, 16, 17, 31, 32, 33, 64, 255, 4096, 32767, 65535)
DS_VALUES = ("0", "-0", "-1", "0.5", "1e-300", "1e308", "-1e308", "NaN", "inf", "-inf", "abc", "",
             "1\\2\\3", "9" * 16, "1" * 1000)
CS_VALUES = ("", "MONOCHROME3", "RGB", "YBR_FULL", "PALETTE COLOR", "GAMMA", "SIGMOID", "LINEAR_EXACT",
             "X" * 300, "\x00\x00")
TARGETS = {  # keyword -> (tag, VR, values)
    "Rows": (0x00280010, "US", US_VALUES), "Columns": (0x00280011, "US", US_VALUES),
    "BitsAllocated": (0x00280100, "US", US_VALUES), "BitsStored": (0x00280101, "US", US_VALUES),
    "HighBit": (0x00280102, "US", US_VALUES), "PixelRepresentation": (0x00280103, "US", (0, 1, 2, 65535)),
    "SamplesPerPixel": (0x00280002, "US", (0, 1, 3, 4, 65535)),
    "NumberOfFrames": (0x00280008, "IS", ("0", "-1", "2", "1000000", "NaN", "abc", "")),
    "WindowCenter": (0x00281050, "DS", DS_VALUES), "WindowWidth": (0x00281051, "DS", DS_VALUES),
    "RescaleSlope": (0x00281053, "DS", DS_VALUES), "RescaleIntercept": (0x00281052, "DS", DS_VALUES),
    "PhotometricInterpretation": (0x00280004, "CS", CS_VALUES), "VOILUTFunction": (0x00281056, "CS", CS_VALUES),
}


# ---------------------------------------------------------------- building files
def _quiet_pydicom():
    from pydicom import config

    config.settings.reading_validation_mode = config.IGNORE
    config.settings.writing_validation_mode = config.IGNORE
    import logging

    logging.getLogger("pydicom").setLevel(logging.CRITICAL + 1)


def base_dataset(rows: int = 64, cols: int = 64, seed: int = 0):
    """A valid 12-bit DX image (MONOCHROME2, window, rescale) as a pydicom FileDataset."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import UID

    _quiet_pydicom()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID("1.2.840.10008.5.1.4.1.1.1.1")
    meta.MediaStorageSOPInstanceUID = UID("1.2.826.0.1.3680043.99.1")
    meta.TransferSyntaxUID = UID(EXPLICIT_LE)
    ds = FileDataset(FILE, {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = "1.2.826.0.1.3680043.99", "1.2.826.0.1.3680043.99.0"
    ds.Modality, ds.BodyPartExamined = "DX", "HAND"
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows, ds.Columns, ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = \
        rows, cols, 16, 12, 11, 0
    ds.WindowCenter, ds.WindowWidth, ds.RescaleSlope, ds.RescaleIntercept = "2048", "4096", "1", "0"
    yy, xx = np.mgrid[0:rows, 0:cols]
    pic = (2048 + 1500 * np.sin(xx / 7.0) * np.cos(yy / 5.0)
           + np.random.default_rng(seed).normal(0, 40, (rows, cols))).clip(0, 4095).astype("<u2")
    ds.PixelData = pic.tobytes()
    ds["PixelData"].VR = "OW"
    return ds


def to_bytes(ds, syntax: str = EXPLICIT_LE) -> bytes:
    from pydicom.uid import UID

    ds.file_meta.TransferSyntaxUID = UID(syntax)
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def _meta_end(data: bytes) -> int:
    """Offset of the first data set byte after the file meta group of a Part 10 file."""
    group_length = struct.unpack("<I", data[140:144])[0]  # (0002,0000) UL at offset 132
    return 144 + group_length


def _element(tag: int, vr: bytes, value: bytes, length: int | None = None) -> bytes:
    """One explicit VR little endian element (``length`` overrides the value's length)."""
    n = len(value) if length is None else length
    head = struct.pack("<HH", tag >> 16, tag & 0xFFFF) + vr
    head += (b"\0\0" + struct.pack("<I", n)) if vr in LONG_VR else struct.pack("<H", n)
    return head + value


def _private_creator(group: int) -> bytes:
    return _element((group << 16) | 0x0010, b"LO", b"MURAKIT FUZZ")


def elements(data: bytes):
    """(offset, tag, vr, length field offset, length field size, value length) of each top-level
    element of an explicit VR LE data set, up to PixelData."""
    pos, out = _meta_end(data), []
    while pos + 8 <= len(data):
        group, elem = struct.unpack("<HH", data[pos:pos + 4])
        vr = data[pos + 4:pos + 6]
        if vr in LONG_VR:
            size, at, n = 4, pos + 8, struct.unpack("<I", data[pos + 8:pos + 12])[0]
            start = pos + 12
        else:
            size, at, n = 2, pos + 6, struct.unpack("<H", data[pos + 6:pos + 8])[0]
            start = pos + 8
        out.append((pos, (group << 16) | elem, vr, at, size, n))
        if (group, elem) == (0x7FE0, 0x0010) or n == 0xFFFFFFFF:
            break
        pos = start + n
    return out


def deep_sequence(depth: int, defined: bool) -> bytes:
    """A private SQ element (7FE1,1010) nested ``depth`` levels, each level one item."""
    if not defined:
        opens = (_element(0x7FE11010, b"SQ", b"", 0xFFFFFFFF) + struct.pack("<HHI", 0xFFFE, 0xE000, 0xFFFFFFFF))
        closes = struct.pack("<HHI", 0xFFFE, 0xE00D, 0) + struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)
        return _private_creator(0x7FE1) + opens * depth + closes * depth
    inner = b""
    for _ in range(depth):
        item = struct.pack("<HHI", 0xFFFE, 0xE000, len(inner)) + inner
        inner = _element(0x7FE11010, b"SQ", item)
    return _private_creator(0x7FE1) + inner


def deflated_file(ds, tail_zeros: int = 0, tail: bytes = b"") -> bytes:
    """``ds`` written with the deflated transfer syntax, plus a private OB element of
    ``tail_zeros`` zero bytes (compressed as a stream: a GiB costs no memory here)."""
    plain = to_bytes(ds, EXPLICIT_LE)
    meta = to_bytes(base_dataset(2, 2), DEFLATED)
    meta = meta[:_meta_end(meta)]
    z = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    parts = [meta, z.compress(plain[_meta_end(plain):] + tail)]
    if tail_zeros:
        parts.append(z.compress(_private_creator(0x7FE1) + _element(0x7FE11011, b"OB", b"", tail_zeros)))
        block = bytes(4 * MB)
        left = tail_zeros
        while left:
            n = min(left, len(block))
            parts.append(z.compress(block[:n]))
            left -= n
    parts.append(z.flush())
    return b"".join(parts)


def _lut(descriptor, n_data: int) -> object:
    from pydicom.dataset import Dataset

    item = Dataset()
    item.LUTDescriptor = list(descriptor)
    item.add_new("LUTData", "OW", (np.arange(n_data, dtype="<u2") * 3).tobytes())
    return item


# ---------------------------------------------------------------- the rules (docs/dicom.md)
def rule_files() -> dict:
    """name -> (bytes, expected exit codes, text stderr must hold)."""
    def with_(**kw):
        ds = base_dataset()
        for k, v in kw.items():
            setattr(ds, k, v)
        return to_bytes(ds)

    full = "the full range is shown"
    return {
        "rule_window_width_0": (with_(WindowWidth="0"), (0,), full),
        "rule_window_width_negative": (with_(WindowWidth="-100"), (0,), full),
        "rule_window_center_nan": (with_(WindowCenter="NaN"), (0,), full),
        "rule_window_width_inf": (with_(WindowWidth="inf"), (0,), full),
        "rule_sigmoid_width_0": (with_(WindowWidth="0", VOILUTFunction="SIGMOID"), (0,), full),
        "rule_rescale_slope_0": (with_(RescaleSlope="0"), (1,), "RescaleSlope"),
        "rule_rescale_slope_nan": (with_(RescaleSlope="NaN"), (1,), "RescaleSlope"),
        "rule_rescale_intercept_inf": (with_(RescaleIntercept="-inf"), (1,), "RescaleIntercept"),
        "rule_rescale_intercept_1e308": (with_(RescaleIntercept="1e308"), (1,), "beyond the float32 range"),
        "rule_rescale_slope_1e-300": (with_(RescaleSlope="1e-300"), (1,), "to the same number"),
        "rule_voi_lut_65535_holds_3": (with_(VOILUTSequence=[_lut([65535, 0, 16], 3)]), (1,), "65,535 entries"),
        "rule_voi_lut_40_bits": (with_(VOILUTSequence=[_lut([4096, 0, 40], 4096)]), (1,), "40-bit"),
        "rule_modality_lut_short": (with_(ModalityLUTSequence=[_lut([4096, 0, 16], 10)]), (1,), "4,096 entries"),
        "rule_high_bit_beyond_allocated": (with_(HighBit=16), (1,), "HighBit"),
        "rule_high_bit_below_stored": (with_(HighBit=3), (1,), "HighBit"),
        "rule_bits_stored_above_allocated": (with_(BitsStored=17, HighBit=16), (1,), "BitsStored"),
    }


# ---------------------------------------------------------------- random mutations
def _raw(tag: int, vr: str, text: str):
    """A data element holding ``text`` as it would be on disk (padded to even length)."""
    from pydicom.dataelem import RawDataElement
    from pydicom.tag import Tag

    value = text.encode("latin-1")
    value += b" " * (len(value) % 2)
    return RawDataElement(Tag(tag), vr, len(value), value, 0, False, True)


def value_mutation(rng: random.Random) -> tuple:
    """(name, bytes): one header element set to a hostile value (or two, one time in four)."""
    ds = base_dataset(seed=rng.randrange(1000))
    names = []
    for _ in range(2 if rng.random() < 0.25 else 1):
        keyword = rng.choice(sorted(TARGETS))
        tag, vr, values = TARGETS[keyword]
        value = rng.choice(values)
        if vr == "US":
            ds.add_new(tag, "US", int(value))
        else:  # raw bytes: pydicom would refuse to hold "NaN" as an IS
            ds[tag] = _raw(tag, vr, value)
        names.append(f"{keyword}={re.sub(r'[^A-Za-z0-9.+-]', '_', str(value)[:12])}")
    return "value_" + "+".join(names), to_bytes(ds)


def length_mutation(rng: random.Random) -> tuple:
    """(name, bytes): one element's length field rewritten."""
    data = bytearray(to_bytes(base_dataset(seed=rng.randrange(1000))))
    _, tag, vr, at, size, n = rng.choice(elements(bytes(data)))
    top = 0xFFFF if size == 2 else 0xFFFFFFFF
    new = rng.choice([0, 1, n + 1, max(n - 1, 0), n * 2, n + 1000, top, top - 1, rng.randrange(top + 1)])
    data[at:at + size] = struct.pack("<H" if size == 2 else "<I", new)
    if rng.random() < 0.3:  # and sometimes the file ends early too
        del data[rng.randrange(len(data) // 2, len(data)):]
    return f"length_{tag:08X}_{vr.decode('latin-1')}_{new}", bytes(data)


# ---------------------------------------------------------------- cases
def _write(data: bytes | None = None, build=None):
    def setup(folder):
        path = Path(folder) / FILE
        if build is not None:
            build(path)
        else:
            path.write_bytes(data)
    return setup


def _check(expect_text: str | None):
    """A scored file: one JSON line, probability in [0, 1], only edge-predict's own warnings;
    ``expect_text`` must be on stderr (the refusal, or the fallback's warning)."""
    def check(folder, r):
        err = [ln for ln in r.stderr.splitlines() if ln.strip()]
        if expect_text and not any(expect_text in ln for ln in err):
            return f"stderr does not name the rule ({expect_text!r}): {' | '.join(err)[:140] or '(empty)'}"
        if r.returncode != 0:
            return None
        out = [ln for ln in r.stdout.splitlines() if ln.strip()]
        try:
            p = json.loads(out[0])["probability"] if len(out) == 1 else None
        except (ValueError, KeyError, TypeError):
            p = None
        if not isinstance(p, float) or not 0.0 <= p <= 1.0:
            return f"scored without one JSON line holding a probability in [0, 1]: {r.stdout[:120]!r}"
        others = [ln for ln in err if not ln.startswith(("edge-predict: warning: ", "edge-predict: note: "))]
        return f"library line on stderr: {others[0][:120]}" if others else None
    return check


def _big_private(size: int):
    def build(path):
        data = to_bytes(base_dataset())
        with open(path, "wb") as f:
            f.write(data + _private_creator(0x7FE1) + _element(0x7FE11011, b"OB", b"", size))
            f.truncate(len(data) + 32 + size)  # sparse zeros: the element's value
    return build


def _bomb(size: int):
    def build(path):
        path.write_bytes(deflated_file(base_dataset(), tail_zeros=size))
    return build


def dicom_cases(fx, seed: int, mutations: int = 40) -> list:
    """Every case of the DICOM class, in a stable order (``fast=True``: the make-test slice)."""
    model = fx.root / "models" / "models" / "good_cnn.onnx"

    def case(name, setup, expect=(0, 1), text=None, fast=False, timeout=60.0):
        def prepared(folder):
            fx.models()
            setup(folder)
        return Case("dicom", name, argv=["edge-predict", FILE, "--model", str(model), "--json"], expect=expect,
                    setup=prepared, check=_check(text), timeout=timeout,
                    budget_mb=EDGE_BUDGET_MB, fast=fast)

    cases = [case("valid", _write(to_bytes(base_dataset())), (0,), fast=True)]
    for i, (name, (data, expect, text)) in enumerate(rule_files().items()):
        cases.append(case(name, _write(data), expect, text, fast=i % 2 == 0))
    rng = random.Random(seed)
    valid = to_bytes(base_dataset())
    cases += [
        case("deflate_valid", _write(deflated_file(base_dataset())), (0,), fast=True),
        case("deflate_bomb_1GiB", _write(build=_bomb(1024 * MB)), (1,), "inflates past", fast=True, timeout=120),
        case("deflate_100MB_private_read", _write(build=_bomb(100 * MB)), (0,), timeout=120),
        case("deflate_corrupt", _write(_flip(rng, deflated_file(base_dataset()), 400, 40))),
        case("deflate_truncated", _write(deflated_file(base_dataset())[:-300])),
        case("deep_sequence_200_defined", _write(valid + deep_sequence(200, True))),
        case("deep_sequence_2000_undefined", _write(valid + deep_sequence(2000, False))),
        case("deep_sequence_50000_undefined", _write(valid + deep_sequence(50_000, False)), fast=True),
        case("deep_sequence_5000_defined", _write(valid + deep_sequence(5000, True))),
        case("private_64MB", _write(build=_big_private(64 * MB)), (0,), fast=True),
        case("private_200MB", _write(build=_big_private(200 * MB)), (0,), timeout=120),
    ]
    for i in range(mutations):
        name, data = value_mutation(rng)
        cases.append(case(f"{name}_{i}"[:100], _write(data), fast=i < 2))
    for i in range(mutations // 2):
        name, data = length_mutation(rng)
        cases.append(case(f"{name}_{i}", _write(data), fast=i < 1))
    return cases


def _flip(rng: random.Random, data: bytes, start: int, count: int) -> bytes:
    out = bytearray(data)
    for _ in range(count):
        i = rng.randrange(min(start, len(out) - 1), len(out))
        out[i] ^= 1 << rng.randrange(8)
    return bytes(out)
