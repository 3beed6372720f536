"""``murakit explore``: audit a data set the way the seed's notebook looked at it.

Counts per split, body part and label (images and studies); image sizes and PNG formats;
per-image raw mean and standard deviation (low-contrast and unusual-exposure flags); images
the inversion detector flags; on synthetic data (``synth_annotations.csv``) the detector's
accuracy on inverted and on normal images. Writes ``RUN/explore/summary.json``,
``summary.md`` and PNG plots.

Pixel statistics come from the prepared cache when ``RUN/prepared`` was built from the same
data root (it stores each image's raw mean/std, size and inversion score); otherwise from a
seeded random sample of at most ``max_samples`` raw images.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import numpy as np

from edge.atomic import atomic_dir
from edge.preprocess import PreprocessConfig
from murakit.display import new_figure
from murakit.errors import MurakitError
from murakit.layout import RunLayout
from murakit.stage import StageResult

LOW_STD = 0.05          # raw std (intensities in [0, 1]) below this: low contrast
MEAN_ROBUST_Z = 3.5     # |mean - median| / (1.4826 MAD) above this: unusual exposure
INVERSION_GOAL = 0.98   # detector accuracy wanted on inverted and on normal images
MAX_LISTED = 1000       # flagged paths listed per kind in summary.json
LABEL_NAMES = {0: "normal", 1: "abnormal"}
PNG_COLOR_TYPES = {0: "grey", 2: "rgb", 3: "palette", 4: "grey+alpha", 6: "rgba"}


# ============================================================================ counts

def count_table(records, split: np.ndarray) -> dict:
    """Images and studies per split, part and label.

    Returns
    -------
    dict
        ``{"images": {split: {part: {"normal": n, "abnormal": n}}}, "studies": {...},
        "totals": {...}}``.
    """
    images, studies = {}, {}
    seen = set()
    for r, s in zip(records, split):
        lab = LABEL_NAMES[r.label]
        cell = images.setdefault(str(s), {}).setdefault(r.part, {"normal": 0, "abnormal": 0})
        cell[lab] += 1
        if (s, r.study) not in seen:
            seen.add((s, r.study))
            scell = studies.setdefault(str(s), {}).setdefault(r.part, {"normal": 0, "abnormal": 0})
            scell[lab] += 1
    by_split = {}
    for s in sorted(images):
        by_split[s] = {
            "images": sum(sum(c.values()) for c in images[s].values()),
            "studies": sum(sum(c.values()) for c in studies[s].values()),
            "abnormal_studies": sum(c["abnormal"] for c in studies[s].values()),
            "patients": len({r.patient for r, t in zip(records, split) if t == s}),
        }
    totals = {"images": len(records), "studies": len({r.study for r in records}),
              "patients": len({r.patient for r in records}), "by_split": by_split}
    return {"images": images, "studies": studies, "totals": totals}


# ============================================================================ pixel statistics

def png_format(path: str) -> str:
    """``"grey 8-bit"``, ``"rgb 16-bit"``, ... from a PNG header; ``"jpeg"``, ``"dicom"`` or ``"unknown"``."""
    from edge.dicom import is_dicom
    from edge.image import PNG_SIGNATURE

    try:
        with open(path, "rb") as f:
            head = f.read(132)
    except OSError:
        return "unknown"
    if head.startswith(PNG_SIGNATURE) and len(head) >= 26:
        return f"{PNG_COLOR_TYPES.get(head[25], 'other')} {head[24]}-bit"
    if is_dicom(head):
        return "dicom"
    return "jpeg" if head[:2] == b"\xff\xd8" else "unknown"


def _stats_from_cache(prep, records, in_cache: dict) -> dict:
    """Per-image statistics of ``records`` from the cache columns (NaN where absent).

    ``in_cache`` maps a relative path to its position in ``prep``. Returns arrays of shape
    (N,): ``h, w, mean, std, score`` (float, NaN unknown) and ``inverted`` (bool).
    """
    cols = prep.columns
    n = len(records)
    out = {k: np.full(n, np.nan) for k in ("h", "w", "mean", "std", "score")}
    idx = np.array([in_cache.get(r.relpath, -1) for r in records], dtype=np.int64)
    ok = idx >= 0
    for k, col in (("h", "orig_h"), ("w", "orig_w"), ("mean", "raw_mean"), ("std", "raw_std"),
                   ("score", "inversion_score")):
        if col in cols:
            out[k][ok] = cols[col][idx[ok]].astype(float)
    out["inverted"] = np.zeros(n, dtype=bool)
    out["inverted"][ok] = prep.inverted[idx[ok]]
    return out


def _stats_from_images(records, cfg: PreprocessConfig, workers: int) -> tuple[dict, dict]:
    """Per-image statistics by decoding and preprocessing ``records``; returns (stats, errors)."""
    from murakit.data.prepared import INFO_COLUMNS, _run_pool

    n = len(records)
    out = {k: np.full(n, np.nan) for k in ("h", "w", "mean", "std", "score")}
    out["inverted"] = np.zeros(n, dtype=bool)
    col = {c: i for i, c in enumerate(INFO_COLUMNS)}
    errors = {}
    tasks = [(i, r.path) for i, r in enumerate(records)]
    for i, _, vec, err in _run_pool(tasks, cfg, workers, Path(os.devnull), False):
        if err is not None:
            errors[records[i].relpath] = err
            continue
        out["h"][i], out["w"][i] = vec[col["orig_h"]], vec[col["orig_w"]]
        out["mean"][i], out["std"][i] = vec[col["raw_mean"]], vec[col["raw_std"]]
        out["score"][i], out["inverted"][i] = vec[col["inversion_score"]], bool(vec[-1])
    return out, errors


def _quantiles(x: np.ndarray) -> dict:
    x = x[np.isfinite(x)]
    if not len(x):
        return {}
    q = np.percentile(x, [0, 5, 50, 95, 100])
    return dict(zip(("min", "p5", "median", "p95", "max"), (round(float(v), 4) for v in q)))


def flag_images(mean: np.ndarray, std: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Boolean masks (low contrast, unusual mean) for raw per-image mean/std in [0, 1]."""
    ok = np.isfinite(mean)
    low = ok & (np.nan_to_num(std, nan=1.0) < LOW_STD)
    med = np.median(mean[ok]) if ok.any() else 0.0
    mad = 1.4826 * np.median(np.abs(mean[ok] - med)) if ok.any() else 0.0
    z = np.abs(np.nan_to_num(mean, nan=med) - med) / max(mad, 1e-6)
    return low, ok & (z > MEAN_ROBUST_Z)


def inversion_accuracy(detected: np.ndarray, truth: np.ndarray, paths) -> dict | None:
    """Detector accuracy on truly inverted and on normal images.

    Parameters
    ----------
    detected : ndarray of bool, shape (N,)
    truth : ndarray of int8, shape (N,)
        1 inverted, 0 normal, -1 unknown (ignored).
    paths : sequence of str, length N
    """
    known = truth >= 0
    if not known.any():
        return None
    inv, nor = known & (truth == 1), known & (truth == 0)
    acc_inv = float((detected[inv]).mean()) if inv.any() else None
    acc_nor = float((~detected[nor]).mean()) if nor.any() else None
    wrong = [paths[i] for i in np.flatnonzero(known & (detected != (truth == 1)))]
    meets = all(a is None or a >= INVERSION_GOAL for a in (acc_inv, acc_nor))
    return {"n_inverted": int(inv.sum()), "n_normal": int(nor.sum()),
            "accuracy_inverted": acc_inv, "accuracy_normal": acc_nor, "goal": INVERSION_GOAL,
            "meets_goal": bool(meets), "misclassified": wrong[:50]}


# ============================================================================ cache reuse

def matching_cache(run, dataset):
    """The run's prepared cache if it was built from exactly ``dataset``, else None."""
    from murakit.data.prepared import data_fingerprint, load_prepared

    try:
        prep = load_prepared(run)
    except MurakitError:
        return None
    same = (prep.meta.get("data_root") == str(dataset.root)
            and prep.meta.get("data_fingerprint") == data_fingerprint(dataset.records))
    return prep if same else None


# ============================================================================ plots

def _plot_sizes(path: Path, h: np.ndarray, w: np.ndarray) -> None:
    ok = np.isfinite(h)
    fig = new_figure(figsize=(10, 4))
    ax = fig.subplots(1, 2)
    ax[0].hist(np.maximum(h[ok], w[ok]), bins=40, color="tab:blue")
    ax[0].set(xlabel="long side (px)", ylabel="images", title="image size")
    ax[1].scatter(w[ok], h[ok], s=4, alpha=0.4)
    ax[1].set(xlabel="width (px)", ylabel="height (px)", title="width vs height")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def _plot_mean_std(path: Path, mean, std, low, unusual, inverted) -> None:
    ok = np.isfinite(mean)
    fig = new_figure(figsize=(6, 5))
    ax = fig.subplots()
    plain = ok & ~(low | unusual | inverted)
    ax.scatter(mean[plain], std[plain], s=5, alpha=0.4, label="ok", color="tab:gray")
    for mask, name, colour in ((inverted, "inverted (detector)", "tab:purple"),
                               (unusual, "unusual mean", "tab:orange"),
                               (low, "low contrast", "tab:red")):
        if (mask & ok).any():
            ax.scatter(mean[mask & ok], std[mask & ok], s=8, label=name, color=colour)
    ax.axhline(LOW_STD, ls="--", lw=0.8, color="tab:red")
    ax.set(xlabel="raw mean intensity", ylabel="raw std", title="per-image exposure")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def _plot_counts(path: Path, counts: dict) -> None:
    splits = [s for s in ("train", "val", "test") if s in counts["images"]]
    fig = new_figure(figsize=(5 * len(splits), 4))
    axes = fig.subplots(1, len(splits), squeeze=False)
    for ax, s in zip(axes[0], splits):
        parts = sorted(counts["images"][s])
        x = np.arange(len(parts))
        for k, (lab, colour) in enumerate((("normal", "tab:green"), ("abnormal", "tab:red"))):
            ax.bar(x + (k - 0.5) * 0.4, [counts["images"][s][p][lab] for p in parts], 0.4,
                   label=lab, color=colour)
        ax.set_xticks(x, parts, rotation=45, ha="right")
        ax.set(title=f"{s}: images per part", ylabel="images")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def _fit(img_u8: np.ndarray, cell: int) -> np.ndarray:
    """uint8 image letter-boxed into a (cell, cell) tile (aspect preserved)."""
    import cv2

    h, w = img_u8.shape
    s = cell / max(h, w)
    nh, nw = max(1, round(h * s)), max(1, round(w * s))
    tile = np.full((cell, cell), 40, dtype=np.uint8)  # mid-dark grey: shows the raw frame
    oy, ox = (cell - nh) // 2, (cell - nw) // 2
    tile[oy:oy + nh, ox:ox + nw] = cv2.resize(img_u8, (nw, nh), interpolation=cv2.INTER_AREA)
    return tile


def sample_mosaic(records, prep, cfg: PreprocessConfig, per_part: int, seed: int, cell: int = 128):
    """One uint8 mosaic: a row per body part, each sample as a (raw, preprocessed) pair.

    Returns
    -------
    mosaic : ndarray of uint8, shape (P * cell, 2 * per_part * cell)
    parts : list of str, the P row labels
    """
    from edge.loader import load_image
    from edge.preprocess import preprocess

    rng = np.random.default_rng(seed)
    by_part = {}
    for r in records:
        by_part.setdefault(r.part, []).append(r)
    parts = sorted(by_part)
    cache_pos = {p: i for i, p in enumerate(prep.path)} if prep is not None else {}
    mosaic = np.zeros((len(parts) * cell, 2 * per_part * cell), dtype=np.uint8)
    for i, part in enumerate(parts):
        for k, j in enumerate(rng.permutation(len(by_part[part]))[:per_part]):
            r = by_part[part][j]
            try:
                raw = load_image(r.path)
                pre = (prep.image(cache_pos[r.relpath]) if r.relpath in cache_pos
                       else preprocess(raw, cfg))
            except Exception:  # noqa: BLE001, S112 - an unreadable sample leaves its tile black
                continue
            y, x = i * cell, 2 * k * cell
            mosaic[y:y + cell, x:x + cell] = _fit(np.round(raw * 255).astype(np.uint8), cell)
            mosaic[y:y + cell, x + cell:x + 2 * cell] = _fit(pre, cell)
    return mosaic, parts


def _plot_samples(path: Path, records, prep, cfg: PreprocessConfig, per_part: int, seed: int) -> None:
    """Rows = body parts; each sample shown raw, then preprocessed (one imshow: fast)."""
    cell = 128
    mosaic, parts = sample_mosaic(records, prep, cfg, per_part, seed, cell)
    fig = new_figure(figsize=(1.6 * 2 * per_part + 1.2, 1.6 * len(parts) + 0.6))
    ax = fig.subplots()
    ax.imshow(mosaic, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
    ax.set_yticks(np.arange(len(parts)) * cell + cell / 2, parts, fontsize=8)
    ax.set_xticks(np.arange(2 * per_part) * cell + cell / 2,
                  ["raw", "preprocessed"] * per_part, fontsize=7)
    ax.set_title("samples per body part: raw | preprocessed", fontsize=9)
    fig.subplots_adjust(left=0.12, right=0.99, top=0.94, bottom=0.04)
    fig.savefig(path, dpi=90)


# ============================================================================ summary

def _markdown(s: dict) -> str:
    t = s["counts"]["totals"]
    lines = [f"# Data audit: {s['data_root']}", "",
             (f"Layout `{s['layout']}`: {t['images']} images, {t['studies']} studies, "
              f"{t['patients']} patients. Pixel statistics from {s['pixel_stats']['source']} "
              f"({s['pixel_stats']['n']} images)."), "",
             "| split | part | normal studies | abnormal studies | normal images | abnormal images |",
             "|---|---|---:|---:|---:|---:|"]
    for split, parts in s["counts"]["studies"].items():
        for part, c in sorted(parts.items()):
            ci = s["counts"]["images"][split][part]
            lines.append(f"| {split} | {part} | {c['normal']} | {c['abnormal']} | "
                         f"{ci['normal']} | {ci['abnormal']} |")
    ps = s["pixel_stats"]
    lines += ["", "## Images", "",
              f"- long side (px): {ps['long_side']}", f"- raw mean: {ps['mean']}",
              f"- raw std: {ps['std']}", f"- formats: {ps['formats']}",
              f"- unreadable: {ps['n_unreadable']}"]
    lines += ["", "## Flags", ""]
    for kind, f in s["flagged"].items():
        lines.append(f"- {kind}: {f['count']} images" + (f" (e.g. `{f['paths'][0]}`)" if f["paths"] else ""))
    inv = s["inversion_detector"]
    if inv:
        lines += ["", "## Inversion detector (synthetic ground truth)", "",
                  (f"- inverted images classified right: {inv['accuracy_inverted']} "
                   f"(n = {inv['n_inverted']})"),
                  f"- normal images classified right: {inv['accuracy_normal']} (n = {inv['n_normal']})",
                  f"- goal >= {inv['goal']}: {'met' if inv['meets_goal'] else 'NOT met'}"]
    probs = [f"- {k}: {v['count']} (e.g. `{v['examples'][0]}`)" for k, v in s["problems"].items()
             if v["count"]]
    lines += ["", "## Data problems", ""] + (probs or ["- none"])
    lines += ["", "## Plots", ""] + [f"![{p}]({p})" for p in s["plots"]]
    return "\n".join(lines) + "\n"


def _flag_entry(mask: np.ndarray, paths) -> dict:
    idx = np.flatnonzero(mask)
    return {"count": len(idx), "paths": [paths[i] for i in idx[:MAX_LISTED]]}


def explore(data, run, seed: int = 0, max_samples: int = 2000, per_part: int = 3,
            workers: int | None = None, log=print, *, force: bool = False) -> StageResult:
    """The explore stage: audit ``data`` and write ``RUN/explore/`` unless it is up to date.

    Parameters
    ----------
    data : str or Path
        Data folder (see :func:`murakit.data.mura.index_dataset`).
    run : str or Path
        Run folder; reads ``RUN/prepared`` if it matches, writes ``RUN/explore``.
    seed : int
        Seed of the split (when there is no cache) and of the samples.
    max_samples : int
        At most this many raw images are decoded for pixel statistics when there is no cache.
    per_part : int
        Samples per body part in ``samples.png``.
    workers : int, optional
        Processes for decoding; default all cores.
    force : bool
        Redo an audit that is up to date (about the same data root, newer than the cache).

    Returns
    -------
    StageResult
        ``paths``: summary.json, summary.md; ``figures``: the summary (``summary.json``).
    """
    import time

    from edge.cpu import usable_cores
    from murakit.lock import stage_lock

    t0 = time.perf_counter()
    check_explore_settings(seed, max_samples, workers, per_part)  # bad values fail even when up to date
    with stage_lock(run, writes="explore", reads=("prepared",), create=True) as layout:
        paths = (layout.explore_summary, layout.explore / "summary.md")
        summary = None if force else _current_summary(run, data)
        if summary is not None:
            return StageResult("explore", "up-to-date", paths, time.perf_counter() - t0, summary)
        summary = _explore(data, run, seed, max_samples, per_part, workers or usable_cores(), log)
    return StageResult("explore", "done", paths, time.perf_counter() - t0, summary)


def check_explore_settings(seed: int, max_samples: int, workers: int | None, per_part: int = 3) -> None:
    """The constraints of :func:`explore`'s settings (one MurakitError line each)."""
    from murakit.checks import check_int, check_seed, check_workers

    check_seed(seed)
    check_int("--max-samples", max_samples, 1, 1_000_000)
    check_int("per_part", per_part, 1, 100)
    if workers is not None:
        check_workers(workers)


def _explore(data, run, seed: int, max_samples: int, per_part: int, workers: int, log) -> dict:
    """:func:`explore` once its settings are checked and the run folder is locked."""
    from murakit.data.mura import index_dataset
    from murakit.data.splits import assign_splits

    ds = index_dataset(data)
    prep = matching_cache(run, ds)
    meta = prep.meta if prep is not None else {}
    split = assign_splits(ds.records, meta.get("seed", seed), meta.get("val_fraction", 0.1),
                          meta.get("test_fraction", 0.2))
    counts = count_table(ds.records, split)
    cfg = prep.config if prep is not None else PreprocessConfig()
    rng = np.random.default_rng(seed)
    if prep is not None:
        sample = list(ds.records)
        in_cache = {p: i for i, p in enumerate(prep.path)}
        stats = _stats_from_cache(prep, sample, in_cache)
        errors = {r.relpath: "unreadable (see prepared/failed.csv)" for r in sample
                  if r.relpath not in in_cache}
        source = "prepared cache"
    else:
        idx = np.sort(rng.permutation(len(ds.records))[:max_samples])
        sample = [ds.records[i] for i in idx]
        log(f"decoding {len(sample)} of {len(ds.records)} images for pixel statistics")
        stats, errors = _stats_from_images(sample, cfg, workers)
        source = "raw images (sample)"
    paths = [r.relpath for r in sample]
    fmt_sample = sample if len(sample) <= max_samples else [sample[i] for i in
                                                          rng.permutation(len(sample))[:max_samples]]
    detected = stats["inverted"] if cfg.invert == "auto" else np.nan_to_num(stats["score"]) > 0
    low, unusual = flag_images(stats["mean"], stats["std"])
    truth = np.array([_truth(ds.annotations.get(p)) for p in paths], dtype=np.int8)
    readable = np.isfinite(stats["mean"])
    summary = {
        "data_root": str(ds.root), "layout": ds.layout, "seed": int(meta.get("seed", seed)),
        "counts": counts,
        "pixel_stats": {
            "source": source, "n": int(readable.sum()), "n_unreadable": len(errors),
            "unreadable": dict(list(errors.items())[:MAX_LISTED]),
            "height": _quantiles(stats["h"]), "width": _quantiles(stats["w"]),
            "long_side": _quantiles(np.fmax(stats["h"], stats["w"])),
            "mean": _quantiles(stats["mean"]), "std": _quantiles(stats["std"]),
            "formats": dict(Counter(png_format(r.path) for r in fmt_sample).most_common()),
        },
        "flagged": {"low_contrast": _flag_entry(low, paths), "unusual_mean": _flag_entry(unusual, paths),
                    "inverted": _flag_entry(detected & readable, paths)},
        "flag_rules": {"low_contrast": f"raw std < {LOW_STD}",
                       "unusual_mean": f"robust z-score of raw mean > {MEAN_ROBUST_Z}",
                       "inverted": "inversion_score > 0 (edge.preprocess detector)"},
        "inversion_detector": inversion_accuracy(detected[readable], truth[readable],
                                                 [p for p, ok in zip(paths, readable) if ok]),
        "problems": ds.problems.to_dict(),
        "plots": ["counts.png", "sizes.png", "mean_std.png", "samples.png"],
    }
    out = RunLayout(run).explore
    with atomic_dir(out) as tmp:
        _plot_counts(tmp / "counts.png", counts)
        _plot_sizes(tmp / "sizes.png", stats["h"], stats["w"])
        _plot_mean_std(tmp / "mean_std.png", stats["mean"], stats["std"], low, unusual, detected)
        _plot_samples(tmp / "samples.png", ds.records, prep, cfg, per_part, seed)
        (tmp / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
        (tmp / "summary.md").write_text(_markdown(summary), encoding="utf-8")
    return summary


def _truth(ann) -> int:
    return -1 if ann is None or ann.inverted is None else int(ann.inverted)


def _current_summary(run, data) -> dict | None:
    """The stored summary when it is about the same data root and newer than the prepared cache."""
    from murakit.layout import is_fresh

    layout = RunLayout(run)
    summary = layout.explore_summary
    if not is_fresh(summary, [layout.prepared_config]):
        return None
    try:
        stored = json.loads(summary.read_text())
    except (OSError, ValueError):
        return None
    root = stored.get("data_root") if isinstance(stored, dict) else None
    return stored if root is not None and Path(root).resolve() == Path(data).resolve() else None

