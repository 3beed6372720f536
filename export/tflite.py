"""The CNN as TensorFlow Lite (float and INT8): what a TensorFlow user would pick for a device.

Not a deployed artifact: ``murakit bench`` converts ``RUN/cnn/best.keras`` on the fly to put a
TFLite row beside the ONNX models, and ``benchmarks/bench_edge_runtimes.py`` times it against
onnxruntime. The converted model is the CAM model (outputs probability (B, 1) and cam
(B, h, w)), the same graph the ONNX export carries, so the comparison is like for like.

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


def to_tflite(cam_model, calib_x: np.ndarray | None = None) -> bytes:
    """Convert a Keras CAM model to a TFLite flatbuffer.

    Parameters
    ----------
    cam_model : keras.Model
        From ``deep.cam_model``: float32 (B, S, S, 1) in [0, 1] -> [probability, cam].
    calib_x : ndarray float32 (N, S, S, 1) or None
        None: a float32 model. Otherwise INT8 weights and activations calibrated on these
        inputs (``Optimize.DEFAULT`` with a representative dataset; float input and outputs,
        so it is a drop-in for the float model).

    Returns
    -------
    bytes
        The ``.tflite`` flatbuffer.
    """
    import tensorflow as tf

    conv = tf.lite.TFLiteConverter.from_keras_model(cam_model)
    if calib_x is not None:
        if len(calib_x) == 0:
            raise ExportError("no calibration images for the TFLite INT8 model")
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = lambda: ([np.asarray(calib_x[i:i + 1], np.float32)]
                                               for i in range(len(calib_x)))
    try:
        # Keras prints its SavedModel signature; the INT8 converter warns about input statistics
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return bytes(conv.convert())
    except Exception as e:  # noqa: BLE001  the converter raises many private error types
        raise ExportError(f"TFLite conversion failed: {type(e).__name__}: {str(e).splitlines()[0][:200]}") from None


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
            it.resize_tensor_input(inp["index"], [batch, *inp["shape"][1:]])
            it.allocate_tensors()
            self._by_batch[batch] = (it, inp["index"], [o["index"] for o in it.get_output_details()])
        return self._by_batch[batch]

    def run(self, x: np.ndarray) -> dict:
        """float32 (B, S, S, 1) -> ``{"probability": (B, 1), "cam": (B, h, w)}`` (named by rank)."""
        it, index, outputs = self._interpreter(len(x))
        it.set_tensor(index, np.ascontiguousarray(x, dtype=np.float32))
        it.invoke()
        named = {}
        for o in outputs:
            a = it.get_tensor(o)
            named["probability" if a.ndim == 2 else "cam"] = a.copy()
        return named

    def probabilities(self, x: np.ndarray) -> np.ndarray:
        """float32 (B, S, S, 1) -> probabilities float32 (B,) in [0, 1]."""
        return self.run(x)["probability"].reshape(-1)
