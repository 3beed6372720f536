"""``murakit train cnn --run RUN``: train the CNN on the prepared cache, resumable, then evaluate.

Writes ``RUN/cnn/``: ``last.keras``, ``best.keras``, ``state.json``, ``history.csv`` (every
epoch), then ``metrics.json`` (test split, threshold chosen on val at study level),
``model_config.json`` (``deep.ModelConfig``), ``preprocess.json`` (the cache's
``PreprocessConfig``) and ``predictions_{val,test}.csv`` (path,study,part,label,probability).
"""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

# Kept here (not imported from deep) so building the CLI parser never imports TensorFlow.
ARCH_CHOICES = ("small", "densenet169", "mobilenetv3small")


def _recipe(t, a) -> str:
    """The default training recipe, for --help (values from deep.TrainConfig / AugmentConfig)."""
    return (f"With no flags the CNN trains until converged: each epoch ends with the validation study "
            f"AUROC, monitored as its mean over the last {t.smooth} epochs; training stops after "
            f"{t.patience} epochs without a gain (early stopping) and keeps the best epoch; the "
            f"learning rate ({t.lr:g}, Adam) drops {1 / t.lr_factor:.3g}x after {t.lr_patience} epochs "
            f"without a gain; --epochs ({t.max_epochs}) is only a cap. An epoch "
            f"is at least {t.min_steps} steps (small data sets are passed over several times). "
            f"Augmentation of training images: horizontal flips{', vertical flips' if a.vflip else ''}, "
            f"rotation up to {a.max_rotation:g} degrees, zoom {1 - a.scale:g}-{1 + a.scale:g}, shift "
            f"up to {a.shift:.0%} of the side, brightness +-{a.brightness:g}, contrast "
            f"{1 - a.contrast:g}-{1 + a.contrast:g} (docs/training.md: how these were measured). "
            f"Interrupt with Ctrl-C and rerun the same command to resume exactly.")


def add_arguments(parser) -> None:
    """Add the ``train cnn`` options to ``parser``."""
    from deep.config import AugmentConfig, TrainConfig  # no TensorFlow import

    t, a = TrainConfig(), AugmentConfig()
    parser.description = f"{parser.description or 'train the CNN'}. {_recipe(t, a)}"
    parser.add_argument("--run", default="runs/default", help="run folder (default: %(default)s)")
    parser.add_argument("--epochs", "--max-epochs", dest="epochs", type=int, default=None, metavar="N",
                        help=f"cap on epochs; early stopping normally ends training first "
                             f"(default: {t.max_epochs})")
    parser.add_argument("--patience", type=int, default=None, metavar="N",
                        help=f"early stopping: epochs without a val study AUROC gain (default: {t.patience})")
    parser.add_argument("--arch", choices=ARCH_CHOICES, default="small",
                        help="architecture (default: %(default)s)")
    parser.add_argument("--size", type=int, default=None,
                        help="input side; must equal the prepared cache's size (default: the cache's)")
    parser.add_argument("--weights", default=None,
                        help="local initial weights file (backbones: include_top=False weights)")
    parser.add_argument("--width", type=int, default=None,
                        help="stem channels of the small arch (default: deep.ModelConfig's, 16)")
    parser.add_argument("--max-rotation", type=float, default=None,
                        help=f"largest augmentation rotation in degrees (default: {a.max_rotation:g})")
    parser.add_argument("--no-augment", action="store_true", help="train without augmentation")
    parser.add_argument("--batch-size", type=int, default=t.batch_size, help="batch size (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="seed (default: %(default)s)")
    parser.add_argument("--force", action="store_true", help="discard RUN/cnn and train from scratch")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")


def _check_args(args, size):
    from murakit.errors import MurakitError

    if args.size is not None and args.size != size:
        raise MurakitError(f"the prepared cache in {args.run} is {size}x{size} px, not {args.size}: "
                           f"rerun murakit prepare DATA --run {args.run} --size {args.size}")
    if min(args.epochs or 1, args.patience or 1, args.batch_size) < 1:
        raise MurakitError("--epochs, --patience and --batch-size must be at least 1")
    if args.max_rotation is not None and not 0 <= args.max_rotation <= 180:
        raise MurakitError(f"--max-rotation must be within 0..180 degrees, got {args.max_rotation}")


def _splits(prep):
    from murakit.errors import MurakitError

    pos = {s: prep.select(s) for s in ("train", "val", "test")}
    empty = [s for s, p in pos.items() if len(p) == 0]
    if empty:
        raise MurakitError(f"the prepared cache has no {' / '.join(empty)} images; "
                           "rerun murakit prepare with a larger data set or other split fractions")
    return pos


def _predictions_csv(prep, positions, probs) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["path", "study", "part", "label", "probability"])
    for i, p in zip(positions, probs):
        w.writerow([prep.path[i], prep.study[i], prep.part[i], int(prep.label[i]), f"{p:.6f}"])
    return buf.getvalue()


def _pointing(model, prep, test):
    """Pointing game on abnormal test images with a known finding box (synthetic data)."""
    import numpy as np

    import deep
    from edge.preprocess import to_model_input

    if prep.annotations is None:
        return None
    boxes = prep.annotations["bbox"][test]
    keep = (prep.label[test] == 1) & ~np.isnan(boxes).any(axis=1)
    rows = prep.row[test][keep]
    if len(rows) == 0:
        return None
    cmodel = deep.cam_model(model)
    cams = []
    for i in range(0, len(rows), 64):
        x = to_model_input(np.asarray(prep.images[rows[i:i + 64]]))
        cams.append(deep.cam(model, x, cmodel)[1])
    cams = np.concatenate(cams)
    return {"score": deep.pointing_game(cams, boxes[keep], prep.config.size),
            "images": len(rows), "tolerance": deep.explain.POINTING_TOLERANCE,
            "cam_size": list(cams.shape[1:])}


def _evaluate(model, prep, pos, res, cfg, out: Path, train_seconds):
    """Threshold on val (study level), metrics on test; writes metrics, configs, predictions."""
    import deep
    from edge.atomic import write_text
    from murakit.evaluation.metrics import choose_threshold, evaluate, json_safe

    probs = {s: deep.predict(model, prep.images, prep.row[pos[s]]) for s in ("val", "test")}
    va, te = pos["val"], pos["test"]
    t = choose_threshold(prep.label[va], probs["val"], prep.study[va])
    metrics = evaluate(prep.label[te], probs["test"], prep.study[te], prep.part[te], t)
    val = evaluate(prep.label[va], probs["val"], prep.study[va], prep.part[va], t)
    metrics.update(arch=cfg.arch, epochs=len(res.history), best_epoch=res.best_epoch,
                   stopped_early=res.stopped_early, stop_reason=res.stop_reason,
                   train_seconds=round(train_seconds, 1),
                   val={"study_auroc": val["study"]["auroc"], "image_auroc": val["image"]["auroc"]},
                   model_config=cfg.to_dict())
    pg = _pointing(model, prep, te)
    if pg is not None:
        metrics["pointing_game"] = pg["score"]
        metrics["pointing_game_detail"] = pg
    write_text(out / "model_config.json", cfg.to_json() + "\n")
    write_text(out / "preprocess.json", prep.config.to_json() + "\n")
    for s in ("val", "test"):
        write_text(out / f"predictions_{s}.csv", _predictions_csv(prep, pos[s], probs[s]))
    write_text(out / "metrics.json", json.dumps(json_safe(metrics), indent=2) + "\n")
    return metrics


def _already_trained(out: Path, state, epochs) -> bool:
    import deep

    if state is None or not deep.is_complete(state, epochs) or not (out / "metrics.json").is_file():
        return False
    try:
        done = json.loads((out / "metrics.json").read_text()).get("epochs")
    except (OSError, ValueError):
        return False
    return done == state["epoch"]


def _given(**options) -> dict:
    """The options the user set; the rest keep the dataclass defaults (one source of truth)."""
    return {k: v for k, v in options.items() if v is not None}


def _train(args, prep, pos, out):
    import keras

    import deep

    cfg = deep.ModelConfig(arch=args.arch, size=prep.config.size, **_given(width=args.width))
    aug = None if args.no_augment else deep.AugmentConfig(**_given(max_rotation=args.max_rotation))
    tcfg = deep.TrainConfig(batch_size=args.batch_size, seed=args.seed, augment=aug,
                            **_given(max_epochs=args.epochs, patience=args.patience))
    fingerprint = {"preprocess": prep.config.to_dict(), "data": prep.meta.get("data_fingerprint"),
                   "n_train": len(pos["train"]), "n_val": len(pos["val"])}
    state = deep.read_state(out)
    if state is not None:
        deep.check_resumable(state, cfg, tcfg, fingerprint)
        if _already_trained(out, state, tcfg.max_epochs):
            m = json.loads((out / "metrics.json").read_text())
            print(f"{out}: already trained ({state['epoch']} epochs, test study AUROC "
                  f"{m['study']['auroc']:.4f}); use --force to retrain")
            return None
    keras.utils.set_random_seed(args.seed)
    tr, va = pos["train"], pos["val"]
    lw = deep.class_weights(prep.label[tr], prep.study[tr])
    print(f"training {cfg.arch} at {cfg.size} px on {len(tr)} images ({len(va)} val), "
          f"loss weights normal {lw[0]:.3f} / abnormal {lw[1]:.3f}")
    res = deep.train(prep.images, prep.row[tr], prep.label[tr], prep.row[va], prep.label[va], cfg, out,
                     tcfg, weights=args.weights, loss_weights=lw, val_groups=prep.study[va],
                     fingerprint=fingerprint, verbose=not args.no_progress, log=print)
    return cfg, res


def run(args) -> int:
    """Train (or resume) and evaluate; returns 0. User errors raise MurakitError (exit 2)."""
    from murakit.data.prepared import load_prepared
    from murakit.errors import MurakitError

    prep = load_prepared(args.run)
    _check_args(args, prep.config.size)
    pos = _splits(prep)
    out = Path(args.run) / "cnn"
    if args.force and out.exists():
        shutil.rmtree(out)
    import deep

    try:
        trained = _train(args, prep, pos, out)
        if trained is None:
            return 0
        cfg, res = trained
        secs = sum(row["seconds"] for row in res.history)
        m = _evaluate(res.model, prep, pos, res, cfg, out, secs)
    except deep.DeepError as e:
        raise MurakitError(str(e)) from None
    pg = m.get("pointing_game")
    print(f"best epoch {res.best_epoch}/{len(res.history)} (recent mean val study AUROC {res.best_auroc:.4f}); "
          f"threshold {m['threshold']:.3f}")
    print(f"test: study AUROC {m['study']['auroc']:.4f}, kappa {m['study']['kappa']:.3f}; "
          f"image AUROC {m['image']['auroc']:.4f}" + (f"; pointing game {pg:.3f}" if pg is not None else ""))
    print(f"wrote {out / 'metrics.json'}")
    return 0
