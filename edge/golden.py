"""Golden sets: the outputs a model gave in the lab, checked again on a device.

A golden set proves that a model file still gives the outputs it gave in the lab::

    golden/<model stem>/manifest.json                 the model's card, tolerances, cases
    golden/<model stem>/test_data_set_N/source.png    the original image (source.dcm for DICOM)
    golden/<model stem>/test_data_set_N/input_0.pb    the model input (TensorProto)
    golden/<model stem>/test_data_set_N/output_K.pb   the reference outputs (TensorProto)

Tensors are read and written by :mod:`edge.protobuf` (the edge has no ``onnx`` package).

Verification runs each case twice: "runtime" feeds the recorded ``input_0.pb`` to the model
(isolates the runtime / hardware), "pipeline" starts from the source image and goes through
the edge preprocessing (catches preprocessing drift). Both must match the recorded outputs
within the tolerances of :func:`tolerances_for`. The manifest must record the model's own card
and exactly those tolerances: a golden set of another model, or a manifest edited to loosen a
tolerance, is refused. A case whose source image is missing fails (it is not skipped).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edge.errors import EdgeError
from edge.protobuf import sha256_file, tensor_from_bytes, tensor_to_bytes

MANIFEST = "manifest.json"
SOURCE = "source.png"
FORMAT_VERSION = 2  # 2: the manifest records the model card; tolerances follow tolerances_for()
FLOAT_TOLERANCE = 1e-4  # float32 models: max |diff| per output, runtime and pipeline
# Outputs whose values are not in [0, 1]: the input gate's score is a logit of magnitude ~1-30
# summed over hundreds of whitened features, so float32 rounding alone moves it by ~1e-5 x its
# size (5e-5 measured Keras vs ONNX); 1e-3 is still far below any gate decision's margin.
OUTPUT_TOLERANCE = {"gate": 1e-3}
INT8_FACTOR, INT8_MARGIN = 2.0, 1e-3
FLOAT_RULE = "float model: max |diff| <= 1e-4 on every output (the input gate's score: 1e-3)"
INT8_RULE = ("INT8 model: per output, 2 x the largest |INT8 - float| seen on these cases at export "
             "+ 1e-3 (the recorded agreement; a new device may move INT8 rounding by as much as "
             "quantization moved the float outputs)")
_SAFE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")

class GoldenError(EdgeError):
    """A golden folder that is missing, malformed or does not belong to the model."""


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


def float_tolerance(name: str) -> float:
    """The max |diff| a float32 model's output ``name`` may drift (:data:`OUTPUT_TOLERANCE`)."""
    return OUTPUT_TOLERANCE.get(name, FLOAT_TOLERANCE)


def tolerances_for(card, output_names) -> dict:
    """The tolerance murakit sets for each output of a model with this card.

    float32: :data:`FLOAT_TOLERANCE`. int8: ``2 x agreement + 1e-3`` per output, where the
    agreement (largest |INT8 - float| on the golden cases at export) is recorded in the
    INT8 file's own card, ``metrics["golden_agreement"]``.
    """
    if card.precision == "float32":
        return {n: float_tolerance(n) for n in output_names}
    agreement = card.metrics.get("golden_agreement")
    if not isinstance(agreement, dict) or set(agreement) != set(output_names):
        raise GoldenError("the INT8 model's card lacks its golden agreement (metrics.golden_agreement); "
                          "re-export it with `murakit export`")
    return {n: INT8_FACTOR * float(agreement[n]) + INT8_MARGIN for n in output_names}


def _manifest_error(path, what: str) -> GoldenError:
    return GoldenError(f"{path}: malformed golden manifest ({what})")


def _check_manifest(manifest, path) -> dict:
    """Types and shape of a manifest; GoldenError naming the first problem."""
    if not isinstance(manifest, dict):
        raise _manifest_error(path, f"a JSON object expected, got {type(manifest).__name__}")
    for key, kind in (("model_sha256", str), ("output_names", list), ("tolerances", dict), ("cases", list),
                      ("card", dict), ("input_name", str)):
        if not isinstance(manifest.get(key), kind):
            raise _manifest_error(path, f"{key!r} missing or not a {kind.__name__}")
    names = manifest["output_names"]
    if not names or not all(isinstance(n, str) for n in names):
        raise _manifest_error(path, "output_names must be a list of names")
    for n in names:
        t = manifest["tolerances"].get(n)
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t) or t < 0:
            raise _manifest_error(path, f"tolerance of {n!r} missing or not a finite number >= 0")
    if not manifest["cases"]:
        raise _manifest_error(path, "no cases")
    for i, case in enumerate(manifest["cases"]):
        if not isinstance(case, dict) or not isinstance(case.get("dir"), str) or not _SAFE_NAME.fullmatch(case["dir"]):
            raise _manifest_error(path, f"case {i} has no valid 'dir'")
        src = case.get("source_file", SOURCE)
        if not isinstance(src, str) or not _SAFE_NAME.fullmatch(src):
            raise _manifest_error(path, f"case {i} has an invalid 'source_file'")
    return manifest


def read_manifest(golden_dir) -> dict:
    """Load and check ``manifest.json`` of a golden folder (GoldenError when missing or malformed)."""
    from edge.config import parse_json

    path = Path(golden_dir) / MANIFEST
    if not Path(golden_dir).is_dir():
        raise GoldenError(f"{golden_dir}: no golden folder here")
    try:
        manifest = parse_json(path.read_bytes(), str(path))
    except FileNotFoundError:
        raise GoldenError(f"{golden_dir}: not a golden folder (no {MANIFEST})") from None
    except (OSError, ValueError, UnicodeDecodeError) as e:
        raise GoldenError(f"{path}: unreadable manifest ({e})") from None
    if isinstance(manifest, dict) and manifest.get("format") != FORMAT_VERSION:
        raise GoldenError(f"{path}: golden format {manifest.get('format')!r}, this murakit reads "
                          f"{FORMAT_VERSION}; re-export the model with `murakit export`")
    return _check_manifest(manifest, path)


def read_golden(golden_dir):
    """Read a whole golden folder.

    Returns
    -------
    manifest : dict
    cases : list of GoldenCase, in manifest order (``source`` is the expected source path,
        which may not exist: verification then fails that case)
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
        cases.append(GoldenCase(d, load_tensor(d / "input_0.pb"), outputs, src, entry))
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
    note: str = ""


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


def max_abs_diff(a, b) -> float:
    """Largest |a - b| in float64; ``inf`` when the shapes differ, 0 for empty arrays."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        return float("inf")
    return float(np.max(np.abs(a - b))) if a.size else 0.0


def _within(diffs: dict, tolerances: dict) -> bool:
    return all(v <= float(tolerances[k]) for k, v in diffs.items())


def check_matches_model(manifest: dict, predictor, model_path) -> None:
    """Refuse a golden folder recorded for another model, or with edited tolerances."""
    from edge.card import ModelCard
    from edge.errors import ModelError

    digest = sha256_file(model_path)
    if manifest["model_sha256"] != digest:
        raise GoldenError(
            f"golden set was recorded for another model file "
            f"(manifest {manifest.get('model', '?')} sha256 {str(manifest['model_sha256'])[:12]}..., "
            f"this model {digest[:12]}...)")
    try:
        card = ModelCard.from_dict(manifest["card"])
    except ModelError as e:
        raise GoldenError(f"golden manifest: {e}") from None
    if card != predictor.card:
        diff = sorted(k for k, v in card.to_dict().items() if predictor.card.to_dict()[k] != v)
        raise GoldenError(f"golden set records another model card (differs in {', '.join(diff)})")
    if list(manifest["output_names"]) != list(predictor.output_names):
        raise GoldenError(f"golden outputs {manifest['output_names']} do not match the model's "
                          f"{predictor.output_names}")
    if manifest["input_name"] != predictor.input_name:
        raise GoldenError(f"golden input {manifest['input_name']!r} does not match the model's "
                          f"{predictor.input_name!r}")
    want = tolerances_for(predictor.card, predictor.output_names)
    got = {k: float(manifest["tolerances"][k]) for k in predictor.output_names}
    if any(not math.isclose(got[k], want[k], rel_tol=1e-9, abs_tol=0.0) for k in want):
        raise GoldenError(f"golden manifest tolerances {got} are not murakit's {want} (edited?)")


def _check_input_shape(case: GoldenCase, predictor) -> None:
    """A recorded input the model cannot take (shape, or not float32 as every murakit model
    takes) makes the golden folder unusable (exit 2)."""
    expected = predictor.session.get_inputs()[0].shape
    got = case.input.shape
    ok = len(got) == len(expected) and got[0] >= 1 and all(
        not isinstance(e, int) or e == g for e, g in zip(expected[1:], got[1:]))
    if not ok:
        raise GoldenError(f"{case.directory / 'input_0.pb'}: input of shape {list(got)}, the model takes {expected}")
    if case.input.dtype != np.float32:
        raise GoldenError(f"{case.directory / 'input_0.pb'}: input of type {case.input.dtype}, the model takes float32")


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
        ``passed`` is False when any output of any case exceeds its tolerance, or a case's
        source image is missing.

    Raises
    ------
    GoldenError
        Missing / malformed folder, a folder recorded for another model or with tolerances
        other than murakit's, or recorded inputs the model cannot take.
    """
    golden_dir = Path(golden_dir) if golden_dir else default_golden_dir(predictor.model_path)
    manifest, cases = read_golden(golden_dir)
    check_matches_model(manifest, predictor, predictor.model_path)
    tol = {k: float(manifest["tolerances"][k]) for k in predictor.output_names}
    for c in cases:
        _check_input_shape(c, predictor)
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

    return source is None or not source.is_file() or not is_dicom_file(source) \
        or importlib.util.find_spec("pydicom") is not None


def _verify_case(predictor, case: GoldenCase, tol: dict, readable: bool = True) -> CaseResult:
    """Runtime check always; pipeline check from the source image (a missing source fails)."""
    from edge.errors import EdgeError, first_line

    try:
        got = predictor.run(case.input)
    except Exception as e:  # noqa: BLE001  the runtime rejected a recorded input
        raise GoldenError(f"{case.directory.name}: the model cannot run the recorded input ({first_line(e)})") from None
    runtime = {k: max_abs_diff(got[k], v) for k, v in case.outputs.items()}
    input_diff, pipeline, note = None, None, ""
    if case.source is None or not case.source.is_file():
        note = f"source image {case.source.name if case.source else SOURCE} is missing"
    elif readable:
        try:
            x = predictor.model_input(predictor.preprocess(case.source))
            input_diff = max_abs_diff(x, case.input)
            got = predictor.run(x)
            pipeline = {k: max_abs_diff(got[k], v) for k, v in case.outputs.items()}
        except EdgeError as e:
            note = f"source image unusable ({first_line(e)})"
    passed = not note and _within(runtime, tol) and (pipeline is None or _within(pipeline, tol))
    return CaseResult(case.directory.name, input_diff, runtime, pipeline, passed, note)


def format_report(report: VerifyReport) -> str:
    """A plain-text table: one row per case, then the verdict."""
    names = list(report.tolerances)
    head = ["case", "input |d|"] + [f"{n} runtime" for n in names] + [f"{n} pipeline" for n in names] + ["ok"]
    rows = [head]
    for c in report.cases:
        fmt = lambda v: "-" if v is None else f"{v:.2e}"
        rows.append([c.name, fmt(c.input_diff)] + [fmt(c.runtime.get(n)) for n in names]
                    + [fmt((c.pipeline or {}).get(n)) for n in names]
                    + ["yes" if c.passed else f"FAIL: {c.note}" if c.note else "DRIFT"])
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = ["  ".join(v.ljust(w) for v, w in zip(r, widths)) for r in rows]
    tol = ", ".join(f"{k} <= {v:g}" for k, v in report.tolerances.items())
    verdict = "PASS" if report.passed else "FAIL"
    lines += [f"note: {n}" for n in report.notes]
    lines.append(f"{verdict}: {sum(c.passed for c in report.cases)}/{len(report.cases)} cases within "
                 f"tolerance (max |diff|: {tol})")
    return "\n".join(lines)

