"""``murakit explain IMAGE... --run RUN [--out DIR]``: CAM / Grad-CAM overlays for image files.

Each image goes through ``edge.preprocess`` with the configuration the CNN was trained on,
then the best checkpoint predicts it and ``<name>_cam.png`` (heatmap over the preprocessed
image) is written to ``--out`` (default ``RUN/explain``).
"""

from __future__ import annotations

import json
from pathlib import Path


def add_arguments(parser) -> None:
    """Add the ``explain`` options to ``parser``."""
    parser.add_argument("images", nargs="+", help="image files (PNG/JPEG)")
    parser.add_argument("--run", default="runs/default", help="run folder (default: %(default)s)")
    parser.add_argument("--out", default=None, help="output folder (default: RUN/explain)")
    parser.add_argument("--gradcam", action="store_true",
                        help="Grad-CAM of the last feature maps instead of the CAM head")


def _load(run: Path):
    """(model, PreprocessConfig, threshold or None) from RUN/cnn."""
    import deep
    from edge.preprocess import PreprocessConfig
    from murakit.errors import MurakitError

    cnn = run / "cnn"
    if not (cnn / "best.keras").is_file():
        raise MurakitError(f"no trained CNN in {cnn}: run murakit train cnn --run {run} first")
    try:
        cfg = PreprocessConfig.from_json((cnn / "preprocess.json").read_text())
    except OSError:
        from murakit.data.prepared import load_prepared

        cfg = load_prepared(run).config  # training interrupted before evaluation: use the cache's
    try:
        threshold = json.loads((cnn / "metrics.json").read_text())["threshold"]
    except (OSError, ValueError, KeyError):
        threshold = None
    try:
        model = deep.load_model(cnn / "best.keras")
    except deep.DeepError as e:
        raise MurakitError(str(e)) from None
    return model, cfg, threshold


def _out_names(paths) -> list[str]:
    """``<stem>_cam.png``; when stems collide (MURA's image1.png...), prefix the parent folders."""
    stems = [p.stem for p in paths]
    names = []
    for p, stem in zip(paths, stems):
        if stems.count(stem) > 1:
            stem = "_".join(p.parts[-3:-1] + (p.stem,))
        names.append(f"{stem}_cam.png")
    return names


def run(args) -> int:
    """Explain each image; returns 0, or 1 when some images could not be read."""
    import cv2

    import deep
    from edge.atomic import atomic_path
    from edge.cam import overlay
    from edge.errors import EdgeError
    from edge.preprocess import preprocess, to_model_input
    from murakit.errors import MurakitError

    run_dir = Path(args.run)
    model, cfg, threshold = _load(run_dir)
    out = Path(args.out) if args.out else run_dir / "explain"
    out.mkdir(parents=True, exist_ok=True)
    cmodel = None if args.gradcam else deep.cam_model(model)
    t = 0.5 if threshold is None else threshold
    failed = 0
    paths = [Path(p) for p in args.images]
    for path, name in zip(paths, _out_names(paths)):
        try:
            u8 = preprocess(str(path), cfg)
        except EdgeError as e:
            print(f"{path}: error: {e}")
            failed += 1
            continue
        x = to_model_input(u8)[None]
        prob, maps = deep.gradcam(model, x) if args.gradcam else deep.cam(model, x, cmodel)
        with atomic_path(out / name) as tmp:
            if not cv2.imwrite(str(tmp), overlay(u8, maps[0])):
                raise MurakitError(f"cannot write {out / name}")
        label = "abnormal" if prob[0] > t else "normal"
        print(f"{path}: probability {prob[0]:.3f} -> {label} (threshold {t:.3f}"
              f"{'' if threshold is not None else ', default'}) -> {out / name}")
    return 1 if failed else 0
