"""Explanations: CAM (from ``cam_model``), Grad-CAM for any layer, the pointing game.

Overlays are drawn by ``edge.cam.overlay`` (the same code the device uses).
"""

from __future__ import annotations

import cv2
import keras
import numpy as np
import tensorflow as tf

from deep.errors import DeepError
from deep.model import cam_model, head_output
from deep.receptive import receptive_centres
from edge.cam import placement_matrix

# Pointing-game tolerance: the peak may miss the box by this fraction of the image side
# (15 px at 224 px in Zhang et al.'s pointing game, i.e. ~0.067; we use a stricter 0.05).
POINTING_TOLERANCE = 0.05


def _as_batch(x):
    x = np.asarray(x, np.float32)
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4 or x.shape[-1] != 1:
        raise DeepError(f"expected images (B, S, S, 1), got shape {x.shape}")
    return x


def cam(model: keras.Model, x, cmodel=None):
    """Class activation maps from the GAP -> Dense head.

    Parameters
    ----------
    model : keras.Model from ``build_model``
    x : float32 (B, S, S, 1) or (B, S, S) in [0, 1]
    cmodel : keras.Model, optional
        A ready ``cam_model(model)`` to avoid rebuilding it per call.

    Returns
    -------
    probs : float32 (B,) in [0, 1]
    cams : float32 (B, S, S) raw logit contributions of the (h, w) grid (h = S/16 for the small
        arch), placed on the canvas at each cell's receptive-field centre (``deep.cam_model``)
    """
    cmodel = cmodel or cam_model(model)
    p, c = cmodel(_as_batch(x), training=False)
    return np.asarray(p).reshape(-1), np.asarray(c, np.float32)


def gradcam(model: keras.Model, x, layer=None):
    """Grad-CAM of the abnormal logit w.r.t. a 4-D feature layer, for any arch.

    Parameters
    ----------
    model : keras.Model ending in Dense(1, sigmoid) named "head"
    x : float32 (B, S, S, 1) or (B, S, S) in [0, 1]
    layer : str, optional
        Name of a top-level layer with a 4-D output; default: the maps fed to "gap".

    Returns
    -------
    probs : float32 (B,) in [0, 1]
    cams : float32 (B, S, S) >= 0 (ReLU of gradient-weighted (h, w) maps, unnormalised), placed
        on the canvas at each cell's receptive-field centre as ``deep.cam_model`` does
    """
    try:
        feats = model.get_layer("gap").input if layer is None else model.get_layer(layer).output
        head = model.get_layer("head")
    except ValueError as e:
        raise DeepError(f"Grad-CAM: {e}") from None
    if len(feats.shape) != 4:
        raise DeepError(f"Grad-CAM needs a 4-D feature layer, {layer!r} has shape {feats.shape}")
    grad_model = keras.Model(model.input, [feats, head.input, head_output(model)])
    kernel, bias = head.kernel, head.bias
    x = tf.convert_to_tensor(_as_batch(x))
    with tf.GradientTape() as tape:
        f, h, p = grad_model(x, training=False)
        logit = tf.matmul(h, kernel) + bias  # pre-sigmoid score: gradients do not saturate
    grads = tape.gradient(logit, f)
    weights = tf.reduce_mean(grads, axis=[1, 2], keepdims=True)
    maps = tf.nn.relu(tf.reduce_sum(weights * f, axis=-1)).numpy().astype(np.float32)
    cy, cx = receptive_centres(model, feats)
    size = int(model.input.shape[1])
    placed = placement_matrix(cy, size) @ maps @ placement_matrix(cx, size).T
    return np.asarray(p).reshape(-1), placed.astype(np.float32)


def upsample(cam_map, size) -> np.ndarray:
    """Bilinear resize of one map (h, w) to float32 (size, size)."""
    return cv2.resize(np.asarray(cam_map, np.float32), (size, size), interpolation=cv2.INTER_LINEAR)


def pointing_game(cams, boxes, size, tolerance=POINTING_TOLERANCE) -> float:
    """Fraction of images whose CAM peak (upsampled to size x size) falls in the finding's box.

    Parameters
    ----------
    cams : float (N, h, w)
    boxes : float (N, 4) ``x0, y0, x1, y1`` in pixels of the size x size image; rows with
        any NaN (no known finding) are skipped
    size : int, side S of the image the boxes refer to
    tolerance : float, margin around the box as a fraction of S

    Returns
    -------
    float in [0, 1], NaN when no image has a known box
    """
    cams, boxes = np.asarray(cams, np.float32), np.asarray(boxes, np.float64)
    if cams.ndim != 3 or boxes.shape != (len(cams), 4):
        raise DeepError(f"pointing_game: cams (N,h,w) and boxes (N,4) expected, got {cams.shape}, {boxes.shape}")
    keep = ~np.isnan(boxes).any(axis=1)
    if not keep.any():
        return float("nan")
    margin = tolerance * size
    hits = []
    for c, (x0, y0, x1, y1) in zip(cams[keep], boxes[keep]):
        py, px = np.unravel_index(np.argmax(upsample(c, size)), (size, size))
        hits.append(x0 - margin <= px <= x1 + margin and y0 - margin <= py <= y1 + margin)
    return float(np.mean(hits))
