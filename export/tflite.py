"""The CNN as TensorFlow Lite (float and INT8): what a TensorFlow user would pick for a device.

Not a deployed artifact: ``murakit bench`` converts ``RUN/cnn/best.keras`` on the fly to put a
TFLite row beside the ONNX models, and ``benchmarks/bench_edge_runtimes.py`` times it against
onnxruntime. The converted model is the graph the ONNX export carries (``deep.with_gate`` of the
CAM model: probability (B, 1), cam (B, S, S), gate (B,), part (B, K)), so the comparison is like
for like. Outputs are converted as a dict, so the flatbuffer's signature names them and
:class:`TfliteRunner` picks them by name (their order in the flatbuffer is not the model's).

INT8 keeps the gate float: a representative set of radiographs only gives the gate's statistics a
radiograph-wide range, and quantized to it every non-radiograph's score clamps to the range's top
(measured on the demo: the OOD test images scored at most 0.0, nearly all exactly 0.0, also the
test radiographs' highest score). The nodes
that feed only the ``gate`` output are denylisted from quantization (TFLite's selective
quantization through ``tf.lite.experimental.QuantizationDebugger``), as
``export.quantize.gate_only_nodes`` does for the ONNX INT8 file.

The interpreter comes from ``ai_edge_litert`` when installed (LiteRT, TFLite's successor),
else from ``tf.lite`` (deprecated in TensorFlow 2.20+, still shipped in 2.21). Both run the
XNNPACK CPU delegate by default.
"""

from __future__ import annotations

import contextlib
import io
import warnings

import numpy as np

from export.errors import ExportError


def named(model):
    """``model`` with its outputs as a dict keyed by output name (the flatbuffer signature's names)."""
    import keras

    if isinstance(model.output, dict):
        return model
    return keras.Model(model.inputs, dict(zip(model.output_names, model.outputs)), name=model.name)


def _quiet_convert(convert):
    """``convert()`` with Keras' printed signature and the converter's warnings silenced; its many
    private error types become one ExportError."""
    try:
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return bytes(convert())
    except Exception as e:  # noqa: BLE001  the converter raises many private error types
        raise ExportError(f"TFLite conversion failed: {type(e).__name__}: {str(e).splitlines()[0][:200]}") from None


def only_nodes(content: bytes, outputs) -> list:
    """Names of the tensors computed only for ``outputs`` (signature names) in a TFLite model:
    the op outputs that are ancestors of those outputs and of no other one."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tf.lite.Interpreter's deprecation notice
        it = _interpreter_class()(model_content=content)
    producer = {t: op for op in it._get_ops_details() for t in op["outputs"]}  # the only op listing it has
    names = {t["index"]: t["name"] for t in it.get_tensor_details()}
    sig = {k: d["index"] for k, d in it.get_signature_runner().get_output_details().items()}

    def ancestors(t):
        seen, stack = set(), [t]
        while stack:
            op = producer.get(stack.pop())
            if op is not None and op["index"] not in seen:
                seen.add(op["index"])
                stack.extend(i for i in op["inputs"] if i >= 0)
        return seen

    mine = set().union(*(ancestors(sig[k]) for k in outputs if k in sig))
    others = set().union(*(ancestors(v) for k, v in sig.items() if k not in outputs))
    return [names[t] for t, op in producer.items() if op["index"] in mine - others]


def to_tflite(model, calib_x: np.ndarray | None = None, float_outputs=("gate",)) -> bytes:
    """Convert a Keras model (the CAM model, with or without gate) to a TFLite flatbuffer.

    Parameters
    ----------
    model : keras.Model
        float32 (B, S, S, 1) in [0, 1] -> its named outputs (``deep.cam_model``, ``deep.with_gate``).
    calib_x : ndarray float32 (N, S, S, 1) or None
        None: a float32 model. Otherwise INT8 weights and activations calibrated on these
        inputs (``Optimize.DEFAULT`` with a representative dataset; float input and outputs,
        so it is a drop-in for the float model).
    float_outputs : tuple of str
        INT8 only: outputs whose own nodes stay float (:func:`only_nodes`), by default the gate,
        whose statistics a radiograph-only calibration would clamp.

    Returns
    -------
    bytes
        The ``.tflite`` flatbuffer; its signature names the outputs.
    """
    import tensorflow as tf

    model = named(model)
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    if calib_x is None:
        return _quiet_convert(conv.convert)
    if len(calib_x) == 0:
        raise ExportError("no calibration images for the TFLite INT8 model")
    conv.optimizations = [tf.lite.Optimize.DEFAULT]

    def representative():
        return ([np.asarray(calib_x[i:i + 1], np.float32)] for i in range(len(calib_x)))

    conv.representative_dataset = representative
    keep = [k for k in float_outputs if k in model.output]
    if not keep:
        return _quiet_convert(conv.convert)
    denylist = only_nodes(to_tflite(model), keep)

    def selective():
        options = tf.lite.experimental.QuantizationDebugOptions(denylisted_nodes=denylist)
        debugger = tf.lite.experimental.QuantizationDebugger(
            converter=conv, debug_dataset=lambda: (d for d, _ in zip(representative(), range(4))),
            debug_options=options)
        return debugger.get_nondebug_quantized_model()

    return _quiet_convert(selective)


def _interpreter_class():
    """LiteRT's Interpreter when installed, else tf.lite's (its deprecation warning silenced)."""
    try:
        from ai_edge_litert.interpreter import Interpreter

        return Interpreter
    except ImportError:
        import tensorflow as tf

        return tf.lite.Interpreter


class TfliteRunner:
    """Run a TFLite model on batches; one interpreter per batch size (resizing re-plans the graph).

    Parameters
    ----------
    content : bytes
        The flatbuffer (:func:`to_tflite`).
    threads : int or None
        Interpreter threads (None: TFLite's default).
    """

    def __init__(self, content: bytes, threads: int | None = None):
        self.content, self.threads = content, threads
        self._by_batch = {}
        self.kind = _interpreter_class()

    def _interpreter(self, batch: int):
        if batch not in self._by_batch:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # tf.lite.Interpreter's deprecation notice
                it = self.kind(model_content=self.content, num_threads=self.threads)
            inp = it.get_input_details()[0]
            outputs = {k: d["index"] for k, d in it.get_signature_runner().get_output_details().items()}
            it.resize_tensor_input(inp["index"], [batch, *inp["shape"][1:]])
            it.allocate_tensors()
            self._by_batch[batch] = (it, inp["index"], outputs)
        return self._by_batch[batch]

    @property
    def output_names(self) -> list:
        """The model's output names (its signature's), sorted."""
        return sorted(self._interpreter(1)[2])

    def run(self, x: np.ndarray) -> dict:
        """float32 (B, S, S, 1) -> ``{name: array}`` of every output, by the signature's names
        (``probability`` (B, 1), ``cam`` (B, S, S), and ``gate`` (B,), ``part`` (B, K) when present)."""
        it, index, outputs = self._interpreter(len(x))
        it.set_tensor(index, np.ascontiguousarray(x, dtype=np.float32))
        it.invoke()
        return {k: it.get_tensor(i).copy() for k, i in outputs.items()}

    def probabilities(self, x: np.ndarray) -> np.ndarray:
        """float32 (B, S, S, 1) -> probabilities float32 (B,) in [0, 1]."""
        return self.run(x)["probability"].reshape(-1)
