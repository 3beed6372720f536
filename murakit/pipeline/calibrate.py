"""The calibrate stage: refit a trained model's calibrators and operating points from its val predictions.

``murakit train cnn`` / ``train baseline`` fit the card's ``calibration`` and
``operating_points`` on the validation split (:mod:`murakit.evaluation.calibration`). A model
trained before that fitting rule changed keeps the old ones, and ``murakit export --force``
cannot help: export carries the training card unchanged (the card is the training stage's
product, export only adds what describes a file). So this stage rewrites the training stage's
card, ``RUN/<model>/card.json``, from ``RUN/<model>/predictions_val.csv``: the very val
probabilities the training stage fitted on, written by it beside the card. Nothing is retrained
and nothing else changes: weights, the shipped threshold (``youden``) and the metrics stay as
trained, so the refitted card is what training would write today from the same model.

The baseline's trained ONNX file carries its card too (export refuses a file whose card is not
``card.json``'s), so it is rewritten with the new card: same graph, same weights hash. The card
is written last; an interrupted run leaves the old card, and running the stage again redoes it.
The exports are then stale (the card is newer than ``export.json``), so ``murakit export`` redoes
them without ``--force``, and ``murakit bench --force`` reports the new ECEs.
"""

from __future__ import annotations

import json
import time

import numpy as np

from murakit.errors import MurakitError
from murakit.layout import RunLayout
from murakit.stage import StageResult

MODELS = ("cnn", "baseline")
# The stored predictions have 8 decimals; their val image AUROC must be the card's to that
# precision, or they are not this model's (a retrain that failed half-way, a copied file).
AUROC_TOLERANCE = 1e-4
# Refitting from the stored 8-decimal probabilities reproduces the training-time fit (float32
# probabilities in memory) to about 1e-8; a card within this of the refit is current.
FIT_TOLERANCE = 1e-6


def refit_card(card, val: dict):
    """``card`` with ``calibration`` and ``operating_points`` fitted again on ``val``.

    Parameters
    ----------
    card : edge.card.ModelCard
        The trained model's card; its ``threshold`` stays the ``youden`` operating point.
    val : dict
        ``label`` (0/1), ``probability`` (raw, in [0, 1]), ``study``, ``part`` arrays (N,): the
        model's val predictions (:func:`murakit.evaluation.predictions.read_predictions`).

    Returns
    -------
    edge.card.ModelCard
    """
    from murakit.pipeline.cards import trust_fields

    return card.replace(**trust_fields(val["label"], val["probability"], val["study"], val["part"], card.threshold))


def _check_matches(card, val: dict, path) -> None:
    """The predictions must be the card's model's: same val image AUROC as its metrics say."""
    from murakit.evaluation.metrics import auroc

    stored = ((card.metrics or {}).get("val") or {}).get("image", {}).get("auroc")
    if stored is None or len(np.unique(val["label"])) < 2:
        return
    got = auroc(val["label"], val["probability"])
    if abs(got - stored) > AUROC_TOLERANCE:
        raise MurakitError(f"{path}: val image AUROC {got:.4f} is not the card's {stored:.4f}: these "
                           "predictions are not this model's; retrain it")


def _close(a, b) -> bool:
    """Same JSON structure, numbers equal within :data:`FIT_TOLERANCE`."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b))
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return abs(a - b) <= FIT_TOLERANCE
    return a == b


def _describe(cal: dict) -> str:
    return ", ".join(f"{level} {c.get('form', 'platt')} a={c['a']:.3f} b={c['b']:.3f}" for level, c in cal.items())


def _calibrate_model(layout: RunLayout, name: str, force: bool, log) -> tuple:
    """(status, figures) of one model; the caller holds its stage lock."""
    from edge.atomic import write_text
    from edge.card import read_card
    from edge.errors import ModelError
    from murakit.evaluation.predictions import read_predictions

    try:
        card = read_card(layout.card(name))
    except ModelError as e:
        raise MurakitError(f"{e}; retrain it (murakit train {name} --run {layout.root} --force)") from None
    path = layout.predictions(name, "val")
    if not path.is_file():
        raise MurakitError(f"{path}: no val predictions to fit calibrators on; retrain the model "
                           f"(murakit train {name} --run {layout.root} --force)")
    val = read_predictions(path)
    _check_matches(card, val, path)
    new = refit_card(card, val)
    figures = {"calibration": new.calibration, "val_images": len(val["label"]),
               "val_studies": len(np.unique(val["study"]))}
    current = _close([card.calibration, card.operating_points], [new.calibration, new.operating_points])
    if not force and current and (name != "baseline" or _onnx_card_ok(layout, card)):
        log(f"calibrate: {name}: {layout.card(name)} already has these calibrators; nothing to do")
        return "up-to-date", figures
    if name == "baseline":
        _rewrite_baseline_onnx(layout, new)
    write_text(layout.card(name), new.to_json() + "\n")
    log(f"calibrate: {name}: {_describe(new.calibration)} (val: {figures['val_studies']} studies, "
        f"{figures['val_images']} images) -> {layout.card(name)}")
    return "done", figures


def _onnx_card_ok(layout: RunLayout, card) -> bool:
    from edge.card import read_onnx_card
    from edge.errors import EdgeError

    try:
        return not read_onnx_card(layout.baseline_onnx).differences(card)
    except (EdgeError, OSError):
        return False


def _rewrite_baseline_onnx(layout: RunLayout, card) -> None:
    """Put ``card`` into RUN/baseline/baseline.onnx (graph untouched: its hash must not move)."""
    import onnx

    from edge.atomic import atomic_write
    from edge.card import attach_card

    if not layout.baseline_onnx.is_file():
        raise MurakitError(f"{layout.baseline_onnx}: missing (it carries the baseline's card); retrain the "
                           "baseline (murakit train baseline --force)")
    data, written = attach_card(onnx.load(str(layout.baseline_onnx)), card)
    if written.weights_sha256 != card.weights_sha256:
        raise MurakitError(f"{layout.baseline_onnx}: its graph is not the one {layout.card('baseline')} "
                           "describes; retrain the baseline (murakit train baseline --force)")
    with atomic_write(layout.baseline_onnx, "wb") as f:
        f.write(data)


def calibrate_run(run, models=None, force: bool = False, log=print) -> StageResult:
    """The calibrate stage (see the module docstring).

    Parameters
    ----------
    run : str or Path
    models : iterable of {"cnn", "baseline"}, optional
        Default: every trained model of the run. A named model that is not trained is an error.
    force : bool
        Write the card even when the refit gives the calibrators it already has.

    Returns
    -------
    StageResult
        ``status`` "done" when any card was rewritten, else "up-to-date"; ``paths``: the cards;
        ``figures``: per model its ``status``, the new ``calibration`` and the val image and
        study counts.
    """
    from murakit.lock import stage_lock

    t0 = time.perf_counter()
    layout = RunLayout(run)
    if not layout.root.is_dir():
        raise MurakitError(f"{layout.root}: no such run folder")
    trained = [m for m in MODELS if layout.card(m).is_file()]
    wanted = list(models) if models else trained
    for m in wanted:
        if m not in MODELS:
            raise MurakitError(f"unknown model {m!r}; choose from {', '.join(MODELS)}")
        if m not in trained:
            raise MurakitError(f"{layout.card(m)}: no trained {m} to calibrate (murakit train {m} --run {layout.root})")
    if not wanted:
        raise MurakitError(f"nothing to calibrate in {layout.root}: train a model first (murakit train cnn / baseline)")
    statuses, figures = [], {}
    for m in wanted:
        with stage_lock(run, writes=m, command="murakit calibrate"):
            status, figures[m] = _calibrate_model(layout, m, force, log)
        figures[m]["status"] = status
        statuses.append(status)
    status = "done" if "done" in statuses else "up-to-date"
    return StageResult("calibrate", status, tuple(layout.card(m) for m in wanted), time.perf_counter() - t0,
                       json.loads(json.dumps(figures)))
