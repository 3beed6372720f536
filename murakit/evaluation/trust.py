"""The report's trust figures: ECE with intervals, operating points per part, the input gate.

Everything here is measured on the test split (MURA's ``valid``), which no calibrator, operating
point or gate threshold was fitted on. Intervals are 95% percentile bootstraps over studies
(the protocol's unit; :mod:`murakit.evaluation.bootstrap`), seeded.
"""

from __future__ import annotations

import numpy as np

from murakit.evaluation.bootstrap import LEVEL, N_RESAMPLES, _interval, _resamples
from murakit.evaluation.calibration import apply_platt, ece, ece_floor
from murakit.evaluation.metrics import auroc, study_level


def _study_index(studies) -> tuple:
    """(unique studies, list of image-index arrays per study)."""
    uniq, inv = np.unique(np.asarray(studies).astype(str), return_inverse=True)
    return uniq, [np.flatnonzero(inv == k) for k in range(len(uniq))]


def calibrated(card, probs, studies, labels) -> dict:
    """Raw and calibrated probabilities at image and study level (calibrated = raw without calibrators)."""
    s = study_level(labels, probs, studies)
    cal = card.calibration if card is not None else None
    img = apply_platt(cal["image"], probs) if cal else np.asarray(probs, np.float64)
    st = apply_platt(cal["study"], s["prob"]) if cal else s["prob"]
    return {"image": img, "study": st, "study_raw": s["prob"], "study_label": s["label"],
            "study_id": s["study"]}


def calibration_metrics(card, labels, probs, studies, n: int = N_RESAMPLES, seed: int = 0) -> dict:
    """``{"image": {"ece", "ece_ci", "ece_raw", "ece_floor", "ece_floor_q95"}, "study": {...}}`` on the test split.

    ``ece`` is of the probabilities answers give (calibrated when the card has calibrators),
    ``ece_raw`` of the model's raw scores (study: the mean of its views), so the report shows
    before and after. Intervals: studies resampled; image ECE over the resampled studies' views.
    ``ece_floor`` / ``ece_floor_q95``: mean and 95th percentile of the ECE that perfectly
    calibrated labels drawn from the answers' own probabilities score at this test size
    (:func:`murakit.evaluation.calibration.ece_floor`): binned ECE is biased upward on small
    sets, and an ``ece`` below ``ece_floor_q95`` is within sampling noise.
    """
    labels = np.asarray(labels)
    c = calibrated(card, probs, studies, labels)
    _, members = _study_index(studies)
    idx = _resamples(len(members), n, seed)
    img_ece, st_ece = np.empty(n), np.empty(n)
    for k, rows in enumerate(idx):
        views = np.concatenate([members[i] for i in rows])
        img_ece[k] = ece(labels[views], c["image"][views])
        st_ece[k] = ece(c["study_label"][rows], c["study"][rows])
    fi, fs = ece_floor(c["image"], seed=seed), ece_floor(c["study"], seed=seed)
    return {"image": {"ece": ece(labels, c["image"]), "ece_ci": _interval(img_ece, LEVEL),
                      "ece_raw": ece(labels, probs), "ece_floor": fi["mean"], "ece_floor_q95": fi["q95"]},
            "study": {"ece": ece(c["study_label"], c["study"]), "ece_ci": _interval(st_ece, LEVEL),
                      "ece_raw": ece(c["study_label"], c["study_raw"]), "ece_floor": fs["mean"],
                      "ece_floor_q95": fs["q95"]}}


def _rates(y: np.ndarray, yhat: np.ndarray) -> tuple:
    """Vectorised (kappa, sensitivity, specificity) along the last axis of 0/1 arrays."""
    y, yhat = y.astype(bool), yhat.astype(bool)
    n = y.shape[-1]
    tp = (y & yhat).sum(-1)
    tn = (~y & ~yhat).sum(-1)
    pos, pred_pos = y.sum(-1), yhat.sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        sens = tp / pos
        spec = tn / (n - pos)
        po = (tp + tn) / n
        pe = (pos * pred_pos + (n - pos) * (n - pred_pos)) / n ** 2
        kappa = np.where(pe < 1, (po - pe) / (1 - pe), np.nan)
    return kappa, sens, spec


def _with_ci(y, yhat, idx) -> dict:
    k, se, sp = (float(v) for v in _rates(y, yhat))
    kb, seb, spb = _rates(y[idx], yhat[idx])
    return {"kappa": k, "kappa_ci": _interval(kb, LEVEL), "sensitivity": se, "sensitivity_ci": _interval(seb, LEVEL),
            "specificity": sp, "specificity_ci": _interval(spb, LEVEL)}


def operating_point_metrics(card, labels, probs, studies, parts, n: int = N_RESAMPLES, seed: int = 0) -> dict:
    """``{NAME: {"threshold" or "thresholds_by_part", "overall": {...}, "by_part": {PART: {...}}}}``
    and, for each ``/part`` variant, ``"vs_global"``: its overall study kappa minus the global
    point's, with a paired bootstrap interval (per-part thresholds beat the global one on test
    only when the interval excludes 0)."""
    from edge.trust import operating_points

    if card is None:
        return {}
    s = study_level(labels, probs, studies, parts)
    y, p, part = s["label"].astype(int), s["prob"], s["part"]
    idx = _resamples(len(y), n, seed)
    out, decisions = {}, {}
    for name, op in operating_points(card).items():
        t = np.array([op.get("thresholds_by_part", {}).get(q, op["threshold"]) for q in part])
        yhat = (p > t).astype(int)
        decisions[name] = yhat
        entry = {"threshold": op["threshold"]} if "thresholds_by_part" not in op else \
            {"threshold": op["threshold"], "thresholds_by_part": op["thresholds_by_part"]}
        entry["overall"] = _with_ci(y, yhat, idx)
        by_part = {}
        for q in sorted(set(part)):
            m = np.flatnonzero(part == q)
            sub = _resamples(len(m), n, seed)
            by_part[q] = {**_with_ci(y[m], yhat[m], sub), "studies": len(m)}
        entry["by_part"] = by_part
        out[name] = entry
    for name, entry in out.items():
        base = name.removesuffix("/part")
        if name.endswith("/part") and base in decisions:
            diff = _rates(y[idx], decisions[name][idx])[0] - _rates(y[idx], decisions[base][idx])[0]
            point = float(_rates(y, decisions[name])[0] - _rates(y, decisions[base])[0])
            entry["vs_global"] = {"kappa_diff": point, "ci": _interval(diff, LEVEL)}
    return out


def _auroc_ci(inlier: np.ndarray, outlier: np.ndarray, n: int, seed: int) -> list:
    """[AUROC, lo, hi] of gate scores as an outlier detector (both sets resampled)."""
    rng = np.random.default_rng(seed)
    y = np.r_[np.zeros(len(inlier)), np.ones(len(outlier))]
    point = auroc(y, np.r_[inlier, outlier])
    boots = np.array([auroc(y, np.r_[rng.choice(inlier, len(inlier)), rng.choice(outlier, len(outlier))])
                      for _ in range(n)])
    return [float(point), *_interval(boots, LEVEL)]


def gate_metrics(predictor, test_u8: np.ndarray, n: int = 1000, seed: int = 0) -> dict | None:
    """report.json's ``gate``: the card's threshold, the share of test radiographs it refuses,
    and per category of murakit's OOD test set (never used for fitting) the AUROC of the gate
    score against the test radiographs [auc, lo, hi] and the share refused.

    None when the model has no gate.
    """
    from murakit.evaluation.ood import CATEGORIES, ood_images

    if not predictor.has_gate:
        return None
    inlier = gate_scores(predictor, test_u8)
    oods = ood_images("test")
    u8 = np.stack([predictor.preprocess(o.image) for o in oods])
    outlier = gate_scores(predictor, u8)
    cats = np.array([o.category for o in oods])
    t = float(predictor.card.gate["threshold"])
    per = {c: _auroc_ci(inlier, outlier[cats == c], n, seed) for c in CATEGORIES if (cats == c).any()}
    per["all"] = _auroc_ci(inlier, outlier, n, seed)
    return {"threshold": t, "test_refusal_rate": float(np.mean(inlier > t)), "test_images": len(inlier),
            "ood_auroc": per, "ood_images": {c: int((cats == c).sum()) for c in per if c != "all"},
            "ood_refused": {c: float(np.mean(outlier[cats == c] > t)) for c in per if c != "all"}
            | {"all": float(np.mean(outlier > t))}, "method": predictor.card.gate.get("method")}


def part_accuracy(predictor, u8: np.ndarray, parts, studies, n: int = N_RESAMPLES, seed: int = 0) -> dict | None:
    """report.json's ``part_accuracy`` of a model with a body-part head: the share of test views
    whose predicted part is the one their MURA path names, overall (with a 95% study bootstrap
    interval) and per part. None without a part head."""
    labels = predictor.card.part_labels
    if not labels or "part" not in predictor.output_names:
        return None
    out = [np.asarray(predictor.run(predictor.model_input(u8[i:i + 64]))["part"]) for i in range(0, len(u8), 64)]
    predicted = np.asarray(labels)[np.concatenate(out).argmax(1)] if out else np.zeros(0, str)
    right = predicted == np.asarray(parts).astype(str)
    _, members = _study_index(studies)
    per_study = [(right[m].sum(), len(m)) for m in members]
    hits, counts = np.array(per_study).T
    idx = _resamples(len(members), n, seed)
    boots = hits[idx].sum(1) / counts[idx].sum(1)
    by_part = {str(q): float(right[np.asarray(parts) == q].mean()) for q in sorted(set(np.asarray(parts).astype(str)))}
    return {"overall": float(right.mean()), "overall_ci": _interval(boots, LEVEL), "by_part": by_part,
            "images": len(right)}


def gate_scores(predictor, u8: np.ndarray, batch: int = 64) -> np.ndarray:
    """float64 (N,) gate scores of preprocessed uint8 (N, S, S) images."""
    out = [np.asarray(predictor.run(predictor.model_input(u8[i:i + batch]))["gate"], np.float64).reshape(-1)
           for i in range(0, len(u8), batch)]
    return np.concatenate(out) if out else np.zeros(0)


# ---------------------------------------------------------------- report.md
def plot_reliability(models: dict, data: dict, out) -> bool:
    """Reliability diagrams (image and study level, test split), before and after calibration,
    of the CNN (ONNX float, else Keras) and the baseline. False when no model has calibrators."""
    from murakit.display import new_figure
    from murakit.evaluation.calibration import reliability
    from murakit.evaluation.report import _save

    names = [n for n in ("cnn_onnx", "cnn", "baseline") if n in data["probs"] and models[n].get("calibration")]
    names = [n for n in names if not (n == "cnn" and "cnn_onnx" in names)]
    if not names:
        return False
    fig = new_figure(figsize=(10, 4.6))
    axes = fig.subplots(1, 2)
    for ax, level in zip(axes, ("image", "study")):
        ax.plot([0, 1], [0, 1], "k:", lw=0.8)
        for name, color in zip(names, ("tab:blue", "tab:orange")):
            c = calibrated(_Card(models[name]["calibration"]), data["probs"][name], data["studies"], data["labels"])
            y = data["labels"] if level == "image" else c["study_label"]
            for probs, style, when in ((data["probs"][name] if level == "image" else c["study_raw"], ":", "raw"),
                                       (c[level], "-", "calibrated")):
                r = reliability(y, probs)
                pts = [(a, b) for a, b in zip(r["confidence"], r["frequency"]) if a is not None]
                e = models[name][level]["ece" if when == "calibrated" else "ece_raw"]
                ax.plot(*zip(*pts), style, marker="o", ms=3, color=color, label=f"{name} {when} (ECE {e:.3f})")
        ax.set(xlabel="predicted probability (bin mean)", ylabel="observed abnormal fraction",
               title=f"{level.capitalize()} level, test split", xlim=(0, 1), ylim=(0, 1))
        ax.legend(fontsize=7, loc="upper left")
    fig.suptitle("Reliability before (dotted) and after (solid) the card's calibrators")
    _save(fig, out)
    return True


class _Card:
    """The one attribute :func:`calibrated` reads, from a report's stored calibrators."""

    def __init__(self, calibration):
        self.calibration = calibration


def _ci_text(ci) -> str:
    return "" if not ci or ci[0] is None else f" [{ci[0]:.3f}, {ci[1]:.3f}]"


def markdown_lines(report: dict) -> list:
    """report.md's trust sections: calibration, operating points per part, the input gate."""
    lines = ["", "## Calibration (test split; calibrators fitted on val)", "",
             ("ECE floor: the mean / 95th percentile ECE of a perfectly calibrated model at this test size "
              "(labels drawn from the calibrated probabilities); an ECE below the 95th percentile is within "
              "sampling noise (docs/trust.md)."), "",
             ("| model | image ECE raw | image ECE calibrated [95% CI] | image floor | study ECE raw "
              "| study ECE calibrated [95% CI] | study floor |"),
             "|---|---|---|---|---|---|---|"]

    def floor(m):
        return f"{m['ece_floor']:.3f} / {m['ece_floor_q95']:.3f}" if "ece_floor" in m else "–"

    for name, m in report["models"].items():
        i, s = m["image"], m["study"]
        if "ece" not in i:
            continue
        lines.append(f"| {name} | {i['ece_raw']:.3f} | {i['ece']:.3f}{_ci_text(i.get('ece_ci'))} | {floor(i)} "
                     f"| {s['ece_raw']:.3f} | {s['ece']:.3f}{_ci_text(s.get('ece_ci'))} | {floor(s)} |")
    m = report["models"].get("cnn_onnx") or report["models"].get("cnn")
    if m and m.get("operating_points"):
        lines += ["", "## Operating points (CNN, study level, test split)", "",
                  ("Thresholds chosen on val; `/part` variants use one threshold per body part. Cells: kappa / "
                  "sensitivity / specificity, 95% bootstrap intervals in report.json."), "",
                  "| operating point | overall | " + " | ".join(sorted(next(iter(m["operating_points"].values()))["by_part"]))
                  + " | per-part - global kappa [95% CI] |",
                  "|---|---|" + "---|" * (len(next(iter(m["operating_points"].values()))["by_part"]) + 1)]
        for name, op in m["operating_points"].items():
            def cell(r):
                return "–" if r is None else "/".join("–" if v is None or not np.isfinite(v) else f"{v:.2f}" for v in
                                                      (r["kappa"], r["sensitivity"], r["specificity"]))
            vs = op.get("vs_global")
            vs_text = "" if not vs else f"{vs['kappa_diff']:+.3f}{_ci_text(vs['ci'])}"
            lines.append(f"| {name} | {cell(op['overall'])} | "
                         + " | ".join(cell(op["by_part"][q]) for q in sorted(op["by_part"])) + f" | {vs_text} |")
    pa = {k: m["part_accuracy"] for k, m in report["models"].items() if m.get("part_accuracy")}
    if pa:
        parts = sorted({q for v in pa.values() for q in v["by_part"]})
        lines += ["", "## Body part (the model's part head vs the MURA path, test views)", "",
                  "| model | overall [95% CI] | " + " | ".join(parts) + " |", "|---|---|" + "---|" * len(parts)]
        for k, v in pa.items():
            lines.append(f"| {k} | {v['overall']:.3f}{_ci_text(v['overall_ci'])} | "
                         + " | ".join(f"{v['by_part'].get(q, float('nan')):.3f}" for q in parts) + " |")
    g = report.get("gate")
    if g:
        lines += ["", "## Input gate (CNN ONNX)", "",
                  (f"Threshold {g['threshold']:.3f} (card); test radiographs refused: {g['test_refusal_rate']:.1%} "
                  f"of {g['test_images']}. OOD test set (murakit.evaluation.ood, never used for fitting):"), "",
                  "| category | images | AUROC vs test radiographs [95% CI] | refused |", "|---|---|---|---|"]
        for c, (auc, lo, hi) in g["ood_auroc"].items():
            lines.append(f"| {c} | {g['ood_images'].get(c, sum(g['ood_images'].values()))} | {auc:.3f} [{lo:.3f}, {hi:.3f}] "
                         f"| {g['ood_refused'][c]:.1%} |")
    return lines
