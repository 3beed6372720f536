"""The CNN against the baseline on finished run folders, as a markdown table (docs/training.md).

    python benchmarks/proof_table.py RUN [RUN ...]

For each run (``murakit prepare``, ``train baseline``, ``train cnn`` done): test studies, study
AUROC of both models with 95% study-bootstrap intervals, the paired bootstrap difference
CNN - baseline with its interval, the CNN's epochs (best epoch) and why training stopped.
Reads only ``RUN/{baseline,cnn}/predictions_test.csv`` and ``RUN/cnn/metrics.json``.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from murakit.evaluation.bootstrap import paired_auroc_difference, study_intervals


def _predictions(path: Path) -> dict:
    if not path.exists():  # run folders from before the card refactor named it test_predictions.csv
        path = path.with_name("test_predictions.csv")
    with open(path, newline="") as f:
        return {r["path"]: (int(r["label"]), float(r["probability"]), r["study"]) for r in csv.DictReader(f)}


def row(run: Path) -> str:
    """One markdown row for ``run``."""
    cnn, base = _predictions(run / "cnn/predictions_test.csv"), _predictions(run / "baseline/predictions_test.csv")
    if set(cnn) != set(base):
        raise SystemExit(f"{run}: the two models were scored on different test images")
    keys = sorted(cnn)
    y = np.array([cnn[k][0] for k in keys])
    studies = np.array([cnn[k][2] for k in keys])
    p_cnn, p_base = np.array([cnn[k][1] for k in keys]), np.array([base[k][1] for k in keys])
    m = json.loads((run / "cnn/metrics.json").read_text())
    b = json.loads((run / "baseline/metrics.json").read_text())
    ci_c = study_intervals(y, p_cnn, studies, m["threshold"])["auroc_ci"]
    ci_b = study_intervals(y, p_base, studies, b["threshold"])["auroc_ci"]
    d = paired_auroc_difference(y, p_cnn, p_base, studies)
    return (f"| {run.name} | {len(set(studies))} | {b['study']['auroc']:.3f} [{ci_b[0]:.3f}, {ci_b[1]:.3f}] | "
            f"{m['study']['auroc']:.3f} [{ci_c[0]:.3f}, {ci_c[1]:.3f}] | {d['auroc_diff']:+.3f} "
            f"[{d['ci'][0]:+.3f}, {d['ci'][1]:+.3f}] | {m['epochs']} ({m['best_epoch']}) | {m['stop_reason']} |")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+", type=Path)
    args = p.parse_args(argv)
    print("| run | test studies | baseline study AUROC [95% CI] | CNN study AUROC [95% CI] | "
          "CNN - baseline [95% CI, paired] | epochs (best) | why stopped |")
    print("|---|---|---|---|---|---|---|")
    for run in args.runs:
        print(row(run))
    return 0


if __name__ == "__main__":
    sys.exit(main())
