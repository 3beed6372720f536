"""Calibrators before and after: refit them from a run's val predictions, score its test split.

    python benchmarks/calibration_check.py RUN [RUN ...] [--resamples 2000]
    python benchmarks/calibration_check.py --simulate


For each run folder and each model with ``RUN/<model>/predictions_{val,test}.csv`` (or ``.csv.gz``;
cnn, baseline), prints one row per calibrator: ``raw`` (no calibrator), ``old`` (the unregularised
Platt fit murakit used before: :func:`murakit.evaluation.calibration.platt` on val views and
on val study means), ``new`` (:func:`murakit.evaluation.calibration.fit_calibration`: form
chosen on val by k-fold-by-study log-loss, smoothed targets, a prior toward the identity for
views and toward the slope of the mean view count for study means), ``prev`` (the same with the
study prior toward the identity: the rule before benchmarks/calibration_rules.py chose the
centre) and ``new-1se`` (``new`` with the one-standard-error rule, the variant not shipped), with
test image and study ECE, their 95% study-bootstrap intervals, the ECE floor (the mean and 95th
percentile ECE of a perfectly calibrated model at that test size:
:func:`murakit.evaluation.calibration.ece_floor`) and study AUROC. Only val chooses and fits;
test is only scored. Reads the run, writes nothing. The runs of docs/trust.md's table are kept in
``benchmarks/data/calibration/runs`` (their prediction CSVs, gzipped).

``--simulate``: the same calibrators on simulated models whose truth is known (the evidence the
rule was fixed on, before any run's test split was scored): studies of 1-3 views, one label per
study drawn from the views' mean true probability, the model reporting
``sigmoid(temperature * logit(q) + shift)``; calibrators fitted on 30 or 120 val studies (10
draws each), mean ECE on 3,000 test studies.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import sys
from pathlib import Path

import numpy as np


def _read(path: Path) -> tuple:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    return (np.array([int(r["label"]) for r in rows]), np.array([float(r["probability"]) for r in rows]),
            np.array([r["study"] for r in rows]))


def _find(path: Path) -> Path | None:
    """``path`` or its gzipped copy (benchmarks/data/calibration keeps runs' predictions gzipped)."""
    gz = path.with_name(path.name + ".gz")
    return path if path.is_file() else gz if gz.is_file() else None


class _Card:
    def __init__(self, calibration):
        self.calibration = calibration


def check(run: Path, model: str, n: int) -> list:
    """Rows (dicts) for one model of one run; [] when its predictions are missing."""
    from murakit.evaluation.calibration import fit_calibration, fit_calibrator, platt
    from murakit.evaluation.metrics import auroc, study_level
    from murakit.evaluation.trust import calibrated, calibration_metrics

    val, test = (_find(run / model / f"predictions_{split}.csv") for split in ("val", "test"))
    if val is None or test is None:
        return []
    yv, pv, sv = _read(val)
    yt, pt, st = _read(test)
    s = study_level(yv, pv, sv)
    views = len(yv) / len(s["label"])
    new = fit_calibration(yv, pv, sv)
    calibrators = {"raw": None,
                   "old": {"image": platt(yv, pv), "study": platt(s["label"], s["prob"])},
                   "prev": {"image": new["image"], "study": fit_calibrator(s["label"], s["prob"])},
                   "new": new,
                   "new-1se": {"image": fit_calibrator(yv, pv, sv, se_tolerance=1.0),
                               "study": fit_calibrator(s["label"], s["prob"], se_tolerance=1.0, centres=(views,))}}
    rows = []
    for name, cal in calibrators.items():
        card = _Card(cal) if cal else None
        m = calibration_metrics(card, yt, pt, st, n=n)
        c = calibrated(card, pt, st, yt)
        rows.append({"run": run.name, "model": model, "val": f"{len(np.unique(sv))}/{len(yv)}",
                     "test": f"{len(np.unique(st))}/{len(yt)}", "calibrator": name,
                     "form": "" if cal is None else "/".join(cal[k].get("form", "platt") for k in ("image", "study")),
                     "image": m["image"], "study": m["study"],
                     "auroc": auroc(c["study_label"], c["study"])})
    return rows


def simulated_views(n_studies: int, seed: int, temperature: float = 1.0, shift: float = 0.0) -> tuple:
    """(labels, probs, studies) of a simulated model: studies of 1-3 views; the study's label is
    drawn from its views' mean true probability q; the model reports
    ``sigmoid(temperature * logit(q) + shift)`` (1, 0: calibrated views)."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, 4, n_studies)
    studies = np.repeat(np.arange(n_studies), sizes)
    z = rng.normal(0, 1.5, n_studies)[studies] + rng.normal(0, 0.3, len(studies))
    q = 1 / (1 + np.exp(-z))
    y_study = rng.uniform(size=n_studies) < np.bincount(studies, q) / sizes
    return y_study[studies].astype(int), 1 / (1 + np.exp(-(temperature * z + shift))), studies


SCENARIOS = ((1.0, 0.0), (2.0, 0.0), (0.6, 0.0), (1.0, 1.0))  # (temperature, shift)


def simulate(draws: int = 10) -> list:
    """Rows ``(scenario, val studies, {rule: (image ECE, study ECE)})``, mean over ``draws``."""
    from murakit.evaluation.calibration import apply_platt, ece, fit_calibrator, fit_study_calibrator, platt
    from murakit.evaluation.metrics import study_level

    identity = {"a": 1.0, "b": 0.0}
    # name -> (view fit(y, p, studies), study fit(y, means, views per study))
    rules = {"raw": (lambda y, p, g: identity, lambda y, p, n: identity),
             "old": (lambda y, p, g: platt(y, p), lambda y, p, n: platt(y, p)),
             "prev": (fit_calibrator, lambda y, p, n: fit_calibrator(y, p)),
             "new": (fit_calibrator, fit_study_calibrator),
             "new-1se": (lambda y, p, g: fit_calibrator(y, p, g, se_tolerance=1.0),
                         lambda y, p, n: fit_calibrator(y, p, se_tolerance=1.0, centres=(n,)))}
    rows = []
    for temperature, shift in SCENARIOS:
        yt, pt, gt = simulated_views(3000, 100, temperature, shift)
        st = study_level(yt, pt, gt)
        for n in (30, 120):
            out = {r: [] for r in rules}
            for seed in range(draws):
                y, p, g = simulated_views(n, 200 + seed, temperature, shift)
                sv = study_level(y, p, g)
                for r, (fit_view, fit_study) in rules.items():
                    ci, cs = fit_view(y, p, g), fit_study(sv["label"], sv["prob"], len(y) / len(sv["label"]))
                    out[r].append((ece(yt, apply_platt(ci, pt)), ece(st["label"], apply_platt(cs, st["prob"]))))
            rows.append((f"temperature {temperature:g}, shift {shift:g}", n,
                         {r: tuple(np.mean(v, axis=0)) for r, v in out.items()}))
    return rows


def _print_simulation(rows: list) -> None:
    rules = list(rows[0][2])
    print("| simulated model | val studies | " + " | ".join(f"{r} image / study ECE" for r in rules) + " |")
    print("|---|---|" + "---|" * len(rules))
    for name, n, res in rows:
        print(f"| {name} | {n} | " + " | ".join(f"{res[r][0]:.3f} / {res[r][1]:.3f}" for r in rules) + " |")
    print("| mean | | " + " | ".join(f"{np.mean([x[2][r][0] for x in rows]):.3f} / "
                                      f"{np.mean([x[2][r][1] for x in rows]):.3f}" for r in rules) + " |")


def _cell(m: dict) -> str:
    lo, hi = m["ece_ci"]
    return f"{m['ece']:.3f} [{lo:.3f}, {hi:.3f}]"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="*", type=Path, help="run folders (RUN/cnn, RUN/baseline)")
    p.add_argument("--resamples", type=int, default=2000, help="bootstrap resamples (default 2000)")
    p.add_argument("--simulate", action="store_true", help="simulated models instead of runs (see above)")
    args = p.parse_args(argv)
    if args.simulate:
        _print_simulation(simulate())
        return 0
    if not args.runs:
        print("give run folders, or --simulate", file=sys.stderr)
        return 2
    if args.resamples < 10:
        print(f"--resamples must be >= 10, got {args.resamples}", file=sys.stderr)
        return 2
    rows = []
    for run in args.runs:
        if not run.is_dir():
            print(f"{run}: not a run folder", file=sys.stderr)
            return 1
        for model in ("cnn", "baseline"):
            rows += check(run, model, args.resamples)
    if not rows:
        print("no RUN/<model>/predictions_{val,test}.csv found", file=sys.stderr)
        return 1
    print("| run | model | val studies/views | test studies/views | calibrator | form (image/study) | "
          "image ECE [95% CI] | image floor mean / q95 | study ECE [95% CI] | study floor mean / q95 | study AUROC |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        i, s = r["image"], r["study"]
        print(f"| {r['run']} | {r['model']} | {r['val']} | {r['test']} | {r['calibrator']} | {r['form']} | "
              f"{_cell(i)} | {i['ece_floor']:.3f} / {i['ece_floor_q95']:.3f} | {_cell(s)} | "
              f"{s['ece_floor']:.3f} / {s['ece_floor_q95']:.3f} | {r['auroc']:.4f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
