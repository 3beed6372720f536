"""Training with best/last checkpoints, per-epoch resume, LR-on-plateau and early stopping on val AUROC.

Checkpoint layout in ``out_dir``::

    last.keras    model + optimizer state after the latest finished epoch
    best.keras    model of the epoch with the best validation AUROC
    state.json    epoch counter, schedule/early-stopping state, history (the commit point)
    history.csv   one row per epoch: epoch,loss,val_loss,val_auroc,lr,seconds

Each file is written under a temporary name and renamed at every epoch end, so a kill leaves
the previous epoch's checkpoint usable; calling ``train`` again resumes from it.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from deep.config import ModelConfig
from deep.data import MAX_ROTATION_DEG, make_dataset
from deep.errors import DeepError
from deep.model import build_model, load_model
from edge.metrics import auroc

HISTORY_FIELDS = ("epoch", "loss", "val_loss", "val_auroc", "lr", "seconds")


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings (everything but ``epochs`` must match to resume a run).

    ``epochs`` default: ~2-3 minutes for ~3,000 images at 128 px on 2 CPU cores (width 16).
    """

    epochs: int = 7
    batch_size: int = 32
    seed: int = 0
    lr: float = 1e-3
    patience: int = 5  # early stopping: epochs without a val AUROC gain
    lr_patience: int = 3  # ReduceLROnPlateau on val AUROC (val AUROC is noisy: not 2)
    lr_factor: float = 0.3
    min_lr: float = 1e-5
    augment: bool = True
    max_rotation: float = MAX_ROTATION_DEG  # the MURA paper's 30 degrees (short CPU fits: see demo)

    def resume_key(self) -> dict:
        d = dataclasses.asdict(self)
        d.pop("epochs")
        return d


@dataclass
class TrainResult:
    """What ``train`` returns: the best model (uncompiled) and the run's bookkeeping."""

    model: keras.Model
    history: list
    start_epoch: int  # 0 for a fresh run, k when resumed after k finished epochs
    best_epoch: int
    best_auroc: float
    stopped_early: bool
    ran: bool  # False when the run was already complete


def group_mean(values, groups):
    """Mean of ``values`` per group -> (means float64 (G,) in sorted group order, inverse index (N,))."""
    _, inv = np.unique(np.asarray(groups), return_inverse=True)
    sums = np.bincount(inv, weights=np.asarray(values, np.float64))
    return sums / np.bincount(inv), inv


def class_weights(labels, groups=None) -> tuple[float, float]:
    """MURA-paper loss weights (w_normal, w_abnormal) = (n_abnormal/N, n_normal/N).

    Counted over groups (studies) when ``groups`` is given, else over images.
    """
    labels = np.asarray(labels, np.float64)
    if groups is not None:
        labels, _ = group_mean(labels, groups)
        labels = labels > 0.5
    n, n_abn = len(labels), float(np.sum(labels))
    if n == 0 or n_abn == 0 or n_abn == n:
        raise DeepError("the training split needs both normal and abnormal examples")
    return n_abn / n, (n - n_abn) / n


def get_strategy() -> tf.distribute.Strategy:
    """MirroredStrategy when more than one GPU is visible, else the default strategy."""
    if len(tf.config.list_logical_devices("GPU")) > 1:
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def predict(model, images, rows, batch_size=64) -> np.ndarray:
    """Probabilities float32 (M,) in [0, 1] for ``images[rows]`` (uint8 cache), in order."""
    ds = make_dataset(images, rows, batch_size=batch_size)
    return model.predict(ds, verbose=0).reshape(-1).astype(np.float32)


def weighted_bce(y, p, w) -> float:
    """Mean of w * BCE(y, p) (Keras' sum-over-batch reduction), p clipped like Keras."""
    p = np.clip(np.asarray(p, np.float64), 1e-7, 1 - 1e-7)
    y = np.asarray(y, np.float64)
    return float(np.mean(np.asarray(w) * -(y * np.log(p) + (1 - y) * np.log(1 - p))))


def _save_model(model, path: Path):
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}.keras")  # Keras wants a .keras suffix
    model.save(tmp)
    os.replace(tmp, path)


def _write_text(path: Path, text: str):
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def _history_csv(history) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=HISTORY_FIELDS, lineterminator="\n")
    w.writeheader()
    w.writerows({k: row[k] for k in HISTORY_FIELDS} for row in history)
    return buf.getvalue()


def read_state(out_dir) -> dict | None:
    """The committed training state in ``out_dir`` (None when there is none)."""
    path = Path(out_dir) / "state.json"
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise DeepError(f"cannot read {path} (corrupt?): {e}") from None


def check_resumable(state, cfg, tcfg, fingerprint):
    """Raise DeepError unless ``state`` was trained with these settings and data."""
    want = {"model_config": cfg.to_dict(), "train_config": tcfg.resume_key(), "fingerprint": fingerprint}
    for key, value in want.items():
        if state.get(key) != json.loads(json.dumps(value)):
            raise DeepError(f"the checkpoint in this folder was trained with a different {key.replace('_', ' ')}"
                            f" ({state.get(key)} vs {value}); use --force to start over")


def is_complete(state, epochs) -> bool:
    """True when a run stopped early or has trained ``epochs`` epochs."""
    return bool(state["stopped_early"]) or state["epoch"] >= epochs


class _ProgressBar(keras.callbacks.Callback):
    """tqdm bar per epoch with the running loss (val AUROC is added at the epoch end)."""

    def __init__(self, epoch, epochs, steps):
        super().__init__()
        from tqdm import tqdm

        self.bar = tqdm(total=steps, desc=f"epoch {epoch}/{epochs}", file=sys.stderr,
                        dynamic_ncols=True, leave=True)

    def on_train_batch_end(self, batch, logs=None):
        self.bar.update(1)
        if logs and "loss" in logs:
            self.bar.set_postfix(loss=f"{float(logs['loss']):.4f}", refresh=False)


def _compiled_new_model(cfg, tcfg, weights):
    model = build_model(cfg, weights=weights)
    model.compile(optimizer=keras.optimizers.Adam(tcfg.lr), loss="binary_crossentropy", jit_compile=False)
    return model


def _restore(out, state):
    """The model of the last finished epoch, or None when last.keras is not the one state.json
    describes (killed between writing last.keras and state.json at an epoch end). An
    unreadable last.keras is a DeepError: atomic writes never leave one, so it is damage."""
    model = load_model(out / "last.keras", compile=True)
    model.jit_compile = False  # XLA was ~5x slower on CPU here
    if int(model.optimizer.iterations.numpy()) != state["iterations"]:
        return None
    return model


def _new_state(cfg, tcfg, fingerprint) -> dict:
    return {"epoch": 0, "iterations": 0, "best_auroc": -1.0, "best_epoch": 0, "wait": 0,
            "lr_wait": 0, "lr": tcfg.lr, "stopped_early": False, "history": [],
            "model_config": cfg.to_dict(), "train_config": tcfg.resume_key(),
            "fingerprint": fingerprint}


def train(images, train_rows, train_labels, val_rows, val_labels, cfg: ModelConfig, out_dir,
          tcfg: TrainConfig = TrainConfig(), *, weights=None, loss_weights=None, val_groups=None,
          fingerprint=None, verbose=True, log=None) -> TrainResult:
    """Train (or resume training) a CNN on a uint8 image cache.

    Parameters
    ----------
    images : uint8 (N, S, S) array or memmap, S == cfg.size
    train_rows, val_rows : int arrays
        Rows of ``images`` in each split.
    train_labels, val_labels : 0/1 arrays aligned with the rows
    cfg, tcfg : ModelConfig, TrainConfig
    out_dir : path
        Checkpoint folder (see module docstring). An existing run is resumed when its
        settings and ``fingerprint`` match, else DeepError.
    weights : path, optional
        Local initial weights (see ``build_model``); only used for a fresh run.
    loss_weights : (w_normal, w_abnormal), optional
        Defaults to ``class_weights(train_labels)``.
    val_groups : array, optional
        Validation AUROC is computed on group (study) mean probabilities when given.
    fingerprint : dict, optional
        JSON-able identity of the data (e.g. preprocessing config, split sizes).
    verbose : bool
        Progress bar per epoch (stderr).
    log : callable, optional
        Receives one-line messages (resuming, early stop); default: stderr when verbose.

    Returns
    -------
    TrainResult
    """
    if images.ndim != 3 or images.shape[1:] != (cfg.size, cfg.size):
        raise DeepError(f"image cache is {images.shape[1:]} but the model expects {cfg.size}x{cfg.size}")
    if len(train_rows) == 0 or len(val_rows) == 0:
        raise DeepError(f"empty split: {len(train_rows)} training and {len(val_rows)} validation images")
    steps = len(train_rows) // tcfg.batch_size
    if steps == 0:
        raise DeepError(f"{len(train_rows)} training images are fewer than one batch of {tcfg.batch_size}")
    val_y = np.asarray(val_labels)
    val_yg = val_y if val_groups is None else group_mean(val_y, val_groups)[0] > 0.5
    if len(np.unique(val_yg)) < 2:
        raise DeepError("the validation split needs both normal and abnormal examples for AUROC")
    lw = tuple(loss_weights) if loss_weights is not None else class_weights(train_labels)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    fingerprint = fingerprint or {}
    log = log or ((lambda msg: print(msg, file=sys.stderr)) if verbose else (lambda msg: None))
    state = read_state(out)
    if state is not None:
        check_resumable(state, cfg, tcfg, fingerprint)
        if is_complete(state, tcfg.epochs):
            return _result(out, state, ran=False)
    with get_strategy().scope():
        model = _restore(out, state) if state is not None else None
        if model is None:
            if state is not None:  # every epoch is seeded: starting over gives the same model
                log("the last checkpoint does not match state.json (interrupted while saving); "
                    "training again from epoch 1")
            keras.utils.set_random_seed(tcfg.seed)  # same seed -> same initial weights
            model = _compiled_new_model(cfg, tcfg, weights)
            state = _new_state(cfg, tcfg, fingerprint)
    start = state["epoch"]
    if start:
        log(f"resuming from epoch {start + 1}")
    for epoch in range(start, tcfg.epochs):
        row = _run_epoch(model, images, train_rows, train_labels, lw, tcfg, epoch, steps, verbose,
                         lambda: _validate(model, images, val_rows, val_y, val_yg, val_groups, lw))
        _end_epoch(model, out, state, tcfg, row)
        if not verbose:
            log(f"epoch {row['epoch']}/{tcfg.epochs}: loss {row['loss']:.4f}, val AUROC "
                f"{row['val_auroc']:.4f}, lr {row['lr']:.2g} ({row['seconds']:.0f} s)")
        if state["stopped_early"]:
            log(f"early stop: no val AUROC gain for {tcfg.patience} epochs "
                f"(best {state['best_auroc']:.4f} at epoch {state['best_epoch']})")
            break
    result = _result(out, state, ran=True)
    result.start_epoch = start
    return result


def _validate(model, images, val_rows, val_y, val_yg, val_groups, lw):
    p = predict(model, images, val_rows)
    pg = p if val_groups is None else group_mean(p, val_groups)[0]
    w = np.where(val_y > 0, lw[1], lw[0])
    return weighted_bce(val_y, p, w), auroc(val_yg, pg)


def _run_epoch(model, images, rows, labels, lw, tcfg, epoch, steps, verbose, validate):
    """Fit one epoch (seeded by epoch number), validate; returns the history row."""
    epoch_seed = tcfg.seed * 100_003 + epoch  # same stream whether resumed or not
    keras.utils.set_random_seed(epoch_seed)
    ds = make_dataset(images, rows, labels, tcfg.batch_size, augment=tcfg.augment, seed=epoch_seed,
                      max_rotation=tcfg.max_rotation,
                      shuffle=True, sample_weights=lw, drop_remainder=True)
    t0 = time.perf_counter()
    cbs = [_ProgressBar(epoch + 1, tcfg.epochs, steps)] if verbose else []
    hist = model.fit(ds, epochs=1, verbose=0, callbacks=cbs, shuffle=False)
    val_loss, val_auc = validate()
    secs = time.perf_counter() - t0
    if cbs:
        cbs[0].bar.set_postfix(loss=f"{hist.history['loss'][-1]:.4f}", val_auroc=f"{val_auc:.4f}")
        cbs[0].bar.close()
    lr = float(keras.ops.convert_to_numpy(model.optimizer.learning_rate))
    return {"epoch": epoch + 1, "loss": round(float(hist.history["loss"][-1]), 6),
                          "val_loss": round(val_loss, 6), "val_auroc": round(val_auc, 6),
                          "lr": float(f"{lr:.6g}"), "seconds": round(secs, 2)}


def _end_epoch(model, out, state, tcfg, row):
    """Update schedule/early-stopping state, then write last, best, state.json, history.csv."""
    # Equal AUROC (common on small validation sets): the lower validation loss wins, which
    # also favours later epochs whose BatchNorm moving statistics have caught up.
    improved = row["val_auroc"] > state["best_auroc"] or (
        row["val_auroc"] == state["best_auroc"] and row["val_loss"] < state.get("best_loss", np.inf)
    ) or not (out / "best.keras").exists()  # e.g. a NaN AUROC at epoch 1: still keep a best model
    state["history"].append(row)
    state["epoch"] = row["epoch"]
    state["iterations"] = int(model.optimizer.iterations.numpy())
    if improved:
        state.update(best_auroc=row["val_auroc"], best_loss=row["val_loss"], best_epoch=row["epoch"],
                     wait=0, lr_wait=0)
    else:
        state["wait"] += 1
        state["lr_wait"] += 1
        if state["lr_wait"] >= tcfg.lr_patience:
            new_lr = max(row["lr"] * tcfg.lr_factor, tcfg.min_lr)
            model.optimizer.learning_rate.assign(new_lr)
            state["lr_wait"] = 0
        state["stopped_early"] = state["wait"] >= tcfg.patience
    state["lr"] = float(keras.ops.convert_to_numpy(model.optimizer.learning_rate))
    _save_model(model, out / "last.keras")
    if improved:
        tmp = out / f".best.tmp-{os.getpid()}.keras"
        shutil.copyfile(out / "last.keras", tmp)
        os.replace(tmp, out / "best.keras")
    _write_text(out / "state.json", json.dumps(state, indent=1))  # commit point
    _write_text(out / "history.csv", _history_csv(state["history"]))


def _result(out, state, ran) -> TrainResult:
    model = load_model(out / "best.keras", compile=False)
    return TrainResult(model=model, history=state["history"], start_epoch=state["epoch"],
                       best_epoch=state["best_epoch"], best_auroc=state["best_auroc"],
                       stopped_early=state["stopped_early"], ran=ran)

