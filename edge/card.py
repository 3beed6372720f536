"""The model card: everything a device must know to use a model, carried inside the model.

One :class:`ModelCard` is written at training time beside the trained model
(``RUN/cnn/card.json``, ``RUN/baseline/card.json``) and carried unchanged into every ONNX file
made from it; only ``precision``, ``metrics``, ``weights_sha256``, ``gate`` and ``part_labels`` (fitted
at export) describe the file itself.
It is the only source of preprocessing for anything that uses the model: export, verify,
bench, explain, ``edge-predict`` and ``edge-serve`` read it, nothing builds metadata by hand.

Inside an ONNX file the card is a set of ``metadata_props``, one per field, each key prefixed
``murakit.`` and each value JSON (strings too), so tools like Netron show it field by field.
Reading is strict: a card from a model file is untrusted input. Unknown or missing fields,
wrong types, non-finite numbers, a threshold outside [0, 1], anything but two distinct label
names, a preprocessing or HOG config out of range -> one :class:`~edge.errors.ModelError`.

Versions: format 2 added ``gate`` (the input gate's threshold, per file), ``calibration``
(view and study calibrators), ``operating_points`` and ``part_labels`` (the body-part output's
columns, per file). A format-1 card (murakit before the
gate, e.g. tests/data/regression/model.onnx) still loads: those fields are None, and such a
model answers every input with no gate verdict and uncalibrated probabilities.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone

from edge.config import parse_json
from edge.errors import ModelError
from edge.hog import HogConfig
from edge.preprocess import PreprocessConfig

CARD_FORMAT = 2
READABLE_FORMATS = (1, 2)
FORMAT_2_FIELDS = ("gate", "calibration", "operating_points", "part_labels")
CALIBRATED = ("image", "study")
PREFIX = "murakit."
INPUT_OF_KIND = {"cnn": "image", "baseline": "hog"}
PRECISIONS = ("float32", "int8")
DEFAULT_LABELS = ("normal", "abnormal")
MAX_NAME = 64  # characters of a label, arch or version string
MAX_METRICS_DEPTH = 6
_HEX = re.compile(r"[0-9a-f]{16,64}")


def utc_now() -> str:
    """The current time as ISO 8601 UTC with seconds, e.g. ``2026-11-26T06:30:00+00:00``."""
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat()


def _short_str(name: str, value, allow_empty: bool = False) -> str:
    if not isinstance(value, str) or len(value) > MAX_NAME or not value.isprintable() \
            or (not value and not allow_empty):
        raise ValueError(f"{name} must be a printable string of 1-{MAX_NAME} characters, got {value!r}")
    return value


def _number(name: str, value, low, high, open_low: bool = False) -> float:
    """A finite int/float (not bool) within [low, high] (None: unbounded; ``open_low``: > low)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or (low is not None and (value <= low if open_low else value < low)) \
            or (high is not None and value > high):
        bounds = f"{'(' if open_low else '['}{low}, {high}]"
        raise ValueError(f"{name} must be a finite number in {bounds}, got {value!r}")
    return float(value)


def _check_json_numbers(name: str, value) -> None:
    """Every number inside ``value`` (dicts / lists / scalars) is finite; no other types."""
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, dict):
            if not all(isinstance(k, str) for k in v):
                raise ValueError(f"{name} keys must be strings")
            stack.extend(v.values())
        elif isinstance(v, list):
            stack.extend(v)
        elif isinstance(v, float) and not math.isfinite(v):
            raise ValueError(f"{name} holds a non-finite number")
        elif not (v is None or isinstance(v, (str, int, float, bool))):
            raise ValueError(f"{name} holds a {type(v).__name__}, not JSON")


@dataclass(frozen=True)
class ModelCard:
    """What a trained murakit model is and how to feed it.

    Attributes
    ----------
    kind : {"cnn", "baseline"}
    input : {"image", "hog"}
        What the graph takes: float32 (B, S, S, 1) images in [0, 1], or float32 (B, D) HOG
        features of the preprocessed image. Fixed by ``kind``.
    preprocess : PreprocessConfig
        How an image file becomes the model input (the training cache's config).
    threshold : float
        Study-level decision threshold in [0, 1], chosen on the validation split; a probability
        strictly above it is the second label.
    labels : (str, str)
        Names of label 0 and label 1 (normal, abnormal).
    arch : str
        Architecture name ("small", "densenet169", ..., "hog-linear-svm").
    model_config : dict
        The architecture's settings (JSON object), enough to rebuild it.
    hog : HogConfig or None
        HOG parameters; required exactly when ``input == "hog"``.
    precision : {"float32", "int8"}
        Of this file's weights.
    metrics : dict
        Measured figures of this file (e.g. ``{"val": {...}, "test": {...}}``), JSON, finite.
    data_fingerprint : str
        Hex hash of the training data: the prepared cache's preprocessing config and index.
    weights_sha256 : str
        Hex SHA-256 of what computes the outputs: the ONNX graph and opsets
        (:func:`edge.protobuf.graph_sha256`) inside an ONNX file, the ``.keras`` file beside it.
    version : str
        murakit version that trained / exported it.
    created : str
        ISO 8601 time of training.
    gate : dict or None
        The input gate of this file (CNN exports): ``{"method", "output": "gate", "threshold",
        "fit": {...}}``; a view whose ``gate`` output is above ``threshold`` is refused. None: no gate.
    calibration : dict or None
        ``{"image": {"method": "platt", "a", "b"}, "study": {...}}``: calibrated probability =
        sigmoid(a * logit(score) + b), a > 0 (monotone: rankings and decisions are unchanged).
        Identity and temperature maps are this format too (a = 1, b = 0; b = 0). Other keys
        (``form``, ``prior``, ``centre``, ``cv_log_loss``: how training chose the map) are a record, unused here.
    operating_points : dict or None
        ``{NAME: {"threshold": t[, "thresholds_by_part": {PART: t}]}}``, thresholds on the raw
        study score, chosen on val; ``threshold`` above is the ``youden`` one.
    part_labels : list of str or None
        Names of the columns of the model's ``part`` output (body-part probabilities), per file.
    """

    kind: str
    preprocess: PreprocessConfig
    threshold: float
    arch: str
    data_fingerprint: str
    weights_sha256: str
    version: str
    input: str = ""
    labels: tuple = DEFAULT_LABELS
    model_config: dict = field(default_factory=dict)
    hog: HogConfig | None = None
    precision: str = "float32"
    metrics: dict = field(default_factory=dict)
    created: str = field(default_factory=utc_now)
    gate: dict | None = None
    calibration: dict | None = None
    operating_points: dict | None = None
    part_labels: list | None = None

    def __post_init__(self):
        try:
            self._validate()
        except (ValueError, TypeError) as e:
            raise ModelError(f"invalid model card: {e}") from None

    def _validate(self) -> None:
        if self.kind not in INPUT_OF_KIND:
            raise ValueError(f"kind must be one of {sorted(INPUT_OF_KIND)}, got {self.kind!r}")
        if self.input == "":
            object.__setattr__(self, "input", INPUT_OF_KIND[self.kind])
        if self.input != INPUT_OF_KIND[self.kind]:
            raise ValueError(f"a {self.kind} model takes input {INPUT_OF_KIND[self.kind]!r}, not {self.input!r}")
        if not isinstance(self.preprocess, PreprocessConfig):
            raise ValueError("preprocess must be a PreprocessConfig")
        t = self.threshold
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not (math.isfinite(t) and 0.0 <= t <= 1.0):
            raise ValueError(f"threshold must be a finite number in [0, 1], got {t!r}")
        object.__setattr__(self, "threshold", float(t))
        self._validate_labels()
        _short_str("arch", self.arch)
        _short_str("version", self.version)
        if not isinstance(self.model_config, dict):
            raise ValueError("model_config must be a JSON object")
        _check_json_numbers("model_config", self.model_config)
        self._validate_hog()
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if not isinstance(self.metrics, dict):
            raise ValueError("metrics must be a JSON object")
        _check_json_numbers("metrics", self.metrics)
        for name in ("data_fingerprint", "weights_sha256"):
            value = getattr(self, name)
            if not (isinstance(value, str) and _HEX.fullmatch(value)):
                raise ValueError(f"{name} must be 16-64 lowercase hex digits, got {value!r}")
        try:
            datetime.fromisoformat(_short_str("created", self.created))
        except ValueError:
            raise ValueError(f"created must be an ISO 8601 time, got {self.created!r}") from None
        self._validate_trust()

    def _validate_trust(self) -> None:
        """gate / calibration / operating_points: JSON objects of finite numbers with the shapes above."""
        if self.part_labels is not None:
            if not isinstance(self.part_labels, (list, tuple)) or len(self.part_labels) < 2:
                raise ValueError(f"part_labels must be a list of >= 2 names, got {self.part_labels!r}")
            object.__setattr__(self, "part_labels", [_short_str("each part label", x) for x in self.part_labels])
            if len(set(self.part_labels)) != len(self.part_labels):
                raise ValueError("part_labels must be distinct")
        for name in ("gate", "calibration", "operating_points"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, dict):
                raise ValueError(f"{name} must be a JSON object or null")
            _check_json_numbers(name, value)
        if self.gate is not None:
            _number("gate.threshold", self.gate.get("threshold"), None, None)
            _short_str("gate.method", self.gate.get("method"))
            if self.gate.get("output") != "gate":
                raise ValueError(f"gate.output must be 'gate', got {self.gate.get('output')!r}")
        if self.calibration is not None:
            if set(self.calibration) != set(CALIBRATED):
                raise ValueError(f"calibration must have exactly {list(CALIBRATED)}")
            for level, c in self.calibration.items():
                if not isinstance(c, dict) or c.get("method") != "platt":
                    raise ValueError(f"calibration.{level} must be a platt calibrator")
                _number(f"calibration.{level}.a", c.get("a"), 0.0, None, open_low=True)
                _number(f"calibration.{level}.b", c.get("b"), None, None)
        for name, op in (self.operating_points or {}).items():
            _short_str("an operating point name", name)
            if not isinstance(op, dict):
                raise ValueError(f"operating point {name!r} must be a JSON object")
            _number(f"operating point {name!r} threshold", op.get("threshold"), 0.0, 1.0)
            if not isinstance(op.get("default", False), bool):
                raise ValueError(f"operating point {name!r} default must be true or false")
            by_part = op.get("thresholds_by_part", {})
            if not isinstance(by_part, dict):
                raise ValueError(f"operating point {name!r} thresholds_by_part must be a JSON object")
            for part, t in by_part.items():
                _number(f"operating point {name!r} threshold of {part}", t, 0.0, 1.0)

    def _validate_labels(self) -> None:
        labels = self.labels
        if not isinstance(labels, (list, tuple)) or len(labels) != 2:
            raise ValueError(f"labels must be a list of two names, got {labels!r}")
        labels = tuple(_short_str("each label", x) for x in labels)
        if labels[0] == labels[1]:
            raise ValueError(f"the two labels must differ, got {list(labels)}")
        object.__setattr__(self, "labels", labels)

    def _validate_hog(self) -> None:
        if self.input != "hog":
            if self.hog is not None:
                raise ValueError("only a hog-input model has a hog config")
            return
        if not isinstance(self.hog, HogConfig):
            raise ValueError("a hog-input model needs its hog config")
        try:
            self.hog.feature_dim(self.preprocess.size)
        except Exception as e:  # noqa: BLE001  ImageError: no block fits the image
            raise ValueError(f"hog config does not fit {self.preprocess.size} px images ({e})") from None

    # ------------------------------------------------------------ conversions
    def to_dict(self) -> dict:
        """A JSON-able dict (configs as dicts, labels as a list)."""
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d["preprocess"] = self.preprocess.to_dict()
        d["hog"] = None if self.hog is None else self.hog.to_dict()
        d["labels"] = list(self.labels)
        d["format"] = CARD_FORMAT
        return d

    @classmethod
    def from_dict(cls, d) -> ModelCard:
        """Strict inverse of :meth:`to_dict`: unknown or missing fields are a ModelError."""
        if not isinstance(d, dict):
            raise ModelError(f"invalid model card: expected a JSON object, got {type(d).__name__}")
        names = {f.name for f in dataclasses.fields(cls)} | {"format"}
        if d.get("format") == 1:  # before the gate: its fields absent, read as None
            names -= set(FORMAT_2_FIELDS)
        unknown, missing = set(d) - names, names - set(d)
        if unknown:
            raise ModelError(f"invalid model card: unknown fields {sorted(unknown)} (a newer murakit?)")
        if missing:
            raise ModelError(f"invalid model card: missing fields {sorted(missing)}")
        if isinstance(d["format"], bool) or d["format"] not in READABLE_FORMATS:
            raise ModelError(f"model card format {d['format']!r} is not supported (this murakit reads "
                             f"{', '.join(map(str, READABLE_FORMATS))})")
        kw = {k: v for k, v in d.items() if k != "format"}
        try:
            kw["preprocess"] = PreprocessConfig.from_dict(kw["preprocess"])
            kw["hog"] = None if kw["hog"] is None else HogConfig.from_dict(kw["hog"])
        except (ValueError, TypeError) as e:
            raise ModelError(f"invalid model card: {e}") from None
        return cls(**kw)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text) -> ModelCard:
        try:
            return cls.from_dict(parse_json(text, "model card"))
        except ValueError as e:
            raise ModelError(str(e)) from None

    def to_props(self) -> dict:
        """``{"murakit.<field>": JSON text}`` for ONNX ``metadata_props``."""
        return {PREFIX + k: json.dumps(v, sort_keys=True) for k, v in self.to_dict().items()}

    @classmethod
    def from_props(cls, props: dict) -> ModelCard:
        """Read a card from ONNX ``metadata_props`` (other keys than ``murakit.*`` are ignored)."""
        mine = {k[len(PREFIX):]: v for k, v in props.items() if k.startswith(PREFIX)}
        if not mine:
            raise ModelError("not a murakit model (no murakit.* metadata); export it with `murakit export`")
        if "format" not in mine:
            raise ModelError("this model was exported by an older murakit (no model card); "
                             "re-export it with `murakit export`")
        d = {}
        for k, text in mine.items():
            try:
                d[k] = parse_json(text, f"murakit.{k}")
            except ValueError as e:
                raise ModelError(f"invalid model card: {e}") from None
        return cls.from_dict(d)

    # ------------------------------------------------------------ comparisons
    def replace(self, **changes) -> ModelCard:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def identity(self) -> dict:
        """The fields every file made from one trained model shares (all but the per-file ones)."""
        d = self.to_dict()
        for per_file in ("precision", "metrics", "weights_sha256", "gate", "part_labels"):
            d.pop(per_file)
        return d

    def differences(self, other: ModelCard) -> list:
        """Names of the identity fields in which two cards differ."""
        a, b = self.identity(), other.identity()
        return sorted(k for k in a if a[k] != b[k])


# ---------------------------------------------------------------- ONNX files
_METADATA_PROPS = 14  # ModelProto.metadata_props; each entry: key = 1, value = 2


def card_from_onnx_bytes(data: bytes, name: str = "model") -> ModelCard:
    """The card in a serialized ONNX model, read without ``onnx`` or onnxruntime."""
    from edge.protobuf import _fields

    props = {}
    try:
        for number, wire, value in _fields(bytes(data)):
            if number == _METADATA_PROPS and wire == 2:
                entry = {n: v for n, w, v in _fields(value) if w == 2}
                props[entry.get(1, b"").decode("utf-8")] = entry.get(2, b"").decode("utf-8")
    except (ValueError, UnicodeDecodeError) as e:
        raise ModelError(f"{name}: not an ONNX model ({e})") from None
    try:
        return ModelCard.from_props(props)
    except ModelError as e:
        raise ModelError(f"{name}: {e}") from None


def read_onnx_card(path) -> ModelCard:
    """The card of an ONNX file on disk (ModelError when unreadable, absent or invalid)."""
    from pathlib import Path

    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ModelError(f"{path}: cannot read ({e.strerror or e})") from None
    return card_from_onnx_bytes(data, str(path))


def attach_card(model, card: ModelCard) -> tuple[bytes, ModelCard]:
    """Make ``card`` the ``murakit.*`` metadata of an ``onnx.ModelProto``: the one writer.

    The card's ``weights_sha256`` is set to the hash of this model's graph
    (:func:`edge.protobuf.graph_sha256`, which excludes metadata), so a device can tell a
    damaged or edited file. ``model`` is modified in place; other metadata_props are kept.

    Returns
    -------
    data : bytes
        The serialized model, ready to be written (atomically) to a file.
    card : ModelCard
        ``card`` with ``weights_sha256`` filled in.
    """
    from edge.protobuf import graph_sha256

    keep = [(p.key, p.value) for p in model.metadata_props if not p.key.startswith(PREFIX)]
    del model.metadata_props[:]
    for key, value in keep:
        model.metadata_props.add(key=key, value=value)
    card = card.replace(weights_sha256=graph_sha256(model.SerializeToString()))
    for key, value in card.to_props().items():
        model.metadata_props.add(key=key, value=value)
    data = model.SerializeToString()
    if graph_sha256(data) != card.weights_sha256:  # protobuf serialisation must be deterministic
        raise ModelError("the model's graph changed while its card was attached; not writing it")
    return data, card


def save_onnx(model, card: ModelCard, path) -> ModelCard:
    """:func:`attach_card`, then write ``path`` atomically; returns the card as written."""
    from edge.atomic import atomic_write

    data, card = attach_card(model, card)
    with atomic_write(path) as f:
        f.write(data)
    return card


def read_card(path) -> ModelCard:
    """Load a ``card.json`` file (ModelError when missing or invalid)."""
    from pathlib import Path

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ModelError(f"{path}: no model card (train the model first)") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ModelError(f"{path}: cannot read the model card ({e})") from None
    try:
        return ModelCard.from_json(text)
    except ModelError as e:
        raise ModelError(f"{path}: {e}") from None
