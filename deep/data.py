"""tf.data input pipeline streaming from a uint8 image cache (a memmap), never the whole set as float."""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf

from deep.errors import DeepError

MAX_ROTATION_DEG = 30.0
SCALE_RANGE = (0.9, 1.1)
SHIFT_FRACTION = 0.05  # of the image side
BRIGHTNESS = 0.1  # additive, on [0, 1]
CONTRAST_RANGE = (0.8, 1.2)


def _batch_reader(images, rows, order, batch_size, labels, weights):
    """Return read(start) -> (uint8 (B,S,S), float32 (B,), float32 (B,)) for order[start:start+B]."""

    def read(start):
        idx = order[int(start):int(start) + batch_size]
        r = rows[idx]
        perm = np.argsort(r, kind="stable")  # ascending rows: sequential reads from the memmap
        batch = np.empty((len(r),) + images.shape[1:], np.uint8)
        batch[perm] = images[r[perm]]
        return batch, labels[idx], weights[idx]

    return read


def _affine_transforms(seed, n, size, max_rotation):
    """Per-image (n, 8) projective transforms: rotation, isotropic scale, shift (output -> input)."""
    s = tf.random.experimental.stateless_split(seed, 3)
    ang = tf.random.stateless_uniform([n], s[0], -1.0, 1.0) * (max_rotation * math.pi / 180.0)
    scale = tf.random.stateless_uniform([n], s[1], *SCALE_RANGE)
    shift = tf.random.stateless_uniform([n, 2], s[2], -1.0, 1.0) * (SHIFT_FRACTION * size)
    c = (size - 1) / 2.0
    a0, a1 = tf.cos(ang) / scale, tf.sin(ang) / scale
    b0, b1 = -a1, a0
    cx, cy = c + shift[:, 0], c + shift[:, 1]
    a2 = c - a0 * cx - a1 * cy
    b2 = c - b0 * cx - b1 * cy
    zeros = tf.zeros_like(a0)
    return tf.stack([a0, a1, a2, b0, b1, b2, zeros, zeros], axis=1)


def augment_batch(x, seed, max_rotation=MAX_ROTATION_DEG):
    """Random flip, rotation (<= ``max_rotation`` deg), scale, shift, brightness/contrast jitter.

    Parameters
    ----------
    x : tf.Tensor float32 (B, S, S, 1) in [0, 1]
    seed : tf.Tensor int (2,)
        Stateless seed: the same seed gives the same augmentation.
    max_rotation : float
        Largest rotation in degrees (the MURA paper: 30).

    Returns
    -------
    tf.Tensor float32 (B, S, S, 1) in [0, 1]
    """
    n, size = tf.shape(x)[0], x.shape[1]
    s = tf.random.experimental.stateless_split(seed, 4)
    # Horizontal flips only: left/right views are both common; upside-down radiographs are not.
    flip = tf.random.stateless_uniform([n], s[0]) < 0.5
    x = tf.where(flip[:, None, None, None], tf.reverse(x, axis=[2]), x)
    x = tf.raw_ops.ImageProjectiveTransformV3(
        images=x, transforms=_affine_transforms(s[1], n, size, float(max_rotation)), output_shape=[size, size],
        fill_value=0.0, interpolation="BILINEAR", fill_mode="CONSTANT")
    contrast = tf.random.stateless_uniform([n, 1, 1, 1], s[2], *CONTRAST_RANGE)
    bright = tf.random.stateless_uniform([n, 1, 1, 1], s[3], -BRIGHTNESS, BRIGHTNESS)
    mean = tf.reduce_mean(x, axis=[1, 2, 3], keepdims=True)
    return tf.clip_by_value((x - mean) * contrast + mean + bright, 0.0, 1.0)


def make_dataset(images, rows, labels=None, batch_size=32, augment=False, seed=0,
                 shuffle=None, sample_weights=(1.0, 1.0), drop_remainder=False,
                 max_rotation=MAX_ROTATION_DEG):
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
    augment : bool
        Apply ``augment_batch`` (training only).
    seed : int
        Seeds the shuffle order and the augmentation (vary it per epoch).
    shuffle : bool, optional
        Defaults to ``augment``. Without shuffling the order of ``rows`` is kept.
    sample_weights : (w_normal, w_abnormal)
        Per-sample loss weights by label (the MURA paper's weighted BCE).
    drop_remainder : bool
        Drop the last partial batch (training: avoids tiny BatchNorm batches).
    max_rotation : float
        Largest augmentation rotation in degrees (with ``augment``).

    Returns
    -------
    tf.data.Dataset
        x float32 (B, S, S, 1) in [0, 1]; y float32 (B, 1); w float32 (B,).
    """
    rows = np.asarray(rows, dtype=np.int64)
    n, size = len(rows), images.shape[1]
    if n == 0:
        raise DeepError("no images to stream (empty split)")
    nb = n // batch_size if drop_remainder else math.ceil(n / batch_size)
    if nb == 0:
        raise DeepError(f"{n} images are fewer than one batch of {batch_size}; lower the batch size")
    shuffle = augment if shuffle is None else shuffle
    order = np.random.default_rng(seed).permutation(n) if shuffle else np.arange(n)
    lab = np.zeros(n, np.float32) if labels is None else np.asarray(labels, np.float32)
    w = np.where(lab > 0.5, sample_weights[1], sample_weights[0]).astype(np.float32)
    read = _batch_reader(images, rows, order, batch_size, lab, w)

    def load(i, start):
        x, y, wt = tf.numpy_function(read, [start], [tf.uint8, tf.float32, tf.float32])
        x = tf.cast(tf.reshape(x, [-1, size, size, 1]), tf.float32) / 255.0  # == to_model_input
        if augment:
            x = augment_batch(x, tf.stack([tf.cast(seed, tf.int64), i]), max_rotation)
        if labels is None:
            return x
        return x, tf.reshape(y, [-1, 1]), tf.reshape(wt, [-1])

    idx = np.arange(nb, dtype=np.int64)
    ds = tf.data.Dataset.from_tensor_slices((idx, idx * batch_size))
    ds = ds.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.prefetch(tf.data.AUTOTUNE)
