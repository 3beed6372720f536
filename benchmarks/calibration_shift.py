"""Why a run misses the calibration goals: val -> test shift, val size, the floor, the calibrator's form.

    python benchmarks/calibration_shift.py RUN [RUN ...] [--model cnn] [--resamples 1000] [--resplits N]
    python benchmarks/calibration_shift.py --simulate

Reads ``RUN/<model>/predictions_{val,test}.csv`` (or ``.csv.gz``: the runs of docs/trust.md are
kept in ``benchmarks/data/calibration/runs``) and writes nothing. Two tables:

1. **Shift.** Per level (image, study): abnormal rate and mean raw probability on val and on test;
   an unregularised Platt map ``sigmoid(a * logit(p) + b)`` fitted on val (with a 95% interval
   from resampling val studies) and one fitted on test; a likelihood-ratio test of "one map for
   val and test" against "a map per split" (chi-square, 2 degrees of freedom; at image level views
   of a study are not independent, so its p-value is too small: read the study level); the test
   ECE of the map fitted on test itself (in-sample: the best any map of the card's form could
   score there, an optimistic bound) and the ECE floor's q95 of the raw scores.
2. **Candidates.** Calibrators of view scores and of study means, each scored by 10-fold-by-study
   held-out log-loss *on val* (the only evidence a choice may use) and, for the record, by test
   ECE with a 95% study-bootstrap interval and study AUROC. ``rule`` is murakit's
   (:func:`murakit.evaluation.calibration.fit_calibrator`); ``platt``/``temperature``: unregularised;
   ``isotonic``: scikit-learn's (not strictly increasing: it ties scores, so AUROC moves);
   ``platt+views``: study only, ``sigmoid(a * logit(mean) + b + c * log(n_views))``, increasing in
   the mean for a given view count but not across counts (AUROC moves); ``view-map``: study only,
   the view calibrator applied to the study mean (fitted on the views: more observations, a
   view-level slope).
3. **Re-splits** (``--resplits N``; uses test data, so it is a diagnosis, never a way to choose):
   val and test are drawn from one generator and split by patient, so they are exchangeable.
   Their patients are pooled and split again N times at the run's own sizes (whole patients until
   the run's number of val studies is reached, the rest as test); murakit's rule is fitted on each pseudo-val and scored on its
   pseudo-test. It shows how far test ECE moves with nothing but the luck of the split, how often
   the goals (image <= 0.04, study <= 0.05) are met at these sizes, and where the run's real split
   falls among the re-splits (its percentile); for murakit's rule and, for comparison, its
   previous rule (the study prior toward slope 1) and, with ``--platt``, plain Platt (its first
   calibrators).

``--simulate``: study calibrators on simulated models whose study mean is under-dispersed the way
a real one is (truth known, no test split involved): an abnormal study's views each show the
finding with probability ``show``; a view's logit is ``sep`` higher when it does, plus N(0, 1)
noise; the model reports the sigmoid (views calibrated only in rank). Study ECE on 4,000 test
studies, mean over 20 val draws of 30 and 100 studies, for murakit's rule (study prior centred on
the mean view count), its previous rule (prior toward slope 1), plain Platt, the rule with the
one-SE variant and the previous rule with the weak priors only (1, 0.2, 0.04).
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from calibration_check import _find, _read

from murakit.evaluation.calibration import _logit

FOLDS = 10


def _study_table(y, p, g):
    from murakit.evaluation.metrics import study_level

    s = study_level(y, p, g)
    n = np.array([np.sum(g == sid) for sid in s["study"]])
    return s["label"], s["prob"], s["study"], n


def _loglik(y, z):
    return -float(np.sum(np.where(y == 1, np.logaddexp(0, -z), np.logaddexp(0, z))))


def _platt_fit(y, x, extra=None):
    """Unregularised logistic fit of y on [x(, extra)]; returns coefficients (a, b[, c])."""
    from sklearn.linear_model import LogisticRegression

    X = x[:, None] if extra is None else np.stack([x, extra], 1)
    clf = LogisticRegression(C=1e6, max_iter=2000).fit(X, y)
    return np.concatenate([[clf.coef_[0, 0]], [clf.intercept_[0]], clf.coef_[0, 1:]])


def shift_row(level, yv, pv, yt, pt, gv, resamples, seed=0):
    """One row of the shift table (see the module docstring)."""
    from scipy.stats import chi2

    from murakit.evaluation.calibration import ece, ece_floor

    xv, xt = _logit(pv), _logit(pt)
    av, bv = _platt_fit(yv, xv)[:2]
    at, bt = _platt_fit(yt, xt)[:2]
    # val map's interval: resample val groups (studies)
    rng = np.random.default_rng(seed)
    groups = np.unique(gv)
    members = {s: np.flatnonzero(gv == s) for s in groups}
    boots = []
    for _ in range(resamples // 5):
        rows = np.concatenate([members[s] for s in rng.choice(groups, len(groups))])
        if len(np.unique(yv[rows])) == 2:
            boots.append(_platt_fit(yv[rows], xv[rows])[:2])
    boots = np.array(boots)
    lo, hi = np.quantile(boots, [0.025, 0.975], axis=0)
    y, x = np.concatenate([yv, yt]), np.concatenate([xv, xt])
    a, b = _platt_fit(y, x)[:2]
    ll_common = _loglik(y, a * x + b)
    ll_split = _loglik(yv, av * xv + bv) + _loglik(yt, at * xt + bt)
    lr = max(0.0, 2 * (ll_split - ll_common))
    oracle = 1 / (1 + np.exp(-(at * xt + bt)))
    return {"level": level, "val": f"{yv.mean():.3f} / {pv.mean():.3f}", "test": f"{yt.mean():.3f} / {pt.mean():.3f}",
            "val_map": f"a {av:.2f} [{lo[0]:.2f}, {hi[0]:.2f}], b {bv:.2f} [{lo[1]:.2f}, {hi[1]:.2f}]",
            "test_map": f"a {at:.2f}, b {bt:.2f}", "lr_p": float(chi2.sf(lr, 2)),
            "oracle_ece": ece(yt, oracle), "raw_ece": ece(yt, pt), "floor_q95": ece_floor(pt)["q95"]}


# ---------------------------------------------------------------- candidates
def _fitters():
    """name -> (levels, fit(y, p, groups, n_views) -> predict(p, n_views))."""
    from sklearn.isotonic import IsotonicRegression

    from murakit.evaluation.calibration import apply_platt, fit_calibrator

    def rule(y, p, g, n):  # n: ones for views (centre 1), view counts for study means
        c = fit_calibrator(y, p, g, centres=(float(np.mean(n)),))
        return lambda q, m: apply_platt(c, q)

    def platt(y, p, g, n):
        a, b = _platt_fit(y, _logit(p))[:2]
        return lambda q, m: 1 / (1 + np.exp(-(a * _logit(q) + b)))

    def temperature(y, p, g, n):
        from sklearn.linear_model import LogisticRegression

        clf = LogisticRegression(C=1e6, fit_intercept=False, max_iter=2000).fit(_logit(p)[:, None], y)
        a = max(float(clf.coef_[0, 0]), 1e-3)
        return lambda q, m: 1 / (1 + np.exp(-a * _logit(q)))

    def isotonic(y, p, g, n):
        iso = IsotonicRegression(out_of_bounds="clip", y_min=0, y_max=1).fit(p, y)
        return lambda q, m: iso.predict(q)

    def platt_views(y, p, g, n):
        a, b, c = _platt_fit(y, _logit(p), np.log(n))
        return lambda q, m: 1 / (1 + np.exp(-(a * _logit(q) + b + c * np.log(m))))

    return {"rule": (("image", "study"), rule), "platt": (("image", "study"), platt),
            "temperature": (("image", "study"), temperature), "isotonic": (("image", "study"), isotonic),
            "platt+views": (("study",), platt_views)}


def _cv_log_loss(fit, y, p, g, n, seed=0):
    """Mean 10-fold-by-group held-out log-loss (probabilities clipped to [1e-4, 1 - 1e-4])."""
    groups, gi = np.unique(g, return_inverse=True)
    fold = (np.random.default_rng(seed).permutation(len(groups)) % min(FOLDS, len(groups)))[gi]
    out = np.zeros(len(y))
    for k in np.unique(fold):
        te, tr = fold == k, fold != k
        if len(np.unique(y[tr])) < 2:
            out[te] = np.nan
            continue
        q = np.clip(fit(y[tr], p[tr], g[tr], n[tr])(p[te], n[te]), 1e-4, 1 - 1e-4)
        out[te] = -(y[te] * np.log(q) + (1 - y[te]) * np.log1p(-q))
    return float(np.nanmean(out))


def _boot_ece(y, q, g, resamples, seed=0):
    from murakit.evaluation.calibration import ece

    rng = np.random.default_rng(seed)
    groups = np.unique(g)
    members = {s: np.flatnonzero(g == s) for s in groups}
    e = [ece(y[r], q[r]) for r in (np.concatenate([members[s] for s in rng.choice(groups, len(groups))])
                                   for _ in range(resamples))]
    return np.quantile(e, [0.025, 0.975])


def candidate_rows(yv, pv, gv, yt, pt, gt, resamples):
    """Rows (level, name, val CV log-loss, test ECE, CI, floor q95, study AUROC)."""
    from murakit.evaluation.calibration import ece, ece_floor
    from murakit.evaluation.metrics import auroc

    sv, st = _study_table(yv, pv, gv), _study_table(yt, pt, gt)
    nv_img = np.ones(len(yv))
    rows = []
    for name, (levels, fit) in _fitters().items():
        for level in levels:
            if level == "image":
                cv = _cv_log_loss(fit, yv, pv, gv, nv_img)
                q = fit(yv, pv, gv, nv_img)(pt, np.ones(len(pt)))
                y, g = yt, gt
                au = auroc(yt, q)
            else:
                cv = _cv_log_loss(fit, sv[0], sv[1], sv[2], sv[3])
                q = fit(sv[0], sv[1], sv[2], sv[3])(st[1], st[3])
                y, g = st[0], st[2]
                au = auroc(st[0], q)
            rows.append((level, name, cv, ece(y, q), _boot_ece(y, q, g, resamples), ece_floor(q)["q95"], au))
    # the view calibrator applied to study means
    from murakit.evaluation.calibration import apply_platt, fit_calibrator

    c = fit_calibrator(yv, pv, gv)
    # its CV: refit the view calibrator per fold of studies, score the fold's study means
    groups = np.unique(gv)
    fold = (np.random.default_rng(0).permutation(len(groups)) % min(FOLDS, len(groups)))
    fold_of = dict(zip(groups, fold))
    held = []
    for k in np.unique(fold):
        tr = np.array([fold_of[s] != k for s in gv])
        ck = fit_calibrator(yv[tr], pv[tr], gv[tr])
        te = np.array([fold_of[s] == k for s in sv[2]])
        q = np.clip(apply_platt(ck, sv[1][te]), 1e-4, 1 - 1e-4)
        held.append(-(sv[0][te] * np.log(q) + (1 - sv[0][te]) * np.log1p(-q)))
    q = apply_platt(c, st[1])
    rows.append(("study", "view-map", float(np.concatenate(held).mean()), ece(st[0], q),
                 _boot_ece(st[0], q, st[2], resamples), ece_floor(q)["q95"], auroc(st[0], q)))
    q = st[1]
    rows.append(("study", "raw", _cv_raw(sv), ece(st[0], q), _boot_ece(st[0], q, st[2], resamples),
                 ece_floor(q)["q95"], auroc(st[0], q)))
    q = pt
    rows.append(("image", "raw", _cv_raw((yv, pv)), ece(yt, q), _boot_ece(yt, q, gt, resamples),
                 ece_floor(q)["q95"], auroc(yt, q)))
    return sorted(rows, key=lambda r: (r[0], r[1]))


def _cv_raw(s):
    y, p = s[0], np.clip(s[1], 1e-4, 1 - 1e-4)
    return float(np.mean(-(y * np.log(p) + (1 - y) * np.log1p(-p))))


def _previous_rule(y, p, g) -> dict:
    """murakit's rule before the study prior was centred on the mean view count (toward 1)."""
    from murakit.evaluation.calibration import fit_calibrator

    s = _study_table(y, p, g)
    return {"image": fit_calibrator(y, p, g), "study": fit_calibrator(s[0], s[1])}


def _old_rule(y, p, g) -> dict:
    """murakit's first calibrators: plain Platt on val views and on val study means."""
    from murakit.evaluation.calibration import platt

    s = _study_table(y, p, g)
    return {"image": platt(y, p), "study": platt(s[0], s[1])}


def resplit_row(yv, pv, gv, yt, pt, gt, n: int, seed: int = 0, rule=None) -> dict:
    """Table 3's row for one run (see the module docstring); ``rule(y, p, g) -> calibration``,
    default murakit's :func:`murakit.evaluation.calibration.fit_calibration`."""
    from murakit.evaluation.calibration import apply_platt, ece, fit_calibration

    rule = rule or fit_calibration

    def score(y_a, p_a, g_a, y_b, p_b, g_b):
        c = rule(y_a, p_a, g_a)
        s = _study_table(y_b, p_b, g_b)
        return ece(y_b, apply_platt(c["image"], p_b)), ece(s[0], apply_platt(c["study"], s[1]))

    real = score(yv, pv, gv, yt, pt, gt)
    y, p, g = np.concatenate([yv, yt]), np.concatenate([pv, pt]), np.concatenate([gv, gt])
    # whole patients move, as in the real split (MURA study ids: PART/patientNNNNN/studyK_...)
    patient = np.array([s.split("/")[1] if s.count("/") >= 2 else s for s in g])
    patients, n_val = np.unique(patient), len(np.unique(gv))
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        order = rng.permutation(patients)
        counts = np.array([len(np.unique(g[patient == q])) for q in order])
        is_val = np.isin(patient, order[:int(np.searchsorted(np.cumsum(counts), n_val)) + 1])
        out.append(score(y[is_val], p[is_val], g[is_val], y[~is_val], p[~is_val], g[~is_val]))
    out = np.array(out)
    return {"real": real, "median": np.median(out, 0), "q": np.quantile(out, [0.1, 0.9], 0),
            "met": ((out[:, 0] <= 0.04).mean(), (out[:, 1] <= 0.05).mean(), ((out[:, 0] <= 0.04) & (out[:, 1] <= 0.05)).mean()),
            "percentile": ((out[:, 0] < real[0]).mean(), (out[:, 1] < real[1]).mean())}


def underdispersed_views(n_studies: int, seed: int, show: float = 0.75, sep: float = 2.5, prevalence: float = 0.4):
    """(labels, probs, studies) of the ``--simulate`` model (see the module docstring)."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, 4, n_studies)
    studies = np.repeat(np.arange(n_studies), sizes)
    y = (rng.uniform(size=n_studies) < prevalence).astype(int)
    shown = (rng.uniform(size=len(studies)) < show) & (y[studies] == 1)
    z = sep * shown - 1.0 + rng.normal(0, 1.0, len(studies))
    return y[studies], 1 / (1 + np.exp(-z)), studies


SIM_SCENARIOS = ((0.75, 2.5), (0.6, 3.0), (0.9, 2.0))  # (show, sep)


def simulate(draws: int = 20) -> list:
    """Rows ``(show, sep, val studies, raw ECE, {rule: mean study ECE})``."""
    from murakit.evaluation.calibration import apply_platt, ece, fit_calibrator, fit_study_calibrator, platt
    from murakit.evaluation.metrics import study_level

    rules = {"rule": fit_study_calibrator, "previous rule": lambda y, p, n: fit_calibrator(y, p),
             "plain Platt": lambda y, p, n: platt(y, p),
             "rule, one-SE": lambda y, p, n: fit_calibrator(y, p, se_tolerance=1.0, centres=(n,)),
             "previous rule, priors 1-0.04": lambda y, p, n: fit_calibrator(y, p, priors=(1.0, 0.2, 0.04))}
    rows = []
    for show, sep in SIM_SCENARIOS:
        st = study_level(*underdispersed_views(4000, 1, show, sep))
        for n in (30, 100):
            out = {r: [] for r in rules}
            for seed in range(draws):
                y, p, g = underdispersed_views(n, 100 + seed, show, sep)
                sv = study_level(y, p, g)
                views = len(y) / len(sv["label"])
                for r, fit in rules.items():
                    out[r].append(ece(st["label"], apply_platt(fit(sv["label"], sv["prob"], views), st["prob"])))
            rows.append((show, sep, n, ece(st["label"], st["prob"]), {r: float(np.mean(v)) for r, v in out.items()}))
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="*", type=Path)
    ap.add_argument("--simulate", action="store_true", help="under-dispersed simulated models instead of runs")
    ap.add_argument("--model", default="cnn", choices=("cnn", "baseline"))
    ap.add_argument("--resamples", type=int, default=1000)
    ap.add_argument("--resplits", type=int, default=0, help="table 3: re-split val + test this many times")
    ap.add_argument("--platt", action="store_true", help="table 3: plain Platt too (beside the rule and the previous rule)")
    args = ap.parse_args(argv)
    if args.simulate:
        rows = simulate()
        rules = list(rows[0][4])
        print("| views showing the finding | logit gap | val studies | raw study ECE | " + " | ".join(rules) + " |")
        print("|---|---|---|---|" + "---|" * len(rules))
        for show, sep, n, raw, res in rows:
            print(f"| {show:g} | {sep:g} | {n} | {raw:.3f} | " + " | ".join(f"{res[r]:.3f}" for r in rules) + " |")
        print("| mean | | | | " + " | ".join(f"{np.mean([x[4][r] for x in rows]):.3f}" for r in rules) + " |")
        return 0
    if not args.runs:
        print("give run folders, or --simulate", file=sys.stderr)
        return 2
    data = {}
    for run in args.runs:
        val, test = (_find(run / args.model / f"predictions_{s}.csv") for s in ("val", "test"))
        if val is None or test is None:
            print(f"{run}: no {args.model}/predictions_{{val,test}}.csv", file=sys.stderr)
            return 1
        data[run.name] = (_read(val), _read(test))
    print("| run | level | val abnormal / mean p | test abnormal / mean p | Platt on val [95% CI] | Platt on test | "
          "LR test p (same map) | raw test ECE | test ECE of the test-fitted map | floor q95 (raw) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, ((yv, pv, gv), (yt, pt, gt)) in data.items():
        sv, st = _study_table(yv, pv, gv), _study_table(yt, pt, gt)
        for level, args_ in (("image", (yv, pv, yt, pt, gv)), ("study", (sv[0], sv[1], st[0], st[1], sv[2]))):
            r = shift_row(level, *args_, args.resamples)
            print(f"| {name} | {level} | {r['val']} | {r['test']} | {r['val_map']} | {r['test_map']} | "
                  f"{r['lr_p']:.3g} | {r['raw_ece']:.3f} | {r['oracle_ece']:.3f} | {r['floor_q95']:.3f} |")
    print()
    print("| run | level | calibrator | val CV log-loss | test ECE [95% CI] | floor q95 | test AUROC |")
    print("|---|---|---|---|---|---|---|")
    for name, ((yv, pv, gv), (yt, pt, gt)) in data.items():
        for level, cand, cv, e, ci, fq, au in candidate_rows(yv, pv, gv, yt, pt, gt, args.resamples):
            print(f"| {name} | {level} | {cand} | {cv:.4f} | {e:.3f} [{ci[0]:.3f}, {ci[1]:.3f}] | {fq:.3f} | "
                  f"{au:.4f} |" if math.isfinite(cv) else f"| {name} | {level} | {cand} | - | {e:.3f} | {fq:.3f} | {au:.4f} |")
    if args.resplits:
        print()
        print(f"| run | real split: image / study ECE | {args.resplits} re-splits: median image / study ECE "
              "[10th, 90th percentile] | share meeting image / study / both goals | real split's percentile "
              "(image / study) |")
        print("|---|---|---|---|---|")
        for (name, ((yv, pv, gv), (yt, pt, gt))), (rule_name, rule) in (
                (d, r) for d in data.items() for r in (("rule", None), ("previous rule", _previous_rule),
                                                       ("plain Platt", _old_rule))[:2 + args.platt]):
            r = resplit_row(yv, pv, gv, yt, pt, gt, args.resplits, rule=rule)
            print(f"| {name} ({rule_name}) | {r['real'][0]:.3f} / {r['real'][1]:.3f} | {r['median'][0]:.3f} "
                  f"[{r['q'][0][0]:.3f}, {r['q'][1][0]:.3f}] / {r['median'][1]:.3f} [{r['q'][0][1]:.3f}, "
                  f"{r['q'][1][1]:.3f}] | {r['met'][0]:.0%} / {r['met'][1]:.0%} / {r['met'][2]:.0%} | "
                  f"{r['percentile'][0]:.0%} / {r['percentile'][1]:.0%} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
