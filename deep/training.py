"""Training until converged: early stopping and LR-on-plateau on validation AUROC, exact resume.

The recipe (``TrainConfig``, ``schedule_step``): each epoch ends with the validation (study)
AUROC, monitored as its mean over the last few epochs with near-ties decided by the
validation loss; the learning rate drops on plateaus and training stops after ``patience``
epochs without a clear gain, or at the ``max_epochs`` cap. docs/training.md has the
measurements behind each choice.

Checkpoint layout in ``out_dir``::

    last.keras    model + optimizer state after the latest finished epoch
    best.keras    model of the best epoch (``schedule_step``)
    state.json    epoch counter, schedule/early-stopping state, history (the commit point)
    history.csv   one row per epoch: epoch,loss,val_loss,val_auroc,val_auroc_mean,lr,seconds,
                  val_part_accuracy (val_auroc_mean: the monitored trailing mean,
                  ``TrainConfig.smooth``; loss: the joint loss of a model with a part head;
                  val_part_accuracy: empty without one)

An epoch ends in three steps: the new models are written under pending names
(``.last-e0007.keras``, ``.best-e0007.keras``), then ``state.json`` is replaced (it names the
pending files: the commit), then the pending files are renamed onto ``last.keras`` /
``best.keras``. A kill before the commit leaves the previous epoch's files and an
uncommitted pending file that the next start deletes; a kill after it leaves pending files that
the next start renames into place. Either way ``train`` resumes without ``--force``.

Exact resume: every source of randomness of epoch k (shuffle order, augmentation, dropout) is
a function of ``(seed, k)`` alone, and the optimizer state (Adam moments, step, learning
rate) is in ``last.keras``, so a killed and resumed run gives the same epochs as an
uninterrupted one.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from deep import distribute
from deep.config import ModelConfig, TrainConfig
from deep.data import make_dataset
from deep.errors import DeepError
from deep.model import build_model, load_model, part_output, probability_model
from edge.atomic import write_text
from edge.metrics import auroc

HISTORY_FIELDS = ("epoch", "loss", "val_loss", "val_auroc", "val_auroc_mean", "lr", "seconds", "val_part_accuracy")
STOP_REASONS = ("early_stop", "max_epochs")


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
    stop_reason: str = ""  # "early_stop" | "max_epochs" ("" while unfinished)

    def why_stopped(self, patience: int | None = None) -> str:
        """One line: why training ended and which epoch was kept."""
        return stop_message(self.stop_reason, len(self.history), self.best_epoch, self.best_auroc, patience)


def stop_message(reason, epochs, best_epoch, best_auroc, patience=None) -> str:
    """Human-readable reason training stopped (see ``TrainResult.why_stopped``)."""
    best = f"best epoch {best_epoch} (recent mean val AUROC {best_auroc:.4f})"
    if reason == "early_stop":
        wait = f" for {patience} epochs" if patience else ""
        return f"stopped: early stop at epoch {epochs} (no val AUROC gain{wait}); {best}"
    if reason == "max_epochs":
        note = "; still improving near the cap: raise the epoch cap to train on" \
            if epochs - best_epoch < 2 else ""
        return f"stopped: epoch cap reached ({epochs} epochs); {best}{note}"
    return f"unfinished after {epochs} epochs; {best}"


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
    """The strategy ``train`` uses by default: ``deep.distribute.resolve("auto")`` (TF_CONFIG set:
    multi-worker; several GPUs: mirrored; else TensorFlow's default)."""
    return distribute.resolve("auto").strategy


def predict(model, images, rows, batch_size=64) -> np.ndarray:
    """Probabilities float32 (M,) in [0, 1] for ``images[rows]`` (uint8 cache), in order."""
    ds = make_dataset(images, rows, batch_size=batch_size)
    return probability_model(model).predict(ds, verbose=0).reshape(-1).astype(np.float32)


def predict_outputs(model, images, rows, batch_size=64) -> np.ndarray:
    """float32 (M, 1 + K) for ``images[rows]``: the probability, then the part head's K
    probabilities (K = 0 for a model without one)."""
    ds = make_dataset(images, rows, batch_size=batch_size)
    out = model.predict(ds, verbose=0)
    out = out if isinstance(out, (list, tuple)) else [out]
    return np.concatenate([np.asarray(o, np.float32).reshape(len(rows), -1) for o in out], axis=1)


def part_indices(parts, names) -> np.ndarray:
    """int32 (M,) index of each body part in ``names`` (the model's ``ModelConfig.parts``); -1 for
    a part the model has no output for (e.g. a validation part absent from training)."""
    lookup = {p: k for k, p in enumerate(names)}
    return np.asarray([lookup.get(str(p), -1) for p in parts], np.int32)


def weighted_bce(y, p, w) -> float:
    """Mean of w * BCE(y, p) (Keras' sum-over-batch reduction), p clipped like Keras."""
    p = np.clip(np.asarray(p, np.float64), 1e-7, 1 - 1e-7)
    y = np.asarray(y, np.float64)
    return float(np.mean(np.asarray(w) * -(y * np.log(p) + (1 - y) * np.log(1 - p))))


def passes_per_epoch(n_train: int, tcfg: TrainConfig) -> int:
    """Passes over the training split in one epoch: enough for ``tcfg.min_steps`` steps."""
    steps = n_train // tcfg.batch_size
    return max(1, math.ceil(tcfg.min_steps / max(steps, 1)))


# ------------------------------------------------------------------ checkpoints ----

def _history_csv(history) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=HISTORY_FIELDS, lineterminator="\n")
    w.writeheader()
    w.writerows({k: row.get(k, "") for k in HISTORY_FIELDS} for row in history)
    return buf.getvalue()


def _save_model(model, path: Path):
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}.keras")  # Keras wants a .keras suffix
    model.save(tmp)
    os.replace(tmp, path)


def _pending_name(final: str, epoch: int) -> str:
    return f".{final.removesuffix('.keras')}-e{epoch:04d}.keras"


def read_state(out_dir) -> dict | None:
    """The committed training state in ``out_dir`` (None when there is none)."""
    path = Path(out_dir) / "state.json"
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise DeepError(f"cannot read {path} (corrupt?): {e}") from None


def recover(out_dir, state) -> None:
    """Finish an interrupted epoch end: rename committed pending files, delete uncommitted ones.

    Idempotent; safe to call on a folder that was never interrupted.
    """
    out = Path(out_dir)
    committed = dict((state or {}).get("pending", {}))
    for final, pending in committed.items():
        if (out / pending).exists():
            os.replace(out / pending, out / final)
    for f in [*out.glob(".last-e*.keras"), *out.glob(".best-e*.keras"), *out.glob(".*.tmp-*")]:
        if f.name not in committed.values():
            f.unlink(missing_ok=True)
    if state is not None and state.get("history"):
        write_text(out / "history.csv", _history_csv(state["history"]))


def check_resumable(state, cfg, tcfg, fingerprint):
    """Raise DeepError unless ``state`` was trained with these settings and data."""
    want = {"model_config": cfg.to_dict(), "train_config": tcfg.resume_key(), "fingerprint": fingerprint}
    for key, value in want.items():
        if json.loads(json.dumps(_as_stored(state, key, value))) != json.loads(json.dumps(value)):
            raise DeepError(f"the checkpoint in this folder was trained with a different {key.replace('_', ' ')}"
                            f" ({state.get(key)} vs {value}); use --force to start over")


def _as_stored(state, key, want):
    """``state[key]`` with the settings added since it may have been written: a run started before
    the part head has ``parts`` [] (no head), and then ``part_weight`` has no effect."""
    stored = state.get(key)
    if not isinstance(stored, dict) or key not in ("model_config", "train_config"):
        return stored
    stored = dict(stored)
    if key == "model_config":
        stored.setdefault("parts", [])
    elif not state.get("model_config", {}).get("parts"):
        stored.setdefault("part_weight", want["part_weight"])
    return stored


def is_complete(state, max_epochs) -> bool:
    """True when a run stopped early or has trained ``max_epochs`` epochs."""
    return bool(state["stopped_early"]) or state["epoch"] >= max_epochs


# --------------------------------------------------------------------- training ----

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
    loss, loss_weights = "binary_crossentropy", None
    if cfg.parts:  # the joint loss: BCE (sample-weighted) + part_weight * part cross-entropy
        loss, loss_weights = ["binary_crossentropy", "sparse_categorical_crossentropy"], [1.0, tcfg.part_weight]
    model.compile(optimizer=keras.optimizers.Adam(tcfg.lr), loss=loss, loss_weights=loss_weights, jit_compile=False)
    return model


def _restore(out, state):
    """The model of the last committed epoch, or None when last.keras is not the one state.json
    describes (the pending-file commit makes that impossible after a kill, so only a hand-made
    mix of files gets here). An unreadable last.keras is a DeepError: it is damage."""
    model = load_model(out / "last.keras", compile=True)
    model.jit_compile = False  # XLA was slower on CPU (docs/performance.md, "Design choices")
    if int(model.optimizer.iterations.numpy()) != state["iterations"]:
        return None
    model.optimizer.learning_rate.assign(state["lr"])
    return model


def _seed_epoch(model, epoch_seed: int) -> None:
    """Make every random op of this epoch a function of ``epoch_seed`` alone.

    Keras layers with randomness (Dropout) draw from a SeedGenerator whose state is not
    saved in ``.keras`` files; without resetting it a resumed run drops other units than
    an uninterrupted one from the first resumed epoch on.
    """
    keras.utils.set_random_seed(epoch_seed)
    gens = [v for v in model.variables if v.path.endswith("seed_generator_state")]
    for k, v in enumerate(gens):
        v.assign(np.array([epoch_seed * 64 + k, 0], dtype=v.dtype))


def _new_state(cfg, tcfg, fingerprint) -> dict:
    return {"epoch": 0, "iterations": 0, "best_auroc": -1.0, "best_epoch": 0, "wait": 0,
            "lr_wait": 0, "lr": tcfg.lr, "stopped_early": False, "stop_reason": "", "history": [],
            "pending": {}, "model_config": cfg.to_dict(), "train_config": tcfg.resume_key(),
            "fingerprint": fingerprint}


def _check_inputs(images, train_rows, val_rows, val_y, val_groups, cfg, tcfg):
    """Validate shapes and splits; returns the validation labels per group (study)."""
    if images.ndim != 3 or images.shape[1:] != (cfg.size, cfg.size):
        raise DeepError(f"image cache is {images.shape[1:]} but the model expects {cfg.size}x{cfg.size}")
    if len(train_rows) == 0 or len(val_rows) == 0:
        raise DeepError(f"empty split: {len(train_rows)} training and {len(val_rows)} validation images")
    if len(train_rows) < tcfg.batch_size:
        raise DeepError(f"{len(train_rows)} training images are fewer than one batch of {tcfg.batch_size}")
    val_yg = val_y if val_groups is None else group_mean(val_y, val_groups)[0] > 0.5
    if len(np.unique(val_yg)) < 2:
        raise DeepError("the validation split needs both normal and abnormal examples for AUROC")
    return val_yg


def train(images, train_rows, train_labels, val_rows, val_labels, cfg: ModelConfig, out_dir,
          tcfg: TrainConfig | None = None, *, weights=None, loss_weights=None, val_groups=None,
          fingerprint=None, verbose=True, log=None, on_epoch_end=None, replicas=None, train_parts=None,
          val_parts=None) -> TrainResult:
    """Train (or resume training) a CNN on a uint8 image cache until converged.

    Each epoch fits ``passes_per_epoch`` passes over the training rows, then scores the
    validation rows; the run ends by early stopping (``tcfg.patience`` epochs without a
    validation AUROC gain) or at ``tcfg.max_epochs``, and ``result.why_stopped()`` says which.

    Parameters
    ----------
    images : uint8 (N, S, S) array or memmap, S == cfg.size
    train_rows, val_rows : int arrays
        Rows of ``images`` in each split.
    train_labels, val_labels : 0/1 arrays aligned with the rows
    cfg, tcfg : ModelConfig, TrainConfig
        ``tcfg`` defaults to ``TrainConfig()`` (train until converged).
    out_dir : path
        Checkpoint folder (see module docstring). An existing run is resumed when its
        settings and ``fingerprint`` match, else DeepError. A larger ``max_epochs`` than
        before continues a run that reached its cap.
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
        Receives one-line messages (resuming, each epoch when not verbose, why it stopped);
        default: stderr when verbose.
    on_epoch_end : callable, optional
        ``on_epoch_end(row, model)`` after each committed epoch (e.g. to log extra metrics);
        ``row`` is the epoch's history dict.
    replicas : deep.distribute.Replicas, optional
        The strategy and this worker's place in it; default ``deep.distribute.resolve("auto")``.
        ``tcfg.batch_size`` is the global batch. Every worker calls ``train`` with the same
        arguments; only the chief writes to ``out_dir`` (module ``deep.distribute``).
    train_parts, val_parts : str arrays aligned with the rows, optional
        Body part of each image; required when ``cfg.parts`` is set (the model has a part head,
        trained jointly: ``TrainConfig.part_weight``). Every training part must be one of
        ``cfg.parts``. Validation parts give ``val_part_accuracy`` in the history.

    Returns
    -------
    TrainResult
    """
    tcfg = TrainConfig() if tcfg is None else tcfg
    val_y = np.asarray(val_labels)
    val_yg = _check_inputs(images, train_rows, val_rows, val_y, val_groups, cfg, tcfg)
    lw = tuple(loss_weights) if loss_weights is not None else class_weights(train_labels)
    train_pi, val_pi = _part_targets(cfg, train_rows, train_parts, val_rows, val_parts)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    fingerprint = fingerprint or {}
    log = log or ((lambda msg: print(msg, file=sys.stderr)) if verbose else (lambda msg: None))
    rep = distribute.resolve("auto") if replicas is None else replicas
    rep.check_batch(tcfg.batch_size)
    if rep.is_chief:
        recover(out, read_state(out))
    rep.barrier()  # the other workers read the folder once the chief has recovered it
    state = read_state(out)
    if state is not None:
        check_resumable(state, cfg, tcfg, fingerprint)
        if is_complete(state, tcfg.max_epochs):
            return _result(out, state, ran=False)
    with rep.strategy.scope():
        model = _restore(out, state) if state is not None else None
        if model is None:
            if state is not None:  # every epoch is seeded: starting over gives the same model
                log("the last checkpoint does not match state.json; training again from epoch 1")
            keras.utils.set_random_seed(tcfg.seed)  # same seed -> same initial weights
            model = _compiled_new_model(cfg, tcfg, weights)
            state = _new_state(cfg, tcfg, fingerprint)
        if rep.distributed:
            distribute.prepare_model(model, rep.replicas)
    start = state["epoch"]
    if start:
        log(f"resuming from epoch {start + 1}")
    passes = passes_per_epoch(len(train_rows), tcfg)
    validate = lambda: _validate(model, images, val_rows, val_y, val_yg, val_groups, lw, rep, val_pi)
    with distribute.collectives(rep):
        for epoch in range(start, tcfg.max_epochs):
            row = _run_epoch(model, images, train_rows, (train_labels, train_pi), lw, tcfg, epoch, passes,
                             verbose, validate, rep)
            _end_epoch(model, rep.write_dir(out), state, tcfg, row)
            if on_epoch_end is not None:
                on_epoch_end(row, model)
            if not verbose:
                log(f"epoch {row['epoch']}/{tcfg.max_epochs}: loss {row['loss']:.4f}, val AUROC "
                    f"{row['val_auroc']:.4f} (mean {row['val_auroc_mean']:.4f}), lr {row['lr']:.2g}"
                    + (f", val part accuracy {row['val_part_accuracy']:.3f}" if "val_part_accuracy" in row else "")
                    + " "
                    + f"({row['seconds']:.0f} s)")
            if state["stop_reason"]:
                break
        rep.barrier()  # the chief's last commit is done before anyone reads best.keras
    result = _result(out, state, ran=True)
    result.start_epoch = start
    log(result.why_stopped(tcfg.patience))
    return result


def _part_targets(cfg, train_rows, train_parts, val_rows, val_parts):
    """(train part indices (M,) or None, val part indices or None) for ``cfg.parts``."""
    if not cfg.parts:
        if train_parts is not None:
            raise DeepError("body parts were given but the model config has no part head (ModelConfig.parts)")
        return None, None
    if train_parts is None or len(train_parts) != len(train_rows):
        raise DeepError(f"the part head (parts {list(cfg.parts)}) needs one body part per training image")
    train_pi = part_indices(train_parts, cfg.parts)
    if (train_pi < 0).any():
        unknown = sorted({str(p) for p, k in zip(train_parts, train_pi) if k < 0})
        raise DeepError(f"training body parts {unknown} are not among the model's parts {list(cfg.parts)}")
    if val_parts is not None and len(val_parts) != len(val_rows):
        raise DeepError(f"{len(val_parts)} validation body parts for {len(val_rows)} validation images")
    return train_pi, None if val_parts is None else part_indices(val_parts, cfg.parts)


def _validate(model, images, val_rows, val_y, val_yg, val_groups, lw, rep, val_parts=None):
    """(val loss, val AUROC, val part accuracy or None): the abnormality head decides the schedule."""
    head = part_output(model)
    k = 0 if head is None else int(head.shape[-1])
    if k and val_parts is not None:  # one pass for both heads; the same numbers on every worker
        out = rep.predict(model, predict_outputs, images, val_rows, width=1 + k)
        p, part_acc = out[:, 0], float(np.mean(out[:, 1:].argmax(1) == val_parts))
    else:
        p, part_acc = rep.predict(model, predict, images, val_rows), None
    pg = p if val_groups is None else group_mean(p, val_groups)[0]
    w = np.where(val_y > 0, lw[1], lw[0])
    return weighted_bce(val_y, p, w), auroc(val_yg, pg), part_acc


def _run_epoch(model, images, rows, targets, lw, tcfg, epoch, passes, verbose, validate, rep):
    """Fit one epoch (all randomness seeded by the epoch number), validate; returns the history row.

    ``targets`` is (labels, part indices or None)."""
    labels, parts = targets
    epoch_seed = tcfg.seed * 100_003 + epoch  # same stream whether resumed or not
    _seed_epoch(model, epoch_seed)
    ds = rep.dataset(lambda part: make_dataset(  # part: this worker's replica slices (deep.distribute)
        images, rows, labels, tcfg.batch_size, augment=tcfg.augment, seed=epoch_seed, shuffle=True,
        sample_weights=lw, drop_remainder=True, passes=passes, part=part, parts=parts))
    t0 = time.perf_counter()
    steps = passes * (len(rows) // tcfg.batch_size)
    cbs = [_ProgressBar(epoch + 1, tcfg.max_epochs, steps)] if verbose else []
    loss = rep.fit(model, ds, cbs)  # model.fit with one replica
    val_loss, val_auc, val_part = validate()
    secs = time.perf_counter() - t0
    if cbs:
        cbs[0].bar.set_postfix(loss=f"{loss:.4f}", val_auroc=f"{val_auc:.4f}")
        cbs[0].bar.close()
    lr = float(keras.ops.convert_to_numpy(model.optimizer.learning_rate))
    row = {"epoch": epoch + 1, "loss": round(loss, 6),
           "val_loss": round(val_loss, 6), "val_auroc": round(val_auc, 6),
           "lr": float(f"{lr:.6g}"), "seconds": round(secs, 2)}
    if val_part is not None:
        row["val_part_accuracy"] = round(val_part, 6)
    return row


def smoothed_auroc(history, row, smooth: int) -> float:
    """Mean val AUROC of ``row``'s epoch and the ``smooth - 1`` epochs before it.

    Why: on a validation split of ~100 studies the AUROC of one epoch jumps by a few
    hundredths; a lucky early epoch at a high learning rate then wins the raw comparison and
    stops the run before the learning-rate drops pay off (docs/training.md). A model that
    has been good for several epochs is a safer pick.
    """
    recent = [r["val_auroc"] for r in history[-(smooth - 1):]] if smooth > 1 else []
    return float(np.mean(recent + [row["val_auroc"]]))


def schedule_step(state: dict, tcfg: TrainConfig, row: dict) -> tuple[bool, float | None]:
    """One epoch of the recipe's bookkeeping (pure: no model), updating ``state`` in place.

    The monitored value is the mean val AUROC of the last ``tcfg.smooth`` epochs (added to
    ``row`` as ``val_auroc_mean``). Means within ``tcfg.auroc_tolerance`` of the highest so
    far are ties, won by the lower validation loss: differences that small are noise on a
    validation split of ~100 studies, while the loss keeps measuring what the learning-rate
    drops gain (docs/training.md). Patience counts epochs without a clear gain: a mean above
    the highest by more than the tolerance, or a tie with a loss lower by more than
    ``tcfg.min_loss_delta`` (so a run crawling at the smallest learning rate ends). The
    counters start after ``tcfg.warmup_epochs`` epochs (no plateau, no stop before).

    Returns
    -------
    improved : bool
        The epoch is the new best (save it as best.keras).
    new_lr : float or None
        The learning rate to set now (a plateau), else None.
    """
    mon = row["val_auroc_mean"] = round(smoothed_auroc(state["history"], row, tcfg.smooth), 6)
    top, tol = state.get("max_auroc", -1.0), tcfg.auroc_tolerance
    best_loss = state.get("best_loss", np.inf)
    first = state["best_epoch"] == 0  # e.g. a NaN AUROC at epoch 1: still keep a best model
    clear = mon > top + tol
    tie = mon >= top - tol
    improved = first or clear or (tie and row["val_loss"] < best_loss)
    gain = first or clear or (tie and row["val_loss"] < best_loss - tcfg.min_loss_delta)
    state["history"].append(row)
    state.update(epoch=row["epoch"], max_auroc=top if np.isnan(mon) else max(top, mon))
    if improved:
        state.update(best_auroc=mon, best_loss=row["val_loss"], best_epoch=row["epoch"])
    new_lr = None
    if gain or row["epoch"] <= tcfg.warmup_epochs:
        state.update(wait=0, lr_wait=0)
    else:
        state["wait"] += 1
        state["lr_wait"] += 1
        if state["lr_wait"] >= tcfg.lr_patience:
            new_lr = max(row["lr"] * tcfg.lr_factor, tcfg.min_lr)
            state["lr_wait"] = 0
        state["stopped_early"] = state["wait"] >= tcfg.patience
    state["stop_reason"] = ""  # a run resumed with a higher cap continues
    if state["stopped_early"]:
        state["stop_reason"] = "early_stop"
    elif state["epoch"] >= tcfg.max_epochs:
        state["stop_reason"] = "max_epochs"
    return improved, new_lr


def _update_schedule(model, state, tcfg, row) -> bool:
    """``schedule_step`` plus the optimizer: set a plateau's learning rate, record steps and lr."""
    improved, new_lr = schedule_step(state, tcfg, row)
    if new_lr is not None:
        model.optimizer.learning_rate.assign(new_lr)
    state["iterations"] = int(model.optimizer.iterations.numpy())
    state["lr"] = float(keras.ops.convert_to_numpy(model.optimizer.learning_rate))
    return improved


def _end_epoch(model, out, state, tcfg, row):
    """Bookkeeping, then the three-step commit of last/best + state.json (module docstring)."""
    improved = _update_schedule(model, state, tcfg, row)
    pending = {"last.keras": _pending_name("last.keras", row["epoch"])}
    _save_model(model, out / pending["last.keras"])
    if improved:
        pending["best.keras"] = _pending_name("best.keras", row["epoch"])
        shutil.copyfile(out / pending["last.keras"], out / pending["best.keras"])
    state["pending"] = pending
    write_text(out / "state.json", json.dumps(state, indent=1))  # the commit point
    recover(out, state)


def _result(out, state, ran) -> TrainResult:
    model = load_model(out / "best.keras", compile=False)
    return TrainResult(model=model, history=state["history"], start_epoch=state["epoch"],
                       best_epoch=state["best_epoch"], best_auroc=state["best_auroc"],
                       stopped_early=state["stopped_early"], ran=ran,
                       stop_reason=state.get("stop_reason", ""))
