"""Where each CAM cell looks: effective receptive-field centres, and re-initialised weights.

Keras ``padding="same"`` with stride 2 on an even input pads only right and bottom, a 1x1
stride-2 convolution reads the top-left pixel of each 2x2 block, and cells near the border see
part padding: so a feature cell's evidence is not centred on the square a plain resize draws
it over (on the small arch at 128 px: ~4 px off inside, up to ~13 px at the border). The
centres are measured here on the real architecture with re-initialised weights, the way the
alignment test measures them, and :func:`deep.cam_model` bakes them into the graph.
"""

from __future__ import annotations

import weakref

import numpy as np

from deep.errors import DeepError

# Seeds of the weight draws averaged by receptive_centres (the test measures with others). One
# draw places a cell to ~1 px (s.d.); 16 draws of 2 cells per row or column, to ~0.2.
CENTRE_SEEDS = tuple(range(16))
CHUNK = 16  # images per gradient batch (a 512 px input with 1,024 cells would not fit in memory)
_CACHE: dict = {}  # architecture key -> (cy, cx): bench and explain build several CAM models per process
_GRADS = weakref.WeakKeyDictionary()  # model -> {layer key: compiled input gradient}


def _fans(shape) -> tuple:
    receptive = int(np.prod(shape[:-2])) if len(shape) > 2 else 1
    return receptive * shape[-2], receptive * shape[-1]


def random_weights(model, seed: int = 0) -> list:
    """A fresh draw of every weight of ``model`` (numpy, seeded; no global RNG state touched).

    Kernels: Glorot-uniform (Keras' default for Conv2D, SeparableConv2D and Dense); biases and
    BatchNorm betas / moving means 0; gammas / moving variances 1 (BN is the identity).

    Returns
    -------
    list of ndarray, in ``model.get_weights()`` order (for ``model.set_weights``).
    """
    rng = np.random.default_rng(seed)
    out = []
    for v in model.weights:
        shape, name = tuple(v.shape), v.path.rsplit("/", 1)[-1]
        if name in ("gamma", "moving_variance"):
            w = np.ones(shape)
        elif len(shape) >= 2:
            fan_in, fan_out = _fans(shape)
            lim = np.sqrt(6.0 / (fan_in + fan_out))
            w = rng.uniform(-lim, lim, shape)
        else:  # bias, beta, moving_mean
            w = np.zeros(shape)
        out.append(w.astype(np.asarray(v).dtype))
    return out


def erf_centroids(model, feats, cells, seed: int) -> np.ndarray:
    """Centroids of the effective receptive field of feature cells (random weights, random input).

    Parameters
    ----------
    model : keras.Model whose weights are already the draw to measure
    feats : KerasTensor, a 4-D (B, h, w, C) layer output of ``model``
    cells : int ndarray (K, 2) of (row, column) cells
    seed : seeds the input image and the channel weights that make each cell one number

    Returns
    -------
    float64 (K, 2): (y, x) centroid of |d cell / d input| in canvas pixels (pixel i spans [i, i+1));
    NaN for a cell with no gradient in this draw (every path to it switched off by ReLUs).
    """
    import tensorflow as tf

    size = int(model.input.shape[1])
    rng = np.random.default_rng(seed)
    grad = _input_gradient(model, feats)
    chan = tf.constant(rng.standard_normal(int(feats.shape[-1])), tf.float32)
    image = rng.uniform(0, 1, (1, size, size, 1)).astype(np.float32)
    grads = []
    for at in range(0, len(cells), CHUNK):
        part = cells[at:at + CHUNK]
        # One batch shape (CHUNK) for every call: the compiled gradient is traced once. Batch >= 2:
        # oneDNN's 1x1 stride-2 input gradient crashes at batch 1.
        k = max(2, min(CHUNK, len(cells)))
        pick = np.zeros((k,) + tuple(feats.shape[1:3]), np.float32)
        pick[np.arange(len(part)), part[:, 0], part[:, 1]] = 1.0
        g = grad(tf.constant(np.repeat(image, k, 0)), chan, tf.constant(pick))
        grads.append(np.abs(g.numpy()[: len(part), :, :, 0]).astype(np.float64))
    g = np.concatenate(grads)
    mass = g.sum((1, 2))
    mass[mass <= 0] = np.nan
    pos = np.arange(size) + 0.5
    return np.stack([(g.sum(2) * pos).sum(1) / mass, (g.sum(1) * pos).sum(1) / mass], axis=1)


def _input_gradient(model, feats):
    """``(x, chan, pick) -> d sum(pick * (feats(x) . chan)) / dx`` for ``model``, cached per model.

    A graph function reads the model's weight variables, so one trace serves every weight draw
    (``set_weights`` assigns in place). Compiled only for inputs of 160 px and more: tracing
    DenseNet-169 costs 8-25 s (machine load), more than its 16 eager draws at 64 px (~1 s each),
    while at 224 px an eager draw takes ~11 s and a compiled one ~4 s.
    """
    import keras
    import tensorflow as tf

    key = (feats._keras_history[0].name, tuple(feats.shape[1:]))
    per_model = _GRADS.setdefault(model, {})
    if key not in per_model:
        probe = keras.Model(model.input, feats)

        def grad(x, chan, pick):
            with tf.GradientTape() as tape:
                tape.watch(x)
                v = tf.reduce_sum(tf.tensordot(probe(x, training=False), chan, 1) * pick)
            return tape.gradient(v, x)

        per_model[key] = tf.function(grad) if int(model.input.shape[1]) >= 160 else grad
    return per_model[key]


def receptive_centres(model, feats=None, seeds=CENTRE_SEEDS) -> tuple:
    """Per-row and per-column centres of a square feature grid, in canvas pixels.

    Measured on ``model``'s architecture with re-initialised weights (the model's own weights
    are restored before returning): the mean over ``seeds`` of the receptive-field centroids of
    two wrapped diagonals of cells per draw (shifted each draw), averaged over each row (its y)
    and each column (its x). The placement is separable - a cell's x depends on its column only -
    which the receptive fields nearly are (the alignment test checks every cell).

    Parameters
    ----------
    model : keras.Model from ``deep.build_model`` (input (B, S, S, 1))
    feats : KerasTensor, optional
        4-D layer output; default the maps fed to "gap" (the CAM's grid).
    seeds : tuple of int

    Returns
    -------
    (cy, cx) : float64 arrays (h,), (w,), non-decreasing, within [0, S]. Where neighbouring
    cells measure out of order (a grid so coarse that their receptive fields cover the same
    whole image, e.g. 2 x 2 at 32 px) they are pooled to one centre: the map cannot tell them
    apart, and the drawing shows them as one place.
    """
    feats = model.get_layer("gap").input if feats is None else feats
    h, w = int(feats.shape[1]), int(feats.shape[2])
    if h != w:
        raise DeepError(f"receptive_centres needs a square grid, got {h}x{w}")
    # The centres depend on the architecture only: the same graph, layer and seeds give the same.
    key = (model.to_json(), feats._keras_history[0].name, tuple(seeds))
    if key not in _CACHE:
        _CACHE[key] = _measure(model, feats, h, seeds)
    return tuple(c.copy() for c in _CACHE[key])


def _measure(model, feats, h: int, seeds) -> tuple:
    """:func:`receptive_centres` without the cache."""
    # Two wrapped diagonals per draw, shifted by one column each draw: every row and every column
    # is sampled twice per draw, in 2h cells, not h*h (DenseNet-169 at 224 px: 14 gradients per
    # draw instead of 49), and over the draws each row meets every column (up to 32 of them).
    # The shift matters: the receptive fields are not exactly separable (DenseNet-169 at 224 px:
    # the first row's centre is 2.4 px further in at the corners than mid-row), so the corners
    # alone (the plain diagonals) would place the border rows by their extreme, not their mean.
    saved = model.get_weights()
    sums, counts = np.zeros((h, h, 2)), np.zeros((h, h, 2))
    try:
        for k, s in enumerate(seeds):
            cells = np.array(sorted({(i, (i + k) % h) for i in range(h)} | {(i, (k - 1 - i) % h) for i in range(h)}))
            model.set_weights(random_weights(model, s))
            c = erf_centroids(model, feats, cells, seed=s)
            ok = np.isfinite(c)
            np.add.at(sums, (cells[:, 0], cells[:, 1]), np.where(ok, c, 0.0))
            np.add.at(counts, (cells[:, 0], cells[:, 1]), ok)
    finally:
        model.set_weights(saved)
    with np.errstate(invalid="ignore"):
        cell = sums / counts  # each sampled cell's mean over its draws; NaN where never measured
        cy = np.nanmean(np.where(counts[..., 0] > 0, cell[..., 0], np.nan), axis=1)  # columns equally
        cx = np.nanmean(np.where(counts[..., 1] > 0, cell[..., 1], np.nan), axis=0)
    if not (np.all(np.isfinite(cy)) and np.all(np.isfinite(cx))):
        raise DeepError("a row or column of feature cells has no gradient to the input in any draw; "
                        "cannot place the CAM")
    return _monotone(cy), _monotone(cx)


def _monotone(c: np.ndarray) -> np.ndarray:
    """Least-squares non-decreasing fit (pool adjacent violators)."""
    blocks = []  # [mean, count]
    for v in c:
        blocks.append([float(v), 1])
        while len(blocks) > 1 and blocks[-2][0] > blocks[-1][0]:
            (m1, n1), (m2, n2) = blocks[-2], blocks.pop()
            blocks[-1] = [(m1 * n1 + m2 * n2) / (n1 + n2), n1 + n2]
    return np.concatenate([np.full(n, m) for m, n in blocks])
