"""A JSON answer for a DICOM study -> a TID 1500 Structured Report (+ CAM Secondary Captures).

The SR is written *from the answer dict* (the one ``edge-predict --json``, ``edge-serve`` and
``murakit score`` give), so what a PACS shows is exactly what the JSON said: the finding, the
probability and threshold, per view the same numbers, and - when the answer carries them - the
operating point and the input gate's verdict (absent from the answer: absent from the SR).

Structure (highdicom: a ``Comprehensive3DSR`` whose content is a ``MeasurementReport``, TID
1500, with one ``MeasurementsAndQualitativeEvaluations`` group, TID 1501, per row):

* observation context: the device observer "murakit" (DCM 121007 Device);
* procedure reported: SCT 168537006 Plain radiography;
* group "study": Finding (DCM 121071, TID 1501's finding type) = Abnormal (SCT 263654008) /
  Normal (SCT 17621005); the coded qualitative evaluation Abnormal (SCT 263654008) = Present
  (SCT 52101004) / Absent (SCT 272519000), IHE AI Results' pattern for a classifier's output;
  Probability (DCM 122157) and Threshold Value (DCM 122411) in UCUM ``1`` (no units); Image
  Quality (DCM 111101) = Inside / Outside operational limits of the device (DCM 128607 /
  128619) when a gate verdict is known; source images = every view;
* one group per view: the same items for that view, its source image reference (SOP class
  and instance UID of the radiograph);
* every group's Algorithm Identification (TID 4019): name, version, parameters
  ``weights_sha256=...``, ``precision=...``, ``operating_point=...`` (when known).

The SR belongs to the source study: same Study Instance UID, the patient and study modules
copied from the source (highdicom does this from the evidence, as the standard requires), a
new series. Its UIDs are derived from the study, the views, the model's weights hash and the
result, so the same result written twice is the same SOP instance (a PACS keeps one copy).

The Secondary Captures are the model's CAM overlay of each view, RGB, ``DERIVED\\SECONDARY``,
BurnedInAnnotation YES, with "NOT FOR DIAGNOSTIC USE" burned into the pixels and written in
the series description, derivation description and image comments.

Privacy: patient values go into the SR and SC only because the standard requires the patient
and study modules to match the source; nothing here prints or logs them.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

from edge.errors import EdgeError

MANUFACTURER = "murakit"
SR_SERIES_NUMBER = 9901
SC_SERIES_NUMBER = 9902
NOT_FOR_DIAGNOSIS = "NOT FOR DIAGNOSTIC USE"
SC_SIZE = 512  # overlays are drawn at the model's input size; enlarged so the warning is legible

# (code value, coding scheme designator, code meaning): standard codes only, listed in docs/dicom.md.
CODES = {
    "report": ("126000", "DCM", "Imaging Measurement Report"),
    "procedure": ("168537006", "SCT", "Plain radiography"),
    "device": ("121007", "DCM", "Device"),
    "finding": ("121071", "DCM", "Finding"),  # the concept name highdicom gives TID 1501's finding type
    "abnormal": ("263654008", "SCT", "Abnormal"),
    "normal": ("17621005", "SCT", "Normal"),
    "present": ("52101004", "SCT", "Present"),
    "absent": ("272519000", "SCT", "Absent"),
    "probability": ("122157", "DCM", "Probability"),
    "threshold": ("122411", "DCM", "Threshold Value"),
    "unity": ("1", "UCUM", "no units"),
    "gate": ("111101", "DCM", "Image Quality"),
    "gate_passed": ("128607", "DCM", "Inside operational limits of the device"),
    "gate_refused": ("128619", "DCM", "Outside operational limits of the device"),
}


def _code(key: str):
    from highdicom.sr import CodedConcept

    value, scheme, meaning = CODES[key]
    return CodedConcept(value, scheme, meaning)


def derived_uid(*parts) -> str:
    """A deterministic UID under 2.25 (a 128-bit number, PS3.5 B.2) from ``parts``."""
    digest = hashlib.sha256("\x1f".join(["murakit-result", *map(str, parts)]).encode()).digest()
    return f"2.25.{int.from_bytes(digest[:16], 'big')}"


# ---------------------------------------------------------------- the answer's views
def answer_views(answer: dict) -> list:
    """The per-view dicts of an answer: a study's ``views``, or the image answer itself."""
    return list(answer["views"]) if answer.get("type") == "study" else [answer]


NOT_DICOM = "not DICOM, so no SR is written (an SR references the source's Study and SOP Instance UIDs)"


def is_dicom_answer(answer: dict) -> bool:
    """True when every view of the answer has the DICOM UIDs an SR must reference."""
    views = answer_views(answer)
    return bool(views) and all(v.get("sop_uid") and v.get("study_uid", answer.get("study_uid")) for v in views)


def check_dicom_answer(answer: dict) -> None:
    """Refuse (one :class:`EdgeError` line) an answer that has no DICOM UIDs to reference."""
    if not is_dicom_answer(answer):
        raise EdgeError(f"{answer.get('path', '<input>')}: not a DICOM study, so no SR is written "
                        "(an SR references the source's Study and SOP Instance UIDs; PNG/JPEG have none)")


def _gate_passed(item: dict) -> bool | None:
    gate = item.get("gate")
    if isinstance(gate, dict) and isinstance(gate.get("passed"), bool):
        return gate["passed"]
    return None


def study_gate(answer: dict) -> bool | None:
    """The study's gate verdict: the answer's own, else all views passed; None when unknown."""
    own = _gate_passed(answer)
    if own is not None:
        return own
    verdicts = [_gate_passed(v) for v in answer_views(answer)]
    return None if not verdicts or None in verdicts else all(verdicts)


def operating_point(answer: dict) -> str | None:
    op = answer.get("operating_point")
    if op is None:
        return None
    return op if isinstance(op, str) else json.dumps(op, sort_keys=True, separators=(",", ":"))


# ---------------------------------------------------------------- the SR
def _algorithm(card, answer: dict):
    from highdicom.sr import AlgorithmIdentification

    params = [f"weights_sha256={card.weights_sha256}", f"precision={card.precision}"]
    if operating_point(answer) is not None:
        params.append(f"operating_point={operating_point(answer)}")
    return AlgorithmIdentification(name=f"murakit {card.kind} ({card.arch})", version=str(card.version),
                                   parameters=params)


def _evaluations(abnormal: bool, probability: float, threshold: float, gate: bool | None) -> tuple:
    from highdicom.sr import Measurement, QualitativeEvaluation

    measurements = [Measurement(_code("probability"), float(probability), _code("unity")),
                    Measurement(_code("threshold"), float(threshold), _code("unity"))]
    evaluations = [QualitativeEvaluation(_code("abnormal"), _code("present" if abnormal else "absent"))]
    if gate is not None:
        evaluations.append(QualitativeEvaluation(_code("gate"), _code("gate_passed" if gate else "gate_refused")))
    return measurements, evaluations


def _group(label: str, uid: str, sources: list, probability, threshold, gate, algorithm):
    from highdicom.sr import MeasurementsAndQualitativeEvaluations, SourceImageForMeasurementGroup, TrackingIdentifier

    abnormal = float(probability) > float(threshold)  # the answer's own rule: strictly above
    measurements, evaluations = _evaluations(abnormal, probability, threshold, gate)
    refs = [SourceImageForMeasurementGroup(ds.SOPClassUID, ds.SOPInstanceUID) for ds in sources]
    return MeasurementsAndQualitativeEvaluations(
        tracking_identifier=TrackingIdentifier(uid=uid, identifier=label), algorithm_id=algorithm,
        finding_type=_code("abnormal" if abnormal else "normal"),
        measurements=measurements, qualitative_evaluations=evaluations, source_images=refs)


def result_key(answer: dict, card) -> str:
    """What makes a result this result: study, views, model, numbers (the SR's UIDs derive from it)."""
    views = [(v.get("sop_uid"), round(float(v["probability"]), 12)) for v in answer_views(answer)]
    return json.dumps([answer.get("study_uid") or answer_views(answer)[0].get("study_uid"), views,
                       card.weights_sha256, round(float(answer["threshold"]), 12), operating_point(answer),
                       study_gate(answer)], sort_keys=True)


def build_sr(answer: dict, sources: list, card):
    """The TID 1500 SR of one study's answer.

    Parameters
    ----------
    answer : dict
        The JSON answer (study or single DICOM image).
    sources : list of pydicom Dataset
        The source views' headers, in the answer's view order (pixels not needed).
    card : edge.card.ModelCard

    Returns
    -------
    highdicom.sr.Comprehensive3DSR
    """
    import highdicom as hd

    views = answer_views(answer)
    if len(sources) != len(views):
        raise EdgeError(f"{answer.get('path')}: {len(views)} views in the answer, {len(sources)} source files")
    for v, ds in zip(views, sources):
        if v.get("sop_uid") != ds.SOPInstanceUID:
            raise EdgeError(f"{v.get('path')}: the answer's SOP Instance UID differs from the file's")
    key = result_key(answer, card)
    algorithm = _algorithm(card, answer)
    threshold = float(answer["threshold"])
    groups = [_group("study", derived_uid(key, "study"), sources, answer["probability"], threshold,
                     study_gate(answer), algorithm)]
    for k, (v, ds) in enumerate(zip(views, sources), 1):
        groups.append(_group(f"view {k}", derived_uid(key, "view", k), [ds], v["probability"],
                             float(v.get("threshold", threshold)), _gate_passed(v), algorithm))
    observer = hd.sr.ObserverContext(
        observer_type=_code("device"),
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=derived_uid("device", card.weights_sha256), name="murakit", manufacturer_name=MANUFACTURER,
            model_name=f"{card.kind} {card.arch}"[:64]))
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=observer),
        procedure_reported=_code("procedure"), imaging_measurements=groups, title=_code("report"))
    sr = hd.sr.Comprehensive3DSR(
        evidence=sources, content=report[0], series_instance_uid=derived_uid(key, "sr-series"),
        series_number=SR_SERIES_NUMBER, sop_instance_uid=derived_uid(key, "sr"), instance_number=1,
        manufacturer=MANUFACTURER, is_complete=True, is_final=False, is_verified=False)
    sr.SeriesDescription = "murakit AI result (unverified)"
    return sr


# ---------------------------------------------------------------- the Secondary Captures
def _burn_warning(rgb: np.ndarray) -> np.ndarray:
    """A black banner with NOT FOR DIAGNOSTIC USE across the top of the picture."""
    import cv2

    out = rgb.copy()
    h, w = out.shape[:2]
    band = max(14, h // 16)
    out[:band] = 0
    scale = band / 30
    (tw, _), _ = cv2.getTextSize(NOT_FOR_DIAGNOSIS, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    scale *= min(1.0, 0.95 * w / max(tw, 1))
    cv2.putText(out, NOT_FOR_DIAGNOSIS, (max(2, w // 40), int(band * 0.75)), cv2.FONT_HERSHEY_SIMPLEX, scale,
                (255, 255, 255), max(1, band // 14), cv2.LINE_AA)
    return out


def cam_picture(overlay_bgr: np.ndarray) -> np.ndarray:
    """The Secondary Capture's pixels: the BGR CAM overlay as RGB, enlarged, warning burned in."""
    import cv2

    rgb = cv2.cvtColor(np.asarray(overlay_bgr, np.uint8), cv2.COLOR_BGR2RGB)
    h, w = rgb.shape[:2]
    scale = SC_SIZE / max(h, w)
    if scale > 1:
        rgb = cv2.resize(rgb, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_LINEAR)
    return _burn_warning(rgb)


def build_cam_sc(source, overlay_bgr: np.ndarray, card, key: str, index: int):
    """One Secondary Capture of a view's CAM overlay, in the source's study, derived from it."""
    import highdicom as hd
    from pydicom.dataset import Dataset

    orientation = [str(v) for v in (source.get("PatientOrientation") or [])]
    sc = hd.sc.SCImage.from_ref_dataset(
        source, cam_picture(overlay_bgr), "RGB", 8, "PATIENT", series_instance_uid=derived_uid(key, "sc-series"),
        series_number=SC_SERIES_NUMBER, sop_instance_uid=derived_uid(key, "sc", index), instance_number=index,
        manufacturer=MANUFACTURER, patient_orientation=tuple(orientation) if len(orientation) == 2 else ("L", "F"),
        transfer_syntax_uid="1.2.840.10008.1.2.1")
    if len(orientation) != 2:
        sc.PatientOrientation = None  # Type 2C: unknown in the source, so empty here
    side = source.get("ImageLaterality") or source.get("Laterality")
    sc.Laterality = side if side in ("R", "L") else None  # Type 2C for a paired part: the source's side
    sc.ImageType = ["DERIVED", "SECONDARY"]
    sc.BurnedInAnnotation = "YES"
    sc.SeriesDescription = f"murakit CAM overlay - {NOT_FOR_DIAGNOSIS}"
    sc.DerivationDescription = (f"Class activation map of murakit {card.kind} ({card.arch}) "
                                f"weights {card.weights_sha256[:16]} over the preprocessed view; {NOT_FOR_DIAGNOSIS}")
    sc.ImageComments = NOT_FOR_DIAGNOSIS
    ref = Dataset()
    ref.ReferencedSOPClassUID, ref.ReferencedSOPInstanceUID = source.SOPClassUID, source.SOPInstanceUID
    sc.SourceImageSequence = [ref]
    return sc


# Type 2 attributes of the patient and study modules the SR copies from its source: a source
# that omits one (non-conformant, but PACS exports do) lends an empty value, never an invented one.
COPIED_TYPE2 = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
                "ReferringPhysicianName", "StudyID", "AccessionNumber")


def complete_type2(ds):
    """``ds`` with the copied Type 2 attributes present (empty where the source lacks them)."""
    for keyword in COPIED_TYPE2:
        if keyword not in ds:
            setattr(ds, keyword, None)
    return ds


# ---------------------------------------------------------------- files
def read_sources(answer: dict) -> list:
    """The source headers of an answer's views (pydicom, no pixels), in view order."""
    import pydicom

    out = []
    for v in answer_views(answer):
        try:
            out.append(complete_type2(pydicom.dcmread(v["path"], stop_before_pixels=True)))
        except Exception:  # noqa: BLE001  pydicom raises many types; its messages may quote values
            raise EdgeError(f"{v['path']}: cannot re-read the DICOM header for the SR") from None
    return out


def study_results(answer: dict, card, sources: list | None = None, overlays: list | None = None) -> list:
    """The result objects of one study: [SR] + one SC per overlay given (BGR uint8 or None per view)."""
    from edge.pacs import require

    require("highdicom", "pydicom")
    check_dicom_answer(answer)
    sources = read_sources(answer) if sources is None else sources
    out = [build_sr(answer, sources, card)]
    key = result_key(answer, card)
    for k, (src, ov) in enumerate(zip(sources, overlays or []), 1):
        if ov is not None:
            out.append(build_cam_sc(src, ov, card, key, k))
    return out


def write_datasets(datasets: list, out_dir) -> list:
    """Write each object to ``out_dir/<StudyInstanceUID>/<SOPInstanceUID>.dcm`` (write-then-rename;
    the same result twice is the same file)."""
    from edge.atomic import atomic_path

    paths = []
    for ds in datasets:
        folder = Path(out_dir) / str(ds.StudyInstanceUID)
        path = folder / f"{ds.SOPInstanceUID}.dcm"
        try:
            folder.mkdir(parents=True, exist_ok=True)
            with atomic_path(path) as tmp:
                ds.save_as(tmp, enforce_file_format=True)
        except OSError as e:
            raise EdgeError(f"{folder}: cannot write the DICOM result ({e.strerror or e})") from None
        paths.append(path)
    return paths


def write_study_results(answer: dict, card, out_dir, overlays: list | None = None) -> list:
    """:func:`study_results` written into ``out_dir``; returns the paths."""
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise EdgeError(f"--dicom-out {out_dir}: exists and is not a folder")
    return write_datasets(study_results(answer, card, overlays=overlays), out_dir)
