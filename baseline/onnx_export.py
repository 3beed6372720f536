"""The fitted baseline -> one self-describing ONNX file (no pickle anywhere).

The graph maps HOG features, float32 ``features`` (B, D), to ``probability`` float32 (B, 1)
= P(abnormal). The device computes the features itself with :mod:`edge.hog`, using the
``murakit.hog`` and ``murakit.preprocess`` metadata stored in the file, so it needs
neither scikit-learn nor scikit-image.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from baseline.errors import BaselineError
from edge.atomic import atomic_path
from edge.hog import HogConfig

LABELS = ("normal", "abnormal")
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
    return onnx.utils.Extractor(onx).extract_model([INPUT_NAME], [OUTPUT_NAME])


def build_onnx(model, hog_cfg: HogConfig, preprocess_cfg, threshold: float, metrics: dict | None = None):
    """Convert a fitted baseline and attach the ``murakit.*`` metadata.

    Parameters
    ----------
    model : sklearn estimator
        From :func:`baseline.fit_baseline` (``n_features_in_`` = D).
    hog_cfg : HogConfig
    preprocess_cfg : edge.preprocess.PreprocessConfig
        Must give images whose HOG has exactly D features.
    threshold : float
        Study-level decision threshold in [0, 1].
    metrics : dict, optional
        Test metrics (JSON-serialisable), stored as ``murakit.metrics``.

    Returns
    -------
    onnx.ModelProto

    Raises
    ------
    BaselineError
        Feature length of the model does not match ``hog_cfg`` at ``preprocess_cfg.size``,
        or a threshold outside [0, 1].
    """
    import onnx

    from edge import __version__

    d = int(model.n_features_in_)
    expected = hog_cfg.feature_dim(preprocess_cfg.size)
    if d != expected:
        raise BaselineError(f"model takes {d} features but HOG {hog_cfg.to_json()} at "
                            f"{preprocess_cfg.size} px gives {expected}")
    if not 0.0 <= float(threshold) <= 1.0:
        raise BaselineError(f"threshold must be in [0, 1], got {threshold}")
    onx = _probability_only(_convert(model, d))
    onx.doc_string = "murakit HOG + linear SVM baseline: HOG features -> P(abnormal)"
    meta = {"kind": "baseline", "input": "hog", "hog": hog_cfg.to_json(),
            "preprocess": preprocess_cfg.to_json(), "threshold": json.dumps(float(threshold)),
            "labels": json.dumps(list(LABELS)), "metrics": json.dumps(metrics or {}, sort_keys=True),
            "version": __version__}
    for key, value in meta.items():
        onx.metadata_props.add(key=f"murakit.{key}", value=value)
    onnx.checker.check_model(onx)
    return onx


def to_onnx(model, hog_cfg: HogConfig, preprocess_cfg, threshold: float, metrics: dict | None,
            path) -> Path:
    """Write :func:`build_onnx`'s model to ``path`` atomically; returns ``path``."""
    import onnx

    onx = build_onnx(model, hog_cfg, preprocess_cfg, threshold, metrics)
    path = Path(path)
    with atomic_path(path) as tmp:
        onnx.save(onx, str(tmp))
    return path


def onnx_probabilities(path_or_bytes, features) -> np.ndarray:
    """Run an exported baseline with onnxruntime: float32 (N, D) -> float64 (N,) P(abnormal)."""
    import onnxruntime as ort

    src = str(path_or_bytes) if isinstance(path_or_bytes, Path) else path_or_bytes
    sess = ort.InferenceSession(src, providers=["CPUExecutionProvider"])
    out = sess.run([OUTPUT_NAME], {INPUT_NAME: np.ascontiguousarray(features, dtype=np.float32)})[0]
    return out[:, 0].astype(np.float64)
