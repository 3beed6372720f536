"""Which calibrator rule? Candidate rules scored on both simulation families, no test split involved.

    python benchmarks/calibration_rules.py [--draws 40] [--level study|image|both]

The two simulated families of docs/trust.md, where the truth is known:

- **calibrated mean** (``calibration_check.simulated_views``): a study's label is drawn from its
  views' mean true probability, so the study mean starts calibrated up to the model's temperature
  and shift (4 models x 30 / 120 val studies; 3,000 test studies). It favours a prior toward the
  identity.
- **views miss the finding** (``calibration_shift.underdispersed_views``): an abnormal study's views
  each show the finding with some probability, so its mean is under-dispersed the way a real one
  is (3 models x 30 / 100 val studies; 4,000 test studies). It favours a free slope.

Every candidate is fitted on the same ``--draws`` val draws of every cell (paired), and scored by
its ECE on the cell's test studies (views, for ``--level image``). The choice was fixed before the
run, and before any real test split was scored with a new rule:

    the candidate with the lowest mean ECE, where the mean gives the two families equal weight
    (the mean of each family's cell means); the current rule stays unless the winner beats it by
    more than 0.001 (then it is noise). The image-level rule changes only if a candidate beats the
    current one in both families by >= 0.003 (clear evidence), since its goal is met on the
    families already.

Study-level candidates (all the card's Platt format, ``a > 0``; ``n`` = mean views per val study):

- ``rule``: murakit's rule before this comparison (temperature / Platt, smoothed targets, a prior
  toward the identity of strength 20 ... 0.04, chosen by 10-fold held-out log-loss);
- ``plain Platt``: the unregularised fit murakit first shipped (:func:`calibration.platt`);
- ``Platt, smoothed``: full Platt with Platt's smoothed targets and no prior;
- ``weak priors``: the rule with priors 1, 0.2, 0.04 only;
- ``no slope prior``: the rule with the prior on the intercept only (the slope free);
- ``centred on n``: the rule with the prior centred on slope ``n`` (a study of n independent
  views: its log-odds are n times the mean logit) instead of 1;
- ``centred on 1 or n``: both centres as candidates, held-out log-loss chooses;
- ``Platt only``: the rule without the temperature form.

Image-level candidates: ``rule``, ``plain Platt``, ``Platt, smoothed``, ``weak priors``, ``no slope
prior`` (folds by study).

Result (40 draws; docs/trust.md, "The study map's prior"): study level ``centred on n`` 0.058
against ``rule`` 0.067 (``centred on 1 or n`` 0.058, a tie within its paired SE), now murakit's
:func:`murakit.evaluation.calibration.fit_study_calibrator`; image level no candidate clears the
margin in both families, the view rule is unchanged.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from calibration_check import SCENARIOS, simulated_views
from calibration_shift import SIM_SCENARIOS, underdispersed_views

from murakit.evaluation.calibration import (
    _fit_form,
    _logit,
    _smoothed_targets,
    apply_platt,
    ece,
    fit_calibrator,
    platt,
)
from murakit.evaluation.metrics import study_level

MARGIN_STUDY = 0.001
MARGIN_IMAGE = 0.003


def _smoothed_platt(y, p, g=None, n=None) -> dict:
    a, b = _fit_form(_logit(p), _smoothed_targets(np.asarray(y).astype(int)), "platt", 0.0)
    return {"method": "platt", "a": a, "b": b}


def study_candidates() -> dict:
    """name -> fit(labels, study means, mean views per study) -> calibrator."""
    return {
        "rule": lambda y, p, n: fit_calibrator(y, p),
        "plain Platt": lambda y, p, n: platt(y, p),
        "Platt, smoothed": lambda y, p, n: _smoothed_platt(y, p),
        "weak priors": lambda y, p, n: fit_calibrator(y, p, priors=(1.0, 0.2, 0.04)),
        "no slope prior": lambda y, p, n: fit_calibrator(y, p, slope_prior=False),
        "centred on n": lambda y, p, n: fit_calibrator(y, p, centres=(n,)),
        "centred on 1 or n": lambda y, p, n: fit_calibrator(y, p, centres=(1.0, n)),
        "Platt only": lambda y, p, n: fit_calibrator(y, p, forms=("platt",)),
    }


def image_candidates() -> dict:
    """name -> fit(labels, view scores, studies) -> calibrator."""
    return {
        "rule": lambda y, p, g: fit_calibrator(y, p, g),
        "plain Platt": lambda y, p, g: platt(y, p),
        "Platt, smoothed": lambda y, p, g: _smoothed_platt(y, p),
        "weak priors": lambda y, p, g: fit_calibrator(y, p, g, priors=(1.0, 0.2, 0.04)),
        "no slope prior": lambda y, p, g: fit_calibrator(y, p, g, slope_prior=False),
    }


def cells():
    """(family, cell name, val sizes, make(n, seed) -> (labels, probs, studies), test set)."""
    out = []
    for temperature, shift in SCENARIOS:
        out.append(("calibrated mean", f"temperature {temperature:g}, shift {shift:g}", (30, 120),
                    lambda n, s, t=temperature, h=shift: simulated_views(n, 200 + s, t, h),
                    simulated_views(3000, 100, temperature, shift)))
    for show, sep in SIM_SCENARIOS:
        out.append(("views miss the finding", f"show {show:g}, gap {sep:g}", (30, 100),
                    lambda n, s, a=show, b=sep: underdispersed_views(n, 100 + s, a, b),
                    underdispersed_views(4000, 1, show, sep)))
    return out


def run(draws: int, level: str) -> list:
    """Rows ``(family, cell, val studies, {candidate: mean ECE}, {candidate: per-draw ECEs})``."""
    cands = study_candidates() if level == "study" else image_candidates()
    rows = []
    for family, name, sizes, make, (yt, pt, gt) in cells():
        st = study_level(yt, pt, gt)
        for n_val in sizes:
            res = {c: [] for c in cands}
            for seed in range(draws):
                y, p, g = make(n_val, seed)
                if level == "study":
                    sv = study_level(y, p, g)
                    views = len(y) / len(sv["label"])
                    for c, fit in cands.items():
                        res[c].append(ece(st["label"], apply_platt(fit(sv["label"], sv["prob"], views), st["prob"])))
                else:
                    for c, fit in cands.items():
                        res[c].append(ece(yt, apply_platt(fit(y, p, g), pt)))
            rows.append((family, name, n_val, {c: float(np.mean(v)) for c, v in res.items()},
                         {c: np.array(v) for c, v in res.items()}))
    return rows


def summary(rows: list) -> dict:
    """Per candidate: each family's mean, their average, and the paired SE of its difference to ``rule``."""
    cands = list(rows[0][3])
    fams = sorted({r[0] for r in rows})
    out = {}
    for c in cands:
        fam = {f: float(np.mean([r[3][c] for r in rows if r[0] == f])) for f in fams}
        # paired differences to the rule, per draw averaged the way the score is (family-weighted)
        diffs = [np.mean([r[4][c] - r[4]["rule"] for r in rows if r[0] == f], axis=0) for f in fams]
        d = np.mean(diffs, axis=0)
        out[c] = {"family": fam, "score": float(np.mean(list(fam.values()))),
                  "se_vs_rule": float(d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 else float("nan"),
                  "worst_cell_vs_rule": float(max(r[3][c] - r[3]["rule"] for r in rows))}
    return out


def choose(summ: dict, level: str) -> str:
    """The pre-registered choice (module docstring)."""
    if level == "study":
        best = min(summ, key=lambda c: summ[c]["score"])
        return best if summ[best]["score"] < summ["rule"]["score"] - MARGIN_STUDY else "rule"
    clear = [c for c in summ if all(summ[c]["family"][f] <= summ["rule"]["family"][f] - MARGIN_IMAGE
                                    for f in summ[c]["family"])]
    return min(clear, key=lambda c: summ[c]["score"]) if clear else "rule"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--draws", type=int, default=40, help="val draws per cell (default 40)")
    ap.add_argument("--level", default="study", choices=("study", "image", "both"))
    args = ap.parse_args(argv)
    if args.draws < 2:
        print(f"--draws must be >= 2, got {args.draws}", file=sys.stderr)
        return 2
    for level in (("study", "image") if args.level == "both" else (args.level,)):
        t0 = time.time()
        rows = run(args.draws, level)
        summ = summary(rows)
        cands = list(summ)
        print(f"{level} ECE, mean over {args.draws} val draws per cell:\n")
        print("| family | simulated model | val studies | " + " | ".join(cands) + " |")
        print("|---|---|---|" + "---|" * len(cands))
        for family, name, n, res, _ in rows:
            print(f"| {family} | {name} | {n} | " + " | ".join(f"{res[c]:.3f}" for c in cands) + " |")
        for f in sorted({r[0] for r in rows}):
            print(f"| {f}: mean | | | " + " | ".join(f"{summ[c]['family'][f]:.3f}" for c in cands) + " |")
        print("| **both families** (equal weight) | | | " + " | ".join(f"{summ[c]['score']:.3f}" for c in cands) + " |")
        print("| difference to rule (paired SE) | | | " + " | ".join(
            f"{summ[c]['score'] - summ['rule']['score']:+.3f} ({summ[c]['se_vs_rule']:.3f})" for c in cands) + " |")
        print("| worst cell vs rule | | | " + " | ".join(f"{summ[c]['worst_cell_vs_rule']:+.3f}" for c in cands) + " |")
        print(f"\nchosen ({level}): {choose(summ, level)}   [{time.time() - t0:.0f} s]\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
