"""tf.data input pipeline streaming from a uint8 image cache (a memmap), never the whole set as float.

Pixels become model input through ``edge.preprocess.to_model_input`` (the one /255), exactly
as on the device; augmentation runs in the input pipeline, so the model graph has no random ops.
"""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf

from deep.config import AugmentConfig
from deep.errors import DeepError
from edge.preprocess import to_model_input


def _batch_reader(images, rows, order, batch_size, labels, weights):
    """Return read(start) -> (float32 (B,S,S,1), float32 (B,), float32 (B,)) for order[start:start+B]."""

    def read(start):
        idx = order[int(start):int(start) + batch_size]
        r = rows[idx]
        perm = np.argsort(r, kind="stable")  # ascending rows: sequential reads from the memmap
        batch = np.empty((len(r),) + images.shape[1:], np.uint8)
        batch[perm] = images[r[perm]]
        return to_model_input(batch), labels[idx], weights[idx]

    return read


def _affine_transforms(seed, n, size, aug: AugmentConfig):
    """Per-image (n, 8) projective transforms: rotation, isotropic scale, shift (output -> input)."""
    s = tf.random.experimental.stateless_split(seed, 3)
    ang = tf.random.stateless_uniform([n], s[0], -1.0, 1.0) * (aug.max_rotation * math.pi / 180.0)
    scale = tf.random.stateless_uniform([n], s[1], 1.0 - aug.scale, 1.0 + aug.scale)
    shift = tf.random.stateless_uniform([n, 2], s[2], -1.0, 1.0) * (aug.shift * size)
    c = (size - 1) / 2.0
    a0, a1 = tf.cos(ang) / scale, tf.sin(ang) / scale
    b0, b1 = -a1, a0
    cx, cy = c + shift[:, 0], c + shift[:, 1]
    a2 = c - a0 * cx - a1 * cy
    b2 = c - b0 * cx - b1 * cy
    zeros = tf.zeros_like(a0)
    return tf.stack([a0, a1, a2, b0, b1, b2, zeros, zeros], axis=1)


def _flip(x, seed, axis):
    """Mirror each image along ``axis`` (1 = vertical, 2 = horizontal) with probability 1/2."""
    flip = tf.random.stateless_uniform([tf.shape(x)[0]], seed) < 0.5
    return tf.where(flip[:, None, None, None], tf.reverse(x, axis=[axis]), x)


def augment_batch(x, seed, aug: AugmentConfig | None = None):
    """Random flips, rotation, scale, shift, brightness and contrast (see ``AugmentConfig``).

    Parameters
    ----------
    x : tf.Tensor float32 (B, S, S, 1) in [0, 1]
    seed : tf.Tensor int (2,)
        Stateless seed: the same seed gives the same augmentation.
    aug : AugmentConfig, optional
        Default: ``AugmentConfig()``.

    Returns
    -------
    tf.Tensor float32 (B, S, S, 1) in [0, 1]
    """
    aug = AugmentConfig() if aug is None else aug
    n, size = tf.shape(x)[0], x.shape[1]
    s = tf.random.experimental.stateless_split(seed, 5)
    if aug.hflip:
        x = _flip(x, s[0], 2)
    if aug.vflip:
        x = _flip(x, s[4], 1)
    if aug.max_rotation or aug.scale or aug.shift:
        x = tf.raw_ops.ImageProjectiveTransformV3(
            images=x, transforms=_affine_transforms(s[1], n, size, aug), output_shape=[size, size],
            fill_value=0.0, interpolation="BILINEAR", fill_mode="CONSTANT")
    if aug.contrast or aug.brightness:
        contrast = tf.random.stateless_uniform([n, 1, 1, 1], s[2], 1.0 - aug.contrast, 1.0 + aug.contrast)
        bright = tf.random.stateless_uniform([n, 1, 1, 1], s[3], -aug.brightness, aug.brightness)
        mean = tf.reduce_mean(x, axis=[1, 2, 3], keepdims=True)
        x = tf.clip_by_value((x - mean) * contrast + mean + bright, 0.0, 1.0)
    return x


def _order(n, batch_size, shuffle, drop_remainder, seed, passes):
    """Positions (into rows) in streaming order: ``passes`` passes, each its own permutation."""
    if not shuffle:
        return np.tile(np.arange(n), passes)
    rng = np.random.default_rng(seed)
    per_pass = (n // batch_size) * batch_size if drop_remainder else n
    return np.concatenate([rng.permutation(n)[:per_pass] for _ in range(passes)])


def make_dataset(images, rows, labels=None, batch_size=32, augment=None, seed=0,
                 shuffle=None, sample_weights=(1.0, 1.0), drop_remainder=False, passes=1):
    """Stream batches from a uint8 image cache.

    Parameters
    ----------
    images : np.ndarray or np.memmap, uint8 (N, S, S)
        Read a batch of rows at a time; never converted as a whole.
    rows : int array (M,)
        Rows of ``images`` to use.
    labels : int array (M,) of 0/1, optional
        When given, elements are ``(x, y, w)`` for ``model.fit``; else just ``x``.
    batch_size : int
    augment : AugmentConfig or None
        Apply ``augment_batch`` with these settings (training only); None: no augmentation.
    seed : int
        Seeds the shuffle order and the augmentation (vary it per epoch).
    shuffle : bool, optional
        Defaults to ``augment is not None``. Without shuffling the order of ``rows`` is kept.
    sample_weights : (w_normal, w_abnormal)
        Per-sample loss weights by label (the MURA paper's weighted BCE).
    drop_remainder : bool
        Drop the last partial batch of each pass (training: avoids tiny BatchNorm batches).
    passes : int
        Passes over ``rows`` in one dataset (each shuffled anew); >1 for small training sets.

    Returns
    -------
    tf.data.Dataset
        x float32 (B, S, S, 1) in [0, 1]; y float32 (B, 1); w float32 (B,).
    """
    rows = np.asarray(rows, dtype=np.int64)
    n, size = len(rows), images.shape[1]
    if n == 0:
        raise DeepError("no images to stream (empty split)")
    if drop_remainder and n < batch_size:
        raise DeepError(f"{n} images are fewer than one batch of {batch_size}; lower the batch size")
    shuffle = augment is not None if shuffle is None else shuffle
    order = _order(n, batch_size, shuffle, drop_remainder, seed, passes)
    nb = len(order) // batch_size if drop_remainder else math.ceil(len(order) / batch_size)
    lab = np.zeros(n, np.float32) if labels is None else np.asarray(labels, np.float32)
    w = np.where(lab > 0.5, sample_weights[1], sample_weights[0]).astype(np.float32)
    read = _batch_reader(images, rows, order, batch_size, lab, w)

    def load(i, start):
        x, y, wt = tf.numpy_function(read, [start], [tf.float32, tf.float32, tf.float32])
        x = tf.reshape(x, [-1, size, size, 1])
        if augment is not None:
            x = augment_batch(x, tf.stack([tf.cast(seed, tf.int64), i]), augment)
        if labels is None:
            return x
        return x, tf.reshape(y, [-1, 1]), tf.reshape(wt, [-1])

    idx = np.arange(nb, dtype=np.int64)
    ds = tf.data.Dataset.from_tensor_slices((idx, idx * batch_size))
    ds = ds.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.prefetch(tf.data.AUTOTUNE)
