"""CAM / Grad-CAM overlays of the trained CNN for image files (``murakit explain``).

Each image goes through ``edge.preprocess`` with the preprocessing of the CNN's card, then the
best checkpoint predicts it and ``<patient>_<study>_<view>_cam.png`` (heatmap over the
preprocessed image) is written to the output folder (default ``RUN/explain``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from murakit.errors import MurakitError
from murakit.layout import RunLayout


@dataclass
class Explanation:
    """One explained image: its probability, label (by the card's threshold) and overlay file."""

    path: str
    probability: float
    label: str
    overlay: Path


def load_cnn(layout: RunLayout):
    """(Keras model, ModelCard) of a run's trained CNN."""
    import deep
    from edge.card import read_card
    from edge.errors import ModelError

    if not layout.cnn_best.is_file():
        raise MurakitError(f"no trained CNN in {layout.cnn}: run murakit train cnn --run {layout.root} first")
    try:
        card = read_card(layout.card("cnn"))
        model = deep.load_model(layout.cnn_best)
    except ModelError as e:
        raise MurakitError(f"{e} (was training interrupted? rerun murakit train cnn --run {layout.root})") from None
    return model, card


def overlay_names(paths) -> list:
    """``<stem>_cam.png``, prefixed by the parent folders (patient, study) when stems collide."""
    stems = [p.stem for p in paths]
    names = []
    for p, stem in zip(paths, stems):
        if stems.count(stem) > 1:
            stem = "_".join(p.parts[-3:-1] + (p.stem,))
        names.append(f"{stem}_cam.png")
    return names


def pick_test_images(prep, per_class: int, seed: int) -> list:
    """Seeded positions in the prepared cache's test split: ``per_class`` abnormal, then normal.

    Abnormal picks are drawn from the images that show their finding when the data says which
    (the synthetic generator's boxes), so a CAM can be judged against the box.
    """
    import numpy as np

    test = prep.select("test")
    rng = np.random.default_rng(seed)
    boxes = None if prep.annotations is None else prep.annotations["bbox"]
    picks = []
    for label in (1, 0):
        keep = test[prep.label[test] == label]
        if label and boxes is not None:
            shown = keep[~np.isnan(boxes[keep]).any(axis=1)]
            keep = shown if len(shown) else keep
        picks += sorted(rng.choice(keep, size=min(per_class, len(keep)), replace=False).tolist())
    return picks


def default_images(run, per_class: int, seed: int) -> tuple:
    """(image paths, {path: (finding box or None, "PART label")}) of :func:`pick_test_images`.

    What ``mk.explain()`` explains when given no images: the paths are the data set's files (the
    cache records where they came from), the box is in model-input pixels.
    """
    import numpy as np

    from murakit.data.prepared import load_prepared

    prep = load_prepared(run)
    root = Path(prep.meta["data_root"])
    images, facts = [], {}
    for i in pick_test_images(prep, per_class, seed):
        box = None if prep.annotations is None else prep.annotations["bbox"][i]
        path = root / str(prep.path[i])
        images.append(path)
        facts[str(path)] = (None if box is None or np.isnan(box).any() else tuple(map(float, box)),
                            f"{prep.part[i]} {'abnormal' if prep.label[i] else 'normal'}")
    return images, facts


def _stderr(line: str) -> None:
    import sys

    print(line, file=sys.stderr)


def explain_images(images, run, out=None, gradcam: bool = False, log=print, warn=_stderr) -> tuple:
    """Explain each image; returns (list of Explanation, number of unreadable images).

    Parameters
    ----------
    images : list of str or Path
        Image files (PNG/JPEG).
    run : str or Path
        Run folder with a trained CNN.
    out : str or Path, optional
        Output folder (default ``RUN/explain``).
    gradcam : bool
        Grad-CAM of the last feature maps instead of the CAM head.
    log : callable
        Receives one line per explained image.
    warn : callable
        Receives one line per unreadable image (default: stderr).
    """
    from murakit.layout import ensure_dir
    from murakit.lock import stage_lock

    layout = RunLayout(run)
    if not layout.cnn_best.is_file():  # before creating any folder
        raise MurakitError(f"no trained CNN in {layout.cnn}: run murakit train cnn --run {layout.root} first")
    out = ensure_dir(out if out else layout.explain, "--out folder")
    with stage_lock(layout.root, writes="explain", reads=("cnn",)):
        return _explain([Path(p) for p in images], layout, out, gradcam, log, warn)


def _explain(paths, layout: RunLayout, out: Path, gradcam: bool, log, warn) -> tuple:
    """:func:`explain_images` once the output folder exists and the run folder is locked."""
    import cv2

    import deep
    from edge.atomic import atomic_path
    from edge.cam import overlay
    from edge.errors import EdgeError
    from edge.preprocess import preprocess, to_model_input

    model, card = load_cnn(layout)
    cmodel = None if gradcam else deep.cam_model(model)
    done, failed = [], 0
    for path, name in zip(paths, overlay_names(paths)):
        try:
            u8 = preprocess(str(path), card.preprocess)
        except EdgeError as e:
            warn(f"murakit: error: {e}")
            failed += 1
            continue
        x = to_model_input(u8)[None]
        prob, maps = deep.gradcam(model, x) if gradcam else deep.cam(model, x, cmodel)
        with atomic_path(out / name) as tmp:
            if not cv2.imwrite(str(tmp), overlay(u8, maps[0])):
                raise MurakitError(f"cannot write {out / name}")
        p = float(prob[0])
        label = card.labels[int(p > card.threshold)]
        log(f"{path}: probability {p:.3f} -> {label} (threshold {card.threshold:.3f}) -> {out / name}")
        done.append(Explanation(str(path), p, label, out / name))
    return done, failed
