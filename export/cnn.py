"""CNN (Keras CAM model) -> ONNX with named outputs ``probability``, ``cam`` (and ``gate``), parity-checked.

tf2onnx 1.17 converts Keras 3 models when given an explicit ``input_signature``; Keras 3 models
expose no stable ``output_names``, so the ONNX outputs are identified by rank (probability is
(B, 1), the CAM is (B, h, w), the input gate's score, when the model has one, is (B,)) and
renamed through Identity nodes.
"""

from __future__ import annotations

import numpy as np

from edge.golden import FLOAT_TOLERANCE, float_tolerance, max_abs_diff
from export.errors import ExportError
from export.graph import fuse_hard_activations, short_names

OPSET = 17


def keras_outputs(cam_model, x: np.ndarray, batch_size: int = 32) -> dict:
    """Run a Keras CAM model in inference mode.

    Parameters
    ----------
    cam_model : keras.Model
        Outputs [probability (B, 1), cam (B, h, w)] as from ``deep.cam_model``.
    x : ndarray float32 (N, S, S, 1) in [0, 1]

    Returns
    -------
    dict
        ``{"probability": float32 (N, 1), "cam": float32 (N, h, w)}``
    """
    parts = {}
    for i in range(0, len(x), batch_size):
        outs = cam_model(np.asarray(x[i:i + batch_size], np.float32), training=False)
        for name, arr in _by_rank(list(outs.values()) if isinstance(outs, dict) else list(outs)).items():
            parts.setdefault(name, []).append(np.asarray(arr, np.float32))
    return {k: np.concatenate(v) for k, v in parts.items()}


OUTPUT_ORDER = ("probability", "cam", "gate", "part")


def output_name(shape) -> str | None:
    """The name of a CNN output by its shape: (B,) gate, (B, 1) probability, (B, K>1) part
    (body-part probabilities), (B, h, w) cam."""
    if len(shape) == 1:
        return "gate"
    if len(shape) == 2:
        return "probability" if shape[-1] == 1 else "part"
    return "cam" if len(shape) == 3 else None


def _by_rank(arrays: list) -> dict:
    """Name the outputs by shape (:func:`output_name`)."""
    named = {output_name(a.shape): a for a in arrays if output_name(a.shape)}
    if not {"probability", "cam"} <= set(named) or len(named) != len(arrays):
        raise ExportError(f"expected outputs of rank 2 (probability) and 3 (cam), got ranks "
                          f"{[len(a.shape) for a in arrays]}")
    return named


def to_onnx(cam_model, size: int, opset: int = OPSET, fuse: bool = True):
    """Convert a Keras CAM model to an ``onnx.ModelProto``.

    The input is ``image`` float32 (batch, size, size, 1) with a dynamic batch axis; the
    outputs are ``probability`` (batch, 1), ``cam`` (batch, h, w) and, for a model with an input
    gate (``deep.gate.with_gate``), ``gate`` (batch,). ``fuse=False`` keeps
    tf2onnx's hard-swish subgraphs (benchmarks compare the two).
    """
    import tensorflow as tf
    import tf2onnx

    spec = [tf.TensorSpec((None, size, size, 1), tf.float32, name="image")]
    try:
        model, _ = tf2onnx.convert.from_keras(cam_model, input_signature=spec, opset=opset)
    except Exception as e:  # noqa: BLE001  tf2onnx raises anything from KeyError to ValueError
        raise ExportError(f"tf2onnx could not convert the CNN: {type(e).__name__}: {e}") from None
    _rename_outputs(model, size)
    if fuse:
        fuse_hard_activations(model)  # MobileNetV3's hard-swish as one op (exact; see export.graph)
    short_names(model)
    return model


def _rename_outputs(model, size: int) -> None:
    """Rename the graph outputs to probability / cam (/ gate) (in that order) via Identity nodes."""
    import onnx

    shapes = _output_shapes(model, size)
    names = [output_name(s) for s in shapes.values()]
    if not {"probability", "cam"} <= set(names) or None in names or len(set(names)) != len(names):
        raise ExportError(f"converted CNN has outputs of shapes {shapes}; expected one (B,1), one (B,h,w) "
                          "and at most one (B,) and one (B,K)")
    outputs = {output_name(shapes[o.name]): o for o in model.graph.output}
    for new, out in outputs.items():
        if out.name != new:
            model.graph.node.append(onnx.helper.make_node("Identity", [out.name], [new], name=f"{new}_out"))
            out.name = new
    ordered = [outputs[n] for n in OUTPUT_ORDER if n in outputs]
    copies = [type(o)() for o in ordered]
    for c, o in zip(copies, ordered):
        c.CopyFrom(o)
    del model.graph.output[:]
    model.graph.output.extend(copies)


def _output_shapes(model, size: int) -> dict:
    """{output name: shape}, measured by running a zero image (shape info may be missing)."""
    import onnxruntime as ort

    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    outs = sess.run(None, {sess.get_inputs()[0].name: np.zeros((1, size, size, 1), np.float32)})
    return {o.name: a.shape for o, a in zip(sess.get_outputs(), outs)}


def onnx_outputs(model_or_path, x: np.ndarray, batch_size: int = 32, threads: int | None = None) -> dict:
    """Run an ONNX model (proto, bytes or path) with onnxruntime in batches.

    Returns ``{output name: float32 (N, ...)}``.
    """
    import onnxruntime as ort

    src = model_or_path.SerializeToString() if hasattr(model_or_path, "SerializeToString") else str(model_or_path)
    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
    sess = ort.InferenceSession(src, sess_options=opts, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    names = [o.name for o in sess.get_outputs()]
    parts = {n: [] for n in names}
    for i in range(0, len(x), batch_size):
        for n, a in zip(names, sess.run(None, {name: np.ascontiguousarray(x[i:i + batch_size], np.float32)})):
            parts[n].append(a)
    return {n: np.concatenate(v) for n, v in parts.items()}


def max_diffs(a: dict, b: dict) -> dict:
    """``{name: max |a - b|}`` over the names both dicts share (shape mismatch -> inf)."""
    return {k: max_abs_diff(a[k], b[k]) for k in sorted(set(a) & set(b))}


def export_cnn(cam_model, size: int, check_x: np.ndarray, atol: float = FLOAT_TOLERANCE):
    """Convert, validate and parity-check a CNN (the caller attaches its card).

    Parameters
    ----------
    cam_model : keras.Model
        From ``deep.cam_model``.
    size : int
        Input side S.
    check_x : ndarray float32 (N, S, S, 1)
        Inputs for the Keras-vs-ONNX parity check (the golden inputs).
    atol : float
        Largest allowed max |diff| per output in [0, 1] (the gate's score, a logit: 10x it).

    Returns
    -------
    model : onnx.ModelProto
        Without metadata; see :func:`edge.card.attach_card`.
    parity : dict
        ``{output name: max |keras - onnx|}``.

    Raises
    ------
    ExportError
        Conversion failure, ``onnx.checker`` failure, or parity above ``atol``.
    """
    import onnx

    model = to_onnx(cam_model, size)
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as e:
        raise ExportError(f"exported CNN fails onnx.checker: {str(e).splitlines()[0]}") from None
    parity = max_diffs(keras_outputs(cam_model, check_x), onnx_outputs(model, check_x))
    scale = {k: float_tolerance(k) / FLOAT_TOLERANCE for k in parity}  # the gate's score: 10x (edge.golden)
    bad = {k: v for k, v in parity.items() if not v <= atol * scale[k]}
    if bad:
        raise ExportError(f"Keras and ONNX disagree beyond {atol:g}: {bad}; not writing the model")
    return model, parity
