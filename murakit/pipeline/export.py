"""Export a run's models: CNN -> ONNX (+ INT8), the baseline, and a golden set for each.

Writes ``RUN/export/``::

    cnn.onnx              float CNN, outputs probability (B,1), cam (B,h,w), gate (B,) (the input
                          gate's score, fitted here: see fit_cnn_gate) and part (B,7) (body-part
                          probabilities: the part head trained with the CNN; for a checkpoint
                          without one, fitted here on the gate's statistics), its card inside
    cnn.int8.onnx         static INT8 CNN, only when its study AUROC on val drops <= 0.01 AND it is
                          faster than float on this machine at batch 1 and 32 (else absent: the
                          device uses cnn.onnx; export.json's "cnn.int8" says why)
    baseline.onnx         the HOG + SVM baseline (copied from RUN/baseline/)
    golden/<stem>/        golden set of each model (ONNX test-data layout + source image + manifest)
    export.json           what was exported: sizes, hashes, Keras parity, the INT8 decision (gate,
                          recipe, INT8/float latency ratios), the CPU it was measured on

Every exported file carries the card written at training time (``RUN/<model>/card.json``);
only precision, metrics and the weights hash describe the file itself. The preprocessing comes
from that card, never from the prepared cache: a cache built with other settings is refused
before anything is written. A model and its golden set are published together (golden set
first, then the model renamed into place); a rerun checks every exported model against its
golden set and its training card and redoes the export when anything disagrees.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from export.quantize import MAX_AUROC_DROP, MAX_LATENCY_RATIO, TIMING_ROUNDS
from murakit.errors import MurakitError
from murakit.layout import RunLayout
from murakit.stage import StageResult

GOLDEN_COUNT = 8
CALIBRATION_COUNT = 200
MAX_GOLDEN, MAX_CALIBRATION = 64, 10_000
# the INT8 gate's defaults live with the gate (export.quantize); here under the CLI's names
MAX_INT8_DROP, MAX_INT8_LATENCY_RATIO, INT8_TIMING_ROUNDS = MAX_AUROC_DROP, MAX_LATENCY_RATIO, TIMING_ROUNDS


@dataclass(frozen=True)
class ExportOptions:
    """Settings of :func:`export_run`."""

    golden: int = GOLDEN_COUNT
    calibration: int = CALIBRATION_COUNT
    max_int8_drop: float = MAX_INT8_DROP
    int8: bool = True
    strict_int8: bool = False
    max_int8_latency_ratio: float = MAX_INT8_LATENCY_RATIO
    int8_rounds: int = INT8_TIMING_ROUNDS

    def check(self) -> None:
        if not 2 <= self.golden <= MAX_GOLDEN:
            raise MurakitError(f"--golden must be in [2, {MAX_GOLDEN}], got {self.golden}")
        if not 1 <= self.calibration <= MAX_CALIBRATION:
            raise MurakitError(f"--calibration must be in [1, {MAX_CALIBRATION}], got {self.calibration}")
        if not (np.isfinite(self.max_int8_drop) and 0.0 <= self.max_int8_drop <= 1.0):
            raise MurakitError(f"--max-int8-drop must be in [0, 1], got {self.max_int8_drop}")
        if not (np.isfinite(self.max_int8_latency_ratio) and self.max_int8_latency_ratio > 0):
            raise MurakitError(f"--max-int8-latency-ratio must be a positive number, got {self.max_int8_latency_ratio}")
        if not 1 <= self.int8_rounds <= 100:
            raise MurakitError(f"INT8 timing rounds must be in [1, 100], got {self.int8_rounds}")


# ---------------------------------------------------------------- choosing images
def golden_positions(prep, n: int) -> list:
    """Deterministic validation positions for a golden set: both classes, spread over parts.

    For each label (abnormal first), body parts are visited round-robin (sorted), each
    giving its next image by sorted path, until ``n // 2`` (resp. the rest) are taken.
    """
    val = prep.select("val")
    if len(val) == 0:
        raise MurakitError("the prepared cache has no validation images for a golden set")
    chosen = []
    for label, want in ((1, n - n // 2), (0, n // 2)):
        by_part = {}
        for i in sorted(val[prep.label[val] == label], key=lambda i: prep.path[i]):
            by_part.setdefault(str(prep.part[i]), []).append(int(i))
        queues, taken = [by_part[p] for p in sorted(by_part)], []
        while len(taken) < want and any(queues):
            for q in queues:
                if q and len(taken) < want:
                    taken.append(q.pop(0))
        chosen += taken
    return chosen


def first_by_path(prep, split: str, n: int) -> np.ndarray:
    """The first ``n`` positions of ``split`` in sorted-path order (calibration sample)."""
    pos = prep.select(split)
    return np.asarray(sorted(pos, key=lambda i: prep.path[i])[:n], dtype=np.int64)


def cache_inputs(prep, positions) -> np.ndarray:
    """float32 (N, S, S, 1) model inputs from the prepared cache."""
    from edge.preprocess import to_model_input

    return to_model_input(np.stack([prep.image(int(i)) for i in positions]))


def golden_sources(prep, positions) -> tuple:
    """(source paths, manifest infos) of golden positions; missing source files are an error."""
    root = Path(prep.meta["data_root"])
    sources, infos = [], []
    for i in positions:
        src = root / str(prep.path[i])
        if not src.is_file():
            raise MurakitError(f"golden source image {src} is missing (data moved since prepare?)")
        sources.append(src)
        infos.append({"path": str(prep.path[i]), "label": int(prep.label[i]), "study": str(prep.study[i]),
                      "part": str(prep.part[i])})
    return sources, infos


def source_inputs(sources, cfg) -> np.ndarray:
    """float32 (N, S, S, 1): the golden sources through THE preprocessing function."""
    from edge.preprocess import preprocess, to_model_input

    return to_model_input(np.stack([preprocess(s, cfg) for s in sources]))


# ---------------------------------------------------------------- publishing
def publish(proto, card, path: Path, golden_dir: Path, sources, infos, extra: dict | None = None):
    """Write a model and its golden set together; returns (final card, golden outputs).

    The model is written under a temporary name, its golden set recorded from that file and
    swapped into place, then the model renamed onto ``path``. An interruption leaves either
    the old pair, or a new golden set beside the old model - which the next export detects.
    """
    from edge.atomic import atomic_write
    from edge.card import attach_card
    from export.golden import record_golden

    data, card = attach_card(proto, card)
    tmp = path.with_name(f".{path.name}.new-{os.getpid()}")
    try:
        with atomic_write(tmp) as f:
            f.write(data)
        _, _, outputs = record_golden(tmp, golden_dir, sources, infos, extra=extra, model_name=path.name)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return card, outputs


def _gate_score(prep, positions):
    """score(probs (N,)) -> study-level AUROC over ``positions`` (MURA protocol)."""
    from murakit.evaluation.metrics import auroc, study_level

    labels, studies = prep.label[positions], prep.study[positions]

    def score(p):
        s = study_level(labels, p, studies)
        return auroc(s["label"], s["prob"])

    return score


# ---------------------------------------------------------------- the input gate
GATE_METHOD = "oe-logistic+mahalanobis+input-stats"  # input-stats: deep.gate.input_statistics
MAX_GATE_TRAIN = 4000  # training radiographs the gate is fitted on (sorted-path sample; enough for P ~ 500)


def pooled_statistics(pooled, x: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """float64 (N, P): a ``deep.pooled_model`` on model inputs, in batches."""
    parts = [np.asarray(pooled(x[i:i + batch_size], training=False)) for i in range(0, len(x), batch_size)]
    return np.concatenate(parts).astype(np.float64) if parts else np.zeros((0, pooled.output.shape[-1]))


def ood_inputs(split: str, cfg) -> np.ndarray:
    """float32 (N, S, S, 1): murakit's non-radiographs of ``split`` through THE preprocessing."""
    from edge.preprocess import preprocess, to_model_input
    from murakit.evaluation.ood import ood_images

    return to_model_input(np.stack([preprocess(o.image, cfg) for o in ood_images(split)]))


def fit_cnn_gate(model, prep, cfg, log, fit_part: bool = True) -> tuple:
    """Fit the input gate of a trained CNN: training radiographs against murakit's "fit"
    non-radiographs, threshold on the validation radiographs (``export.gate.fit_gate``); and, with
    ``fit_part`` (a checkpoint trained without a part head, e.g. before it existed), the body-part
    head on the same statistics of the training radiographs (``fit_part_head``).

    Returns (gate params, part params, the card's ``gate`` dict, the card's ``part_labels``, the
    out-of-fold evidence ``{"positions": training positions, "oof": their out-of-fold scores}`` for
    the INT8 threshold (:func:`int8_gate_card`; None without folds)), or five Nones when the run has
    too few radiographs to fit them (a toy run: the model is exported without a gate or part head,
    and says so). Part params and labels are None without ``fit_part``.
    """
    import deep
    from export.gate import MIN_IN, MIN_VAL, fit_gate, fit_part_head

    pooled = deep.pooled_model(model)
    train = first_by_path(prep, "train", MAX_GATE_TRAIN)
    val = np.asarray(sorted(prep.select("val"), key=lambda i: prep.path[i]), dtype=np.int64)
    if len(train) < MIN_IN or len(val) < MIN_VAL or len(set(prep.part[train])) < 2:
        log(f"export: NO input gate or part head: {len(train)} training and {len(val)} validation radiographs "
            f"are too few to fit them (>= {MIN_IN} and >= {MIN_VAL}, two body parts); this model answers "
            "every input")
        return None, None, None, None, None
    train_v = pooled_statistics(pooled, cache_inputs(prep, train))
    val_v = pooled_statistics(pooled, cache_inputs(prep, val))
    params, info = fit_gate(train_v, val_v, pooled_statistics(pooled, ood_inputs("fit", cfg)), deep.block_sizes(model),
                            train_groups=prep.patient[train])
    part_params, part = None, None
    if fit_part:
        part_params, part = fit_part_head(train_v, prep.part[train], val_v, prep.part[val])
        info["part_val_accuracy"] = part["val_accuracy"]
    log(f"export: input gate fitted on {info['n_train']} training radiographs and {info['n_outliers']} "
        f"non-radiographs: threshold {info['threshold']:.3f} refuses {info['val_refusal_rate']:.1%} of val "
        f"radiographs and {info['fit_outliers_refused']:.1%} of the fit non-radiographs"
        + (f"; body-part head (fitted here: the checkpoint has none): val accuracy {part['val_accuracy']:.3f} "
           f"over {len(part['labels'])} parts" if part else ""))
    oof = info.pop("oof_scores")
    gate = {"method": GATE_METHOD, "output": "gate", "threshold": info["threshold"],
            "fit": {k: v for k, v in info.items() if k != "threshold"}}
    held = None if oof is None else {"positions": train, "oof": oof}
    return params, part_params, gate, part["labels"] if part else None, held


def trained_part_labels(model, card) -> list | None:
    """The card's ``part_labels`` of a CNN trained with a part head (its ``model_config.parts``, the
    order of the head's outputs); None when the checkpoint has no part head."""
    import deep

    head = deep.part_output(model)
    if head is None:
        return None
    labels = list(card.model_config.get("parts") or [])
    if len(labels) != int(head.shape[-1]):
        raise MurakitError(f"the CNN's part head has {int(head.shape[-1])} outputs but its card names parts "
                           f"{labels}; retrain it (murakit train cnn --force)")
    return labels


# ---------------------------------------------------------------- the three models
def export_cnn_float(layout: RunLayout, card, prep, golden_x, sources, infos, log) -> dict:
    """Convert RUN/cnn/best.keras with its input gate, check parity, publish cnn.onnx with its golden set."""
    import deep
    from export.cnn import export_cnn

    model = deep.load_model(layout.cnn_best)
    size = int(model.inputs[0].shape[1])
    if size != card.preprocess.size:
        raise MurakitError(f"{layout.cnn_best} takes {size} px but its card says {card.preprocess.size} px")
    trained = trained_part_labels(model, card)
    params, part_params, gate, part_labels, held = fit_cnn_gate(model, prep, card.preprocess, log,
                                                                fit_part=trained is None)
    part_labels = trained if trained is not None else part_labels
    proto, parity = export_cnn(deep.with_gate(deep.cam_model(model), model, params, part_params), size, golden_x)
    path = layout.exported("cnn")
    card, outputs = publish(proto, card.replace(precision="float32", gate=gate, part_labels=part_labels), path,
                            layout.golden("cnn"), sources, infos, extra={"keras_parity": parity})
    log(f"export: {path} ({path.stat().st_size / 1024:.0f} KiB); Keras vs ONNX max |diff| "
        + ", ".join(f"{k} {v:.1e}" for k, v in parity.items()))
    return {"path": str(path), "bytes": path.stat().st_size, "keras_parity": parity,
            "golden": str(layout.golden("cnn")), "golden_outputs": outputs, "card": card, "gate_oof": held}


def _remove_int8(layout: RunLayout) -> None:
    """Drop an INT8 model (and golden set) left by an earlier export of another float model."""
    import shutil

    layout.exported("cnn.int8").unlink(missing_ok=True)
    shutil.rmtree(layout.golden("cnn.int8"), ignore_errors=True)


def _int8_refused_line(d: dict) -> str:
    """The one line export prints when INT8 is not shipped."""
    return (f"export: INT8 model REFUSED ({' and '.join(d['refused_by'])}; recipe {d['recipe']['name']}): "
            f"{d['reason']}; val study AUROC {d['float_auroc']:.4f} (float) -> {d['int8_auroc']:.4f} (INT8); "
            "cnn.int8.onnx not written, the device uses cnn.onnx")


def export_int8(layout: RunLayout, float_card, prep, opts: ExportOptions, golden_x, float_golden, sources,
                infos, log, gate_oof: dict | None = None) -> dict:
    """Quantize cnn.onnx with each candidate recipe for this CPU, time and gate them, publish
    cnn.int8.onnx only when the chosen one is within the AUROC gate and faster than float.
    ``gate_oof``: the float gate's out-of-fold evidence (:func:`fit_cnn_gate`) for the INT8 threshold."""
    from edge.cpu import cpu_info, describe
    from export.cnn import onnx_outputs
    from export.golden import golden_agreement
    from export.quantize import candidate_recipes, int8_metrics, select_int8

    float_path = layout.exported("cnn")
    calib = first_by_path(prep, "train", opts.calibration)
    val = np.asarray(sorted(prep.select("val"), key=lambda i: prep.path[i]), dtype=np.int64)
    cpu = cpu_info()
    log(f"export: INT8 on {describe(cpu)}")
    int8, decision = select_int8(float_path, cache_inputs(prep, calib), cache_inputs(prep, val),
                                 _gate_score(prep, val), candidate_recipes(cpu), max_drop=opts.max_int8_drop,
                                 max_ratio=opts.max_int8_latency_ratio, rounds=opts.int8_rounds, log=log)
    decision.update(calibration_images=len(calib), cpu=cpu, onnxruntime=_ort_version())
    if not decision["accepted"]:
        _remove_int8(layout)
        log(_int8_refused_line(decision))
        return decision
    agreement = golden_agreement(float_golden, onnx_outputs(int8, golden_x))
    card = float_card.replace(precision="int8", metrics=int8_metrics(decision, agreement),
                              gate=int8_gate_card(float_card.gate, int8, cache_inputs(prep, val), float_path,
                                                  **_oof_inputs(prep, gate_oof)))
    path = layout.exported("cnn.int8")
    publish(int8, card, path, layout.golden("cnn.int8"), sources, infos, extra={"int8_gate": decision})
    ratio = path.stat().st_size / float_path.stat().st_size
    speed = ", ".join(f"{b.replace('_', ' ')} {v['ratio']:.2f}x" for b, v in decision["speed"].items())
    log(f"export: {path} ({path.stat().st_size / 1024:.0f} KiB, {ratio:.2f}x float; recipe "
        f"{decision['recipe']['name']}; latency vs float {speed}); val study AUROC {decision['float_auroc']:.4f} -> "
        f"{decision['int8_auroc']:.4f} (drop {decision['auroc_drop']:+.4f}), max |p diff| {decision['max_abs_diff']:.4f}")
    return {**decision, "path": str(path), "bytes": path.stat().st_size, "golden_agreement": agreement}


def _oof_inputs(prep, gate_oof: dict | None) -> dict:
    """``train_x``, ``oof`` keyword arguments of :func:`int8_gate_card` from ``gate_oof`` (or none)."""
    if gate_oof is None:
        return {}
    return {"train_x": cache_inputs(prep, gate_oof["positions"]), "oof": gate_oof["oof"]}


def int8_gate_card(gate: dict | None, int8, val_x: np.ndarray, float_model=None, train_x: np.ndarray | None = None,
                   oof: np.ndarray | None = None) -> dict | None:
    """The INT8 file's own gate threshold, by the float gate's rule (``export.gate.quantized_threshold``).

    Quantization moves the gate's score, so the threshold is chosen again on the INT8 model: the
    rule on its val radiographs' scores, raised (never lowered) by the rule on those together with
    the training radiographs' out-of-fold scores, each moved by what quantization does to that
    radiograph's score (INT8 minus ``float_model``'s gate output). Without ``oof`` (the float gate
    had no folds either): val only.

    Parameters
    ----------
    gate : dict or None
        The float card's ``gate``.
    int8, float_model
        The INT8 model and the float one it was quantized from (proto, bytes or path).
    val_x, train_x : ndarray float32 (N, S, S, 1)
        Model inputs of the validation radiographs and of the training radiographs ``oof`` scores.
    oof : ndarray float (len(train_x),), optional
        Their out-of-fold float gate scores (``fit_cnn_gate``).

    Returns
    -------
    dict or None
        The INT8 card's ``gate``: the float card's keys, ``threshold`` replaced, and in ``fit``:
        ``float_threshold``, ``int8_threshold_rule`` (``export.gate.quantized_threshold``'s rule) and
        ``int8_threshold_from_val`` (True when the INT8 val scores alone set the threshold).
    """
    from export.cnn import onnx_outputs
    from export.gate import quantized_threshold

    if gate is None:
        return None
    scores = np.asarray(onnx_outputs(int8, val_x)["gate"], np.float64)
    moved = {}
    if oof is not None:
        if float_model is None or train_x is None:
            raise MurakitError("the INT8 gate threshold needs the float model and the training inputs of the "
                               "out-of-fold scores")
        moved = {"oof": oof, "float_train": onnx_outputs(float_model, train_x)["gate"],
                 "int8_train": onnx_outputs(int8, train_x)["gate"]}
    threshold, rule = quantized_threshold(scores, **moved)
    return {**gate, "threshold": threshold,
            "fit": {**gate.get("fit", {}), "int8_threshold_from_val": threshold == rule["val_threshold"],
                    "float_threshold": gate["threshold"], "int8_threshold_rule": rule}}


def _ort_version() -> str:
    import onnxruntime

    return onnxruntime.__version__


def export_baseline(layout: RunLayout, card, sources, infos, log) -> dict:
    """Publish RUN/baseline/baseline.onnx (its card must be the training card) with its golden set."""
    import onnx

    from edge.card import read_onnx_card

    src = layout.baseline_onnx
    inside = read_onnx_card(src)
    if inside.differences(card) or inside.weights_sha256 != card.weights_sha256:
        raise MurakitError(f"{src} does not carry the card of {layout.card('baseline')}; retrain the baseline "
                           "(murakit train baseline --force)")
    path = layout.exported("baseline")
    publish(onnx.load(str(src)), card, path, layout.golden("baseline"), sources, infos)
    log(f"export: {path} ({path.stat().st_size / 1024:.0f} KiB) with its golden set")
    return {"path": str(path), "bytes": path.stat().st_size, "golden": str(layout.golden("baseline"))}


# ---------------------------------------------------------------- consistency and the stage
def _training_cards(layout: RunLayout) -> dict:
    """{"cnn": card, "baseline": card} of the trained models the run has (cards validated)."""
    from edge.card import read_card
    from edge.errors import ModelError

    cards = {}
    for name, model in (("cnn", layout.cnn_best), ("baseline", layout.baseline_onnx)):
        if model.is_file():
            try:
                cards[name] = read_card(layout.card(name))
            except ModelError as e:
                raise MurakitError(f"{e}; retrain it (murakit train {name} --run {layout.root} --force)") from None
    return cards


def _pair_ok(layout: RunLayout, stem: str, card) -> bool:
    """An exported model exists, carries the training card, and its golden set is its own."""
    from edge.card import read_onnx_card
    from edge.errors import EdgeError
    from edge.golden import read_manifest
    from edge.protobuf import sha256_file

    path = layout.exported(stem)
    try:
        inside = read_onnx_card(path)
        manifest = read_manifest(layout.golden(stem))
        return not inside.differences(card) and manifest["model_sha256"] == sha256_file(path)
    except (EdgeError, OSError):
        return False


def up_to_date(layout: RunLayout, cards: dict) -> bool:
    """export.json is newer than every input and every exported model matches card and golden set."""
    from murakit.layout import is_fresh

    inputs = [layout.cnn_best, layout.card("cnn"), layout.baseline_onnx, layout.card("baseline"),
              layout.prepared_config]
    if not is_fresh(layout.export_summary, inputs):
        return False
    try:
        summary = json.loads(layout.export_summary.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    stems = [s for s in ("cnn", "cnn.int8", "baseline") if s in summary and (s != "cnn.int8" or
                                                                            summary[s].get("accepted"))]
    wanted = {"cnn", "baseline"} & set(cards)
    return wanted <= set(stems) and all(_pair_ok(layout, s, cards[s.split(".")[0]]) for s in stems)


def export_run(run, options: ExportOptions = ExportOptions(), force: bool = False, log=print) -> StageResult:
    """The export stage: export every trained model of a run (see the module docstring).

    Returns
    -------
    StageResult
        ``status`` "done" or "up-to-date"; ``paths``: export.json and the exported models;
        ``figures``: the export summary (``export.json``) with ``"int8_refused"`` True when
        ``strict_int8`` is set and the INT8 gate refused the quantized model.
    """
    import time

    from murakit.lock import stage_lock

    t0 = time.perf_counter()
    options.check()
    with stage_lock(run, writes="export", reads=("prepared", "baseline", "cnn")) as layout:
        status, summary = _export_run(layout, options, force, log)
        paths = (layout.export_summary, *(layout.exported(s) for s in ("cnn", "cnn.int8", "baseline")
                                          if layout.exported(s).is_file()))
    return StageResult("export", status, paths, time.perf_counter() - t0, summary)


def _export_run(layout: RunLayout, options: ExportOptions, force: bool, log) -> tuple:
    """:func:`export_run` once the options are checked and the run folder is locked: (status, summary)."""
    from edge.atomic import write_text
    from murakit.data.prepared import load_prepared
    from murakit.evaluation.metrics import json_safe

    cards = _training_cards(layout)
    if not cards:
        raise MurakitError(f"nothing to export in {layout.root}: train a model first (murakit train cnn / baseline)")
    if not force and up_to_date(layout, cards):
        log(f"export: {layout.export_summary} is up to date and every model matches its golden set; "
            "nothing to do (--force redoes it)")
        return "up-to-date", {**json.loads(layout.export_summary.read_text()), "int8_refused": False}
    for card in cards.values():  # refuse a cache built differently before writing anything
        load_prepared(layout.root, expect_config=card.preprocess)
    prep = load_prepared(layout.root)
    sources, infos = golden_sources(prep, golden_positions(prep, options.golden))
    summary, refused = {"golden_cases": infos}, False
    if "cnn" in cards:
        golden_x = source_inputs(sources, cards["cnn"].preprocess)
        cnn = export_cnn_float(layout, cards["cnn"], prep, golden_x, sources, infos, log)
        summary["cnn"] = {k: v for k, v in cnn.items() if k not in ("golden_outputs", "card", "gate_oof")}
        if options.int8:
            summary["cnn.int8"] = export_int8(layout, cnn["card"], prep, options, golden_x,
                                              cnn["golden_outputs"], sources, infos, log, gate_oof=cnn["gate_oof"])
            refused = not summary["cnn.int8"]["accepted"]
    else:
        log(f"export: no CNN in {layout.cnn}; skipping cnn.onnx")
    if "baseline" in cards:
        summary["baseline"] = export_baseline(layout, cards["baseline"], sources, infos, log)
    else:
        log(f"export: no {layout.baseline_onnx}; skipping the baseline")
    if "cnn.int8" in summary:
        summary["cpu"] = summary["cnn.int8"]["cpu"]
    write_text(layout.export_summary, json.dumps(json_safe(summary), indent=2, sort_keys=True))
    return "done", {**summary, "int8_refused": refused and options.strict_int8}
