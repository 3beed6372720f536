"""Static INT8 quantization of the float CNN: the recipes, the accuracy gate and the decision.

Whether INT8 pays depends on the CPU and on the graph, so export does not assume it: it
quantizes the float model with each candidate :class:`Recipe` for this CPU, times every result
side by side with float (:mod:`export.speed`), gates the fastest on validation AUROC, and ships
INT8 only when it is both accurate enough and faster than float at batch 1 and batch 32
(:func:`int8_decision`). What was measured is recorded in export.json.

Why these candidates (measured; the figures are in docs/performance.md, section 3 and "Design
choices and the measurements behind them"):

* activations uint8, weights int8 (U8S8) on x86: the VNNI/AMX integer GEMM path; S8S8 and U8U8
  ran slower there. On Arm, S8S8 is the dot-product (SDOT) path.
* ``reduce_range`` (7-bit weights) only on x86 without VNNI, where the AVX2 ``vpmaddubsw`` path
  saturates 16-bit sums; with VNNI it costs accuracy and buys nothing.
* QDQ and QOperator both: which one wins differs by model (QOperator's Gemm and
  Dequantize ran slower on the small CNN, faster on MobileNetV3-Small at batch 1).
* a variant that keeps convolutions with <= 4 input channels float: on a 1-channel image the
  stem's integer im2col/GEMM is slower than float's direct convolution.
* dynamic quantization is not a candidate: it made the convolutions much slower.

Whatever the recipe, the input gate's own nodes (those only the ``gate`` output depends on: the
pooled statistics, the input statistics, the Mahalanobis/logistic head) stay float
(:func:`gate_only_nodes`). Static quantization calibrates every activation's range on the
calibration images, which are radiographs; a quantized gate head clamps its score at the highest
score a calibration radiograph had, so every non-radiograph scored at most that and the gate
refused nothing (measured on P4_small: INT8 gate scores of val and train radiographs all <= -1.55,
the float ones up to 2.24; docs/trust.md).
"""

from __future__ import annotations

import contextlib
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from export.errors import ExportError
from export.graph import short_names

MAX_AUROC_DROP = 0.01
MAX_LATENCY_RATIO = 1.0  # INT8 must be faster than float (median ratio below this) at every batch size
TIMING_ROUNDS = 5  # interleaved float / INT8 timing rounds of the speed decision
SPEED_BATCHES = (1, 32)
THIN_INPUT = 4  # convolutions reading <= this many channels stay float with Recipe.float_thin_convs


@dataclass(frozen=True)
class Recipe:
    """One way of quantizing a float model with onnxruntime's ``quantize_static``.

    Parameters
    ----------
    name : str
        Short id recorded in export.json (e.g. ``"qdq-u8s8"``).
    format : {"qdq", "qoperator"}
        QuantizeLinear/DequantizeLinear pairs around float ops (fused by onnxruntime) or
        explicit integer operators (QLinearConv, ...).
    activations, weights : {"u8", "s8"}
    per_channel : bool
        One weight scale per output channel (convolutions).
    reduce_range : bool
        7-bit weights (see the module docstring).
    ops : tuple of str or None
        Op types to quantize; None: every op onnxruntime can quantize.
    float_thin_convs : bool
        Keep convolutions with <= :data:`THIN_INPUT` input channels (the stem) float.
    calibration : {"minmax", "percentile", "entropy"}
    """

    name: str
    format: str = "qdq"
    activations: str = "u8"
    weights: str = "s8"
    per_channel: bool = True
    reduce_range: bool = False
    ops: tuple | None = None
    float_thin_convs: bool = False
    calibration: str = "minmax"

    def to_dict(self) -> dict:
        d = asdict(self)
        d["ops"] = list(self.ops) if self.ops is not None else None
        return d


def candidate_recipes(cpu: dict) -> list:
    """The recipes worth measuring on a CPU (see the module docstring for why these).

    Parameters
    ----------
    cpu : dict
        From :func:`edge.cpu.cpu_info` (``machine``, ``features``, ``int8_dot``).

    Returns
    -------
    list of Recipe
    """
    arm = str(cpu.get("machine", "")).lower() in ("aarch64", "arm64")
    act = "s8" if arm else "u8"
    rr = not arm and not cpu.get("int8_dot")  # x86 without VNNI: 7-bit weights avoid saturation
    tag = f"{act}s8" + ("-rr" if rr else "")
    return [Recipe(f"qdq-{tag}", "qdq", act, reduce_range=rr),
            Recipe(f"qoperator-{tag}", "qoperator", act, reduce_range=rr),
            Recipe(f"qdq-{tag}-float-stem", "qdq", act, reduce_range=rr, float_thin_convs=True)]


def even_batch(n: int, batch_size: int) -> int:
    """The largest batch size <= ``batch_size`` that divides ``n`` (>= 1; ``n`` >= 1)."""
    return next(b for b in range(max(1, min(batch_size, n)), 0, -1) if n % b == 0)


class ArrayCalibrationReader:
    """Feeds calibration batches to onnxruntime's ``quantize_static`` in a fixed order.

    Every batch has the same size (:func:`even_batch`): onnxruntime's histogram calibrators
    (Percentile, Entropy) stack the batches' outputs and fail on a shorter last batch
    (onnxruntime issue 18792). MinMax ranges do not depend on the batching.

    Parameters
    ----------
    input_name : str
    x : ndarray float32 (N, S, S, 1)
        Calibration inputs; order is the caller's (deterministic) order.
    batch_size : int
        Upper bound of the batch size.
    """

    def __init__(self, input_name: str, x: np.ndarray, batch_size: int = 16):
        self.input_name, self.x = input_name, x
        self.batch_size = even_batch(len(x), batch_size) if len(x) else batch_size
        self.pos = 0

    def get_next(self):
        if self.pos >= len(self.x):
            return None
        batch = np.ascontiguousarray(self.x[self.pos:self.pos + self.batch_size], np.float32)
        self.pos += self.batch_size
        return {self.input_name: batch}

    def rewind(self):
        self.pos = 0


def thin_convs(model, max_channels: int = THIN_INPUT) -> list:
    """Names of the Conv nodes of an ONNX model that read <= ``max_channels`` channels."""
    init = {t.name: t for t in model.graph.initializer}
    names = []
    for node in model.graph.node:
        w = init.get(node.input[1]) if node.op_type == "Conv" and len(node.input) > 1 else None
        if w is not None and len(w.dims) == 4:
            group = next((a.i for a in node.attribute if a.name == "group"), 1)
            if w.dims[1] * group <= max_channels:
                names.append(node.name)
    return names


def gate_only_nodes(model, output: str = "gate") -> list:
    """Names of the nodes of an ONNX model that only ``output`` depends on (none of the other outputs).

    These are the gate's statistics and head; their activations on non-radiographs lie far
    outside the calibration radiographs' range, so they stay float (see the module docstring).
    An empty list when the model has no such output.
    """
    producer = {o: node for node in model.graph.node for o in node.output}

    def ancestors(names) -> set:
        seen, todo = set(), list(names)
        while todo:
            node = producer.get(todo.pop())
            if node is not None and node.name not in seen:
                seen.add(node.name)
                todo.extend(node.input)
        return seen

    outputs = [o.name for o in model.graph.output]
    if output not in outputs:
        return []
    others = ancestors([o for o in outputs if o != output])
    return sorted(ancestors([output]) - others)


def quantize_int8(float_path, calib_x: np.ndarray, recipe: Recipe | None = None, input_name: str = "image"):
    """Quantize a float ONNX model statically to INT8 with one recipe.

    Parameters
    ----------
    float_path : str or Path
        The float model (its ``murakit.*`` metadata is not carried over).
    calib_x : ndarray float32 (N, S, S, 1)
        Calibration inputs (e.g. 200 train-split images in sorted-path order).
    recipe : Recipe or None
        None: the first candidate for this machine's CPU.
    input_name : str

    Returns
    -------
    onnx.ModelProto
        The INT8 model, without metadata (the caller attaches the card with precision int8).
    """
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if recipe is None:
        from edge.cpu import cpu_info

        recipe = candidate_recipes(cpu_info())[0]
    if len(calib_x) == 0:
        raise ExportError("no calibration images for INT8 quantization")
    reader = type("Reader", (ArrayCalibrationReader, CalibrationDataReader), {})(input_name, calib_x)
    types = {"u8": QuantType.QUInt8, "s8": QuantType.QInt8}
    methods = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
               "entropy": CalibrationMethod.Entropy}
    with tempfile.TemporaryDirectory(prefix="murakit-int8-") as tmp, _root_log_errors_only():
        prep, out = Path(tmp) / "prep.onnx", Path(tmp) / "int8.onnx"
        try:
            # shape inference + constant folding first: without them MobileNetV3-Small's QDQ
            # model ran slower (docs/performance.md)
            quant_pre_process(str(float_path), str(prep), skip_symbolic_shape=False)
            pre = onnx.load(str(prep))
            exclude = (thin_convs(pre) if recipe.float_thin_convs else []) + gate_only_nodes(pre)
            quantize_static(str(prep), str(out), reader,
                            quant_format=QuantFormat.QDQ if recipe.format == "qdq" else QuantFormat.QOperator,
                            per_channel=recipe.per_channel, reduce_range=recipe.reduce_range,
                            activation_type=types[recipe.activations], weight_type=types[recipe.weights],
                            op_types_to_quantize=list(recipe.ops) if recipe.ops else None,
                            nodes_to_exclude=exclude, calibrate_method=methods[recipe.calibration])
        except Exception as e:  # noqa: BLE001  onnxruntime.quantization raises plain Exceptions
            raise ExportError(f"INT8 quantization failed: {type(e).__name__}: {e}") from None
        model = onnx.load(str(out))
    del model.metadata_props[:]  # the float file's card; the INT8 file gets its own
    short_names(model)
    return model


@contextlib.contextmanager
def _root_log_errors_only():
    """onnxruntime.quantization reports the integer tensors it leaves in float (the CAM placement
    and the gate's index tensors) with ``logging.warning`` on the root logger, which reached the
    user's terminal as a multi-line protobuf dump: keep the root logger at ERROR while it runs."""
    import logging

    root = logging.getLogger()
    level = root.level
    root.setLevel(max(level, logging.ERROR))
    try:
        yield
    finally:
        root.setLevel(level)


def int8_gate(float_probs: np.ndarray, int8_probs: np.ndarray, score, max_drop: float = MAX_AUROC_DROP) -> dict:
    """Compare INT8 with float probabilities on the validation split.

    Parameters
    ----------
    float_probs, int8_probs : ndarray (N,) in [0, 1]
        Image probabilities of the two models on the same images.
    score : callable
        ``score(probs) -> float``: the study-level AUROC of image probabilities.
    max_drop : float
        Largest accepted ``score(float) - score(int8)``.

    Returns
    -------
    dict
        ``accepted`` (bool), ``reason`` ("ok" or why not), ``float_auroc``, ``int8_auroc``, ``auroc_drop``,
        ``max_abs_diff``, ``mean_abs_diff`` (probability), ``n_images``.
    """
    f, q = np.asarray(float_probs, np.float64).ravel(), np.asarray(int8_probs, np.float64).ravel()
    fa, qa = float(score(f)), float(score(q))
    drop = fa - qa
    diff = np.abs(f - q)
    if not np.isfinite(drop):  # one class only: the drop cannot be measured, so it is not accepted
        reason = "study AUROC is undefined on this validation split (one class only)"
    else:
        reason = "ok" if drop <= max_drop else f"study AUROC drop {drop:.4f} > {max_drop}"
    return {"accepted": reason == "ok", "reason": reason, "float_auroc": fa, "int8_auroc": qa, "auroc_drop": drop,
            "max_auroc_drop": max_drop, "max_abs_diff": float(diff.max()) if diff.size else 0.0,
            "mean_abs_diff": float(diff.mean()) if diff.size else 0.0, "n_images": int(f.size)}


def int8_decision(gate: dict, speed: dict, max_ratio: float = MAX_LATENCY_RATIO) -> dict:
    """Ship INT8 only when it is accurate enough *and* faster than float at every batch size.

    Parameters
    ----------
    gate : dict
        From :func:`int8_gate`.
    speed : dict
        ``{"batch_B": {"float_ms", "int8_ms", "ratio", "ratio_min", "ratio_max"}}``: INT8 / float
        latency, the median over interleaved rounds of the per-round ratio and its spread.
    max_ratio : float
        INT8 is "faster" at a batch size when its median ratio is below this.

    Returns
    -------
    dict
        The gate's keys plus ``accepted`` (both conditions), ``refused_by`` (list: "accuracy",
        "speed"; empty when accepted), ``reason`` (one line), ``speed``, ``max_latency_ratio``.
    """
    slow = {b: v for b, v in speed.items() if not v["ratio"] < max_ratio}
    refused_by, reasons = [], []
    if not gate["accepted"]:
        refused_by.append("accuracy")
        reasons.append(gate["reason"])
    if slow or not speed:
        refused_by.append("speed")
        reasons.append("not faster than float: " + (", ".join(
            f"{b.replace('_', ' ')} {v['ratio']:.2f}x float [{v['ratio_min']:.2f}, {v['ratio_max']:.2f}]"
            for b, v in slow.items()) or "no timing"))
    return {**gate, "accepted": not refused_by, "refused_by": refused_by, "reason": "; ".join(reasons) or "ok",
            "speed": speed, "max_latency_ratio": max_ratio}


def _speed_of(timing: dict, name: str) -> dict:
    """{batch: {float_ms, int8_ms, ratio, ratio_min, ratio_max}} of one candidate."""
    return {b: {"float_ms": t["float"]["ms"], "int8_ms": t[name]["ms"], "ratio": t[name]["ratio"],
                "ratio_min": t[name]["ratio_min"], "ratio_max": t[name]["ratio_max"]} for b, t in timing.items()}


def _speed_inputs(x: np.ndarray, batches) -> dict:
    """{B: float32 (B, ...)} taken from ``x`` (repeated when it has fewer than B images)."""
    reps = -(-max(batches) // len(x))
    pool = np.concatenate([x] * reps) if reps > 1 else x
    return {b: np.ascontiguousarray(pool[:b], np.float32) for b in batches}


def select_int8(float_path, calib_x: np.ndarray, val_x: np.ndarray, score, recipes: list,
                max_drop: float = MAX_AUROC_DROP, max_ratio: float = MAX_LATENCY_RATIO, rounds: int = TIMING_ROUNDS,
                threads: int | None = None, batches=SPEED_BATCHES, log=None):
    """Quantize with every recipe, time them beside float, and decide.

    The candidates are ordered by speed (the worse of their batch ratios); the first one
    within the accuracy gate is chosen (the fastest when none is). It is shipped only if it
    is also faster than float (:func:`int8_decision`).

    Parameters
    ----------
    float_path : str or Path
    calib_x, val_x : ndarray float32 (N, S, S, 1)
        Calibration inputs and validation inputs (gate and timing).
    score : callable
        ``score(image probabilities (N,)) -> study AUROC`` over ``val_x``.
    recipes : list of Recipe
    max_drop, max_ratio : float
    rounds : int
        Interleaved timing rounds.
    threads : int or None
        onnxruntime intra-op threads for the timing (None: its default, as on a device).

    Returns
    -------
    model : onnx.ModelProto or None
        The chosen INT8 model when accepted, else None.
    decision : dict
        :func:`int8_decision` of the chosen recipe plus ``recipe`` and ``candidates``
        (``[{"recipe", "speed", "gate"}]``: every candidate's figures).
    """
    from export.cnn import onnx_outputs
    from export.speed import onnx_side_by_side

    models = {r.name: quantize_int8(float_path, calib_x, r) for r in recipes}
    timing = onnx_side_by_side({"float": str(float_path), **models}, _speed_inputs(val_x, batches), "float",
                               rounds=rounds, threads=threads)
    speeds = {name: _speed_of(timing, name) for name in models}
    order = sorted(models, key=lambda n: max(v["ratio"] for v in speeds[n].values()))
    float_probs = onnx_outputs(float_path, val_x)["probability"]
    gates, chosen = {}, order[0]
    for name in order:
        gates[name] = int8_gate(float_probs, onnx_outputs(models[name], val_x)["probability"], score, max_drop)
        if gates[name]["accepted"]:
            chosen = name
            break
    decision = int8_decision(gates[chosen], speeds[chosen], max_ratio)
    recipe = next(r for r in recipes if r.name == chosen)
    decision.update(recipe=recipe.to_dict(), timing={"rounds": rounds, "threads": threads,
                                                     "batches": list(batches)},
                    candidates=[{"recipe": n, "speed": speeds[n], "gate": gates.get(n)} for n in order])
    if log:
        log("export: INT8 candidates, latency / float (" + " | ".join(b.replace("_", " ") for b in timing) + "): "
            + ", ".join(f"{n} " + " | ".join(f"{v['ratio']:.2f}x" for v in speeds[n].values()) for n in order))
    return (models[chosen] if decision["accepted"] else None), decision


def int8_metrics(gate: dict, agreement: dict) -> dict:
    """The INT8 file's card metrics: its validation AUROC, the gate, its speed and golden agreement.

    Parameters
    ----------
    gate : dict
        From :func:`int8_decision` (accepted) or :func:`int8_gate`.
    agreement : dict
        ``{output name: max |INT8 - float|}`` on the golden inputs; the golden tolerances of
        the INT8 file are derived from it (:func:`edge.golden.tolerances_for`).
    """
    keys = ("float_auroc", "int8_auroc", "auroc_drop", "max_auroc_drop", "max_abs_diff", "mean_abs_diff",
            "n_images")
    out = {"val": {"study_auroc": gate["int8_auroc"]}, "int8_gate": {k: gate[k] for k in keys},
           "golden_agreement": {k: float(v) for k, v in agreement.items()}}
    if "speed" in gate:  # INT8 / float latency measured at export, and the recipe that produced this file
        out["int8_speed"] = {"latency_ratio": gate["speed"], "max_latency_ratio": gate["max_latency_ratio"],
                             "recipe": gate.get("recipe", {}).get("name"), "cpu": gate.get("cpu")}
    return out
