"""Train the CNN on a run's prepared cache (resumable), evaluate it, write its card.

Writes ``RUN/cnn/``: ``last.keras``, ``best.keras``, ``state.json``, ``history.csv`` (every
epoch, by :func:`deep.train`), then ``predictions_{val,test}.csv``, ``card.json`` (the model
card: preprocessing, threshold chosen on val at study level, arch and model config, metrics)
and last ``metrics.json`` (test split; the stage's done marker).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, replace

from murakit.errors import MurakitError
from murakit.layout import RunLayout
from murakit.stage import StageResult

# Kept here (not imported from deep) so building the CLI parser never imports TensorFlow.
ARCH_CHOICES = ("small", "densenet169", "mobilenetv3small", "small-s8")
STRATEGY_CHOICES = ("auto", "none", "mirrored", "multi-worker")  # deep.distribute.STRATEGIES


@dataclass(frozen=True)
class CnnOptions:
    """What ``murakit train cnn`` can set; None keeps the library's default (deep's dataclasses)."""

    epochs: int | None = None  # the cap (TrainConfig.max_epochs); early stopping ends a normal run
    patience: int | None = None
    arch: str = "small"
    size: int | None = None
    weights: str | None = None
    width: int | None = None
    max_rotation: float | None = None
    augment: bool = True
    batch_size: int = 32  # the global batch (over all replicas)
    seed: int = 0
    min_steps: int | None = None
    part_weight: float | None = None  # lambda of the joint loss (TrainConfig.part_weight)
    strategy: str = "auto"  # deep.distribute.resolve: TF_CONFIG -> multi-worker, >1 GPU -> mirrored

    def check(self) -> None:
        """One-line errors for values that can never work (before any data or TensorFlow is loaded)."""
        from murakit.checks import check_float, check_int, check_seed

        if self.epochs is not None:
            check_int("--epochs", self.epochs, 1, 10_000)
        if self.patience is not None:
            check_int("--patience", self.patience, 1, 10_000)
        if self.min_steps is not None:
            check_int("--min-steps", self.min_steps, 1, 1_000_000)
        check_int("--batch-size", self.batch_size, 1, 4096)
        check_seed(self.seed)
        if self.max_rotation is not None:
            check_float("--max-rotation", self.max_rotation, 0.0, 180.0)
        if self.part_weight is not None:
            check_float("--part-weight", self.part_weight, 0.0, 10.0)
        if self.width is not None:
            check_int("--width", self.width, 4, 256)
        if self.size is not None:
            check_int("--size", self.size, 8, 4096)
        if self.arch not in ARCH_CHOICES:
            raise MurakitError(f"--arch must be one of {', '.join(ARCH_CHOICES)}, got {self.arch!r}")
        if self.strategy not in STRATEGY_CHOICES:
            raise MurakitError(f"--strategy must be one of {', '.join(STRATEGY_CHOICES)}, got {self.strategy!r}")

    def check_cache(self, cache_size: int, run) -> None:
        """The options against the prepared cache they will train on."""
        if self.size is not None and self.size != cache_size:
            raise MurakitError(f"the prepared cache in {run} is {cache_size}x{cache_size} px, not {self.size}: "
                               f"rerun murakit prepare DATA --run {run} --size {self.size}")


def _splits(prep):
    pos = {s: prep.select(s) for s in ("train", "val", "test")}
    empty = [s for s, p in pos.items() if len(p) == 0]
    if empty:
        raise MurakitError(f"the prepared cache has no {' / '.join(empty)} images; "
                           "rerun murakit prepare with a larger data set or other split fractions")
    return pos


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
            "cam_size": [int(d) for d in model.get_layer("gap").input.shape[1:3]]}  # the grid, not the canvas


def _evaluate(model, prep, pos, res, cfg, layout: RunLayout, train_seconds):
    """Threshold on val (study level), metrics on test; writes predictions, card, then metrics."""
    import deep
    from edge.atomic import write_text
    from edge.protobuf import sha256_file
    from murakit.evaluation.metrics import choose_threshold, evaluate, json_safe
    from murakit.evaluation.predictions import write_predictions
    from murakit.pipeline.cards import split_metrics, training_card

    probs = {s: deep.predict(model, prep.images, prep.row[pos[s]]) for s in ("val", "test")}
    va, te = pos["val"], pos["test"]
    t = choose_threshold(prep.label[va], probs["val"], prep.study[va])
    metrics = evaluate(prep.label[te], probs["test"], prep.study[te], prep.part[te], t)
    val = evaluate(prep.label[va], probs["val"], prep.study[va], prep.part[va], t)
    card = training_card("cnn", prep, threshold=t, arch=cfg.arch, model_config=cfg.to_dict(),
                         weights_sha256=sha256_file(layout.cnn_best), metrics=split_metrics(val, metrics),
                         val=(prep.label[va], probs["val"], prep.study[va], prep.part[va]))
    metrics.update(arch=cfg.arch, epochs=len(res.history), best_epoch=res.best_epoch,
                   stopped_early=res.stopped_early, stop_reason=res.stop_reason,
                   train_seconds=round(train_seconds, 1),
                   val={"study_auroc": val["study"]["auroc"], "image_auroc": val["image"]["auroc"]},
                   model_config=cfg.to_dict())
    pg = _pointing(model, prep, te)
    if pg is not None:
        metrics["pointing_game"] = pg["score"]
        metrics["pointing_game_detail"] = pg
    for s in ("val", "test"):
        write_predictions(layout.predictions("cnn", s), prep, pos[s], probs[s])
    write_text(layout.card("cnn"), card.to_json() + "\n")
    write_text(layout.metrics("cnn"), json.dumps(json_safe(metrics), indent=2) + "\n")
    return metrics


def _already_trained(layout: RunLayout, state, epochs) -> bool:
    import deep

    if state is None or not deep.is_complete(state, epochs) or not layout.metrics("cnn").is_file() \
            or not layout.card("cnn").is_file():
        return False
    try:
        done = json.loads(layout.metrics("cnn").read_text()).get("epochs")
    except (OSError, ValueError):
        return False
    return done == state["epoch"]


def _given(**options) -> dict:
    """The options the user set; the rest keep the dataclass defaults (one source of truth)."""
    return {k: v for k, v in options.items() if v is not None}


def _configs(opts: CnnOptions, size: int, parts=()):
    import deep

    cfg = deep.ModelConfig(arch=opts.arch, size=size, parts=tuple(parts), **_given(width=opts.width))
    aug = deep.AugmentConfig(**_given(max_rotation=opts.max_rotation)) if opts.augment else None
    tcfg = deep.TrainConfig(batch_size=opts.batch_size, seed=opts.seed, augment=aug,
                            **_given(max_epochs=opts.epochs, patience=opts.patience, min_steps=opts.min_steps,
                                     part_weight=opts.part_weight))
    return cfg, tcfg


def _train(opts: CnnOptions, prep, pos, layout: RunLayout, progress: bool, log, rep):
    import keras

    import deep

    tr, va = pos["train"], pos["val"]
    cfg, tcfg = _configs(opts, prep.config.size, part_labels(prep.part[tr]))
    fingerprint = {"preprocess": prep.config.to_dict(), "data": prep.meta.get("data_fingerprint"),
                   "n_train": len(pos["train"]), "n_val": len(pos["val"])}
    rep.barrier()  # every worker decides from the folder as the chief left it (after --force)
    state = deep.read_state(layout.cnn)
    if state is not None and "parts" not in state.get("model_config", {}):
        # a run started before the part head existed continues as it began: no part head (its
        # export fits the body-part head on pooled statistics instead: murakit.pipeline.export)
        cfg = replace(cfg, parts=())
    if state is not None:
        deep.check_resumable(state, cfg, tcfg, fingerprint)
        if _already_trained(layout, state, tcfg.max_epochs):
            m = json.loads(layout.metrics("cnn").read_text())
            log(f"{layout.cnn}: already trained ({state['epoch']} epochs, test study AUROC "
                f"{m['study']['auroc']:.4f}); use --force to retrain")
            return None
    keras.utils.set_random_seed(opts.seed)
    lw = deep.class_weights(prep.label[tr], prep.study[tr])
    log(f"training {cfg.arch} at {cfg.size} px on {len(tr)} images ({len(va)} val), "
        f"loss weights normal {lw[0]:.3f} / abnormal {lw[1]:.3f}; {rep.describe()}")
    res = deep.train(prep.images, prep.row[tr], prep.label[tr], prep.row[va], prep.label[va], cfg, layout.cnn,
                     tcfg, weights=opts.weights, loss_weights=lw, val_groups=prep.study[va],
                     fingerprint=fingerprint, verbose=progress, log=log, replicas=rep,
                     train_parts=prep.part[tr] if cfg.parts else None, val_parts=prep.part[va] if cfg.parts else None)
    return cfg, res


def part_labels(train_parts) -> tuple:
    """The part head's labels: the training split's body parts, sorted (the card's ``part_labels``);
    empty (no part head) when the split has fewer than two."""
    labels = tuple(sorted({str(p) for p in train_parts}))
    return labels if len(labels) >= 2 else ()


def train_cnn(run, options: CnnOptions = CnnOptions(), force: bool = False, progress: bool = True,
              log=print) -> StageResult:
    """The train cnn stage: train (or resume) the CNN of a run, evaluate it on test, write its card.

    Returns
    -------
    StageResult
        ``status`` "done" or "up-to-date"; ``paths``: card.json, metrics.json (none on a
        non-chief worker, which writes nothing); ``figures``: the test metrics (``metrics.json``),
        or ``{"worker": rank}`` on a non-chief worker.
    """
    import time

    from murakit.lock import stage_lock

    t0 = time.perf_counter()
    options.check()
    rep = _replicas(options.strategy)
    layout = RunLayout(run)
    if not rep.is_chief:  # the chief holds the run's lock and alone writes RUN/cnn
        status, metrics = _train_cnn(layout, options, force, progress, log, rep)
        return StageResult("train cnn", status, (), time.perf_counter() - t0, metrics)
    with stage_lock(run, writes="cnn", reads=("prepared",)):
        status, metrics = _train_cnn(layout, options, force, progress, log, rep)
    paths = (layout.card("cnn"), layout.metrics("cnn"))
    return StageResult("train cnn", status, paths, time.perf_counter() - t0, metrics)


def _replicas(strategy: str):
    """The tf.distribute strategy (before any other TensorFlow op, as multi-worker requires)."""
    import deep

    return deep.distribute.resolve(strategy)


def _train_cnn(layout: RunLayout, options: CnnOptions, force: bool, progress: bool, log, rep) -> tuple:
    """:func:`train_cnn` once the options are checked and the run folder is locked: (status, metrics)."""
    from murakit.data.prepared import load_prepared

    prep = load_prepared(layout.root)
    options.check_cache(prep.config.size, layout.root)
    pos = _splits(prep)
    if force and rep.is_chief and layout.cnn.exists():
        shutil.rmtree(layout.cnn)
    trained = _train(options, prep, pos, layout, progress, log, rep)
    if trained is None:
        return "up-to-date", json.loads(layout.metrics("cnn").read_text())
    cfg, res = trained
    if not rep.is_chief:
        log(f"worker {rep.rank}: trained; the chief (worker 0) evaluates and writes {layout.cnn}")
        return "done", {"worker": rep.rank}
    secs = sum(row["seconds"] for row in res.history)
    m = _evaluate(res.model, prep, pos, res, cfg, layout, secs)
    pg = m.get("pointing_game")
    log(f"best epoch {res.best_epoch}/{len(res.history)} (recent mean val study AUROC {res.best_auroc:.4f}); "
        f"threshold {m['threshold']:.3f}")
    log(f"test: study AUROC {m['study']['auroc']:.4f}, kappa {m['study']['kappa']:.3f}; "
        f"image AUROC {m['image']['auroc']:.4f}" + (f"; pointing game {pg:.3f}" if pg is not None else ""))
    log(f"wrote {layout.card('cnn')} and {layout.metrics('cnn')}")
    return "done", m
