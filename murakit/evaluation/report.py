"""Write the benchmark report: report.json, report.md and the plots."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge.atomic import atomic_path, write_text
from murakit.display import new_figure
from murakit.evaluation.bench import ANCHOR, MODEL_NAMES
from murakit.evaluation.cam import markdown_lines as cam_markdown
from murakit.evaluation.metrics import study_level
from murakit.layout import RunLayout
from murakit.stage import StageResult

LABELS = {"baseline": "HOG + SVM (ONNX)", "cnn": "CNN (Keras)", "cnn_onnx": "CNN (ONNX float)",
          "cnn_onnx_int8": "CNN (ONNX INT8)", "cnn_tflite": "CNN (TFLite float)", "cnn_tflite_int8": "CNN (TFLite INT8)"}


def roc_curve(y, p):
    """(fpr, tpr) arrays of the ROC curve, thresholds swept from high to low."""
    y = np.asarray(y).astype(bool)
    order = np.argsort(-np.asarray(p), kind="mergesort")
    ps, ys = np.asarray(p)[order], y[order]
    keep = np.r_[np.diff(ps) != 0, True]  # last index of each run of tied scores
    tp, fp = np.cumsum(ys)[keep], np.cumsum(~ys)[keep]
    return np.r_[0, fp / max(1, (~y).sum())], np.r_[0, tp / max(1, y.sum())]


def _save(fig, path: Path):
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")


# Curves of the same CNN in three runtimes lie on top of each other: wide pale Keras underneath,
# thinner dashed / dotted ONNX curves on top, so every one of them stays visible.
STYLES = {"baseline": {"color": "tab:orange", "lw": 2.0},
          "cnn": {"color": "tab:blue", "lw": 5.0, "alpha": 0.35},
          "cnn_onnx": {"color": "tab:blue", "lw": 1.6, "ls": "--"},
          "cnn_onnx_int8": {"color": "tab:green", "lw": 1.6, "ls": ":"},
          "cnn_tflite": {"color": "tab:purple", "lw": 1.2, "ls": "-."},
          "cnn_tflite_int8": {"color": "tab:red", "lw": 1.2, "ls": (0, (1, 2))}}


def _ci(m: dict, key: str) -> str:
    lo, hi = m["study"].get(f"{key}_ci") or (None, None)
    return "" if lo is None else f" [{lo:.3f}, {hi:.3f}]"


def plot_roc(models, data, out: Path):
    fig = new_figure(figsize=(6, 5.5))
    ax = fig.subplots()
    for name, p in data["probs"].items():
        s = study_level(data["labels"], p, data["studies"])
        fpr, tpr = roc_curve(s["label"], s["prob"])
        m = models[name]
        ax.plot(fpr, tpr, label=f"{LABELS[name]}: {m['study']['auroc']:.3f}{_ci(m, 'auroc')}",
                **STYLES.get(name, {}))
    ax.plot([0, 1], [0, 1], "k:", lw=0.8)
    ax.set_xlim(-0.01, 1.01)
    ax.set_ylim(-0.01, 1.01)
    ax.set(xlabel="1 - specificity", ylabel="sensitivity", title="Study-level ROC, test split")
    ax.legend(loc="lower right", fontsize=8, title="study AUROC [95% CI]", title_fontsize=8)
    _save(fig, out)


def plot_confusion(models, data, out: Path):
    names = list(data["probs"])
    cols = min(3, len(names))  # six models in one row were too small to read
    rows = -(-len(names) // cols)
    fig = new_figure(figsize=(3.6 * cols, 3.6 * rows))
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.ravel()[len(names):]:
        ax.axis("off")
    for k, (ax, name) in enumerate(zip(axes.ravel(), names)):
        s = study_level(data["labels"], data["probs"][name], data["studies"])
        yhat = s["prob"] > models[name]["threshold"]
        cm = np.array([[np.sum((s["label"] == a) & (yhat == b)) for b in (0, 1)] for a in (0, 1)])
        ax.imshow(cm, cmap="Blues", vmin=0, vmax=max(1, cm.max()) * 1.4)
        for (i, j), v in np.ndenumerate(cm):
            ax.text(j, i, str(v), ha="center", va="center", color="black", fontsize=12)
        ax.set_xticks([0, 1], ["normal", "abnormal"])
        ax.set_yticks([0, 1], ["normal", "abnormal"] if k % cols == 0 else ["", ""])
        ax.set_xlabel("predicted")
        if k % cols == 0:
            ax.set_ylabel("true")
        ax.set_title(LABELS[name], fontsize=9)
    fig.suptitle("Study-level confusion matrices (test split)")
    fig.tight_layout()
    _save(fig, out)


def plot_kappa_by_part(models, out: Path):
    names = list(models)
    parts = sorted({p for m in models.values() for p in m["by_part"]})
    fig = new_figure(figsize=(max(6, 1.2 * len(parts)), 4))
    ax = fig.subplots()
    w = 0.8 / max(1, len(names))
    for i, name in enumerate(names):
        vals = [models[name]["by_part"].get(p, {}).get("kappa") or 0.0 for p in parts]
        style = STYLES.get(name, {})
        ax.bar(np.arange(len(parts)) + i * w, vals, w, label=LABELS[name], color=style.get("color"),
               alpha=0.55 if name == "cnn" else 1.0, hatch="//" if name == "cnn_onnx" else None,
               edgecolor="white")
    ax.axhline(ANCHOR["kappa"], color="k", ls=":", lw=1, label="MURA paper overall kappa (real MURA)")
    ax.set(xticks=np.arange(len(parts)) + w * (len(names) - 1) / 2, ylabel="Cohen's kappa (study)",
           title="Kappa per body part, test split", ylim=(min(0.0, ax.get_ylim()[0]), 1.0))
    ax.set_xticklabels(parts)
    # below the axes: inside, the legend covered the tallest bars
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=3, frameon=False)
    _save(fig, out)


def _decision_note(decision) -> str:
    """One line under the latency plot: was ONNX INT8 shipped, and its measured speed."""
    if not decision:
        return ""
    speed = ", ".join(f"{b.replace('_', ' ')} {v['ratio']:.2f}x" for b, v in (decision.get("speed") or {}).items())
    verdict = "shipped" if decision["accepted"] else f"not shipped (refused by {' and '.join(decision['refused_by'])})"
    return f"ONNX INT8 ({decision.get('recipe')}): {verdict}\nlatency / float at export: {speed or 'not measured'}"


def plot_latency(models, out: Path, decision=None):
    from matplotlib.ticker import FuncFormatter

    fig = new_figure(figsize=(6, 4.2))
    ax = fig.subplots()
    markers = {"baseline": "s", "cnn": "o", "cnn_onnx": "D", "cnn_onnx_int8": "^", "cnn_tflite": "v",
               "cnn_tflite_int8": "P"}
    for name, m in models.items():
        lo, hi = m["study"].get("auroc_ci") or (None, None)
        yerr = None if lo is None else [[m["study"]["auroc"] - lo], [hi - m["study"]["auroc"]]]
        ax.errorbar(m["latency_ms_p50"], m["study"]["auroc"], yerr=yerr, fmt=markers.get(name, "o"), ms=7,
                    capsize=3, color=STYLES.get(name, {}).get("color"), label=LABELS[name])
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))  # 0.3, 1, 3 ms: no 10^x labels
    # label 0.2, 0.3, 0.5, 2, 3, 5 too: within one decade only "1" was labelled
    ax.xaxis.set_minor_formatter(FuncFormatter(
        lambda v, _: f"{v:g}" if v > 0 and round(v / 10 ** np.floor(np.log10(v))) in (2, 3, 5) else ""))
    ax.tick_params(axis="x", which="minor", labelsize=7)
    ax.set(xlabel="batch-1 latency, median ms (log scale)", ylabel="study AUROC (95% CI)",
           title="Latency vs AUROC, test split")
    ax.legend(fontsize=8, loc="lower right")  # a legend, not point labels: labels overlapped
    note = _decision_note(decision)
    if note:  # an INT8 model that is absent from the plot says why
        fig.text(0.5, -0.01, note, ha="center", va="top", fontsize=8)
    _save(fig, out)


def plot_cams(run, data, out: Path, per_class: int = 4, seed: int = 0):
    """Grid of CAM overlays: top row abnormal test images, bottom row normal ones (seeded picks).

    When the data carries finding boxes (the synthetic default), abnormal picks are drawn from
    images that show their finding and the box is drawn in green, so the map can be judged.
    """
    import cv2

    from edge.cam import overlay
    from edge.predictor import Predictor

    model = RunLayout(run).exported("cnn")
    if not model.exists():
        return False
    pred = Predictor(model)
    if not pred.has_cam:
        return False
    boxes = _test_boxes(data)
    shown = None if boxes is None else ~np.isnan(boxes).any(axis=1)  # views that show a finding
    rng = np.random.default_rng(seed)
    fig = new_figure(figsize=(2.4 * per_class, 5.2))
    axes = fig.subplots(2, per_class, squeeze=False)
    for row, label in enumerate((1, 0)):
        keep = data["labels"] == label
        if label and shown is not None and (keep & shown).any():
            keep &= shown
        idx = np.flatnonzero(keep)
        pick = rng.choice(idx, size=min(per_class, len(idx)), replace=False) if len(idx) else []
        for ax, i in zip(axes[row], pick):
            u8 = data["images"][i]
            out_ = pred.run(pred.model_input(u8))
            p = float(pred.probabilities(out_)[0])
            img = overlay(u8, out_["cam"][0])
            if shown is not None and shown[i]:
                x0, y0, x1, y1 = (int(v) for v in np.rint(boxes[i]))
                cv2.rectangle(img, (x0, y0), (x1, y1), (0, 255, 0), 1)
            ax.imshow(cv2.cvtColor(img, cv2.COLOR_BGR2RGB))
            ax.set_title(f"{data['parts'][i]} {'abn' if label else 'norm'} p={p:.2f}", fontsize=8)
        for ax in axes[row]:
            ax.axis("off")
    title = "CNN class activation maps: abnormal (top) and normal (bottom) test images"
    fig.suptitle(title + ("\n(green: the generator's finding box)" if boxes is not None else ""))
    _save(fig, out)
    return True


def _test_boxes(data):
    """Finding boxes (N, 4) in model-input pixels aligned with ``data["images"]``, or None."""
    ann = data["prep"].annotations
    return None if ann is None else np.asarray(ann["bbox"], float)[data["order"]]


def _fmt(v, nd=3):
    return "–" if v is None else f"{v:.{nd}f}"


def _ratios(speed: dict) -> str:
    """"batch 1 1.42x [1.30, 1.55], batch 32 ..." of {"batch_B": {"ratio", "ratio_min", "ratio_max"}}."""
    return ", ".join(f"{b.replace('_', ' ')} {v['ratio']:.2f}x [{v['ratio_min']:.2f}, {v['ratio_max']:.2f}]"
                     for b, v in (speed or {}).items()) or "not measured"


def int8_section(report: dict) -> list:
    """Markdown lines: the CPU, export's INT8 decision with its latency ratios, the TFLite rows' origin."""
    from edge.cpu import describe

    lines = ["", "## INT8 decision and CPU", ""]
    if report.get("cpu"):
        feats = ", ".join(report["cpu"].get("features") or []) or "unknown"
        lines.append(f"Measured on: {describe(report['cpu'])} (features: {feats}); "
                     f"{report.get('threads', '?')} threads for onnxruntime and TFLite.")
    d = report.get("int8_decision")
    if not d:
        lines += ["", "No INT8 decision recorded (export ran without INT8, or has not run)."]
    else:
        verdict = "shipped (cnn.int8.onnx)" if d["accepted"] else (
            f"**not shipped** (refused by {' and '.join(d.get('refused_by') or ['the gate'])}): the device uses cnn.onnx")
        lines += ["", f"- INT8: {verdict}; recipe `{d.get('recipe')}`, onnxruntime {d.get('onnxruntime')}.",
                  f"- Why: {d.get('reason')}.",
                  (f"- Accuracy gate (val study AUROC): float {_fmt(d.get('float_auroc'), 4)} -> INT8 "
                   f"{_fmt(d.get('int8_auroc'), 4)}, drop {_fmt(d.get('auroc_drop'), 4)} (max {d.get('max_auroc_drop')})."),
                  (f"- Speed at export (INT8 / float latency, median of interleaved rounds [min, max]; must be "
                   f"< {d.get('max_latency_ratio')}): {_ratios(d.get('speed'))}.")]
        for c in d.get("candidates") or []:
            lines.append(f"  - candidate `{c['recipe']}`: {_ratios(c['speed'])}")
    if any(n.startswith("cnn_tflite") for n in report["models"]):
        lines += ["", ("The `cnn_tflite*` rows are the Keras CNN converted to TensorFlow Lite at bench time (INT8: "
                  "calibrated on the same train images as the ONNX INT8 model), run by the TFLite interpreter "
                  "(XNNPACK): what a TensorFlow user would deploy, for comparison; murakit's device runtime is "
                  "onnxruntime.")]
    return lines


def markdown(report: dict, plots: list) -> str:
    ds = report["dataset"]
    lines = [
        "# murakit benchmark report", "",
        (f"Data: `{ds['root']}`, split `{ds['split']}` (MURA `valid`): {ds['images']} images, "
        f"{ds['studies']} studies. Study probability = mean of its views (MURA protocol). Brackets: "
        "95% bootstrap intervals (studies resampled with replacement, "
        f"{report.get('statistics', {}).get('bootstrap', {}).get('n_resamples', '?')} resamples, seeded)."), "",
        ("| model | study AUROC [95% CI] | study kappa [95% CI] | image AUROC | image kappa | sens | spec | F1 "
         "| threshold | size | latency p50 / p95 (ms, batch 1) | throughput (img/s, batch 32) | train s |"),
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, m in report["models"].items():
        s, i = m["study"], m["image"]
        lines.append(
            f"| {name} | {_fmt(s['auroc'])}{_ci(m, 'auroc')} | {_fmt(s['kappa'])}{_ci(m, 'kappa')} "
            f"| {_fmt(i['auroc'])} | {_fmt(i['kappa'])} "
            f"| {_fmt(s['sensitivity'])} | {_fmt(s['specificity'])} | {_fmt(s['f1'])} | {_fmt(m['threshold'])} "
            f"| {m['size_bytes'] / 1024:.0f} KiB | {_fmt(m['latency_ms_p50'], 2)} / {_fmt(m['latency_ms_p95'], 2)} "
            f"| {_fmt(m['throughput_ips'], 0)} | {_fmt(m['train_seconds'], 0)} |")
    lines += [
        (f"| MURA paper, DenseNet-169 @ 320 px (real MURA) | {ANCHOR['auroc']} | {ANCHOR['kappa']} "
        "| | | | | | | | | | |"), "",
        f"The anchor row is from the MURA paper on real MURA (best radiologist kappa {ANCHOR['radiologist_kappa']}). "
        "Our figures are on the data set this run used"
        + (" — the synthetic MURA-shaped default, not real radiographs — so the two rows are not comparable."
           if ds.get("synthetic") else "."),
        "", "## Differences (paired bootstrap over the same test studies)", "",
    ]
    for cname, c in report.get("comparisons", {}).items():
        a, b = c["models"]
        lo, hi = c["ci"]
        if lo is None or c["auroc_diff"] is None:
            lines.append(f"- {cname}: undefined (a split with one class)")
            continue
        verdict = "excludes 0" if lo > 0 or hi < 0 else "includes 0"
        lines.append(f"- {cname}: study AUROC {a} - {b} = {c['auroc_diff']:+.3f}, 95% CI "
                     f"[{lo:+.3f}, {hi:+.3f}] ({verdict})")
    lines += int8_section(report)
    lines += [
        "", "## Kappa per body part (study level)", "",
        "| part | " + " | ".join(report["models"]) + " |",
        "|---|" + "---|" * len(report["models"]),
    ]
    parts = sorted({p for m in report["models"].values() for p in m["by_part"]})
    for part in parts:
        lines.append(f"| {part} | " + " | ".join(
            _fmt(m["by_part"].get(part, {}).get("kappa")) for m in report["models"].values()) + " |")
    from murakit.evaluation.trust import markdown_lines

    lines += markdown_lines(report)
    lines += cam_markdown(report.get("cam"))
    lines += ["", "## Plots", ""] + [f"![{p}]({p})" for p in plots] + [""]
    return "\n".join(lines)


def write_report(run, report: dict, data: dict) -> Path:
    """Write RUN/report/{report.json, report.md, *.png}; returns the report folder."""
    out = RunLayout(run).report
    out.mkdir(parents=True, exist_ok=True)
    models = report["models"]
    plots = []
    for fname, fn in (("roc.png", lambda p: plot_roc(models, data, p)),
                      ("confusion.png", lambda p: plot_confusion(models, data, p)),
                      ("kappa_by_part.png", lambda p: plot_kappa_by_part(models, p)),
                      ("latency_vs_auroc.png", lambda p: plot_latency(models, p, report.get("int8_decision")))):
        fn(out / fname)
        plots.append(fname)
    if plot_cams(run, data, out / "cam_grid.png"):
        plots.append("cam_grid.png")
    from murakit.evaluation.trust import plot_reliability

    if plot_reliability(models, data, out / "reliability.png"):
        plots.append("reliability.png")
    write_text(out / "report.json", json.dumps(report, indent=2))
    write_text(out / "report.md", markdown(report, plots))
    return out


MAX_LATENCY_RUNS = 100_000


@dataclass(frozen=True)
class BenchOptions:
    """How ``bench`` times the models.

    Attributes
    ----------
    threads : int
        onnxruntime intra-op threads, 1 to :func:`murakit.checks.max_workers`.
    latency_runs : int
        Batch-1 timings per model, 1 to :data:`MAX_LATENCY_RUNS`.
    seed : int
        Seed of the bootstrap intervals and of the timing samples.
    """

    threads: int = 2
    latency_runs: int = 200
    seed: int = 0


def up_to_date(run) -> bool:
    """True when report.json exists and is newer than the cache and every model file."""
    from murakit.evaluation.bench import model_files
    from murakit.layout import is_fresh

    layout = RunLayout(run)
    inputs = [p for p in model_files(run).values() if p is not None] + [layout.prepared_index]
    return is_fresh(layout.report_json, inputs)


def headline(report: dict) -> dict:
    """Per model: study AUROC and kappa, batch-1 latency (ms, median) and file size (bytes)."""
    return {name: {"study_auroc": m["study"]["auroc"], "study_kappa": m["study"]["kappa"],
                   "latency_ms_p50": m.get("latency_ms_p50"), "size_bytes": m.get("size_bytes")}
            for name, m in report.get("models", {}).items()}


def _stored_headline(layout: RunLayout) -> dict:
    """The headline of an existing report.json ({} when it cannot be read: figures are optional)."""
    try:
        return headline(json.loads(layout.report_json.read_text(encoding="utf-8")))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}


def bench(run, options: BenchOptions = BenchOptions(), *, force: bool = False, log=print) -> StageResult:
    """The bench stage: every model of ``run`` on the test split, and the report.

    Holds the run's ``report`` stage (and the stages it reads) for the whole stage, the
    freshness check included, so two benches of one run never interleave (``murakit bench``,
    ``mk.evaluate`` and the demo all come here).

    Parameters
    ----------
    run : str or Path
        Run folder with at least one trained model.
    options : BenchOptions
    force : bool
        Redo a report that is newer than every model.
    log : callable
        Receives the progress lines.

    Returns
    -------
    StageResult
        ``paths``: report.json, report.md; ``figures``: :func:`headline` of the report.

    Raises
    ------
    murakit.lock.RunInUse
        Another process holds the run's report (or a stage it reads).
    MurakitError
        Bad options, no trained model, a cache that does not match the models.
    """
    import time

    from murakit.checks import check_int, check_workers
    from murakit.evaluation.bench import benchmark
    from murakit.evaluation.cam import cam_report
    from murakit.evaluation.metrics import json_safe
    from murakit.lock import stage_lock

    t0 = time.perf_counter()
    check_workers(options.threads, "--threads")
    check_int("--latency-runs", options.latency_runs, 1, MAX_LATENCY_RUNS)
    with stage_lock(run, writes="report", reads=("prepared", "baseline", "cnn", "export")) as layout:
        paths = (layout.report_json, layout.report_md)
        if not force and up_to_date(run):
            return StageResult("bench", "up-to-date", paths, time.perf_counter() - t0, _stored_headline(layout))
        report, data = benchmark(run, threads=options.threads, n_single=options.latency_runs, progress=log,
                                 seed=options.seed)
        report["cam"] = json_safe(cam_report(run, data, log=log))
        write_report(run, report, data)
    return StageResult("bench", "done", paths, time.perf_counter() - t0, headline(report))


__all__ = ["MODEL_NAMES", "BenchOptions", "bench", "headline", "markdown", "roc_curve", "up_to_date",
           "write_report"]
