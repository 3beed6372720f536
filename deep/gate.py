"""The input gate's graph: how unlike the training radiographs an input is, from the CNN itself.

The gate reads pooled statistics of the CNN's feature maps (per channel: mean and standard
deviation over the map) at several depths: early layers see texture and intensity structure
(a photograph, a page of text, a noise frame differ there), the last one sees anatomy (a chest
film differs there). A last block describes the model input itself (:func:`input_statistics`:
its intensity and gradient histograms, edge energy, border against centre): what a trained CNN
has learnt to ignore (the flat grey field of an MR, a CT's round body on black) still shows
there. Two things are computed from them:

- per (layer, statistic) block, a Mahalanobis distance to the training radiographs
  (``sqrt(mean(((v - mu) @ W) ** 2))`` with ``W`` a whitening of the block's covariance), as a log;
- a logistic "not a radiograph" score over the standardised statistics and those log distances,
  fitted with outlier exposure (training radiographs against non-radiographs murakit has).

The score is the logistic's logit: high means unlike a radiograph. The same statistics feed a
linear softmax over the seven body parts (:class:`PartHead`, fitted on the training radiographs'
parts): the model's own idea of which part it is looking at. All of it is Keras ops on
constants added to the CNN's inference graph, so the exported ONNX file has a ``gate`` output
(B,) and a device needs nothing else; the threshold lives in the model card. Which candidate
statistics were measured and why this one: docs/trust.md.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import layers

from deep.errors import DeepError

# The small arch's stage outputs, shallow to deep; other archs use their last feature map.
SMALL_LAYERS = ("stem_pool", "s0_add", "s1_add", "s2_add", "features")


def gate_layers(model: keras.Model) -> list:
    """Names of the layers whose feature maps feed the gate (those of :data:`SMALL_LAYERS` the
    model has; at least ``features``)."""
    names = {layer.name for layer in model.layers}
    found = [n for n in SMALL_LAYERS if n in names]
    if "features" not in found:
        raise DeepError("model has no 'features' layer; the gate needs a model from deep.build_model")
    return found


def _pooled(model: keras.Model, names) -> list:
    """[mean (B, C), std (B, C)] per named layer, in order."""
    out = []
    for name in names:
        t = model.get_layer(name).output
        mean = keras.ops.mean(t, axis=(1, 2))
        sq = keras.ops.mean(keras.ops.square(t), axis=(1, 2))
        out += [mean, keras.ops.sqrt(keras.ops.maximum(sq - keras.ops.square(mean), 0.0) + 1e-12)]
    return out


INTENSITY_BINS, GRADIENT_BINS = 16, 8
GRADIENT_RANGE = 0.25  # gradient magnitudes (per pixel, input in [0, 1]) above this share the last bin
HISTOGRAM_SIZE = 32  # histograms are taken on the input average-pooled to about this many pixels a side


def _soft_histogram(t, bins: int):
    """(B, H, W, 1) values in [0, 1] -> (B, bins): share of pixels per bin, each pixel split
    linearly between its two nearest bin centres (a histogram that is a smooth graph op)."""
    centres = np.linspace(0.0, 1.0, bins, dtype=np.float32)
    flat = keras.ops.reshape(t, (-1, int(t.shape[1]) * int(t.shape[2]), 1))
    weight = keras.ops.relu(1.0 - keras.ops.abs(flat - centres) * (bins - 1))
    return keras.ops.mean(weight, axis=1)


def input_statistics(x) -> list:
    """[(B, INTENSITY_BINS + GRADIENT_BINS + 4)] statistics of the model input ``x`` (B, S, S, 1)
    in [0, 1]: intensity histogram and histogram of gradient magnitudes (both of the input
    average-pooled to ~HISTOGRAM_SIZE px: a histogram costs bins x pixels, and at full size it
    would take longer than the CNN), mean |dx| and |dy|, mean of the outer eighth of the frame
    and of the rest (full size). Cheap graph ops, no learnt weights."""
    size = int(x.shape[1])
    dx = x[:, :, 1:, :] - x[:, :, :-1, :]
    dy = x[:, 1:, :, :] - x[:, :-1, :, :]
    f = max(1, size // HISTOGRAM_SIZE)
    small = keras.ops.average_pool(x, f, strides=f, padding="valid") if f > 1 else x
    sdx, sdy = small[:, 1:, 1:, :] - small[:, 1:, :-1, :], small[:, 1:, 1:, :] - small[:, :-1, 1:, :]
    grad = keras.ops.sqrt(keras.ops.square(sdx) + keras.ops.square(sdy) + 1e-12)
    b = max(1, size // 8)
    inner = keras.ops.sum(x[:, b:size - b, b:size - b, :], axis=(1, 2))  # slices, not an S x S mask constant
    n_inner = float((size - 2 * b) ** 2)
    parts = [_soft_histogram(small, INTENSITY_BINS),
             _soft_histogram(keras.ops.minimum(grad / GRADIENT_RANGE, 1.0), GRADIENT_BINS),
             keras.ops.mean(keras.ops.abs(dx), axis=(1, 2)), keras.ops.mean(keras.ops.abs(dy), axis=(1, 2)),
             (keras.ops.sum(x, axis=(1, 2)) - inner) / (size * size - n_inner), inner / n_inner]
    return [keras.ops.concatenate(parts, axis=1)]


def _statistics(model: keras.Model) -> list:
    """The gate's blocks: [mean, std] per named layer, then the input statistics."""
    return _pooled(model, gate_layers(model)) + input_statistics(model.input)


def pooled_model(model: keras.Model) -> keras.Model:
    """float32 (B, S, S, 1) -> float32 (B, P): the gate's statistics, concatenated in block
    order (layer by layer, mean then std; then the input statistics)."""
    return keras.Model(model.input, layers.Concatenate(name="gate_pooled")(_statistics(model)), name="gate_pooled")


def block_sizes(model: keras.Model) -> list:
    """Width of each block of :func:`pooled_model`'s output ((layer, statistic) blocks, then the
    input statistics)."""
    return [int(p.shape[-1]) for p in _statistics(model)]


class GateHead(layers.Layer):
    """(B, P) pooled statistics -> (B,) gate score, from fitted constants (see the module doc).

    Parameters
    ----------
    params : dict of ndarray
        ``blocks`` int (K, 2) [start, end) of each block; ``mu_k`` (d_k,) and ``w_k`` (d_k, d_k)
        per block k; ``x_mean``, ``x_scale`` (P + K,) standardisation of [statistics, log
        distances]; ``coef`` (P + K,), ``intercept`` (1,).
    """

    def __init__(self, params: dict, **kw):
        super().__init__(name="gate", **kw)
        self.blocks = [tuple(int(v) for v in b) for b in params["blocks"]]
        f32 = {k: np.asarray(v, np.float32) for k, v in params.items() if k != "blocks"}
        self.mus = [keras.ops.convert_to_tensor(f32[f"mu_{k}"]) for k in range(len(self.blocks))]
        self.ws = [keras.ops.convert_to_tensor(f32[f"w_{k}"]) for k in range(len(self.blocks))]
        self.x_mean = keras.ops.convert_to_tensor(f32["x_mean"])
        self.x_scale = keras.ops.convert_to_tensor(f32["x_scale"])
        self.coef = keras.ops.convert_to_tensor(f32["coef"].reshape(-1, 1))
        self.intercept = float(f32["intercept"].ravel()[0])

    def call(self, v):
        dists = []
        for (a, b), mu, w in zip(self.blocks, self.mus, self.ws):
            z = keras.ops.matmul(v[:, a:b] - mu, w)
            dists.append(0.5 * keras.ops.log(keras.ops.mean(keras.ops.square(z), axis=1, keepdims=True) + 1e-12))
        x = keras.ops.concatenate([v] + dists, axis=1)
        x = (x - self.x_mean) / self.x_scale
        return keras.ops.reshape(keras.ops.matmul(x, self.coef), (-1,)) + self.intercept


class PartHead(layers.Layer):
    """(B, P) pooled statistics -> (B, K) body-part probabilities: softmax of a linear map of the
    standardised statistics (``x_mean``, ``x_scale`` (P,), ``coef`` (P, K), ``intercept`` (K,)).

    The fallback for a CNN trained without its own part head (``ModelConfig.parts`` empty, e.g.
    a checkpoint from before the head was trained jointly): export fits it on frozen features."""

    def __init__(self, params: dict, **kw):
        super().__init__(name="part", **kw)
        f32 = {k: np.asarray(v, np.float32) for k, v in params.items()}
        self.x_mean = keras.ops.convert_to_tensor(f32["x_mean"])
        self.x_scale = keras.ops.convert_to_tensor(f32["x_scale"])
        self.coef = keras.ops.convert_to_tensor(f32["coef"])
        self.intercept = keras.ops.convert_to_tensor(f32["intercept"])

    def call(self, v):
        z = keras.ops.matmul((v - self.x_mean) / self.x_scale, self.coef) + self.intercept
        return keras.ops.softmax(z, axis=-1)


def with_gate(cam_model: keras.Model, model: keras.Model, params: dict | None,
              part_params: dict | None = None) -> keras.Model:
    """``cam_model`` (outputs [probability, cam]) plus ``gate`` (B,) and ``part`` (B, K) body-part
    probabilities: the one place that decides the exported CNN's outputs.

    Parameters
    ----------
    cam_model : keras.Model
        From :func:`deep.cam_model` of ``model``.
    model : keras.Model
        The trained CNN (its layers give the pooled statistics).
    params : dict or None
        Fitted constants of :class:`GateHead` (``export.gate.fit_gate``); None when the run had too
        few radiographs to fit a gate (no ``gate`` output).
    part_params : dict, optional
        Fitted constants of :class:`PartHead` (``export.gate.fit_part_head``), for a model trained
        without a part head; without them the model's own trained part head (if any) is ``part``.

    Returns
    -------
    keras.Model
        ``cam_model`` itself when there is nothing to add.
    """
    from deep.model import part_output

    trained = part_output(model)
    if params is None and part_params is None and trained is None:
        return cam_model
    outputs = list(cam_model.outputs)
    if params is not None or part_params is not None:
        pooled = layers.Concatenate(name="gate_pooled")(_statistics(model))
        if params is not None:
            outputs.append(GateHead(params)(pooled))
        if part_params is not None:
            outputs.append(PartHead(part_params)(pooled))
    if part_params is None and trained is not None:
        outputs.append(trained)
    return keras.Model(cam_model.input, outputs, name=f"{cam_model.name}_{'gate' if params is not None else 'part'}")
