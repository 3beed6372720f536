"""Read a DICOM radiograph into the grey picture a PNG of it would give, or refuse in one line.

Needs the optional ``dicom`` extra (pydicom + pylibjpeg decoders); it is imported only when a
DICOM file is actually read, so the base edge install stays numpy + OpenCV + onnxruntime.

The DICOM grayscale pipeline, in the standard's order (PS3.3 C.11, PS3.4 N.2.1):

1. stored values, honouring BitsStored, HighBit and PixelRepresentation;
2. modality LUT: a Modality LUT Sequence, else RescaleSlope / RescaleIntercept;
3. VOI, by the ``dicom_voi`` policy of :class:`edge.preprocess.PreprocessConfig`:
   ``"window"`` applies the file's own display choice (a VOI LUT Sequence, else the first
   WindowCenter / WindowWidth with its VOILUTFunction LINEAR, LINEAR_EXACT or SIGMOID) and
   falls back to the full range when the file has none; ``"full"`` ignores the window and
   maps the image's own minimum..maximum to 0..1;
4. MONOCHROME1 (or a Presentation LUT Shape INVERSE) inverted *after* VOI, so bones are bright.

Steps 2 and 3 are pydicom's own functions (``apply_modality_lut``, ``apply_voi``,
``apply_windowing``), run once over the stored-value range and looked up per pixel
(:func:`indexed_picture`); the "full" policy, the 0..1 scaling, the inversion and the header
fallbacks are this module's.

The result is float32 (H, W) in [0, 1] and goes through the same preprocessing as a PNG,
including the ``invert`` policy (a file whose picture is still inverted after the header has
been honoured is corrected like an inverted PNG).

Refused with one clear line (:class:`edge.errors.ImageError`): multi-frame, colour (RGB, YBR,
PALETTE COLOR), non-image objects (SR, RT, waveform, DICOMDIR, anything without pixel data),
a compressed transfer syntax without an installed decoder (the line names the syntax and the
package), truncated or corrupt files, sizes above :data:`edge.limits.MAX_PIXELS`, and headers
whose declared sizes (Rows x Columns x SamplesPerPixel x BitsAllocated x frames) need more than
:data:`edge.limits.MEMORY_BUDGET` - checked before any pixel is decoded; a deflated data set is
inflated under :data:`edge.limits.INFLATE_LIMIT`. Header values that break the standard are refused
(:func:`check_header`) or, where viewers have a documented fallback, the fallback is taken and
named (:func:`header_fallbacks`); docs/dicom.md lists every rule.

Privacy: only non-identifying fields are ever read out (:class:`DicomInfo`: UIDs, SOP class,
modality, body part, pixel format). Error lines never quote a library's message, because
those can echo element values such as the patient's name.
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
import struct
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from edge.errors import ImageError
from edge.limits import INFLATE_LIMIT, MEMORY_BUDGET, WORK_BYTES_PER_PIXEL, check_pixels
from edge.mura import MURA_PARTS

VOI_POLICIES = ("window", "full")
EXTRA_HINT = "pip install 'murakit[dicom]'"
# BodyPartExamined (CS, PS3.16 Annex L) and common free-text variants -> MURA part.
PART_SYNONYMS = {
    "ELBOW": "ELBOW", "ELBOW JOINT": "ELBOW",
    "FINGER": "FINGER", "FINGERS": "FINGER", "THUMB": "FINGER", "DIGIT": "FINGER",
    "FOREARM": "FOREARM", "LOWER ARM": "FOREARM", "RADIUS": "FOREARM", "ULNA": "FOREARM",
    "RADIUS ULNA": "FOREARM",
    "HAND": "HAND", "HANDS": "HAND",
    "HUMERUS": "HUMERUS", "UPPER ARM": "HUMERUS", "ARM": "HUMERUS",
    "SHOULDER": "SHOULDER", "SHOULDER JOINT": "SHOULDER",
    "WRIST": "WRIST", "WRIST JOINT": "WRIST", "SCAPHOID": "WRIST", "CARPUS": "WRIST",
}
RADIOGRAPH_MODALITIES = ("CR", "DX", "RG", "DR", "RF", "XA", "PX", "IO", "MG", "OT")
# Decoder packages per compressed transfer syntax (what `murakit[dicom]` installs).
_DECODER_PACKAGES = {
    "1.2.840.10008.1.2.4.50": "pylibjpeg pylibjpeg-libjpeg",
    "1.2.840.10008.1.2.4.51": "pylibjpeg pylibjpeg-libjpeg",
    "1.2.840.10008.1.2.4.57": "pylibjpeg pylibjpeg-libjpeg",
    "1.2.840.10008.1.2.4.70": "pylibjpeg pylibjpeg-libjpeg",
    "1.2.840.10008.1.2.4.80": "pylibjpeg pylibjpeg-libjpeg",
    "1.2.840.10008.1.2.4.81": "pylibjpeg pylibjpeg-libjpeg",
    "1.2.840.10008.1.2.4.90": "pylibjpeg pylibjpeg-openjpeg",
    "1.2.840.10008.1.2.4.91": "pylibjpeg pylibjpeg-openjpeg",
    "1.2.840.10008.1.2.4.201": "pylibjpeg pylibjpeg-openjpeg",
    "1.2.840.10008.1.2.4.202": "pylibjpeg pylibjpeg-openjpeg",
    "1.2.840.10008.1.2.4.203": "pylibjpeg pylibjpeg-openjpeg",
    "1.2.840.10008.1.2.5": "pylibjpeg pylibjpeg-rle",
}
_DICOMDIR_CLASS = "1.2.840.10008.1.3.10"
_VRS = frozenset(b"AE AS AT CS DA DS DT FD FL IS LO LT OB OD OF OL OV OW PN SH SL SQ SS ST SV "
                 b"TM UC UI UL UN UR US UT UV".split())
_UID_RE = re.compile(r"^[0-9]+(\.[0-9]+)*$")
_CS_RE = re.compile(r"^[A-Z0-9 _]{1,16}$")
HEAD_BYTES = 132  # enough to recognise a file: 128-byte preamble + "DICM"
DEFLATED = "1.2.840.10008.1.2.1.99"
# Elements larger than this stay in the file until read (only PixelData ever is).
DEFER_BYTES = 1 << 20


# ---------------------------------------------------------------- recognising DICOM
def is_dicom(data: bytes) -> bool:
    """True when ``data`` (a file's first bytes or all of them) is a DICOM file.

    Recognised: the Part 10 ``DICM`` marker at offset 128, or a preamble-less data set that
    starts with a group 0x0002 / 0x0008 element in explicit VR (either byte order) or
    implicit VR little endian (what some PACS exports and old archives hold).
    """
    data = bytes(data[:HEAD_BYTES])
    if data[128:132] == b"DICM":
        return True
    return _bare_dataset(data)


def _bare_dataset(head: bytes) -> bool:
    if len(head) < 8:
        return False
    for order in "<>":
        group, element = struct.unpack(order + "HH", head[:4])
        if group not in (0x0002, 0x0008) or element > 0x1FFF:
            continue
        if head[4:6] in _VRS:
            return True
        length = struct.unpack(order + "I", head[4:8])[0]
        if order == "<" and length % 2 == 0 and 0 < length <= 256:
            return True  # implicit VR little endian: a short, even value length
    return False


def is_dicom_file(path) -> bool:
    """True when the file at ``path`` starts like DICOM (reads at most 132 bytes)."""
    try:
        with open(path, "rb") as f:
            return is_dicom(f.read(HEAD_BYTES))
    except OSError:
        return False


# ---------------------------------------------------------------- non-identifying facts
@dataclass(frozen=True)
class DicomInfo:
    """Non-identifying facts about one DICOM file (never a patient, date or institution field).

    Attributes
    ----------
    study_uid, series_uid, sop_uid : str or None
        StudyInstanceUID, SeriesInstanceUID, SOPInstanceUID (None when absent or not a UID).
    sop_class : str
        SOP class name, e.g. ``"Digital X-Ray Image Storage - For Presentation"``.
    modality : str or None
    body_part : str or None
        BodyPartExamined as written (upper case, <= 16 characters), None when absent.
    part : str or None
        The MURA part it maps to (one of :data:`MURA_PARTS`), None when it does not map.
    photometric : str or None
    transfer_syntax : str
        Transfer syntax name.
    rows, columns, frames, bits_stored : int or None
    fallbacks : tuple of str
        Header values that break the standard but have a viewer's documented fallback, each
        naming the fallback taken (an invalid window ignored: the full range is shown); see
        :func:`header_fallbacks`. Printed as warnings, never part of a JSON answer.
    """

    study_uid: str | None
    series_uid: str | None
    sop_uid: str | None
    sop_class: str
    modality: str | None
    body_part: str | None
    part: str | None
    photometric: str | None
    transfer_syntax: str
    rows: int | None
    columns: int | None
    frames: int | None
    bits_stored: int | None
    fallbacks: tuple = ()

    def to_dict(self) -> dict:
        return asdict(self)


def map_body_part(value) -> str | None:
    """Map a BodyPartExamined value to a MURA part, or None.

    Case, spaces, ``_`` / ``-`` and a side prefix are ignored: ``"HAND "``, ``"Upper_Arm"``,
    ``"LEFT WRIST"``, ``"XR_ELBOW"`` map to HAND, HUMERUS, WRIST, ELBOW.
    """
    if value is None:
        return None
    s = re.sub(r"[\s_\-]+", " ", str(value).upper()).strip()
    s = re.sub(r"^(XR|LEFT|RIGHT|BOTH|BILATERAL|L|R) ", "", s)
    return PART_SYNONYMS.get(s)


def part_warning(info: DicomInfo | None) -> str | None:
    """Why a file's body part or modality is outside what a MURA model knows, or None."""
    if info is None:
        return None
    if info.body_part is not None and info.part is None:
        return (f"body part {info.body_part!r} is not one of the seven MURA upper-extremity parts "
                f"({', '.join(MURA_PARTS)})")
    if info.modality is not None and info.modality not in RADIOGRAPH_MODALITIES:
        return f"modality {info.modality} is not a projection radiograph (CR/DX)"
    return None


def _uid(value) -> str | None:
    s = str(value).strip() if value is not None else ""
    return s if len(s) <= 64 and _UID_RE.match(s) else None


def _cs(value) -> str | None:
    s = str(value).strip().upper() if value is not None else ""
    return s if _CS_RE.match(s) else None


def _int(value) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _info(ds) -> DicomInfo:
    """The non-identifying facts of a parsed data set (reads only whitelisted elements)."""
    from pydicom.uid import UID

    meta = getattr(ds, "file_meta", None) or {}
    sop_class = _uid(ds.get("SOPClassUID") or meta.get("MediaStorageSOPClassUID"))
    ts = _uid(meta.get("TransferSyntaxUID"))
    body = _cs(ds.get("BodyPartExamined"))
    return DicomInfo(
        study_uid=_uid(ds.get("StudyInstanceUID")), series_uid=_uid(ds.get("SeriesInstanceUID")),
        sop_uid=_uid(ds.get("SOPInstanceUID")), sop_class=UID(sop_class).name if sop_class else "unknown",
        modality=_cs(ds.get("Modality")), body_part=body, part=map_body_part(body),
        photometric=_cs(ds.get("PhotometricInterpretation")), transfer_syntax=UID(ts).name if ts else "unknown",
        rows=_int(ds.get("Rows")), columns=_int(ds.get("Columns")),
        frames=_int(ds.get("NumberOfFrames") or 1), bits_stored=_int(ds.get("BitsStored")),
        fallbacks=header_fallbacks(ds))


# ---------------------------------------------------------------- parsing
def _pydicom(name: str):
    """Import pydicom (the optional extra) or refuse in one line naming the extra."""
    import importlib.util

    if importlib.util.find_spec("pydicom") is None:
        raise ImageError(f"{name}: is a DICOM file; reading DICOM needs the dicom extra: {EXTRA_HINT}")
    from edge.deps import PYDICOM, problem

    # installed but broken or too old (pydicom.pixels is 3.0's): its version and the supported range
    broken = problem("pydicom.pixels", PYDICOM[1], PYDICOM[2], hint=EXTRA_HINT, quiet=False)
    if broken:
        raise ImageError(f"{name}: {broken}")
    import pydicom
    # pydicom reports odd-but-readable files through logging; our refusals are our own lines
    logging.getLogger("pydicom").setLevel(logging.CRITICAL + 1)
    return pydicom


@contextlib.contextmanager
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


@contextlib.contextmanager
def _one_line(name: str):
    """Turn any failure inside into one ImageError line that names no DICOM value.

    pydicom parses elements lazily, so a malformed element can raise on first access, with
    a message that may quote the element's value (which could be the patient's name).
    """
    try:
        yield
    except ImageError:
        raise
    except Exception as e:  # noqa: BLE001
        raise ImageError(f"{name}: unreadable DICOM element ({type(e).__name__})") from None


def _parse(pydicom, src, name: str, header_only: bool = False):
    """pydicom Dataset from bytes or a path; any parse failure is one ImageError line.

    Elements above :data:`DEFER_BYTES` (pixel data, a vendor's private blob) are left in the
    file until read, so a huge element nobody asks for costs no memory. A deflated data set
    is inflated here under :data:`INFLATE_LIMIT` (pydicom would inflate it without a bound).
    """
    try:
        ds = _read_deflated(src, name, header_only)
        if ds is None:
            ds = pydicom.dcmread(io.BytesIO(src) if isinstance(src, bytes) else str(src), force=True,
                                 stop_before_pixels=header_only, defer_size=DEFER_BYTES)
        ds.get("Rows")  # touch the data set: a broken element raises here, not later
    except ImageError:
        raise
    except Exception as e:  # noqa: BLE001  pydicom raises many types; its messages may quote values
        raise ImageError(f"{name}: truncated or corrupt DICOM file ({type(e).__name__})") from None
    _ensure_transfer_syntax(ds)
    return ds


def _read_deflated(src, name: str, header_only: bool):
    """The data set of a Deflated Explicit VR Little Endian file, inflated under the cap; None
    for any other transfer syntax (then pydicom reads the file itself)."""
    from pydicom.dataset import FileDataset

    # _read_file_meta_info: pydicom's own reader of group 0002 from a file object (its public
    # read_file_meta_info takes a path only); stable since pydicom 1
    from pydicom.filereader import _read_file_meta_info, read_dataset, read_preamble

    with (io.BytesIO(src) if isinstance(src, bytes) else open(src, "rb")) as fp:
        preamble = read_preamble(fp, True)
        meta = _read_file_meta_info(fp)
        if str(meta.get("TransferSyntaxUID", "")).strip() != DEFLATED:
            return None
        inflated = _inflate(fp, name)
    ds = read_dataset(inflated, False, True, stop_when=_at_pixels if header_only else None)
    return FileDataset(name, ds, preamble=preamble, file_meta=meta, is_implicit_VR=False,
                       is_little_endian=True)


def _at_pixels(tag, vr, length) -> bool:
    return tag in (0x7FE00008, 0x7FE00009, 0x7FE00010)  # FloatPixelData, DoubleFloatPixelData, PixelData


def _inflate(fp, name: str):
    """Raw-deflate ``fp``'s rest into a DicomBytesIO (rewound), refusing as soon as the output
    passes :data:`INFLATE_LIMIT`. Written in place: no second copy of the inflated bytes."""
    import zlib

    from pydicom.filebase import DicomBytesIO

    d, out, cap = zlib.decompressobj(-zlib.MAX_WBITS), DicomBytesIO(b""), INFLATE_LIMIT
    try:
        while chunk := fp.read(1 << 20):
            while chunk:
                # at most 4 MiB per call (max_length >= 1: 0 would mean unbounded)
                out.write(d.decompress(chunk, min(4 << 20, cap + 1 - out.tell())))
                _over_cap(out.tell(), cap, name)
                chunk = d.unconsumed_tail
        out.write(d.flush())
        _over_cap(out.tell(), cap, name)
    except zlib.error:
        raise ImageError(f"{name}: corrupt deflated DICOM data set") from None
    out.seek(0)
    return out


def _over_cap(size: int, cap: int, name: str) -> None:
    if size > cap:
        raise ImageError(f"{name}: deflated DICOM data set inflates past the {cap // 2**20} MiB limit "
                         f"(a decompression bomb or a huge image)")


def _ensure_transfer_syntax(ds) -> None:
    """Preamble-less files have no file meta: infer the syntax from how the data set was read."""
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

    if getattr(ds, "file_meta", None) is None:
        ds.file_meta = FileMetaDataset()
    if ds.file_meta.get("TransferSyntaxUID"):
        return
    implicit, little = getattr(ds, "original_encoding", (None, None))
    if implicit:
        ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    elif implicit is False:
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian if little else ExplicitVRBigEndian


def read_dicom_info(path, name: str | None = None) -> DicomInfo:
    """Header-only read of a DICOM file's (or its bytes') non-identifying facts (pixels are
    not decoded).

    Raises
    ------
    ImageError
        pydicom missing (names the extra), or a file pydicom cannot parse.
    """
    name = name or ("<bytes>" if isinstance(path, bytes) else str(path))
    pydicom = _pydicom(name)
    with _quiet(), _one_line(name):
        return _info(_parse(pydicom, path if isinstance(path, bytes) else Path(path), name, header_only=True))


# ---------------------------------------------------------------- checks
def _what(info: DicomInfo) -> str:
    return "a DICOM object of unknown class" if info.sop_class == "unknown" else f"DICOM {info.sop_class} object"


def _check_image(ds, info: DicomInfo, name: str) -> None:
    """Refuse what is not one single-frame greyscale image, before decoding anything."""
    meta_class = str(ds.file_meta.get("MediaStorageSOPClassUID", ""))
    if meta_class == _DICOMDIR_CLASS or "DirectoryRecordSequence" in ds:
        raise ImageError(f"{name}: is a DICOMDIR (the index of a DICOM disc), not an image; "
                         f"pass the image files or their folder")
    if "FloatPixelData" in ds or "DoubleFloatPixelData" in ds:
        raise ImageError(f"{name}: {_what(info)} holds float pixel data, not a radiograph")
    if "PixelData" not in ds:
        raise ImageError(f"{name}: {_what(info)} has no pixel data (not an image, or a truncated file)")
    if info.sop_class.startswith("RT ") and info.sop_class != "RT Image Storage":
        raise ImageError(f"{name}: {_what(info)} is not a radiograph")
    if info.frames is None or info.frames < 1:
        raise ImageError(f"{name}: DICOM NumberOfFrames is not a positive number")
    if info.frames > 1:
        raise ImageError(f"{name}: multi-frame DICOM ({info.frames} frames) is not supported; "
                         f"export single-frame images")
    spp = _int(ds.get("SamplesPerPixel", 1))
    if spp != 1 or info.photometric in ("RGB", "PALETTE COLOR") or (info.photometric or "").startswith("YBR"):
        raise ImageError(f"{name}: colour DICOM ({info.photometric or '?'}, {spp} samples per pixel) is "
                         f"not a radiograph; only MONOCHROME1 / MONOCHROME2 are read")
    if info.photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise ImageError(f"{name}: DICOM PhotometricInterpretation is {info.photometric or 'missing'}; "
                         f"only MONOCHROME1 / MONOCHROME2 are read")
    rows, cols = info.rows, info.columns
    if not rows or not cols or rows < 0 or cols < 0:
        raise ImageError(f"{name}: DICOM image has no valid Rows / Columns")
    check_pixels(cols, rows, name)
    bits = _int(ds.get("BitsAllocated"))
    stored = _int(ds.get("BitsStored", bits))
    if bits not in (1, 8, 16, 32) or stored is None or not 1 <= stored <= bits:
        raise ImageError(f"{name}: unsupported DICOM bit depth (BitsAllocated {bits}, BitsStored {stored})")
    _check_declared_size(rows, cols, spp, bits, info.frames, name)
    if _int(ds.get("PixelRepresentation", 0)) not in (0, 1):
        raise ImageError(f"{name}: DICOM PixelRepresentation must be 0 or 1")
    check_header(ds, name)


def _check_declared_size(rows: int, cols: int, spp: int, bits: int, frames: int, name: str) -> None:
    """The memory budget applied to the header's declared sizes, before any pixel is decoded."""
    pixel_bytes = (rows * cols * spp * bits * frames + 7) // 8
    need = pixel_bytes + WORK_BYTES_PER_PIXEL * rows * cols * spp * frames
    if need > MEMORY_BUDGET:
        raise ImageError(f"{name}: DICOM header declares {cols}x{rows} x {spp} sample(s) x {bits} bits x "
                         f"{frames} frame(s), which needs about {need // 2**20:,} MiB, above the "
                         f"{MEMORY_BUDGET // 2**20} MiB per-image budget")


# ---------------------------------------------------------------- header value rules
# The rules of PS3.3 that a header can break while still parsing. Each either refuses the
# file (check_header: the values would make the picture meaningless) or, where viewers have a
# documented fallback, takes it and says so (header_fallbacks). docs/dicom.md lists them.
WINDOW_FUNCTIONS = ("LINEAR", "LINEAR_EXACT", "SIGMOID")


def _float(value):
    """A DS value (the first of several) as a float; None when absent, NaN when unparseable."""
    if value is None or value == "":
        return None
    try:
        return float(_first(value))
    except (TypeError, ValueError, IndexError):
        return float("nan")


def check_header(ds, name: str = "<dicom>") -> None:
    """Refuse header values that break the standard and have no safe fallback (one line).

    Checked: HighBit within BitsStored - 1 .. BitsAllocated - 1 (C.7.6.3.1); RescaleSlope
    finite and not 0, RescaleIntercept finite, and the stored range through them finite and not
    one value in the working float type (C.11.1.1.2); every Modality / VOI LUT Sequence
    item's LUT Descriptor: three numbers, 8..16 bits, and LUT Data holding at least the
    entries it promises (C.11.1.1.1, C.11.2.1.1).
    """
    bits, stored = int(ds.BitsAllocated), int(ds.get("BitsStored", ds.BitsAllocated))
    high = ds.get("HighBit")
    if high is not None and high != "":
        h = _int(high)
        if h is None or not stored - 1 <= h <= bits - 1:
            raise ImageError(f"{name}: DICOM HighBit {h if h is not None else '?'} is inconsistent with "
                             f"BitsStored {stored} and BitsAllocated {bits} (must be {stored - 1}..{bits - 1})")
    if not ds.get("ModalityLUTSequence"):
        slope, intercept = _float(ds.get("RescaleSlope")), _float(ds.get("RescaleIntercept"))
        if slope is not None and (not np.isfinite(slope) or slope == 0):
            raise ImageError(f"{name}: DICOM RescaleSlope is {_shown(slope)}; it must be a finite number other "
                             f"than 0 (every pixel would map to the same value)")
        if intercept is not None and not np.isfinite(intercept):
            raise ImageError(f"{name}: DICOM RescaleIntercept is {_shown(intercept)}; it must be a finite number")
        _check_rescaled_range(stored, int(ds.get("PixelRepresentation", 0)) == 1,
                              1.0 if slope is None else slope, 0.0 if intercept is None else intercept, name)
    for keyword in ("ModalityLUTSequence", "VOILUTSequence"):
        for i, item in enumerate(ds.get(keyword) or []):
            why = _lut_problem(item)
            if why:
                raise ImageError(f"{name}: DICOM {keyword} item {i + 1}: {why}")


def _check_rescaled_range(bits: int, signed: bool, slope: float, intercept: float, name: str) -> None:
    """The stored range through the rescale must stay finite and distinct in the working float
    type (float32 up to 24 bits stored): 1e308 or a slope of 1e-300 would make the picture
    infinite or one flat value, scored as if it were an image."""
    lo, hi = (-(2.0 ** (bits - 1)), 2.0 ** (bits - 1) - 1) if signed else (0.0, 2.0 ** bits - 1)
    kind = np.float64 if bits > 24 else np.float32
    with np.errstate(over="ignore", under="ignore"):
        a, b = kind(lo * slope + intercept), kind(hi * slope + intercept)
    if not (np.isfinite(a) and np.isfinite(b)):
        raise ImageError(f"{name}: DICOM RescaleSlope {slope:g} / RescaleIntercept {intercept:g} map the stored "
                         f"values beyond the {np.dtype(kind).name} range")
    if a == b and hi > lo:
        raise ImageError(f"{name}: DICOM RescaleSlope {slope:g} / RescaleIntercept {intercept:g} map every stored "
                         f"value to the same number")


def _shown(x: float) -> str:
    return "not a number" if np.isnan(x) else f"{x:g}"


def _lut_problem(item) -> str | None:
    """Why a LUT sequence item breaks C.11.1.1.1 / C.11.2.1.1, or None."""
    desc = item.get("LUTDescriptor")
    values = list(desc) if hasattr(desc, "__len__") and not isinstance(desc, (str, bytes)) else [desc]
    if desc is None or len(values) != 3 or any(_int(v) is None for v in values):
        return "LUT Descriptor must hold three numbers (entries, first value mapped, bits)"
    n, _, lut_bits = (int(v) for v in values)
    n = n or 65536
    if not 8 <= lut_bits <= 16:
        return f"LUT Descriptor declares {lut_bits}-bit entries; the standard allows 8 to 16"
    if "LUTData" not in item:
        return "LUT Data is missing"
    data = item["LUTData"].value
    have = len(data) // 2 if isinstance(data, (bytes, bytearray)) else \
        (len(data) if hasattr(data, "__len__") else int(data is not None))
    if have < n:
        return f"LUT Descriptor promises {n:,} entries but LUT Data holds {have:,}"
    return None


def header_fallbacks(ds) -> tuple:
    """Header values that break the standard where viewers have a documented fallback: which
    fallback :func:`read_dicom` takes, one sentence each (printed as warnings).

    A window (WindowCenter / WindowWidth) that is not finite, or whose width is below 1 for
    LINEAR or not above 0 for LINEAR_EXACT / SIGMOID (C.11.2.1.2), is ignored and the full
    range is shown, as a viewer does; an unknown VOILUTFunction is taken as LINEAR, the
    standard's default. Only a window that would be used (no VOI LUT Sequence) is judged.
    """
    seq = ds.get("VOILUTSequence")
    if seq and "LUTDescriptor" in seq[0] and "LUTData" in seq[0]:
        return ()
    c, w = ds.get("WindowCenter"), ds.get("WindowWidth")
    if c is None or w is None or c == "" or w == "":
        return ()
    center, width = _float(c), _float(w)
    raw = str(ds.get("VOILUTFunction", "LINEAR") or "LINEAR").strip().upper()
    out = []
    func = raw if raw in WINDOW_FUNCTIONS else "LINEAR"
    if raw != func:
        out.append(f"VOILUTFunction {raw[:16]!r} is not LINEAR, LINEAR_EXACT or SIGMOID; LINEAR is used")
    if not (np.isfinite(center) and np.isfinite(width)):
        out.append("WindowCenter / WindowWidth is not a finite number; the window is ignored and the "
                   "full range is shown")
    elif not (width >= 1 if func == "LINEAR" else width > 0):
        out.append(f"WindowWidth {width:g} is invalid for {func} (must be {'>= 1' if func == 'LINEAR' else '> 0'}); "
                   f"the window is ignored and the full range is shown")
    return tuple(out)


def _check_decoder(ds, name: str, data: bytes | None = None):
    """The pixel decoder for the file's transfer syntax, or a line naming what to install."""
    from pydicom.pixels import get_decoder

    ts = ds.file_meta.get("TransferSyntaxUID")
    if not ts:
        raise ImageError(f"{name}: DICOM file has no transfer syntax; cannot decode its pixels")
    try:
        decoder = get_decoder(ts)
    except NotImplementedError:
        raise ImageError(f"{name}: DICOM transfer syntax {ts.name} ({ts}) is not supported") from None
    if not decoder.is_available:
        pkgs = _DECODER_PACKAGES.get(str(ts), "a pydicom decoder plugin")
        raise ImageError(f"{name}: pixels are compressed with {ts.name} ({ts}) and no decoder for it is "
                         f"installed: pip install {pkgs} (or {EXTRA_HINT})")
    if not ts.is_encapsulated:
        _check_native_length(ds, name, data)


def _check_native_length(ds, name: str, data: bytes | None = None) -> None:
    bits = int(ds.BitsAllocated)
    need = int(ds.Rows) * int(ds.Columns)
    need = (need + 7) // 8 if bits == 1 else need * bits // 8
    raw = _deferred_pixels(ds, data)
    have = len(ds.PixelData) if raw is None else min(raw.length, len(data) - raw.value_tell)
    if have < need:
        raise ImageError(f"{name}: truncated DICOM file (pixel data has {have:,} of {need:,} bytes)")


# ---------------------------------------------------------------- pixels
def _deferred_pixels(ds, data: bytes | None):
    """PixelData's raw element when it is still in ``data`` (deferred by the parse: its offset
    and length known, its bytes not copied), else None."""
    if data is None or "PixelData" not in ds:
        return None
    raw = ds.get_item("PixelData", keep_deferred=True)
    tell = getattr(raw, "value_tell", None)
    if getattr(raw, "value", b"") is not None or tell is None or raw.length == 0xFFFFFFFF:
        return None
    return raw if 0 <= tell <= len(data) else None


_LITTLE_NATIVE = ("1.2.840.10008.1.2", "1.2.840.10008.1.2.1")  # implicit / explicit VR little endian


def _native_words(ds, data: bytes | None, bits: int, stored: int, signed: bool):
    """The stored values of an uncompressed little-endian 8/16-bit picture, read where they lie
    in ``data`` (a read-only view, no copy when BitsStored fills the word), or None (then
    pydicom decodes). The unused high bits are cleared, or the sign extended, exactly as
    pydicom's ``pixel_array`` does (tests/test_loader.py compares the two)."""
    raw = _deferred_pixels(ds, data)
    if raw is None or bits not in (8, 16) or str(ds.file_meta.TransferSyntaxUID) not in _LITTLE_NATIVE:
        return None
    rows, cols = int(ds.Rows), int(ds.Columns)
    if min(raw.length, len(data) - raw.value_tell) < rows * cols * bits // 8:
        return None  # short: pydicom's reader gives the clear error
    kind = f"{'i' if signed else 'u'}{bits // 8}"
    words = np.frombuffer(data, np.dtype(kind).newbyteorder("<"), rows * cols, raw.value_tell).reshape(rows, cols)
    if stored < bits and signed:
        shift = bits - stored
        return (words << shift) >> shift  # arithmetic shift: the sign bit at BitsStored - 1 extended
    if stored < bits:
        return words & np.array((1 << stored) - 1, words.dtype)
    return words


def stored_values(ds, name: str = "<dicom>", data: bytes | None = None) -> np.ndarray:
    """Decode the stored values: int (H, W), BitsStored / HighBit / PixelRepresentation honoured.

    pydicom assumes HighBit = BitsStored - 1 (true of almost every file); when HighBit says
    the value sits higher in the word, the raw words are shifted and sign-extended here.
    ``data``: the file's bytes, when ``ds`` was parsed from them; an uncompressed little-endian
    picture is then read in place (:func:`_native_words`) instead of copied twice by pydicom.
    """
    from pydicom.pixels import pixel_array

    bits, stored = int(ds.BitsAllocated), int(ds.get("BitsStored", ds.BitsAllocated))
    high = _int(ds.get("HighBit", stored - 1))
    signed = int(ds.get("PixelRepresentation", 0)) == 1
    native = not ds.file_meta.TransferSyntaxUID.is_encapsulated
    odd_high = native and bits > 1 and high is not None and stored - 1 < high < bits
    words = None if odd_high else _native_words(ds, data, bits, stored, signed)
    if words is not None:
        return words
    try:
        arr = pixel_array(ds, correct_unused_bits=False) if odd_high else pixel_array(ds)
    except Exception as e:  # noqa: BLE001  decoders raise many types; messages are not for users
        raise ImageError(f"{name}: corrupt or truncated DICOM pixel data ({type(e).__name__})") from None
    if arr.ndim != 2 or arr.shape != (int(ds.Rows), int(ds.Columns)):
        raise ImageError(f"{name}: DICOM pixel data has shape {arr.shape}, expected "
                         f"({int(ds.Rows)}, {int(ds.Columns)})")
    if odd_high:
        arr = _shift_high_bit(arr, stored, high, signed)
    return arr


def _shift_high_bit(arr: np.ndarray, stored: int, high: int, signed: bool) -> np.ndarray:
    """Take BitsStored bits ending at HighBit out of each word, sign-extending if signed."""
    words = arr.view(np.dtype(f"u{arr.dtype.itemsize}")).astype(np.int64)
    v = (words >> (high + 1 - stored)) & ((1 << stored) - 1)
    if signed:
        v -= (v >= 1 << (stored - 1)) * (1 << stored)
    return v


def _first(value):
    """The first of a multi-valued element (WindowCenter may hold several windows)."""
    return value[0] if hasattr(value, "__len__") and not isinstance(value, (str, bytes)) else value


# ---------------------------------------------------------------- modality LUT and VOI, by pydicom
# pydicom's apply_modality_lut / apply_voi / apply_windowing do the standard's arithmetic. They
# are handed a new Dataset holding only the pixel-module elements they read, with values this
# module has already judged (check_header refuses what has no fallback, header_fallbacks names
# what is replaced): so pydicom never sees an identifying element, never trips over a value it
# would choke on (an empty RescaleSlope, a 12-bit LUT descriptor, a LUT in the other byte order),
# and its messages never reach the user. What pydicom does not cover stays here: the "full" VOI
# policy, the [0, 1] scaling, MONOCHROME1 / INVERSE inversion and the fallbacks.
def _lut_item(item, ds):
    """(clean LUT item for pydicom, nominal maximum of the original entries) of a LUT sequence item.

    The clean item says 16 bits per entry (pydicom reads 8 and 10..16 only, and a value above an
    8-bit descriptor's range would overflow), holds the entries as US numbers (so byte order is
    settled here) and a first mapped value corrected for sign (PS3.3 C.11.1.1.1: SS when the
    image is signed)."""
    from pydicom.dataset import Dataset

    n, first, bits = (int(v) for v in item.LUTDescriptor)
    n = n or 65536
    data = item["LUTData"]
    if isinstance(data.value, (bytes, bytearray)):
        order = "<" if ds.file_meta.TransferSyntaxUID.is_little_endian else ">"
        lut = np.frombuffer(bytes(data.value)[:2 * n], dtype=order + "u2")
    else:
        values = data.value if hasattr(data.value, "__len__") else [data.value]  # US: one or many
        lut = np.asarray(list(values), dtype=np.int64).ravel()[:n]
    if lut.size == 0:
        raise ValueError("empty LUT")
    first = first - 65536 if first >= 32768 and int(ds.get("PixelRepresentation", 0)) == 1 else first
    clean = Dataset()
    clean.LUTDescriptor = [lut.size, first, 16]
    clean.add_new("LUTData", "US", lut.astype(np.uint16).tolist())
    return clean, float(2 ** min(max(bits, 1), 16) - 1)


def _window(ds):
    """(center, width, function) of the first window in the file, or None."""
    c, w = ds.get("WindowCenter"), ds.get("WindowWidth")
    if c is None or w is None or c == "" or w == "":
        return None
    center, width = _float(c), _float(w)
    func = str(ds.get("VOILUTFunction", "LINEAR") or "LINEAR").strip().upper()
    func = func if func in WINDOW_FUNCTIONS else "LINEAR"  # the standard's default term
    ok = np.isfinite(center) and np.isfinite(width) and (width >= 1 if func == "LINEAR" else width > 0)
    return (center, width, func) if ok else None


def _voi_lut(ds):
    """The VOI LUT Sequence's first item when the "window" policy uses it, else None."""
    seq = ds.get("VOILUTSequence")
    return seq[0] if seq and "LUTDescriptor" in seq[0] and "LUTData" in seq[0] else None


def modality_values(stored: np.ndarray, ds) -> np.ndarray:
    """Stored values -> modality output (float64, or the LUT's integers), by pydicom's
    ``apply_modality_lut``: a Modality LUT Sequence, else RescaleSlope / RescaleIntercept."""
    from pydicom.dataset import Dataset
    from pydicom.pixels.processing import apply_modality_lut

    clean = Dataset()
    seq = ds.get("ModalityLUTSequence")
    if seq:
        clean.ModalityLUTSequence = [_lut_item(seq[0], ds)[0]]
    else:
        slope = float(ds.get("RescaleSlope", 1.0) or 1.0)
        intercept = float(ds.get("RescaleIntercept", 0.0) or 0.0)
        if not (np.isfinite(slope) and np.isfinite(intercept)):
            raise ValueError("RescaleSlope / RescaleIntercept is not finite")
        clean.RescaleSlope, clean.RescaleIntercept = slope, intercept
    with np.errstate(all="ignore"):
        return apply_modality_lut(np.asarray(stored, dtype=np.int64), clean)


def apply_window(values: np.ndarray, center: float, width: float, function: str = "LINEAR") -> np.ndarray:
    """PS3.3 C.11.2.1.2 windowing by pydicom's ``apply_windowing``, with output 0..1 instead of
    ymin..ymax.

    Parameters
    ----------
    values : ndarray, modality output
    center, width : float
    function : {"LINEAR", "LINEAR_EXACT", "SIGMOID"}; anything else is LINEAR (the default term)

    Returns
    -------
    ndarray of float32 in [0, 1]
    """
    from pydicom.dataset import Dataset
    from pydicom.pixels.processing import apply_windowing

    clean = Dataset()  # the output range is 0 .. 2**16 - 1; divided out below
    clean.PhotometricInterpretation, clean.BitsStored, clean.PixelRepresentation = "MONOCHROME2", 16, 0
    clean.WindowCenter, clean.WindowWidth = float(center), float(width)
    clean.VOILUTFunction = function if function in WINDOW_FUNCTIONS else "LINEAR"
    with np.errstate(all="ignore"):  # SIGMOID far from the centre: exp overflows to the 0 it tends to
        out = apply_windowing(np.asarray(values, dtype=np.float64), clean)
    return np.clip(out / 65535.0, 0.0, 1.0).astype(np.float32)


def _scaled(values: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """The "full" VOI policy: ``lo``..``hi`` (the image's own modality range) -> 0..1, float32."""
    if hi <= lo:
        return np.zeros(values.shape, np.float32)
    return np.clip((values - lo) * (1.0 / (hi - lo)), 0.0, 1.0).astype(np.float32)


def voi_picture(values: np.ndarray, ds, policy: str, full_range=None):
    """Modality output -> [0, 1] picture by the VOI policy; returns (picture, what was applied).

    ``full_range`` is the image's modality (min, max) for the "full" policy and for a file
    without a usable VOI; None takes it from ``values``.
    """
    if policy == "window":
        item = _voi_lut(ds)
        if item is not None:
            from pydicom.dataset import Dataset
            from pydicom.pixels.processing import apply_voi

            clean, top = _lut_item(item, ds)
            lut_ds = Dataset()
            lut_ds.VOILUTSequence = [clean]
            # rounded to the entry it names (pydicom truncates a fractional rescale output)
            out = apply_voi(np.rint(values).astype(np.int64), lut_ds)
            return np.clip(out / top, 0.0, 1.0).astype(np.float32), "voi-lut"
        win = _window(ds)
        if win is not None:
            return apply_window(values, *win), f"window-{win[2].lower()}"
    lo, hi = full_range if full_range is not None else (float(values.min()), float(values.max()))
    return _scaled(values, lo, hi), "full"


def inverted_by_header(ds) -> bool:
    """MONOCHROME1 (minimum = white) or a Presentation LUT Shape INVERSE: display is inverted."""
    shape = str(ds.get("PresentationLUTShape", "") or "").strip().upper()
    return str(ds.get("PhotometricInterpretation", "")).strip().upper() == "MONOCHROME1" or shape == "INVERSE"


def displayed_picture(stored: np.ndarray, ds, voi: str, full_range=None) -> np.ndarray:
    """Stored values -> the displayed [0, 1] float32 picture: modality LUT, VOI, then the
    header's inversion, value by value (the reference that :func:`indexed_picture` evaluates
    once per stored value instead of once per pixel). ``full_range``: see :func:`voi_picture`."""
    picture, _ = voi_picture(modality_values(stored, ds), ds, voi, full_range)
    if inverted_by_header(ds):
        picture = np.float32(1.0) - picture
    return picture


def _banded_picture(stored: np.ndarray, ds, voi: str) -> np.ndarray:
    """:func:`displayed_picture` of a picture whose values span more than 65,536 (32-bit
    words), in row bands so the float64 temporaries stay within the per-pixel working budget;
    the "full" range is the whole image's, found in a first pass."""
    from edge.pixels import row_bands

    bands = row_bands(*stored.shape)
    lo, hi = np.inf, -np.inf
    for rows in bands:
        m = modality_values(stored[rows], ds)
        lo, hi = min(lo, float(m.min())), max(hi, float(m.max()))
    out = np.empty(stored.shape, np.float32)
    for rows in bands:
        out[rows] = displayed_picture(stored[rows], ds, voi, (lo, hi))
    return out


@dataclass(frozen=True)
class IndexedPicture:
    """A displayed picture held as ``table[index]``: the stored words and the grey each word
    gives, so the picture needs no float copy.

    Attributes
    ----------
    index : ndarray of uint8 or uint16, shape (H, W)
        The stored words (a view of the decoded pixels; signed words as their bit patterns),
        or the stored values minus the smallest one for wider words spanning < 65,536 values.
    table : ndarray of float32, shape (256,) or (65536,)
        The grey of every word the image holds (0 for words it does not hold).
    order : ndarray of int64
        The words the image holds, sorted by grey (ties in word order).
    counts : ndarray of int64, shape like ``table``
        How many pixels hold each word.
    """

    index: np.ndarray
    table: np.ndarray
    order: np.ndarray
    counts: np.ndarray

    @property
    def shape(self) -> tuple:
        return self.index.shape

    def picture(self) -> np.ndarray:
        """The float32 (H, W) picture itself (one gather)."""
        from edge.pixels import lookup

        return lookup(self.table, self.index)


def _index_words(stored: np.ndarray):
    """(uint8/uint16 index image, smallest stored value or None) for the table route, or None.

    8/16-bit words are their own index (a view, no copy); wider integer words (32-bit stored,
    a HighBit shift) are indexed from their minimum when they span fewer than 65,536 values."""
    if stored.ndim != 2 or stored.dtype.kind not in "ui":
        return None
    if stored.dtype.itemsize <= 2:
        return stored.view(np.dtype(f"u{stored.dtype.itemsize}")), None
    lo, hi = int(stored.min()), int(stored.max())
    if hi - lo >= 1 << 16:
        return None
    return (stored - lo).astype(np.uint16), lo


def indexed_picture(stored: np.ndarray, ds, voi: str) -> IndexedPicture | None:
    """:func:`displayed_picture` as an :class:`IndexedPicture`, or None (stored values that span
    more than 65,536, or not integers).

    A radiograph's stored values span at most 65,536 numbers, and every step from stored value
    to grey (modality LUT or rescale, VOI LUT or window, inversion) is a function of the value
    alone; only the "full" VOI policy reads the image's own minimum and maximum. So the greys
    are computed by :func:`displayed_picture` (pydicom's functions) once over the stored-value
    range the image spans, its "full" range taken over the values it holds, and looked up: the
    same greys as per pixel, and a 5 MP image costs one histogram instead of several float64
    passes. :mod:`edge.preprocess` reads its statistics off the histogram and looks the words
    up once, for the 8-bit output.
    """
    from edge.pixels import hist

    words = _index_words(stored)
    if words is None:
        return None
    codes, base = words
    counts = hist(codes, 1 << (8 * codes.dtype.itemsize))
    present = np.flatnonzero(counts)
    if base is None:  # the stored value of each held word (signed words as their bit patterns)
        held = present.astype(codes.dtype).view(stored.dtype).astype(np.int64)
    else:
        held = present + base
    first = int(held.min())
    span = np.arange(first, int(held.max()) + 1, dtype=np.int64)  # the stored-value range
    full_range = None
    if voi == "full" or (_voi_lut(ds) is None and _window(ds) is None):
        m = modality_values(held, ds)
        full_range = (float(m.min()), float(m.max()))
    greys = displayed_picture(span, ds, voi, full_range)[held - first]
    table = np.zeros(counts.size, np.float32)
    table[present] = greys
    return IndexedPicture(codes, table, present[np.argsort(greys, kind="stable")], counts)


def read_dicom(data: bytes, name: str = "<bytes>", voi: str = "window", indexed: bool = False):
    """Decode DICOM bytes into the displayed picture and its non-identifying facts.

    Parameters
    ----------
    data : bytes
        A whole DICOM file.
    name : str
        Used in error messages (a path, never a DICOM value).
    voi : {"window", "full"}
        VOI policy (see the module docstring).
    indexed : bool
        Return the picture as an :class:`IndexedPicture` when the stored values allow one
        (same greys, no float copy); otherwise, and whenever this is False, as an array.

    Returns
    -------
    picture : ndarray of float32, shape (H, W), values in [0, 1]; bone bright, air dark
        when the header is honoured (or an :class:`IndexedPicture` of it, see ``indexed``).
    info : DicomInfo

    Raises
    ------
    ImageError
        Everything that is not one readable single-frame greyscale image, in one line.
    """
    if voi not in VOI_POLICIES:
        raise ValueError(f"voi must be one of {VOI_POLICIES}, got {voi!r}")
    want_indexed = indexed
    pydicom = _pydicom(name)
    with _quiet(), _one_line(name):
        data = bytes(data)
        ds = _parse(pydicom, data, name)
        info = _info(ds)
        _check_image(ds, info, name)
        _check_decoder(ds, name, data)
        stored = stored_values(ds, name, data)
        indexed = indexed_picture(stored, ds, voi)  # None: values spanning > 65,536
        picture = _banded_picture(stored, ds, voi) if indexed is None else None
    if indexed is not None:
        if not np.all(np.isfinite(indexed.table)):
            raise ImageError(f"{name}: DICOM pixels are not finite after the modality / VOI LUT")
        return (indexed if want_indexed else indexed.picture()), info
    if not np.all(np.isfinite(picture)):
        raise ImageError(f"{name}: DICOM pixels are not finite after the modality / VOI LUT")
    return np.ascontiguousarray(picture, dtype=np.float32), info


def load_dicom(data: bytes, name: str = "<bytes>", voi: str = "window", indexed: bool = False):
    """:func:`read_dicom` without the facts: float32 (H, W) in [0, 1].

    With ``indexed=True`` an :class:`IndexedPicture` is returned instead whenever the stored
    values allow one (8/16-bit words, the common case), so :mod:`edge.preprocess` can take its
    integer table path without a float copy of the picture.
    """
    return read_dicom(data, name, voi, indexed=indexed)[0]
