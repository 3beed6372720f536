"""Calibrators before and after: refit them from a run's val predictions, score its test split.

    python benchmarks/calibration_check.py RUN [RUN ...] [--resamples 2000]

For each run folder and each model with ``RUN/<model>/predictions_{val,test}.csv`` (cnn,
baseline), prints one row per calibrator: ``raw`` (no calibrator), ``old`` (the unregularised
Platt fit murakit used before: :func:`murakit.evaluation.calibration.platt` on val views and
on val study means) and ``new`` (:func:`murakit.evaluation.calibration.fit_calibration`: form
chosen on val by k-fold-by-study log-loss, smoothed targets, prior toward the identity) and
``new-1se`` (the same with the one-standard-error rule, the variant not shipped), with
test image and study ECE, their 95% study-bootstrap intervals, the ECE floor (the mean and 95th
percentile ECE of a perfectly calibrated model at that test size:
:func:`murakit.evaluation.calibration.ece_floor`) and study AUROC. Only val chooses and fits;
test is only scored. Reads the run, writes nothing.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np


def _read(path: Path) -> tuple:
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    return (np.array([int(r["label"]) for r in rows]), np.array([float(r["probability"]) for r in rows]),
            np.array([r["study"] for r in rows]))


class _Card:
    def __init__(self, calibration):
        self.calibration = calibration


def check(run: Path, model: str, n: int) -> list:
    """Rows (dicts) for one model of one run; [] when its predictions are missing."""
    from murakit.evaluation.calibration import fit_calibration, fit_calibrator, platt
    from murakit.evaluation.metrics import auroc, study_level
    from murakit.evaluation.trust import calibrated, calibration_metrics

    val, test = run / model / "predictions_val.csv", run / model / "predictions_test.csv"
    if not (val.is_file() and test.is_file()):
        return []
    yv, pv, sv = _read(val)
    yt, pt, st = _read(test)
    s = study_level(yv, pv, sv)
    calibrators = {"raw": None,
                   "old": {"image": platt(yv, pv), "study": platt(s["label"], s["prob"])},
                   "new": fit_calibration(yv, pv, sv),
                   "new-1se": {"image": fit_calibrator(yv, pv, sv, se_tolerance=1.0),
                               "study": fit_calibrator(s["label"], s["prob"], se_tolerance=1.0)}}
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


def _cell(m: dict) -> str:
    lo, hi = m["ece_ci"]
    return f"{m['ece']:.3f} [{lo:.3f}, {hi:.3f}]"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", type=Path, help="run folders (RUN/cnn, RUN/baseline)")
    p.add_argument("--resamples", type=int, default=2000, help="bootstrap resamples (default 2000)")
    args = p.parse_args(argv)
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
