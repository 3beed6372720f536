"""Tiny murakit-shaped ONNX models built with onnx.helper (no TensorFlow), for the edge tests.

``cnn_model``: image (B, S, S, 1) -> Transpose -> Conv 3x3/2 (4 ch) -> Relu = features;
cam = 1x1 conv of the features (B, h, w); probability = sigmoid(mean(cam) + b) (B, 1) —
the same CAM algebra as ``deep.cam_model``.
``baseline_model``: HOG features (B, D) -> MatMul + b -> Sigmoid = probability (B, 1).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import cv2
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edge.card import ModelCard, save_onnx
from edge.hog import HogConfig
from edge.preprocess import PreprocessConfig

SIZE = 32


def card(kind: str, cfg: PreprocessConfig, **changes) -> ModelCard:
    """A valid test card (threshold 0.5); ``changes`` override fields."""
    fields = {"kind": kind, "preprocess": cfg, "threshold": 0.5, "arch": "tiny", "version": "test",
              "data_fingerprint": hashlib.sha256(b"edge test fixture").hexdigest(),
              "weights_sha256": "0" * 64, "metrics": {"note": "tiny test model"}}
    fields.update(changes)
    return ModelCard(**fields)


def _save(graph, path: Path, model_card: ModelCard | None) -> Path:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)
    if model_card is None:
        onnx.save(model, str(path))
    else:
        save_onnx(model, model_card, path)
    return path


def cnn_model(path, size: int = SIZE, seed: int = 0, meta: bool = True) -> Path:
    """Write the tiny CAM CNN to ``path``; returns the path."""
    rng = np.random.default_rng(seed)
    w = rng.normal(0, 0.5, (4, 1, 3, 3)).astype(np.float32)
    head = rng.normal(0, 1.0, (1, 4, 1, 1)).astype(np.float32)
    nodes = [
        helper.make_node("Transpose", ["image"], ["nchw"], perm=[0, 3, 1, 2]),
        helper.make_node("Conv", ["nchw", "w"], ["conv"], strides=[2, 2], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["conv"], ["feat"]),
        helper.make_node("Conv", ["feat", "head"], ["cam4"]),
        helper.make_node("Squeeze", ["cam4", "ax1"], ["cam"]),
        helper.make_node("ReduceMean", ["cam"], ["gap"], axes=[1, 2], keepdims=0),
        helper.make_node("Add", ["gap", "bias"], ["logit"]),
        helper.make_node("Sigmoid", ["logit"], ["p"]),
        helper.make_node("Unsqueeze", ["p", "ax1"], ["probability"]),
    ]
    inits = [numpy_helper.from_array(w, "w"), numpy_helper.from_array(head, "head"),
             numpy_helper.from_array(np.array([1], np.int64), "ax1"),
             numpy_helper.from_array(np.array([-0.3], np.float32), "bias")]
    h = size // 2
    graph = helper.make_graph(
        nodes, "tiny_cam_cnn", [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["B", size, size, 1])],
        [helper.make_tensor_value_info("probability", TensorProto.FLOAT, ["B", 1]),
         helper.make_tensor_value_info("cam", TensorProto.FLOAT, ["B", h, h])], inits)
    cfg = PreprocessConfig(size=size)
    return _save(graph, Path(path), card("cnn", cfg) if meta else None)


def baseline_model(path, size: int = SIZE, seed: int = 1) -> Path:
    """Write a logistic model over HOG features with baseline metadata; returns the path."""
    hog = HogConfig(pixels_per_cell=(8, 8))
    d = hog.feature_dim(size)
    rng = np.random.default_rng(seed)
    nodes = [helper.make_node("MatMul", ["features", "coef"], ["z"]),
             helper.make_node("Add", ["z", "b"], ["logit"]),
             helper.make_node("Sigmoid", ["logit"], ["probability"])]
    inits = [numpy_helper.from_array(rng.normal(0, 1, (d, 1)).astype(np.float32), "coef"),
             numpy_helper.from_array(np.array([0.1], np.float32), "b")]
    graph = helper.make_graph(
        nodes, "tiny_baseline", [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["B", d])],
        [helper.make_tensor_value_info("probability", TensorProto.FLOAT, ["B", 1])], inits)
    cfg = PreprocessConfig(size=size)
    return _save(graph, Path(path), card("baseline", cfg, hog=hog))


def radiograph(h: int, w: int, seed: int, bright: float = 200.0) -> np.ndarray:
    """uint8 (h, w): dark border, soft tissue, a bright bar whose brightness varies, noise."""
    rng = np.random.default_rng(seed)
    img = np.full((h, w), 20, np.float32)
    img[h // 6:-h // 6, w // 5:-w // 5] = 90
    img[h // 5:-h // 5, w // 2 - w // 8 + seed % 5:w // 2 + w // 8] = bright
    img += rng.normal(0, 8, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def write_images(folder, n: int, seed: int = 0) -> list:
    """Write ``n`` PNG radiographs of different sizes into ``folder``; returns their paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        p = folder / f"image{i + 1}.png"
        assert cv2.imwrite(str(p), radiograph(40 + 7 * i, 36 + 5 * i, seed + i, 120 + 30 * i))
        paths.append(p)
    return paths
