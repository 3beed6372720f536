"""Write radiographs as DICOM files that display exactly the given picture.

Used by ``murakit synth --format dicom`` (the synthetic set as DICOM), the tests and the
benchmark. A :class:`DicomStyle` says how a picture is stored — MONOCHROME1 or 2, 8-16 bits
stored, signed or not, a rescale slope / intercept, window tags (full-range, absent or
SIGMOID), the transfer syntax (uncompressed explicit / implicit VR, RLE Lossless,
JPEG-lossless SV1, JPEG 2000 lossless) and whether the file has the Part 10 preamble — and
:func:`write_dicom` chooses the stored values so that the DICOM grayscale pipeline (modality
LUT -> VOI -> MONOCHROME1 inversion) gives the picture back (up to an affine map, which the
preprocessing's percentile stretch removes; a SIGMOID window gives a monotone remapping
instead, as such files do in practice). Needs the ``dicom`` extra.

Every file is a valid instance of its IOD as ``dciodvfy`` (dicom3tools) checks it: the DX
For Presentation or CR image with its patient, study, series, equipment and image modules.
Type 2 attributes the writer cannot know (patient birth date and sex, study date, accession
number, referring physician, manufacturer, ...) are present and empty, as the standard
allows; nothing about a patient is invented. A DX image's modality rescale is the identity
(the DX IOD enumerates slope 1, intercept 0), so styles with other rescales are CR's.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

SYNTAXES = ("explicit", "implicit", "rle", "jpeg-lossless", "jpeg2000-lossless")
WINDOWS = ("full", "none", "sigmoid")
DX_CLASS = "1.2.840.10008.5.1.4.1.1.1.1"  # Digital X-Ray Image Storage - For Presentation
CR_CLASS = "1.2.840.10008.5.1.4.1.1.1"    # Computed Radiography Image Storage


@dataclass(frozen=True)
class DicomStyle:
    """How a picture is stored in DICOM.

    Attributes
    ----------
    photometric : {"MONOCHROME2", "MONOCHROME1"}
    bits_stored : int in [8, 16]
        BitsAllocated is 8 for 8 bits, else 16.
    signed : bool
        PixelRepresentation 1 (two's complement), stored values centred on 0.
    rescale : (slope, intercept) or None
        Modality rescale; None writes no RescaleSlope / RescaleIntercept.
    window : {"full", "none", "sigmoid"}
        "full": WindowCenter / WindowWidth (LINEAR) spanning the whole modality range;
        "none": no window tags; "sigmoid": a full-range window with VOILUTFunction SIGMOID.
    syntax : one of :data:`SYNTAXES`
    preamble : bool
        False writes a bare data set (no 128-byte preamble, no ``DICM``, no file meta).
    modality : {"DX", "CR"}
        DX is written as Digital X-Ray Image Storage - For Presentation: its rescale must be
        None or the identity ``(1.0, 0.0)`` to be a valid DX object.
    """

    photometric: str = "MONOCHROME2"
    bits_stored: int = 16
    signed: bool = False
    rescale: tuple[float, float] | None = None
    window: str = "full"
    syntax: str = "explicit"
    preamble: bool = True
    modality: str = "DX"

    def __post_init__(self):
        if self.photometric not in ("MONOCHROME1", "MONOCHROME2"):
            raise ValueError(f"photometric must be MONOCHROME1/2, got {self.photometric!r}")
        if not 8 <= self.bits_stored <= 16:
            raise ValueError(f"bits_stored must be in [8, 16], got {self.bits_stored}")
        if self.window not in WINDOWS or self.syntax not in SYNTAXES:
            raise ValueError(f"window in {WINDOWS}, syntax in {SYNTAXES}; got {self.window!r}, {self.syntax!r}")
        if self.rescale is not None and not self.rescale[0] > 0:
            raise ValueError("rescale slope must be > 0")
        if (not self.preamble or self.signed) and self.syntax not in ("explicit", "implicit"):
            raise ValueError("preamble-less or signed files are written uncompressed only")


def to_unit(picture: np.ndarray) -> np.ndarray:
    """uint8 / uint16 / float [0, 1] (H, W) -> float64 [0, 1]."""
    a = np.asarray(picture)
    if a.ndim != 2:
        raise ValueError(f"expected a greyscale (H, W) picture, got shape {a.shape}")
    if a.dtype == np.uint8:
        return a / 255.0
    if a.dtype == np.uint16:
        return a / 65535.0
    a = a.astype(np.float64)
    if a.size and (a.min() < 0 or a.max() > 1):
        raise ValueError("float pictures must be within [0, 1]")
    return a


def stored_pixels(picture: np.ndarray, style: DicomStyle) -> np.ndarray:
    """The stored values that display ``picture``: int (uint8/uint16/int8/int16) (H, W).

    Integer pictures are bit-shifted to ``bits_stored`` (8-bit into 12 bits is ``g << 4``, as
    converters do, so no value is rounded differently from its neighbours); float pictures
    are quantised to ``2^bits_stored - 1`` levels. MONOCHROME1 stores the complement (the
    reader inverts after VOI); signed storage subtracts 2^(bits-1).
    """
    levels = (1 << style.bits_stored) - 1
    a = np.asarray(picture)
    if a.dtype in (np.uint8, np.uint16) and a.ndim == 2:
        shift = style.bits_stored - 8 * a.dtype.itemsize
        q = a.astype(np.int64) << shift if shift >= 0 else a.astype(np.int64) >> -shift
    else:
        q = np.rint(to_unit(a) * levels).astype(np.int64)
    if style.photometric == "MONOCHROME1":
        q = levels - q
    if style.signed:
        q -= 1 << (style.bits_stored - 1)
    bits = 8 if style.bits_stored <= 8 else 16
    return q.astype(f"{'i' if style.signed else 'u'}{bits // 8}")


def _modality_range(style: DicomStyle):
    """The modality-LUT output of the lowest and highest storable value."""
    lo = -(1 << (style.bits_stored - 1)) if style.signed else 0
    hi = lo + (1 << style.bits_stored) - 1
    slope, intercept = style.rescale or (1.0, 0.0)
    return lo * slope + intercept, hi * slope + intercept


def _pixel_module(ds, stored: np.ndarray, style: DicomStyle) -> None:
    ds.Rows, ds.Columns = (int(n) for n in stored.shape)
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = style.photometric
    ds.BitsAllocated = stored.dtype.itemsize * 8
    ds.BitsStored = style.bits_stored
    ds.HighBit = style.bits_stored - 1
    ds.PixelRepresentation = int(style.signed)
    if style.rescale is not None or style.modality == "DX":  # DX: Type 1, slope 1 / intercept 0
        ds.RescaleSlope, ds.RescaleIntercept = (f"{v:g}" for v in (style.rescale or (1.0, 0.0)))
        ds.RescaleType = "US"
    if style.window != "none":
        lo, hi = _modality_range(style)
        if style.window == "full":  # LINEAR: maps lo -> 0 and hi -> 1 exactly (PS3.3 C.11.2.1.2.1)
            ds.WindowCenter, ds.WindowWidth = f"{(lo + hi) / 2 + 0.5:g}", f"{hi - lo + 1:g}"
        else:  # SIGMOID around the middle: monotone, so the picture's order is kept
            ds.WindowCenter, ds.WindowWidth = f"{(lo + hi) / 2:g}", f"{(hi - lo) * 1.5:g}"
            ds.VOILUTFunction = "SIGMOID"
    if style.modality == "DX":
        ds.PresentationLUTShape = "INVERSE" if style.photometric == "MONOCHROME1" else "IDENTITY"


# Type 2 attributes of the patient, study, series and equipment modules: present, empty when
# unknown (PS3.5 7.4.3), never filled with made-up values.
TYPE2_EMPTY = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
               "ReferringPhysicianName", "StudyID", "AccessionNumber", "SeriesNumber", "InstanceNumber",
               "Manufacturer", "PatientOrientation")
LATERALITIES = ("R", "L", "U", "B")
# BodyPartExamined -> its SNOMED CT code for AnatomicRegionSequence (PS3.16 CID 4031 / Annex L):
# a file with a known body part must code it too.
ANATOMY = {"ELBOW": ("16953009", "Elbow joint"), "FINGER": ("7569003", "Finger"), "THUMB": ("76505004", "Thumb"),
           "FOREARM": ("14975008", "Forearm"), "LOWER ARM": ("14975008", "Forearm"), "HAND": ("85562004", "Hand"),
           "HUMERUS": ("85050009", "Humerus"), "UPPER ARM": ("40983000", "Upper arm"), "ARM": ("53120007", "Upper limb"),
           "SHOULDER": ("16982005", "Shoulder"), "WRIST": ("74670003", "Wrist joint"),
           "SCAPHOID": ("30518006", "Bone structure of scaphoid")}


def _anatomy(body_part: str | None) -> list:
    from pydicom.dataset import Dataset

    if body_part not in ANATOMY:
        return []
    item = Dataset()
    item.CodeValue, item.CodeMeaning = ANATOMY[body_part]
    item.CodingSchemeDesignator = "SCT"
    return [item]


def _iod_modules(ds, style: DicomStyle, laterality: str, body_part: str | None) -> None:
    """The attributes the CR / DX For Presentation IODs require beyond the pixels and UIDs."""
    for keyword in TYPE2_EMPTY:
        setattr(ds, keyword, None)
    ds.BurnedInAnnotation = "NO"
    if style.modality == "CR":
        if body_part in ANATOMY:  # Type 3 in CR: one item or absent
            ds.AnatomicRegionSequence = _anatomy(body_part)
        ds.BodyPartExamined = None  # CR Series, Type 2 (the value, when known, is set by the caller)
        ds.ViewPosition = None  # CR Series, Type 2
        ds.Laterality = laterality  # General Series 2C: a paired part without Image Laterality
        return
    ds.PresentationIntentType = "FOR PRESENTATION"
    ds.ImageLaterality = laterality
    ds.LossyImageCompression = "00"
    ds.AnatomicRegionSequence = _anatomy(body_part)  # Type 2 in DX: empty only when unknown
    # Sign -1: higher values mean less beam intensity (more attenuation: bone bright) in the
    # stored MONOCHROME2 picture; MONOCHROME1 stores the complement.
    ds.PixelIntensityRelationship = "LIN"
    ds.PixelIntensityRelationshipSign = -1 if style.photometric == "MONOCHROME2" else 1
    ds.ImagerPixelSpacing = ["0.2", "0.2"]  # nominal: a drawn picture has no detector
    ds.PatientOrientation = ["L", "F"]  # Type 1C for DX; nominal: the limb's long axis runs down the picture
    ds.DetectorType = None
    ds.AcquisitionContextSequence = []


def make_dataset(picture: np.ndarray, style: DicomStyle = DicomStyle(), *, study_uid: str, series_uid: str,
                 sop_uid: str, body_part: str | None = None, tags: dict | None = None, laterality: str = "U"):
    """A pydicom Dataset (uncompressed) that displays ``picture``.

    Parameters
    ----------
    picture : ndarray (H, W), uint8 / uint16 / float in [0, 1]
    style : DicomStyle
    study_uid, series_uid, sop_uid : str
    body_part : str, optional
        BodyPartExamined.
    tags : dict, optional
        More elements by keyword (e.g. ``{"PatientID": "synth-00042"}``); they replace the
        empty Type 2 values.
    laterality : {"R", "L", "U", "B"}
        ImageLaterality (DX) or Laterality (CR). The IODs have no "unknown": ``"U"``
        (unpaired) is the default converters write when they do not know.
    """
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

    sop_class = DX_CLASS if style.modality == "DX" else CR_CLASS
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
    ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian if style.syntax == "implicit" else ExplicitVRLittleEndian
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, sop_uid
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
    ds.Modality = style.modality
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    if laterality not in LATERALITIES:
        raise ValueError(f"laterality must be one of {LATERALITIES}, got {laterality!r}")
    _iod_modules(ds, style, laterality, body_part)
    if body_part is not None:
        ds.BodyPartExamined = body_part
    for keyword, value in (tags or {}).items():
        setattr(ds, keyword, value)
    stored = stored_pixels(picture, style)
    _pixel_module(ds, stored, style)
    ds.PixelData = stored.astype(stored.dtype.newbyteorder("<"), copy=False).tobytes()
    return ds


def _compress(ds, style: DicomStyle) -> None:
    """Re-encode the pixel data in place for the compressed syntaxes."""
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEG2000Lossless, JPEGLosslessSV1, RLELossless

    if style.syntax == "rle":
        ds.compress(RLELossless, generate_instance_uid=False)
    elif style.syntax == "jpeg2000-lossless":
        ds.compress(JPEG2000Lossless, generate_instance_uid=False)
    elif style.syntax == "jpeg-lossless":
        from murakit.data.jpeg_lossless import encode

        words = np.frombuffer(ds.PixelData, dtype=f"<u{ds.BitsAllocated // 8}").reshape(ds.Rows, ds.Columns)
        ds.PixelData = encapsulate([encode(words.astype(np.uint16), style.bits_stored)])
        ds["PixelData"].VR = "OB"
        ds.file_meta.TransferSyntaxUID = JPEGLosslessSV1


def write_dicom(path, picture: np.ndarray, style: DicomStyle = DicomStyle(), **ids) -> Path:
    """Write ``picture`` as a DICOM file (see :func:`make_dataset` for ``ids``); returns the path.

    The file is written to a temporary name and renamed into place.
    """
    import pydicom

    from edge.atomic import atomic_path

    ds = make_dataset(picture, style, **ids)
    if style.syntax in ("rle", "jpeg-lossless", "jpeg2000-lossless"):
        _compress(ds, style)
    path = Path(path)
    with atomic_path(path) as tmp:
        if style.preamble:
            ds.save_as(tmp, enforce_file_format=True)
        else:
            del ds.file_meta  # a bare data set, as some PACS exports and old archives hold
            pydicom.dcmwrite(tmp, ds, implicit_vr=style.syntax == "implicit", little_endian=True)
    return path


def random_style(rng: np.random.Generator, compressed: tuple = (), shape=(512, 512)) -> DicomStyle:
    """A style drawn for the synthetic set: a mix of what PACS exports look like.

    Parameters
    ----------
    rng : numpy Generator
    compressed : tuple of str
        Compressed syntaxes available on this machine (see :func:`available_syntaxes`).
    shape : (int, int)
        The picture's size; openjpeg cannot encode sides below 64 px with its defaults.
    """
    if min(shape) < 64:
        compressed = tuple(c for c in compressed if c != "jpeg2000-lossless")
    style = DicomStyle(
        photometric="MONOCHROME1" if rng.random() < 0.35 else "MONOCHROME2",
        bits_stored=int(rng.choice([12, 16, 10, 14], p=[0.45, 0.35, 0.1, 0.1])),
        rescale=None if rng.random() < 0.4 else (float(rng.choice([1.0, 0.5, 2.0])),
                                                  float(rng.choice([0.0, -1024.0, 100.0]))),
        window=str(rng.choice(WINDOWS, p=[0.55, 0.35, 0.10])),
        modality="DX" if rng.random() < 0.7 else "CR")
    if style.modality == "DX":  # the DX For Presentation IOD: identity rescale, a VOI window
        style = replace(style, rescale=None, window="full" if style.window == "none" else style.window)
    r = rng.random()
    if compressed and r < 0.35:
        style = replace(style, syntax=str(rng.choice(list(compressed))))
    elif r < 0.45:
        style = replace(style, syntax="implicit")
    return style


def available_syntaxes() -> tuple:
    """Compressed syntaxes murakit can both write and read back here (RLE needs nothing extra;
    JPEG-lossless needs pylibjpeg-libjpeg to read; JPEG 2000 needs pylibjpeg-openjpeg both ways)."""
    from pydicom.pixels import get_decoder, get_encoder
    from pydicom.uid import JPEG2000Lossless, JPEGLosslessSV1, RLELossless

    out = []
    if get_decoder(RLELossless).is_available and get_encoder(RLELossless).is_available:
        out.append("rle")
    if get_decoder(JPEGLosslessSV1).is_available:
        out.append("jpeg-lossless")
    if get_decoder(JPEG2000Lossless).is_available and get_encoder(JPEG2000Lossless).is_available:
        out.append("jpeg2000-lossless")
    return tuple(out)
