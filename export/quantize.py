"""Static INT8 quantization (QDQ, per-channel) of the float CNN, and the accuracy gate.

Static QDQ is the only INT8 flavour used: dynamic quantisation made the convolutions about 11x
slower on this class of CPU. Activations are uint8 and weights int8 (U8S8), the fast path of
onnxruntime's x86 kernels; ``reduce_range`` keeps 7-bit weights so AVX2 machines without VNNI
do not saturate their 16-bit intermediate sums.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from export.errors import ExportError
from export.graph import short_names

MAX_AUROC_DROP = 0.01
QUANTIZED_OPS = ["Conv", "Add", "MaxPool", "Relu"]


class ArrayCalibrationReader:
    """Feeds calibration batches to onnxruntime's ``quantize_static`` in a fixed order.

    Parameters
    ----------
    input_name : str
    x : ndarray float32 (N, S, S, 1)
        Calibration inputs; order is the caller's (deterministic) order.
    batch_size : int
    """

    def __init__(self, input_name: str, x: np.ndarray, batch_size: int = 16):
        self.input_name, self.x, self.batch_size = input_name, x, batch_size
        self.pos = 0

    def get_next(self):
        if self.pos >= len(self.x):
            return None
        batch = np.ascontiguousarray(self.x[self.pos:self.pos + self.batch_size], np.float32)
        self.pos += self.batch_size
        return {self.input_name: batch}

    def rewind(self):
        self.pos = 0


def quantize_int8(float_path, calib_x: np.ndarray, input_name: str = "image"):
    """Quantize a float ONNX model statically to INT8 (QDQ, per-channel).

    Parameters
    ----------
    float_path : str or Path
        The float model (its ``murakit.*`` metadata is carried over).
    calib_x : ndarray float32 (N, S, S, 1)
        Calibration inputs (e.g. 200 train-split images in sorted-path order).
    input_name : str

    Returns
    -------
    onnx.ModelProto
        The INT8 model, without metadata (the caller attaches the card with precision int8).
    """
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if len(calib_x) == 0:
        raise ExportError("no calibration images for INT8 quantization")
    reader = type("Reader", (ArrayCalibrationReader, CalibrationDataReader), {})(input_name, calib_x)
    with tempfile.TemporaryDirectory(prefix="murakit-int8-") as tmp:
        prep, out = Path(tmp) / "prep.onnx", Path(tmp) / "int8.onnx"
        try:
            quant_pre_process(str(float_path), str(prep), skip_symbolic_shape=False)
            # Convolutions plus the ops between them (residual Add, MaxPool, Relu), so activations
            # stay uint8 through a stage. Batch-1 latency / float on 2 cores, width-16 model at
            # 128 px: conv only 1.8x, these ops 1.3x, all ops 1.4x (Gemm/Sigmoid/GAP add Q/DQ).
            quantize_static(str(prep), str(out), reader, quant_format=QuantFormat.QDQ, per_channel=True,
                            reduce_range=True, activation_type=QuantType.QUInt8,
                            weight_type=QuantType.QInt8, op_types_to_quantize=QUANTIZED_OPS)
        except Exception as e:  # noqa: BLE001  onnxruntime.quantization raises plain Exceptions
            raise ExportError(f"INT8 quantization failed: {type(e).__name__}: {e}") from None
        model = onnx.load(str(out))
    del model.metadata_props[:]  # the float file's card; the INT8 file gets its own
    short_names(model)
    return model


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


def int8_metrics(gate: dict, agreement: dict) -> dict:
    """The INT8 file's card metrics: its validation AUROC, the gate, and its golden agreement.

    Parameters
    ----------
    gate : dict
        From :func:`int8_gate` (accepted).
    agreement : dict
        ``{output name: max |INT8 - float|}`` on the golden inputs; the golden tolerances of
        the INT8 file are derived from it (:func:`edge.golden.tolerances_for`).
    """
    keys = ("float_auroc", "int8_auroc", "auroc_drop", "max_auroc_drop", "max_abs_diff", "mean_abs_diff",
            "n_images")
    return {"val": {"study_auroc": gate["int8_auroc"]}, "int8_gate": {k: gate[k] for k in keys},
            "golden_agreement": {k: float(v) for k, v in agreement.items()}}
