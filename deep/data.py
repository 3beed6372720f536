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


def _batch_reader(images, rows, order, batch_size, labels, weights, parts):
    """Return read(start) -> (float32 (B,S,S,1), float32 (B,), float32 (B,), int32 (B,)) for
    order[start:start+B]: images, labels, sample weights, body-part indices."""

    def read(start):
        idx = order[int(start):int(start) + batch_size]
        r = rows[idx]
        perm = np.argsort(r, kind="stable")  # ascending rows: sequential reads from the memmap
        batch = np.empty((len(r),) + images.shape[1:], np.uint8)
        batch[perm] = images[r[perm]]
        return to_model_input(batch), labels[idx], weights[idx], parts[idx]

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


def _flip(x, seed, axis, offset, draws):
    """Mirror each image along ``axis`` (1 = vertical, 2 = horizontal) with probability 1/2."""
    flip = (tf.random.stateless_uniform([draws], seed) < 0.5)[offset:offset + tf.shape(x)[0]]
    return tf.where(flip[:, None, None, None], tf.reverse(x, axis=[axis]), x)


def augment_batch(x, seed, aug: AugmentConfig | None = None, offset=0, total=None):
    """Random flips, rotation, scale, shift, brightness and contrast (see ``AugmentConfig``).

    Parameters
    ----------
    x : tf.Tensor float32 (B, S, S, 1) in [0, 1]
    seed : tf.Tensor int (2,)
        Stateless seed: the same seed gives the same augmentation.
    aug : AugmentConfig, optional
        Default: ``AugmentConfig()``.
    offset, total : int, optional
        ``x`` is images ``offset .. offset + B - 1`` of a batch of ``total`` (a replica's slice
        of a global batch): the draws are made for all ``total`` images and sliced, so every
        image is augmented as it would be in one process, whatever the number of replicas.

    Returns
    -------
    tf.Tensor float32 (B, S, S, 1) in [0, 1]
    """
    aug = AugmentConfig() if aug is None else aug
    n, size = tf.shape(x)[0], x.shape[1]
    draws = n if total is None else total
    s = tf.random.experimental.stateless_split(seed, 5)
    if aug.hflip:
        x = _flip(x, s[0], 2, offset, draws)
    if aug.vflip:
        x = _flip(x, s[4], 1, offset, draws)
    if aug.max_rotation or aug.scale or aug.shift:
        transforms = _affine_transforms(s[1], draws, size, aug)[offset:offset + n]
        x = tf.raw_ops.ImageProjectiveTransformV3(
            images=x, transforms=transforms, output_shape=[size, size],
            fill_value=0.0, interpolation="BILINEAR", fill_mode="CONSTANT")
    if aug.contrast or aug.brightness:
        contrast = tf.random.stateless_uniform([draws, 1, 1, 1], s[2], 1.0 - aug.contrast,
                                               1.0 + aug.contrast)[offset:offset + n]
        bright = tf.random.stateless_uniform([draws, 1, 1, 1], s[3], -aug.brightness,
                                             aug.brightness)[offset:offset + n]
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


def _check_part(part, batch_size, drop_remainder):
    """``part`` as (first, count, slices); (0, 1, 1) when None. DeepError when it cannot shard."""
    if part is None:
        return 0, 1, 1
    first, count, slices = (int(v) for v in part)
    if not (slices >= 1 and count >= 1 and 0 <= first and first + count <= slices):
        raise DeepError(f"invalid data shard {part}: slices first..first+count-1 of {slices}")
    if batch_size % slices or not drop_remainder:
        raise DeepError(f"the global batch of {batch_size} does not split into {slices} equal replica "
                        f"batches; use a --batch-size divisible by {slices}")
    return first, count, slices


def make_dataset(images, rows, labels=None, batch_size=32, augment=None, seed=0,
                 shuffle=None, sample_weights=(1.0, 1.0), drop_remainder=False, passes=1, part=None,
                 parts=None):
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
    part : (first, count, slices), optional
        Data sharding for ``tf.distribute`` (``deep.distribute``): every global batch of
        ``batch_size`` is cut into ``slices`` equal slices (one per replica) and this dataset
        yields slices ``first .. first + count - 1`` of each, in order, reading only those
        images. The global batches, their order and each image's augmentation are those of the
        unsharded dataset. Needs ``drop_remainder`` and ``batch_size`` divisible by ``slices``.
    parts : int array (M,), optional
        Body-part index of each row (into ``ModelConfig.parts``), for a model with a part head:
        elements become ``(x, (y, part), (w, ones))``: the part's cross-entropy is not
        reweighted by the abnormality's sample weights. Needs ``labels``.

    Returns
    -------
    tf.data.Dataset
        x float32 (B, S, S, 1) in [0, 1]; y float32 (B, 1); w float32 (B,); B is
        ``batch_size / slices`` with ``part``. With ``parts``: y is (y, int32 (B,)) and w is
        (w, float32 ones (B,)).
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
    if parts is not None and (labels is None or len(parts) != n):
        raise DeepError(f"body parts need labels and one part per row ({n} rows, "
                        f"{'no labels' if labels is None else f'{len(parts)} parts'})")
    pidx = np.zeros(n, np.int32) if parts is None else np.asarray(parts, np.int32)
    first, count, slices = _check_part(part, batch_size, drop_remainder)
    per = batch_size // slices
    read = _batch_reader(images, rows, order, per, lab, w, pidx)
    total = None if part is None else batch_size

    def load(i, start, offset):
        x, y, wt, pt = tf.numpy_function(read, [start + offset], [tf.float32, tf.float32, tf.float32, tf.int32])
        x = tf.reshape(x, [-1, size, size, 1])
        if augment is not None:
            x = augment_batch(x, tf.stack([tf.cast(seed, tf.int64), i]), augment, tf.cast(offset, tf.int32), total)
        if labels is None:
            return x
        y, wt = tf.reshape(y, [-1, 1]), tf.reshape(wt, [-1])
        if parts is None:
            return x, y, wt
        return x, (y, tf.reshape(pt, [-1])), (wt, tf.ones_like(wt))

    idx = np.repeat(np.arange(nb, dtype=np.int64), count)  # global batch of each element
    offsets = np.tile(np.arange(first, first + count, dtype=np.int64) * per, nb)
    ds = tf.data.Dataset.from_tensor_slices((idx, idx * batch_size, offsets))
    ds = ds.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.prefetch(tf.data.AUTOTUNE)
