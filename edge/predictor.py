"""Run an exported murakit model with onnxruntime: image file -> probability (+ CAM).

The model file describes itself: its model card (:mod:`edge.card`, in ``metadata_props``)
carries the preprocessing config, threshold, label names, model kind and input kind. The
predictor reads them from the model and never falls back to defaults of its own, so the device
preprocesses exactly as training did.

Loading refuses, with one :class:`~edge.errors.ModelError` line, a file that is not ONNX, has no
valid card, whose graph does not match the hash in its card (a damaged or edited file), or that
cannot run at all: a warm-up inference on a blank input must give finite probabilities of the
right shape. At prediction time a non-finite or out-of-range probability is an error for that
input, never a label.

Supported model kinds:

* ``input = image`` (the CNN, float or INT8): input float32 (B, S, S, 1) in [0, 1];
  outputs ``probability`` (B, 1) and, when present, ``cam`` (B, h, w).
* ``input = hog`` (the HOG + SVM baseline): the image is preprocessed, turned into HOG
  features with :mod:`edge.hog` (config in the card), and the model maps float32 (B, D)
  features to ``probability``.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edge.card import ModelCard
from edge.dicom import DicomInfo, is_dicom_file, read_dicom_info
from edge.errors import ImageError, ModelError, first_line
from edge.loader import is_image_file
from edge.mura import part_from_path
from edge.preprocess import preprocess, to_model_input
from edge.protobuf import graph_sha256
from edge.trust import (
    DEFAULT_OPERATING_POINT,
    calibrate,
    check_gate_mode,
    check_operating_point,
    gate_verdict,
    raw_threshold,
)

MAX_MODEL_BYTES = 2 * 1024 ** 3  # protobuf's own limit for one ONNX file
MAX_THREADS = 256


@dataclass
class Prediction:
    """One image's answer. ``cam`` is the raw (h, w) map or None (baseline / not requested).

    ``score`` is the model's raw output, ``probability`` the calibrated one (:mod:`edge.trust`);
    both are None, and ``label`` too, for a view the input gate refused. ``gate`` is the gate's
    verdict (None: the model has no gate, or ``--gate off``).
    """

    path: str
    probability: float | None
    label: str | None
    threshold: float
    preprocess_ms: float
    inference_ms: float
    image: np.ndarray | None = field(default=None, repr=False)
    cam: np.ndarray | None = field(default=None, repr=False)
    dicom: DicomInfo | None = field(default=None, repr=False)
    score: float | None = None
    gate: dict | None = None
    operating_point: str = DEFAULT_OPERATING_POINT
    part: str | None = None
    part_predicted: str | None = None
    part_probability: float | None = None
    part_probs: np.ndarray | None = field(default=None, repr=False)
    part_labels: list | None = field(default=None, repr=False)

    def __post_init__(self):
        if self.score is None and self.probability is not None and self.gate is None:
            self.score = self.probability  # an uncalibrated answer: the raw output is the probability

    @property
    def refused(self) -> bool:
        """True when the input gate refused this view (it has no probability)."""
        return self.gate is not None and self.probability is None

    def view_dict(self) -> dict:
        """The per-view keys shared by image answers and a study's ``views``."""
        d = {"path": self.path, "probability": self.probability, "score": self.score, "label": self.label}
        if self.gate is not None:
            d["gate"] = self.gate
        d.update(dicom_fields(self.dicom, view=True))
        if self.part and "part" not in d:
            d["part"] = self.part
        if self.part_predicted is not None:
            d.update(part_predicted=self.part_predicted, part_probability=round(self.part_probability, 6))
        return d

    def to_dict(self) -> dict:
        d = self.view_dict()
        return {"path": d.pop("path"), "type": "image", **d, "threshold": self.threshold,
                "operating_point": self.operating_point,
                "preprocess_ms": round(self.preprocess_ms, 3), "inference_ms": round(self.inference_ms, 3)}


@dataclass
class StudyPrediction:
    """A study (folder of views): the mean of its scored views' raw scores (MURA protocol),
    calibrated by the study calibrator. Views the gate refused are listed but not averaged;
    with none left the study has no probability and no label."""

    path: str
    probability: float | None
    label: str | None
    threshold: float
    views: list
    study_uid: str | None = None
    score: float | None = None
    operating_point: str = DEFAULT_OPERATING_POINT

    def __post_init__(self):
        if self.score is None:
            self.score = self.probability

    @property
    def part(self) -> str | None:
        """The MURA part of the study's views (DICOM header, else path) when they agree, else None."""
        parts = {v.dicom.part for v in self.views if v.dicom is not None and v.dicom.part}
        parts = parts or {v.part for v in self.views if v.part}
        return parts.pop() if len(parts) == 1 else None

    @property
    def preprocess_ms(self) -> float:
        return sum(v.preprocess_ms for v in self.views)

    @property
    def inference_ms(self) -> float:
        return sum(v.inference_ms for v in self.views)

    def part_prediction(self) -> dict:
        """``part_predicted`` / ``part_probability`` of the study: the part of highest mean
        probability over its scored views ({} when the model has no part head)."""
        views = [v for v in self.views if v.part_probs is not None and not v.refused]
        if not views:
            return {}
        mean = np.mean([v.part_probs for v in views], axis=0)
        k = int(np.argmax(mean))
        return {"part_predicted": views[0].part_labels[k], "part_probability": round(float(mean[k]), 6)}

    def to_dict(self) -> dict:
        ids = {"study_uid": self.study_uid} if self.study_uid else {}
        ids.update({"part": self.part} if self.part else {})
        ids.update(self.part_prediction())
        return {"path": self.path, "type": "study", **ids, "probability": self.probability, "score": self.score,
                "label": self.label, "threshold": self.threshold, "operating_point": self.operating_point,
                "n_views": len([v for v in self.views if not v.refused]),
                "views": [v.view_dict() for v in self.views],
                "preprocess_ms": round(self.preprocess_ms, 3), "inference_ms": round(self.inference_ms, 3)}


def dicom_fields(info: DicomInfo | None, view: bool) -> dict:
    """The non-identifying DICOM keys of a JSON result: study_uid, sop_uid (views), part (when it
    maps to a MURA part). Empty for PNG/JPEG."""
    if info is None:
        return {}
    out = {"study_uid": info.study_uid}
    if view:
        out["sop_uid"] = info.sop_uid
    if info.part:
        out["part"] = info.part
    return out


def read_model_bytes(model_path) -> bytes:
    """The bytes of a model file, with one-line errors for missing / empty / huge files."""
    path = Path(model_path)
    if not path.is_file():
        raise ModelError(f"{path}: no such model file")
    size = path.stat().st_size
    if size == 0:
        raise ModelError(f"{path}: model file is empty")
    if size > MAX_MODEL_BYTES:
        raise ModelError(f"{path}: {size:,} bytes is above the {MAX_MODEL_BYTES:,}-byte ONNX limit")
    try:
        return path.read_bytes()
    except OSError as e:
        raise ModelError(f"{path}: cannot read ({e.strerror or e})") from None


def open_session(model, threads: int | None = None, name: str = "model"):
    """Create an onnxruntime CPU session, turning every load failure into one ModelError line.

    Parameters
    ----------
    model : bytes, str or Path
        The ONNX file's bytes, or its path.
    threads : int, optional
        intra-op threads, 1..MAX_THREADS (None = onnxruntime's default, all cores).
    name : str
        What to call the model in messages.
    """
    import onnxruntime as ort

    data = model if isinstance(model, (bytes, bytearray)) else read_model_bytes(model)
    opts = ort.SessionOptions()
    opts.log_severity_level = 3  # warnings about unused initializers are noise on a device
    if threads is not None:
        if isinstance(threads, bool) or not isinstance(threads, int) or not 1 <= threads <= MAX_THREADS:
            raise ModelError(f"--threads must be an integer in [1, {MAX_THREADS}], got {threads}")
        opts.intra_op_num_threads = int(threads)
        opts.inter_op_num_threads = 1
    try:
        return ort.InferenceSession(bytes(data), sess_options=opts, providers=["CPUExecutionProvider"])
    except Exception as e:  # noqa: BLE001  onnxruntime raises several private exception types
        raise ModelError(f"{name}: not a loadable ONNX model ({first_line(e, 200)})") from None


def read_card_from_session(session, name: str = "model") -> ModelCard:
    """The model card in an onnxruntime session's metadata (ModelError when absent/invalid)."""
    try:
        return ModelCard.from_props(session.get_modelmeta().custom_metadata_map)
    except ModelError as e:
        raise ModelError(f"{name}: {e}") from None


def check_weights_hash(data: bytes, card: ModelCard, name: str = "model") -> None:
    """Refuse a file whose graph is not the one its card was written for."""
    try:
        digest = graph_sha256(data)
    except ValueError as e:
        raise ModelError(f"{name}: not an ONNX model ({e})") from None
    if digest != card.weights_sha256:
        raise ModelError(f"{name}: the model's graph does not match the hash in its card (damaged or "
                         f"edited file: {digest[:12]}... vs {card.weights_sha256[:12]}...)")


class Predictor:
    """An exported murakit model ready to score images.

    Parameters
    ----------
    model_path : str or Path
        ``.onnx`` file written by ``murakit export`` (CNN float / INT8, or baseline).
    threads : int, optional
        onnxruntime intra-op threads.
    gate : {"refuse", "warn", "off"}
        What to do with a view the input gate flags (:mod:`edge.trust`): no answer (refuse),
        an answer and a ``gate`` verdict with ``passed: false`` (warn), or ignore the gate (off).
    operating_point : str, optional
        Name of one of the card's operating points (default ``youden``, the card's threshold).

    Attributes
    ----------
    card : ModelCard
        The model's card; ``config``, ``threshold``, ``labels``, ``kind``, ``input_kind`` and
        ``hog`` are its fields.

    Raises
    ------
    ModelError
        Not ONNX, truncated, damaged (hash), no valid model card, or not runnable.
    """

    def __init__(self, model_path, threads: int | None = None, gate: str = "refuse",
                 operating_point: str | None = None):
        self.model_path = Path(model_path)
        name = str(self.model_path)
        self.gate_mode = check_gate_mode(gate)
        data = read_model_bytes(self.model_path)
        self.session = open_session(data, threads, name)
        self.card = read_card_from_session(self.session, name)
        self.operating_point = check_operating_point(self.card, operating_point)
        check_weights_hash(data, self.card, name)
        self.kind, self.input_kind = self.card.kind, self.card.input
        self.config, self.threshold = self.card.preprocess, self.card.threshold
        self.labels, self.hog = self.card.labels, self.card.hog
        self.input_name = self.session.get_inputs()[0].name
        self.output_names = [o.name for o in self.session.get_outputs()]
        if "probability" not in self.output_names:
            raise ModelError(f"{name}: model has no 'probability' output ({self.output_names})")
        self._warm_up(name)

    @property
    def metadata(self) -> dict:
        """The card as a JSON-able dict (what ``GET /v1/model`` and reports show)."""
        return self.card.to_dict()

    def _warm_up(self, name: str) -> None:
        """One inference on a blank image: a model that cannot run fails now, not per image."""
        if len(self.session.get_inputs()) != 1:
            raise ModelError(f"{name}: a murakit model has one input, this one has {len(self.session.get_inputs())}")
        blank = np.zeros((2, self.config.size, self.config.size), np.uint8)  # batch 2: no fixed batch
        try:
            out = self.run(self.model_input(blank))
        except Exception as e:  # noqa: BLE001  shape / type errors of a malformed graph
            raise ModelError(f"{name}: the model cannot run on {self.config.size} px input "
                             f"({first_line(e, 160)})") from None
        p = np.asarray(out["probability"])
        if p.shape not in ((2, 1), (2,), (2, 2)):
            raise ModelError(f"{name}: probability output has shape {p.shape}, expected (batch, 1)")
        if "cam" in out and np.asarray(out["cam"]).ndim != 3:
            raise ModelError(f"{name}: cam output has shape {np.asarray(out['cam']).shape}, expected (batch, h, w)")

    @property
    def has_cam(self) -> bool:
        """True when the model outputs a class activation map."""
        return "cam" in self.output_names

    @property
    def has_gate(self) -> bool:
        """True when the model has an input gate (a ``gate`` output and its threshold in the card)."""
        return self.card.gate is not None and "gate" in self.output_names

    def label_for(self, probability: float, part: str | None = None) -> str:
        """Label name for a raw score: abnormal when strictly above the operating point's threshold."""
        return self.labels[int(probability > self.raw_threshold(part))]

    def raw_threshold(self, part: str | None = None) -> float:
        """The operating point's threshold on the raw score (its per-part one when ``part`` has one)."""
        return raw_threshold(self.card, self.operating_point, part)

    def answer(self, path: str, outputs: dict, i: int, preprocess_ms: float = 0.0, inference_ms: float = 0.0,
               dicom: DicomInfo | None = None, src=None) -> Prediction:
        """The answer for row ``i`` of a batch's outputs: gate verdict, calibrated probability,
        label at the operating point (a ModelError when the model's output is not in [0, 1])."""
        gate = gate_verdict(self.card, outputs["gate"][i]) if self.has_gate and self.gate_mode != "off" else None
        part = (dicom.part if dicom is not None and dicom.part else None) or part_from_path(path)
        seen = self.part_of(outputs, i)
        t = self.raw_threshold(part or seen.get("part_predicted"))
        shown = calibrate(self.card, t, "image")
        if gate is not None and not gate["passed"] and self.gate_mode == "refuse":
            return Prediction(path, None, None, shown, preprocess_ms, inference_ms, dicom=dicom, gate=gate,
                              operating_point=self.operating_point, part=part)
        raw = checked_probability(self.probabilities(outputs)[i], path if src is None else src)
        return Prediction(path, calibrate(self.card, raw, "image"), self.labels[int(raw > t)], shown,
                          preprocess_ms, inference_ms, dicom=dicom, score=raw, gate=gate,
                          operating_point=self.operating_point, part=part, **seen)

    def part_of(self, outputs: dict, i: int) -> dict:
        """``part_predicted``, ``part_probability`` and ``part_probs`` of row ``i`` ({} without a part head)."""
        if "part" not in outputs or not self.card.part_labels:
            return {}
        probs = np.asarray(outputs["part"][i], np.float64).reshape(-1)
        if probs.shape != (len(self.card.part_labels),) or not np.all(np.isfinite(probs)):
            return {}
        k = int(np.argmax(probs))
        return {"part_predicted": self.card.part_labels[k], "part_probability": float(probs[k]), "part_probs": probs,
                "part_labels": self.card.part_labels}

    def study_answer(self, path: str, views: list, study_uid: str | None = None) -> StudyPrediction:
        """A study's answer from its views' answers: the mean raw score of the views the gate let
        through, calibrated by the study calibrator (None when every view was refused)."""
        result = StudyPrediction(path, None, None, 0.0, views, study_uid, operating_point=self.operating_point)
        t = self.raw_threshold(result.part or result.part_prediction().get("part_predicted"))
        result.threshold = calibrate(self.card, t, "study")
        scored = [v.score for v in views if not v.refused]
        if scored:
            result.score = float(np.mean(scored))
            result.probability = calibrate(self.card, result.score, "study")
            result.label = self.labels[int(result.score > t)]
        return result

    def preprocess(self, src) -> np.ndarray:
        """Image (path / bytes / array) -> uint8 (S, S) with the model's own config."""
        return preprocess(src, self.config)

    def model_input(self, u8: np.ndarray) -> np.ndarray:
        """uint8 (S, S) or (N, S, S) -> the model's input tensor with a batch axis.

        Returns float32 (N, S, S, 1) in [0, 1] for image models, float32 (N, D) HOG
        features for the baseline.
        """
        u8 = np.asarray(u8)
        batch = u8[None] if u8.ndim == 2 else u8
        if self.input_kind == "hog":
            from edge.hog import hog_batch

            return np.asarray(hog_batch(batch, self.hog), dtype=np.float32)
        return to_model_input(batch)

    def run(self, x: np.ndarray) -> dict:
        """Run the model on a prepared batch; returns {output name: ndarray}."""
        outs = self.session.run(None, {self.input_name: np.ascontiguousarray(x, dtype=np.float32)})
        return dict(zip(self.output_names, outs))

    @staticmethod
    def probabilities(outputs: dict) -> np.ndarray:
        """float64 (N,) abnormality probabilities from the ``probability`` output.

        Accepts (N,), (N, 1) or a two-column (N, 2) [p(normal), p(abnormal)] output.
        """
        p = np.asarray(outputs["probability"], dtype=np.float64)
        if p.ndim == 2 and p.shape[1] == 2:
            p = p[:, 1]
        return p.reshape(len(p), -1)[:, 0] if p.ndim > 1 else p

    def predict(self, src, cam: bool = False) -> Prediction:
        """Score one image. ``cam=True`` keeps the preprocessed image and the raw CAM."""
        t0 = time.perf_counter()
        u8 = self.preprocess(src)
        x = self.model_input(u8)
        t1 = time.perf_counter()
        out = self.run(x)
        t2 = time.perf_counter()
        pred = self.answer(str(src) if not isinstance(src, np.ndarray) else "<array>", out, 0,
                           (t1 - t0) * 1e3, (t2 - t1) * 1e3, dicom_info(src), src=src)
        if cam and self.has_cam and not pred.refused:
            pred.image, pred.cam = u8, out["cam"][0]
        return pred

    def predict_study(self, directory, cam: bool = False) -> StudyPrediction:
        """Score every view in a study folder and average them (MURA protocol).

        Raises
        ------
        ImageError
            No images in the folder, or any view unreadable (a partial average would not be
            the protocol's study score; the message names the bad view).
        """
        return self.predict_group(StudyGroup(Path(directory), None, study_images(directory)), cam=cam)

    def predict_group(self, group: StudyGroup, cam: bool = False) -> StudyPrediction:
        """Score the views of one :class:`StudyGroup` and average them (MURA protocol)."""
        preds = [self.predict(v, cam=cam) for v in group.views]
        return self.study_answer(str(group.directory), preds, group.study_uid)


def valid_probabilities(p: np.ndarray) -> np.ndarray:
    """bool mask of probabilities a label may be given to: finite and within [0, 1]."""
    p = np.asarray(p, dtype=np.float64)
    return np.isfinite(p) & (p >= 0.0) & (p <= 1.0)


def checked_probability(p, src) -> float:
    """``p`` as a float, or a ModelError for this input when it is NaN, infinite or outside [0, 1]."""
    if not valid_probabilities(p):
        where = "<array>" if isinstance(src, np.ndarray) else str(src)
        raise ModelError(f"{where}: the model returned probability {float(p)!r}, not a number in [0, 1] "
                         "(damaged model?); no label given")
    return float(p)


def study_images(directory) -> list:
    """Sorted image files directly in a folder: .png/.jpg/.jpeg/.dcm, and DICOM by content
    (extension-less PACS exports); hidden and AppleDouble ``._*`` files are not images."""
    directory = Path(directory)
    if not directory.is_dir():
        raise ImageError(f"{directory}: not a directory")
    views = sorted(p for p in directory.iterdir() if p.is_file() and is_image_file(p))
    if not views:
        raise ImageError(f"{directory}: no images (.png, .jpg, .jpeg, DICOM) in this directory")
    return views


def dicom_info(src) -> DicomInfo | None:
    """Non-identifying DICOM facts of an image file (header only), None for anything else."""
    if not isinstance(src, (str, os.PathLike)) or not is_dicom_file(src):
        return None
    return read_dicom_info(src)


@dataclass
class StudyGroup:
    """The views of one study in a folder.

    ``study_uid`` is the DICOM StudyInstanceUID, None for the folder's PNG/JPEG views (and
    DICOM views without one), which form the folder's own study. ``skipped`` lists
    ``(path, reason)`` for DICOM objects in the folder that are not images (SR, KOS, PR, ...).
    """

    directory: Path
    study_uid: str | None
    views: list
    skipped: list = field(default_factory=list)


def study_groups(directory) -> list:
    """Split a folder's views into studies: DICOM views by StudyInstanceUID, the rest together.

    Returns
    -------
    list of StudyGroup
        The folder's own group first (when it has views), then one per StudyInstanceUID in
        order of first appearance. Non-image DICOM objects are listed in the first group's
        ``skipped``.

    Raises
    ------
    ImageError
        Not a folder, no images, a DICOM header pydicom cannot parse, or pydicom missing.
    """
    directory = Path(directory)
    plain, by_uid, skipped = [], {}, []
    for path in study_images(directory):
        info = dicom_info(path)
        if info is not None and (not info.rows or not info.columns):
            skipped.append((path, f"DICOM {info.sop_class} object, not an image"))
        elif info is None or info.study_uid is None:
            plain.append(path)
        else:
            by_uid.setdefault(info.study_uid, []).append(path)
    groups = ([StudyGroup(directory, None, plain)] if plain else []) + \
        [StudyGroup(directory, uid, views) for uid, views in by_uid.items()]
    if not groups:
        raise ImageError(f"{directory}: no images in this directory (only non-image DICOM objects)")
    groups[0].skipped = skipped
    return groups
