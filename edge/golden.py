"""Golden outputs in the ONNX test-data layout, read and checked without the ``onnx`` package.

A golden set proves that a model file still gives the outputs it gave in the lab::

    golden/<model stem>/manifest.json
    golden/<model stem>/test_data_set_N/source.png    the original image (source.dcm for DICOM)
    golden/<model stem>/test_data_set_N/input_0.pb    the model input (TensorProto)
    golden/<model stem>/test_data_set_N/output_K.pb   the reference outputs (TensorProto)

The edge cannot import ``onnx`` and onnxruntime does not parse TensorProto files, so this module
reads and writes the few TensorProto fields the layout needs (dims, data_type, name, raw_data;
float_data/int32_data/int64_data are also read). The protobuf wire format is small: every field
is a varint key ``(field_number << 3) | wire_type`` followed by a varint or a length-prefixed
payload. The writer emits fields in field-number order, exactly as ``onnx.numpy_helper`` does,
so its bytes are identical (a test checks this).

Verification runs each case twice: "runtime" feeds the recorded ``input_0.pb`` to the model
(isolates the runtime / hardware), "pipeline" starts from ``source.png`` and goes through the
edge preprocessing (catches preprocessing drift). Both must match the recorded outputs within
the manifest's per-output absolute tolerances.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edge.errors import EdgeError

MANIFEST = "manifest.json"
SOURCE = "source.png"
FORMAT_VERSION = 1

# TensorProto.DataType codes (onnx.proto) <-> numpy dtypes.
_DTYPES = {1: np.float32, 2: np.uint8, 3: np.int8, 6: np.int32, 7: np.int64, 11: np.float64}
_CODES = {np.dtype(v): k for k, v in _DTYPES.items()}


class GoldenError(EdgeError):
    """A golden folder that is missing, malformed or does not belong to the model."""


# ---------------------------------------------------------------- protobuf wire format
def _varint(value: int) -> bytes:
    value &= (1 << 64) - 1  # negative int64 are ten-byte two's complement on the wire
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _read_varint(buf: bytes, pos: int):
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise ValueError("truncated varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def _signed64(v: int) -> int:
    return v - (1 << 64) if v >= 1 << 63 else v


def _fields(buf: bytes):
    """Yield (field_number, wire_type, value) for a serialized message.

    value is an int for varint fields and bytes for length-delimited / fixed fields.
    """
    pos = 0
    while pos < len(buf):
        key, pos = _read_varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _read_varint(buf, pos)
        elif wire == 2:
            length, pos = _read_varint(buf, pos)
            value = buf[pos:pos + length]
            if len(value) != length:
                raise ValueError("truncated field")
            pos += length
        elif wire in (1, 5):
            width = 8 if wire == 1 else 4
            value = buf[pos:pos + width]
            if len(value) != width:
                raise ValueError("truncated field")
            pos += width
        else:
            raise ValueError(f"unsupported wire type {wire}")
        yield number, wire, value


def _packed_varints(payload: bytes) -> list:
    out, pos = [], 0
    while pos < len(payload):
        v, pos = _read_varint(payload, pos)
        out.append(v)
    return out


# ---------------------------------------------------------------- TensorProto
def tensor_to_bytes(array: np.ndarray, name: str = "") -> bytes:
    """Serialize an array as an ONNX TensorProto (dims, data_type, name, raw_data).

    Parameters
    ----------
    array : ndarray of float32, float64, uint8, int8, int32 or int64, any shape
    name : str
        Tensor name (omitted when empty, as onnx does).

    Returns
    -------
    bytes
        Identical to ``onnx.numpy_helper.from_array(array, name).SerializeToString()``.
    """
    array = np.asarray(array)
    code = _CODES.get(array.dtype)
    if code is None:
        raise ValueError(f"unsupported tensor dtype {array.dtype}")
    out = bytearray()
    for d in array.shape:  # field 1, repeated int64, unpacked (proto2 default)
        out += b"\x08" + _varint(int(d))
    out += b"\x10" + _varint(code)  # field 2: data_type
    if name:
        raw_name = name.encode("utf-8")
        out += b"\x42" + _varint(len(raw_name)) + raw_name  # field 8: name
    raw = np.ascontiguousarray(array).astype(array.dtype.newbyteorder("<"), copy=False).tobytes()
    out += b"\x4a" + _varint(len(raw)) + raw  # field 9: raw_data
    return bytes(out)


def tensor_from_bytes(buf: bytes):
    """Parse a serialized TensorProto.

    Returns
    -------
    name : str
    array : ndarray with the tensor's dtype and dims

    Raises
    ------
    ValueError
        Malformed bytes, an unsupported data type, or a size that does not match the dims.
    """
    dims, code, name, raw, typed = [], None, "", None, []
    for number, wire, value in _fields(bytes(buf)):
        if number == 1:
            dims += _packed_varints(value) if wire == 2 else [value]
        elif number == 2:
            code = value
        elif number == 8:
            name = value.decode("utf-8")
        elif number == 9:
            raw = value
        elif number in (4, 5, 7):  # float_data / int32_data / int64_data
            typed.append((number, wire, value))
        elif number == 14 and value == 1:  # data_location EXTERNAL
            raise ValueError("tensors with external data are not supported")
    if code not in _DTYPES:
        raise ValueError(f"unsupported TensorProto data_type {code}")
    dtype = np.dtype(_DTYPES[code])
    dims = [_signed64(d) for d in dims]
    data = _decode_data(raw, typed, dtype)
    if data.size != int(np.prod(dims, dtype=np.int64)):
        raise ValueError(f"tensor {name!r}: {data.size} values for dims {dims}")
    return name, data.reshape(dims)


def _decode_data(raw, typed, dtype: np.dtype) -> np.ndarray:
    if raw is not None:
        return np.frombuffer(raw, dtype=dtype.newbyteorder("<")).astype(dtype)
    values = []
    for number, wire, value in typed:
        if number == 4:  # float_data: packed fixed32, or one fixed32 per field
            values += np.frombuffer(value, dtype="<f4").tolist()
        else:  # int32_data / int64_data: varints, negatives sign-extended to 64 bits
            values += [_signed64(v) for v in (_packed_varints(value) if wire == 2 else [value])]
    return np.asarray(values, dtype=dtype)


def save_tensor(path, array: np.ndarray, name: str = "") -> None:
    """Write ``array`` as a TensorProto ``.pb`` file."""
    Path(path).write_bytes(tensor_to_bytes(array, name))


def load_tensor(path) -> np.ndarray:
    """Read a TensorProto ``.pb`` file into an array (raises GoldenError when malformed)."""
    path = Path(path)
    try:
        return tensor_from_bytes(path.read_bytes())[1]
    except OSError as e:
        raise GoldenError(f"{path}: cannot read ({e.strerror or e})") from None
    except ValueError as e:
        raise GoldenError(f"{path}: not a valid TensorProto file ({e})") from None


# ---------------------------------------------------------------- golden folders
def sha256_file(path) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def default_golden_dir(model_path) -> Path:
    """``MODEL_DIR/golden/<stem>``: where export writes a model's golden set."""
    model_path = Path(model_path)
    return model_path.parent / "golden" / model_path.stem  # cnn.int8.onnx -> golden/cnn.int8


@dataclass
class GoldenCase:
    """One recorded case: its folder, model input and reference outputs (by output name)."""

    directory: Path
    input: np.ndarray
    outputs: dict
    source: Path | None = None
    info: dict = field(default_factory=dict)


def read_manifest(golden_dir) -> dict:
    """Load ``manifest.json`` of a golden folder (GoldenError when missing or malformed)."""
    path = Path(golden_dir) / MANIFEST
    if not Path(golden_dir).is_dir():
        raise GoldenError(f"{golden_dir}: no golden folder here")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise GoldenError(f"{golden_dir}: not a golden folder (no {MANIFEST})") from None
    except (OSError, ValueError) as e:
        raise GoldenError(f"{path}: unreadable manifest ({e})") from None
    for key in ("model_sha256", "output_names", "tolerances", "cases"):
        if key not in manifest:
            raise GoldenError(f"{path}: manifest lacks {key!r}")
    return manifest


def read_golden(golden_dir):
    """Read a whole golden folder.

    Returns
    -------
    manifest : dict
    cases : list of GoldenCase, in manifest order
    """
    golden_dir = Path(golden_dir)
    manifest = read_manifest(golden_dir)
    cases = []
    for entry in manifest["cases"]:
        d = golden_dir / entry["dir"]
        if not d.is_dir():
            raise GoldenError(f"{d}: case folder listed in the manifest is missing")
        outputs = {n: load_tensor(d / f"output_{k}.pb") for k, n in enumerate(manifest["output_names"])}
        src = d / entry.get("source_file", SOURCE)
        cases.append(GoldenCase(d, load_tensor(d / "input_0.pb"), outputs, src if src.exists() else None, entry))
    return manifest, cases


def write_case(case_dir, model_input: np.ndarray, outputs: list, input_name: str,
               output_names: list, source_bytes: bytes | None = None, source_file: str = SOURCE) -> None:
    """Write one ``test_data_set_N`` folder (the caller makes it atomic via the parent).

    Parameters
    ----------
    case_dir : Path
    model_input : ndarray, the model's input with its batch axis (1, ...)
    outputs : list of ndarray, in ``output_names`` order
    input_name : str
    output_names : list of str
    source_bytes : bytes, optional
        The original image file, copied verbatim as ``source_file``.
    """
    case_dir = Path(case_dir)
    case_dir.mkdir(parents=True, exist_ok=True)
    save_tensor(case_dir / "input_0.pb", model_input, input_name)
    for k, (name, arr) in enumerate(zip(output_names, outputs)):
        save_tensor(case_dir / f"output_{k}.pb", arr, name)
    if source_bytes is not None:
        (case_dir / source_file).write_bytes(source_bytes)


# ---------------------------------------------------------------- verification
@dataclass
class CaseResult:
    """Drift of one golden case. ``runtime``/``pipeline`` map output name -> max |diff|."""

    name: str
    input_diff: float | None
    runtime: dict
    pipeline: dict | None
    passed: bool


@dataclass
class VerifyReport:
    """Outcome of :func:`verify_golden` over a whole golden folder."""

    model: str
    golden: str
    tolerances: dict
    cases: list
    notes: list = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return bool(self.cases) and all(c.passed for c in self.cases)

    def worst(self) -> dict:
        """Largest max |diff| per output over runtime and pipeline checks."""
        out = {}
        for c in self.cases:
            for d in (c.runtime, c.pipeline or {}):
                for k, v in d.items():
                    out[k] = max(out.get(k, 0.0), v)
        return out


def _max_diff(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        return float("inf")
    return float(np.max(np.abs(a - b))) if a.size else 0.0


def _within(diffs: dict, tolerances: dict) -> bool:
    return all(v <= float(tolerances[k]) for k, v in diffs.items())


def check_matches_model(manifest: dict, predictor, model_path) -> None:
    """Refuse a golden folder recorded for another model (hash, input and output names)."""
    digest = sha256_file(model_path)
    if manifest["model_sha256"] != digest:
        raise GoldenError(
            f"golden set was recorded for another model file "
            f"(manifest {manifest.get('model', '?')} sha256 {manifest['model_sha256'][:12]}..., "
            f"this model {digest[:12]}...)")
    if list(manifest["output_names"]) != list(predictor.output_names):
        raise GoldenError(f"golden outputs {manifest['output_names']} do not match the model's "
                          f"{predictor.output_names}")
    if manifest.get("input_name", predictor.input_name) != predictor.input_name:
        raise GoldenError(f"golden input {manifest['input_name']!r} does not match the model's "
                          f"{predictor.input_name!r}")


def verify_golden(predictor, golden_dir=None) -> VerifyReport:
    """Rerun a golden set through ``predictor`` and measure drift.

    Parameters
    ----------
    predictor : edge.predictor.Predictor
    golden_dir : str or Path, optional
        Defaults to :func:`default_golden_dir` of the predictor's model.

    Returns
    -------
    VerifyReport
        ``passed`` is False when any output of any case exceeds its tolerance.

    Raises
    ------
    GoldenError
        Missing / malformed folder, or a folder recorded for another model.
    """
    golden_dir = Path(golden_dir) if golden_dir else default_golden_dir(predictor.model_path)
    manifest, cases = read_golden(golden_dir)
    check_matches_model(manifest, predictor, predictor.model_path)
    tol = {k: float(v) for k, v in manifest["tolerances"].items()}
    readable = [_readable(c.source) for c in cases]
    results = [_verify_case(predictor, c, tol, ok) for c, ok in zip(cases, readable)]
    notes = []
    if not all(readable):
        from edge.dicom import EXTRA_HINT

        notes.append(f"{readable.count(False)} DICOM source(s): pipeline check skipped, runtime checked "
                     f"(reading DICOM needs the dicom extra: {EXTRA_HINT})")
    return VerifyReport(str(predictor.model_path), str(golden_dir), tol, results, notes)


def _readable(source) -> bool:
    """False for a DICOM source when pydicom (the dicom extra) is not installed."""
    import importlib.util

    from edge.dicom import is_dicom_file

    return source is None or not is_dicom_file(source) or importlib.util.find_spec("pydicom") is not None


def _verify_case(predictor, case: GoldenCase, tol: dict, readable: bool = True) -> CaseResult:
    got = predictor.run(case.input)
    runtime = {k: _max_diff(got[k], v) for k, v in case.outputs.items()}
    input_diff = pipeline = None
    if case.source is not None and readable:
        x = predictor.model_input(predictor.preprocess(case.source))
        input_diff = _max_diff(x, case.input)
        got = predictor.run(x)
        pipeline = {k: _max_diff(got[k], v) for k, v in case.outputs.items()}
    passed = _within(runtime, tol) and (pipeline is None or _within(pipeline, tol))
    return CaseResult(case.directory.name, input_diff, runtime, pipeline, passed)


def format_report(report: VerifyReport) -> str:
    """A plain-text table: one row per case, then the verdict."""
    names = list(report.tolerances)
    head = ["case", "input |d|"] + [f"{n} runtime" for n in names] + [f"{n} pipeline" for n in names] + ["ok"]
    rows = [head]
    for c in report.cases:
        fmt = lambda v: "-" if v is None else f"{v:.2e}"
        rows.append([c.name, fmt(c.input_diff)] + [fmt(c.runtime.get(n)) for n in names]
                    + [fmt((c.pipeline or {}).get(n)) for n in names] + ["yes" if c.passed else "DRIFT"])
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = ["  ".join(v.ljust(w) for v, w in zip(r, widths)) for r in rows]
    tol = ", ".join(f"{k} <= {v:g}" for k, v in report.tolerances.items())
    verdict = "PASS" if report.passed else "FAIL"
    lines += [f"note: {n}" for n in report.notes]
    lines.append(f"{verdict}: {sum(c.passed for c in report.cases)}/{len(report.cases)} cases within "
                 f"tolerance (max |diff|: {tol})")
    return "\n".join(lines)

