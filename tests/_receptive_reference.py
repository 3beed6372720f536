"""Reference receptive-field centroids of every CAM cell, per arch and size, measured once.

Measuring every cell's effective receptive field (gradient of the cell w.r.t. the input, real
architecture, re-initialised weights, averaged over many draws) takes minutes for DenseNet-169
at 224 px, too long for ``make test``. So it is measured here, once, with weight draws other than
the ones ``deep.cam_model`` uses, and stored in ``tests/data/receptive_reference.json`` with a
fingerprint of the architecture; ``tests/test_cam_alignment.py`` builds the architecture, checks
the fingerprint (a changed architecture fails until this is re-run) and checks the placement
that ``deep.cam_model`` measures live against these centroids.

Regenerate (minutes; all cases or some)::

    python -m tests._receptive_reference [arch:size ...]
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

REFERENCE = Path(__file__).resolve().parent / "data" / "receptive_reference.json"
# Not the seeds cam_model measures with (deep.receptive.CENTRE_SEEDS). One weight draw places a
# cell to ~0.2-1.5 px (s.d., by arch and size; stored per case); 20 draws to ~0.05-0.35 px.
TEST_SEEDS = tuple(range(100, 120))
# Every arch murakit builds (deep.ARCHS), at the sizes that exercise what can go wrong: a 2 x 2
# grid whose cells see the same whole image, a grid that does not divide the canvas (100 px),
# the default 128 px and >= 224 px.
CASES = {
    "small": (32, 64, 100, 128, 224),
    "mobilenetv3small": (64, 224),
    "densenet169": (64, 224, 320),
    "small-s8": (64, 128, 224),
}


def fingerprint(model) -> str:
    """SHA-256 of the architecture (``model.to_json()``, built by :func:`build`): what the
    centroids depend on."""
    return hashlib.sha256(model.to_json().encode()).hexdigest()


def build(arch: str, size: int):
    """``deep.build_model`` in a fresh Keras session: layers Keras names itself (MobileNetV3's
    activations, ...) are numbered per session, so without it the JSON depends on what was
    built before in the process."""
    import keras

    import deep
    from deep.config import ModelConfig

    keras.backend.clear_session()
    keras.utils.set_random_seed(0)
    return deep.build_model(ModelConfig(arch=arch, size=size))


def cell_centroids(model, seeds=TEST_SEEDS) -> tuple:
    """(mean, per-draw s.d.) of every CAM cell's |gradient| centroid (y, x), (h, w, 2) each.

    Each cell is made one number by the head's own (re-drawn) Dense weights, the CAM's weighting
    of the channels (``deep.receptive`` uses random channel weights); the input is a uniform
    random image per draw. Pixel i spans [i, i + 1).
    """
    import tensorflow as tf

    from deep.receptive import _input_gradient, random_weights

    feats = model.get_layer("gap").input
    size, h, w = int(model.input.shape[1]), int(feats.shape[1]), int(feats.shape[2])
    grad = _input_gradient(model, feats)
    chunk = 16
    cells = np.array([(i, j) for i in range(h) for j in range(w)])
    pos = np.arange(size) + 0.5
    saved = model.get_weights()
    got = []
    try:
        for seed in seeds:
            model.set_weights(random_weights(model, seed))
            kernel = tf.constant(model.get_layer("head").get_weights()[0][:, 0])
            image = np.random.default_rng(seed).uniform(0, 1, (1, size, size, 1)).astype(np.float32)
            k = max(2, min(chunk, len(cells)))  # batch >= 2: oneDNN's 1x1 stride-2 gradient crashes at 1
            x = tf.constant(np.repeat(image, k, 0))
            g = []
            for at in range(0, len(cells), chunk):
                part = cells[at:at + chunk]
                pick = np.zeros((k, h, w), np.float32)
                pick[np.arange(len(part)), part[:, 0], part[:, 1]] = 1
                g.append(np.abs(grad(x, kernel, tf.constant(pick)).numpy()[: len(part), :, :, 0]))
            g = np.concatenate(g).astype(np.float64)
            mass = g.sum((1, 2))
            cy, cx = (g.sum(2) * pos).sum(1) / mass, (g.sum(1) * pos).sum(1) / mass
            got.append(np.stack([cy, cx], 1).reshape(h, w, 2))
    finally:
        model.set_weights(saved)
    got = np.array(got)
    return np.nanmean(got, axis=0), np.nanstd(got, axis=0)


def load() -> dict:
    """The stored reference: ``{"arch:size": {"fingerprint", "seeds", "centroids", "sd"}}``."""
    return json.loads(REFERENCE.read_text()) if REFERENCE.is_file() else {}


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    wanted = argv or [f"{a}:{s}" for a, sizes in CASES.items() for s in sizes]
    ref = load()
    for key in wanted:
        arch, size = key.split(":")
        t0 = time.perf_counter()
        model = build(arch, int(size))
        mean, sd = cell_centroids(model)
        ref[key] = {"fingerprint": fingerprint(model), "seeds": list(TEST_SEEDS),
                    "centroids": np.round(mean, 4).tolist(), "sd": np.round(sd, 4).tolist()}
        print(f"{key}: grid {mean.shape[0]}x{mean.shape[1]}, per-draw s.d. median {np.median(sd):.2f} px, "
              f"max {sd.max():.2f} px ({time.perf_counter() - t0:.0f} s)", flush=True)
        tmp = REFERENCE.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(dict(sorted(ref.items())), indent=1) + "\n")
        os.replace(tmp, REFERENCE)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
