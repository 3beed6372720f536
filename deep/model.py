"""CNN builders (one factory, ``build_model``), checkpoint loading and the CAM model.

Every model maps float32 (B, S, S, 1) in [0, 1] (``edge.preprocess.to_model_input``) to a
probability (B, 1). Normalisation lives in the graph and there are no random ops besides
training-only Dropout, so the inference graph exports cleanly to ONNX. All archs end in
``features -> GlobalAveragePooling2D("gap") -> Dropout -> Dense(1, sigmoid, "head")`` so
class activation maps are available for every arch. With ``ModelConfig.parts`` the model has a
second output, ``gap -> Dense(K, softmax, "part")``: the body part, trained jointly
(``deep.training``); :func:`head_output` is the probability whichever the model is.
"""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
from keras import layers

from deep.config import ModelConfig
from deep.errors import DeepError

# The small family: per stage (width multiplier, 2x max-pool after it), and the final block's
# multiplier. "small" has output stride 16 (an 8 x 8 CAM at 128 px); "small-s8" drops the second
# stage's pool and halves the width of what then runs at stride 8 (a 16 x 16 CAM at about the
# multiply-adds of "small"; docs/cam.md: measured, not the default).
SMALL_STAGES = {
    "small": (((2, True), (4, True), (8, False)), 8),
    "small-s8": (((2, True), (4, False), (4, False)), 4),
}


def _sep_block(x, ch, momentum, name):
    """SeparableConv 3x3 -> BatchNorm -> ReLU."""
    x = layers.SeparableConv2D(ch, 3, padding="same", use_bias=False, name=f"{name}_sep")(x)
    x = layers.BatchNormalization(momentum=momentum, name=f"{name}_bn")(x)
    return layers.ReLU(name=f"{name}_relu")(x)


def _small_features(x, cfg: ModelConfig):
    """Xception-like stages (width x2, x4, x8) after a strided stem + pool; output stride 16.

    Why the early pool: separable convs at 64x64 px dominated CPU time (docs/performance.md,
    "Design choices"); stride 16 still gives an 8x8 CAM at 128 px (16 px cells).
    """
    m = cfg.bn_momentum
    # Normalise on (B, S, S), not (B, S, S, 1): onnxruntime's elementwise Mul/Add on a
    # trailing axis of 1 is far slower (docs/performance.md, "Design choices").
    x = layers.Reshape((cfg.size, cfg.size), name="squeeze_channel")(x)
    x = layers.Rescaling(4.0, offset=-2.0, name="normalize")(x)  # [0,1] -> [-2,2]
    x = layers.Reshape((cfg.size, cfg.size, 1), name="expand_channel")(x)
    x = layers.Conv2D(cfg.width, 3, strides=2, padding="same", use_bias=False, name="stem_conv")(x)
    x = layers.BatchNormalization(momentum=m, name="stem_bn")(x)
    x = layers.ReLU(name="stem_relu")(x)
    x = layers.MaxPooling2D(3, strides=2, padding="same", name="stem_pool")(x)
    stages, final_mult = SMALL_STAGES[cfg.arch]
    for i, (mult, pool) in enumerate(stages):
        ch = cfg.width * mult
        res = layers.Conv2D(ch, 1, strides=2 if pool else 1, use_bias=False, name=f"s{i}_res")(x)
        res = layers.BatchNormalization(momentum=m, name=f"s{i}_res_bn")(res)
        x = _sep_block(x, ch, m, f"s{i}a")
        x = _sep_block(x, ch, m, f"s{i}b")
        if pool:
            x = layers.MaxPooling2D(3, strides=2, padding="same", name=f"s{i}_pool")(x)
        x = layers.Add(name=f"s{i}_add")([x, res])
    x = _sep_block(x, cfg.width * final_mult, m, "final")
    return layers.Identity(name="features")(x)


def _backbone_features(x, cfg: ModelConfig, weights):
    """keras.applications backbone on the grey image repeated to 3 channels (inside the graph)."""
    apps = keras.applications
    rgb = layers.Concatenate(name="to_rgb")([x, x, x])
    shape = (cfg.size, cfg.size, 3)
    if cfg.arch == "densenet169":
        # DenseNet's "torch" preprocessing: ImageNet mean/std on [0, 1] input.
        rgb = layers.Normalization(mean=[0.485, 0.456, 0.406],
                                   variance=[0.229**2, 0.224**2, 0.225**2], name="normalize")(rgb)
        net = apps.DenseNet169(include_top=False, weights=None, input_shape=shape)
    else:
        rgb = layers.Rescaling(2.0, offset=-1.0, name="normalize")(rgb)  # [0,1] -> [-1,1]
        net = apps.MobileNetV3Small(include_top=False, weights=None, input_shape=shape,
                                    include_preprocessing=False)
    for layer in net.layers:  # short fits need fast-moving BN statistics (see ModelConfig)
        if isinstance(layer, layers.BatchNormalization):
            layer.momentum = cfg.bn_momentum
    if weights is not None:
        _load_weights(net, weights, f"the {cfg.arch} backbone (include_top=False)")
    return layers.Identity(name="features")(net(rgb))


def _load_weights(model, path, what):
    path = Path(path)
    if not path.is_file():
        raise DeepError(f"weights file not found: {path}")
    try:
        model.load_weights(str(path))
    except Exception as e:  # noqa: BLE001 - Keras raises ValueError/KeyError/OSError/... on mismatch
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DeepError(f"weights file {path} does not match {what}: {msg}") from None


def build_model(cfg: ModelConfig, weights=None) -> keras.Model:
    """Build an uncompiled CNN.

    Parameters
    ----------
    cfg : ModelConfig
    weights : path or None
        Local weights file (never a download). For "small": weights of the whole model
        (``.weights.h5`` or ``.keras``); for backbones: ``include_top=False`` weights of
        the keras.applications network. A file that does not fit raises DeepError.

    Returns
    -------
    keras.Model
        float32 (B, S, S, 1) in [0, 1] -> probability float32 (B, 1) in [0, 1]; with
        ``cfg.parts`` (K names) the outputs are [probability (B, 1), part float32 (B, K)]
        (softmax over ``cfg.parts``, in that order).
    """
    inp = keras.Input((cfg.size, cfg.size, 1), name="image")
    if cfg.arch in SMALL_STAGES:
        feats = _small_features(inp, cfg)
    else:
        feats = _backbone_features(inp, cfg, weights)
    pooled = layers.GlobalAveragePooling2D(name="gap")(feats)
    x = layers.Dropout(cfg.dropout, name="dropout")(pooled)
    out = layers.Dense(1, activation="sigmoid", name="head")(x)
    if cfg.parts:  # from the pooled features, not through the abnormality head's Dropout
        out = [out, layers.Dense(len(cfg.parts), activation="softmax", name="part")(pooled)]
    model = keras.Model(inp, out, name=f"murakit_{cfg.arch}")
    if cfg.arch in SMALL_STAGES and weights is not None:
        _load_weights(model, weights, f"the small arch {cfg.to_dict()}")
    return model


def head_output(model: keras.Model):
    """The abnormality probability tensor (B, 1) of a model from :func:`build_model`, with or
    without a part head (a model without one has it as its only output)."""
    return model.get_layer("head").output


def part_output(model: keras.Model):
    """The trained body-part softmax (B, K) of a model from :func:`build_model`, or None when the
    model has no part head (trained before it existed, or ``ModelConfig.parts`` empty)."""
    try:
        return model.get_layer("part").output
    except ValueError:
        return None


def probability_model(model: keras.Model) -> keras.Model:
    """``model`` itself when its only output is the probability, else a model of the same layers
    (the same weights) with that output alone: what every consumer of probabilities calls."""
    if len(model.outputs) == 1:
        return model
    return keras.Model(model.input, head_output(model), name=model.name)


def load_model(path, compile=False) -> keras.Model:
    """Load a ``.keras`` checkpoint written by ``deep.train``; unreadable -> DeepError."""
    path = Path(path)
    if not path.is_file():
        raise DeepError(f"no checkpoint at {path}")
    try:
        return keras.saving.load_model(str(path), compile=compile)
    except Exception as e:  # noqa: BLE001 - zip, h5 and config errors all mean "unusable file"
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DeepError(f"cannot read checkpoint {path} (corrupt?): {msg}") from None


class PlaceCam(layers.Layer):
    """(B, h, w) grid -> (B, S, S) canvas: ``A_y @ cam @ A_x.T`` with fixed placement matrices.

    The matrices (``edge.cam.placement_matrix`` of the measured receptive-field centres) are
    constants of the graph, so the device draws an aligned map with no knowledge of the arch.
    """

    def __init__(self, ay, ax, **kw):
        super().__init__(**kw)
        self.ay = np.asarray(ay, np.float32)
        self.ax_t = np.asarray(ax, np.float32).T.copy()

    def call(self, cam):
        from keras import ops

        # Rows first, on the small (B, h, w) grid; the large (B, S, S) product is then one 2-D GEMM.
        return ops.matmul(ops.matmul(self.ay, cam), self.ax_t)

    def compute_output_shape(self, shape):
        return (shape[0], self.ay.shape[0], self.ax_t.shape[1])


def cam_model(model: keras.Model, centres=None) -> keras.Model:
    """Model with outputs (probability (B, 1), cam (B, S, S)) for any arch built here.

    The CAM is the head's Dense weights applied to the last feature maps as a 1x1 conv (a
    snapshot of the current head weights; plain ops so tf2onnx converts it): raw logit
    contributions, unnormalised, ``sigmoid(mean(grid) + head_bias) == probability`` on the
    (h, w) grid. The grid is then placed on the S x S canvas by interpolating between each
    cell's receptive-field centre (``deep.receptive.receptive_centres``, measured here on the
    architecture; ``centres=(cy, cx)`` reuses a measurement), so ``edge.cam.upsample_cam`` of
    the output is aligned with the input image (the contract in ``edge.cam``).
    """
    from deep.receptive import receptive_centres
    from edge.cam import placement_matrix

    try:
        feats = model.get_layer("gap").input
        head = model.get_layer("head")
    except ValueError:
        raise DeepError("model has no gap/head layers; CAM needs a model from deep.build_model") from None
    kernel, _bias = head.get_weights()
    conv = layers.Conv2D(1, 1, use_bias=False, name="cam_conv")
    cam = conv(feats)
    conv.set_weights([kernel.reshape(1, 1, -1, 1)])
    h, w = cam.shape[1], cam.shape[2]
    cam = layers.Reshape((h, w), name="cam_grid")(cam)
    cy, cx = receptive_centres(model) if centres is None else centres
    size = int(model.input.shape[1])
    cam = PlaceCam(placement_matrix(cy, size), placement_matrix(cx, size), name="cam")(cam)
    prob = layers.Identity(name="probability")(head_output(model))
    return keras.Model(model.input, [prob, cam], name=f"{model.name}_cam")
