"""The fitted baseline -> one self-describing ONNX file (no pickle anywhere).

The graph maps HOG features, float32 ``features`` (B, D), to ``probability`` float32 (B, 1)
= P(abnormal). The device computes the features itself with :mod:`edge.hog`, using the HOG
and preprocessing configs of the model card stored in the file, so it needs neither
scikit-learn nor scikit-image.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from baseline.errors import BaselineError

# opset 17 / ai.onnx.ml 3: run by every onnxruntime since 1.11, so older edge devices load it
TARGET_OPSET = {"": 17, "ai.onnx.ml": 3}
INPUT_NAME, OUTPUT_NAME = "features", "probability"


def _convert(model, n_features: int):
    """skl2onnx graph of ``model`` with input ``features`` (B, D), outputs label + (B, 2) probs."""
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType

    return convert_sklearn(model, initial_types=[(INPUT_NAME, FloatTensorType([None, n_features]))],
                           options={"zipmap": False}, target_opset=TARGET_OPSET)


def _probability_only(onx):
    """Keep only column 1 of skl2onnx's probabilities as ``probability`` (B, 1)."""
    import onnx
    from onnx import helper, numpy_helper

    probs = next(o.name for o in onx.graph.output if o.name != "label")
    g = onx.graph
    g.initializer.extend([numpy_helper.from_array(np.array([1], np.int64), "murakit_col_start"),
                          numpy_helper.from_array(np.array([2], np.int64), "murakit_col_end"),
                          numpy_helper.from_array(np.array([1], np.int64), "murakit_col_axis")])
    g.node.append(helper.make_node("Slice", [probs, "murakit_col_start", "murakit_col_end",
                                             "murakit_col_axis"], [OUTPUT_NAME], name="abnormal_column"))
    del g.output[:]
    g.output.append(helper.make_tensor_value_info(OUTPUT_NAME, onnx.TensorProto.FLOAT, [None, 1]))
    # drop the now unused label branch so the file holds only what the device runs
    out = onnx.utils.Extractor(onx).extract_model([INPUT_NAME], [OUTPUT_NAME])
    out.graph.name = "murakit_baseline"  # the extractor's "Extracted from {uuid}": same fit, same file
    return out


def build_onnx(model, card):
    """Convert a fitted baseline; the card's HOG and preprocessing must give its features.

    Parameters
    ----------
    model : sklearn estimator
        From :func:`baseline.fit_baseline` (``n_features_in_`` = D).
    card : edge.card.ModelCard
        ``kind="baseline"``; ``card.hog`` at ``card.preprocess.size`` px must give D features.

    Returns
    -------
    onnx.ModelProto
        Without metadata; :func:`to_onnx` attaches the card.

    Raises
    ------
    BaselineError
        Not a baseline card, or a feature length that does not match the card.
    """
    import onnx

    if card.kind != "baseline" or card.hog is None:
        raise BaselineError(f"a baseline needs a baseline model card, got kind {card.kind!r}")
    d = int(model.n_features_in_)
    expected = card.hog.feature_dim(card.preprocess.size)
    if d != expected:
        raise BaselineError(f"model takes {d} features but HOG {card.hog.to_json()} at "
                            f"{card.preprocess.size} px gives {expected}")
    onx = _probability_only(_convert(model, d))
    onx.doc_string = "murakit HOG + linear SVM baseline: HOG features -> P(abnormal)"
    onnx.checker.check_model(onx)
    return onx


def to_onnx(model, card, path):
    """Write :func:`build_onnx`'s model with ``card`` attached to ``path`` atomically.

    Returns
    -------
    edge.card.ModelCard
        The card as written (``weights_sha256`` = this file's graph hash).
    """
    from edge.card import save_onnx

    return save_onnx(build_onnx(model, card), card, Path(path))


def onnx_probabilities(path_or_bytes, features) -> np.ndarray:
    """Run an exported baseline with onnxruntime: float32 (N, D) -> float64 (N,) P(abnormal)."""
    import onnxruntime as ort

    src = str(path_or_bytes) if isinstance(path_or_bytes, Path) else path_or_bytes
    sess = ort.InferenceSession(src, providers=["CPUExecutionProvider"])
    out = sess.run([OUTPUT_NAME], {INPUT_NAME: np.ascontiguousarray(features, dtype=np.float32)})[0]
    return out[:, 0].astype(np.float64)
