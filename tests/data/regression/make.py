"""Rebuild the committed regression fixture: a tiny trained CNN, its ONNX export and golden set.

Run from the repository root (needs the ``train`` extra)::

    python tests/data/regression/make.py

Writes, next to this script::

    model.onnx               ~30 KB float CNN ("small" arch, width 4, 32 px) with its model card
    golden/model/            4 PNG cases: source.png, input_0.pb, output_0.pb (probability), output_1.pb (cam),
                             then 3 DICOM cases (source.dcm) written by make_dicom.py

The model is trained for a few epochs on procedurally drawn 32 px "radiographs" where the
abnormal class has a dark gap across the bright bone bar, so its outputs vary with the image
(and therefore with any change to the preprocessing). ``tests/test_regression.py`` checks that
today's ``edge.preprocess`` + onnxruntime reproduce the recorded outputs from the PNGs.
Rebuild only on purpose: a new fixture hides any drift the old one would have caught.

History: 2026-11 (model card, golden format 2) - the graph and the recorded inputs and outputs
were NOT rebuilt: the old murakit.* metadata was replaced by a card (edge.card.attach_card)
and the manifest rewritten, keeping the outputs recorded by the earlier onnxruntime (today's
runtime reproduces them within 1e-6).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[2]))

SIZE = 32


def radiograph(rng: np.random.Generator, abnormal: bool) -> np.ndarray:
    """uint8 (h, w) grey image: dark air, soft tissue, a bright bone bar; abnormal = a dark gap in it."""
    h, w = int(rng.integers(48, 97)), int(rng.integers(40, 81))
    img = np.full((h, w), rng.uniform(10, 40), np.float32)
    img[h // 8:-h // 8, w // 6:-w // 6] = rng.uniform(70, 110)
    x0 = int(w // 2 - w // 8 + rng.integers(-3, 4))
    img[h // 6:-h // 6, x0:x0 + w // 4] = rng.uniform(170, 230)
    if abnormal:
        y = int(rng.integers(h // 3, 2 * h // 3))
        img[y:y + max(2, h // 12), x0:x0 + w // 4] = rng.uniform(60, 100)
    img += rng.normal(0, 6, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def main() -> int:
    import hashlib

    import keras

    import deep
    from deep.config import ModelConfig
    from edge.card import ModelCard, save_onnx
    from edge.preprocess import PreprocessConfig, preprocess, to_model_input
    from export.cnn import export_cnn
    from export.golden import record_golden

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    cfg = PreprocessConfig(size=SIZE)
    labels = np.arange(256) % 2
    x = to_model_input(np.stack([preprocess(radiograph(rng, bool(y)), cfg) for y in labels]))
    mcfg = ModelConfig(size=SIZE, width=4)
    model = deep.build_model(mcfg)
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="binary_crossentropy")
    model.fit(x, labels.astype(np.float32), batch_size=32, epochs=6, verbose=0)

    with tempfile.TemporaryDirectory() as tmp:
        sources = []
        for i, abnormal in enumerate((False, True, False, True)):
            path = Path(tmp) / f"case{i}.png"
            cv2.imwrite(str(path), radiograph(rng, abnormal))
            sources.append(path)
        golden_x = to_model_input(np.stack([preprocess(s, cfg) for s in sources]))
        card = ModelCard(kind="cnn", preprocess=cfg, threshold=0.5, arch=mcfg.arch, model_config=mcfg.to_dict(),
                         version="regression-fixture", weights_sha256="0" * 64,
                         data_fingerprint=hashlib.sha256(b"regression fixture: 256 procedurally drawn 32 px "
                                                         b"images, seed 0").hexdigest(),
                         metrics={"note": "tiny regression fixture trained on synthetic 32 px images"})
        proto, parity = export_cnn(deep.cam_model(model), SIZE, golden_x)
        save_onnx(proto, card, HERE / "model.onnx")
        _, _, outputs = record_golden(HERE / "model.onnx", HERE / "golden" / "model", sources,
                                      [{"label": int(a)} for a in (0, 1, 0, 1)],
                                      extra={"keras_parity": parity})
    print("probabilities:", np.round(outputs["probability"].ravel(), 4), "parity:", parity)
    from make_dicom import add_dicom_cases  # the DICOM twins of the PNG cases (dicom extra)

    print("DICOM case probabilities:", np.round(add_dicom_cases(), 4))
    return 0


if __name__ == "__main__":
    sys.exit(main())
