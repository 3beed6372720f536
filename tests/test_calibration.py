"""Calibrators, ECE and operating points (murakit.evaluation.calibration, edge.trust)."""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path

import numpy as np
import pytest

from edge.card import FORMAT_2_FIELDS, ModelCard
from edge.errors import ModelError
from edge.preprocess import PreprocessConfig
from edge.trust import calibrate, raw_threshold
from murakit.evaluation.calibration import (
    apply_platt,
    ece,
    ece_floor,
    fit_calibration,
    fit_calibrator,
    fit_operating_points,
    fit_study_calibrator,
    platt,
    threshold_for,
)
from murakit.evaluation.metrics import auroc, study_level


def _miscalibrated(n: int, seed: int):
    """Labels drawn from p, reported as p ** 3 (overconfident towards normal): ECE far from 0."""
    rng = np.random.default_rng(seed)
    p = rng.uniform(0, 1, n)
    y = (rng.uniform(0, 1, n) < p).astype(int)
    return y, p ** 3, p


def _card(**kw) -> ModelCard:
    return ModelCard(kind="cnn", preprocess=PreprocessConfig(size=32), threshold=0.5, arch="tiny", version="t",
                     data_fingerprint=hashlib.sha256(b"x").hexdigest(), weights_sha256="0" * 64, **kw)


def test_platt_is_monotone_keeps_auroc_and_fixes_a_miscalibrated_score():
    y, s, _ = _miscalibrated(4000, 0)
    c = platt(y[:2000], s[:2000])
    assert c["a"] > 0
    q = apply_platt(c, s)
    order = np.argsort(s, kind="mergesort")
    assert np.all(np.diff(q[order]) >= 0)  # increasing: no ranking changes
    assert auroc(y, q) == pytest.approx(auroc(y, s), abs=1e-12)
    assert ece(y[2000:], s[2000:]) > 0.1  # the raw score is badly calibrated ...
    assert ece(y[2000:], q[2000:]) < 0.04  # ... and the calibrator, fitted on the other half, fixes it
    card = _card(calibration={"image": c, "study": c})  # the device computes the same numbers
    assert [calibrate(card, v, "image") for v in s[:50]] == pytest.approx(q[:50], abs=1e-12)


def test_ece_is_small_when_calibrated_and_large_when_not():
    y, _, p = _miscalibrated(20000, 1)
    assert ece(y, p) < 0.02
    assert ece(y, np.random.default_rng(2).permutation(p)) > 0.1 or ece(np.zeros_like(y), p) > 0.4
    assert ece(np.zeros_like(y), p) == pytest.approx(p.mean(), abs=1e-9)  # all normal: ECE = mean p
    assert ece(y, 1 - p) > 0.3


def test_study_calibrator_is_fitted_on_study_means():
    rng = np.random.default_rng(3)
    studies = np.repeat(np.arange(300), 3)
    y_study = rng.integers(0, 2, 300)
    labels = y_study[studies]
    probs = np.clip(0.35 + 0.25 * labels + rng.normal(0, 0.15, len(labels)), 0.01, 0.99)
    cal = fit_calibration(labels, probs, studies)
    s = study_level(labels, probs, studies)
    assert ece(s["label"], apply_platt(cal["study"], s["prob"])) < ece(s["label"], s["prob"])


_spec = importlib.util.spec_from_file_location(
    "calibration_check", Path(__file__).resolve().parents[1] / "benchmarks" / "calibration_check.py")
calibration_check = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(calibration_check)
_views = calibration_check.simulated_views


def test_calibrator_form_is_chosen_on_val_and_is_always_increasing():
    # a badly overconfident model on plenty of val: the fit must move far from the identity ...
    y, p, g = _views(600, 6, temperature=3.0)
    c = fit_calibrator(y, p, g)
    assert c["form"] in ("temperature", "platt") and 0 < c["a"] < 0.6
    assert c["cv_log_loss"][f"{c['form']}@{c['prior']:g}"] == min(c["cv_log_loss"].values())
    q = apply_platt(c, p)
    assert auroc(y, q) == pytest.approx(auroc(y, p), abs=1e-12)
    yt, pt, _ = _views(600, 7, temperature=3.0)
    assert ece(yt, apply_platt(c, pt)) < ece(yt, pt) - 0.05  # fixes it on data it was not fitted on
    # ... a shifted one needs the intercept: full Platt wins
    ys, ps, gs = _views(600, 8, shift=1.5)
    assert fit_calibrator(ys, ps, gs)["form"] == "platt"
    assert fit_calibrator(ys, ps, gs) == fit_calibrator(ys, ps, gs)  # deterministic
    # one class only, or nothing to fit: the identity, never an error
    assert fit_calibrator(np.ones(5), np.linspace(0.1, 0.9, 5))["form"] == "identity"
    # adversarial val (anti-correlated): the slope stays positive (a ranking is never reversed)
    rng = np.random.default_rng(9)
    p = rng.uniform(0.05, 0.95, 200)
    c = fit_calibrator((rng.uniform(size=200) > p).astype(int), p)
    assert c["a"] > 0 and np.all(np.diff(apply_platt(c, np.sort(p))) >= 0)
    with pytest.raises(ValueError, match="same length"):
        fit_calibrator(np.ones(3), np.ones(4) / 2)


def test_small_val_sets_do_not_make_a_calibrated_model_worse():
    """Old unregularised Platt on 30 val studies vs the chosen form, on a model that is already
    calibrated: averaged over val draws, the new fit's test ECE stays at the identity's, the old
    one's is clearly worse (it chases the 30 points)."""
    yt, pt, _ = _views(3000, 100)
    base = ece(yt, pt)
    old, new = [], []
    for seed in range(12):
        y, p, g = _views(30, 200 + seed)
        old.append(ece(yt, apply_platt(platt(y, p), pt)))
        new.append(ece(yt, apply_platt(fit_calibrator(y, p, g), pt)))
    assert base < 0.02 and np.mean(old) > 0.07  # chasing 30 studies costs the old fit dearly ...
    assert np.mean(new) < np.mean(old) - 0.03  # ... the prior and the form choice much less


_shift_spec = importlib.util.spec_from_file_location(
    "calibration_shift", Path(__file__).resolve().parents[1] / "benchmarks" / "calibration_shift.py")
calibration_shift = importlib.util.module_from_spec(_shift_spec)
_shift_spec.loader.exec_module(calibration_shift)


def test_study_calibrator_fits_an_under_dispersed_study_mean_better_than_the_identity_prior():
    """Abnormal studies whose views miss the finding (a real study mean's shape): the study map's
    prior centred on the mean view count beats the previous prior toward slope 1 (which pulled the
    slope back toward 1) on held-out studies, draw after draw, and stays increasing."""
    st = study_level(*calibration_shift.underdispersed_views(3000, 1))
    new, old = [], []
    for seed in range(8):
        y, p, g = calibration_shift.underdispersed_views(60, 300 + seed)
        sv = study_level(y, p, g)
        c = fit_study_calibrator(sv["label"], sv["prob"], len(y) / len(sv["label"]))
        assert c["a"] > 0 and c["centre"] == pytest.approx(len(y) / len(sv["label"]))
        q = apply_platt(c, st["prob"])
        assert auroc(st["label"], q) == pytest.approx(auroc(st["label"], st["prob"]), abs=1e-12)
        new.append(ece(st["label"], q))
        old.append(ece(st["label"], apply_platt(fit_calibrator(sv["label"], sv["prob"]), st["prob"])))
    new, old = np.array(new), np.array(old)
    assert new.mean() < old.mean() - 0.02 and (new < old).sum() >= 6


def test_study_calibrator_centre_comes_from_the_view_count():
    rng = np.random.default_rng(15)
    p = rng.uniform(0.05, 0.95, 80)
    y = (rng.uniform(size=80) < p).astype(int)
    one = fit_study_calibrator(y, p, 1.0)  # single-view studies: the identity-centred rule
    assert one == fit_calibrator(y, p) and "centre" not in one
    three = fit_study_calibrator(y, p, 3.0)
    assert three["centre"] == 3.0 and any(k.endswith("~a3") for k in three["cv_log_loss"])
    # the card's study map records the centre: val's views per study (3 here)
    studies = np.repeat(np.arange(80), 3)
    cal = fit_calibration(y[studies], p[studies], studies)
    assert cal["study"]["centre"] == pytest.approx(3.0) and "centre" not in cal["image"]
    assert ModelCard.from_props(_card(calibration=cal).to_props()).calibration == cal
    for bad in (0.5, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="views_per_study"):
            fit_study_calibrator(y, p, bad)


def test_calibration_rules_choice_follows_its_preset_margins():
    """benchmarks/calibration_rules.py's choice: the lowest family-weighted mean wins only when it
    beats the rule in force by more than the margin; a view rule must win in both families."""
    spec = importlib.util.spec_from_file_location(
        "calibration_rules", Path(__file__).resolve().parents[1] / "benchmarks" / "calibration_rules.py")
    rules = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(rules)

    def rows(rule, other):  # two families, one cell each, 3 draws; 'other' differs per family
        return [(fam, "m", 30, {"rule": rule, "x": rule + d}, {"rule": np.full(3, rule), "x": np.full(3, rule + d)})
                for fam, d in zip(("a", "b"), other)]

    assert rules.choose(rules.summary(rows(0.06, (-0.004, 0.0))), "study") == "x"  # mean -0.002 < -0.001
    assert rules.choose(rules.summary(rows(0.06, (-0.001, 0.0))), "study") == "rule"  # within the margin
    assert rules.choose(rules.summary(rows(0.06, (-0.010, 0.001))), "image") == "rule"  # worse in one family
    assert rules.choose(rules.summary(rows(0.06, (-0.004, -0.003))), "image") == "x"
    s = rules.summary(rows(0.06, (-0.004, 0.002)))
    assert s["x"]["score"] == pytest.approx(0.059) and s["x"]["worst_cell_vs_rule"] == pytest.approx(0.002)


def test_ece_floor_tells_noise_from_miscalibration():
    rng = np.random.default_rng(10)
    for n in (80, 2000):
        p = rng.uniform(0, 1, n)
        floor = ece_floor(p)
        assert 0 < floor["mean"] < floor["q95"] < 1
        calibrated = [ece((rng.uniform(size=n) < p).astype(int), p) for _ in range(50)]
        # a calibrated model sits near the floor (same distribution: same mean, rarely above q95) ...
        assert abs(np.mean(calibrated) - floor["mean"]) < 0.25 * floor["mean"]
        assert np.mean(np.array(calibrated) > floor["q95"]) < 0.2
        # ... a miscalibrated one (labels from p ** 0.5, claims p) is clearly above it
        wrong = [ece((rng.uniform(size=n) < p ** 0.5).astype(int), p) for _ in range(20)]
        assert np.mean(np.array(wrong) > floor["q95"]) >= (0.6 if n == 80 else 1.0)  # small n: usually
        assert np.mean(wrong) > floor["mean"] + 0.05
    assert ece_floor(np.full(100, 0.5))["mean"] > ece_floor(np.full(10000, 0.5))["mean"] * 5  # ~1/sqrt(n)
    assert ece_floor(np.zeros(50))["mean"] == 0.0  # certain and right: no noise
    p = rng.uniform(size=90)
    assert ece_floor(p, seed=3) == ece_floor(p, seed=3)  # seeded


def test_operating_points_meet_their_targets_on_the_data_they_were_chosen_on():
    rng = np.random.default_rng(4)
    studies = np.arange(400)
    labels = rng.integers(0, 2, 400)
    probs = np.clip(0.4 + 0.2 * labels + rng.normal(0, 0.15, 400), 0, 1)
    parts = np.array(["WRIST", "HAND"])[rng.integers(0, 2, 400)]
    ops = fit_operating_points(labels, probs, studies, parts, youden=0.5)
    assert ops["youden"]["threshold"] == 0.5
    t_sens, t_spec = ops["sensitivity>=0.90"]["threshold"], ops["specificity>=0.90"]["threshold"]
    assert (probs[labels == 1] > t_sens).mean() >= 0.90
    assert (probs[labels == 0] <= t_spec).mean() >= 0.90
    assert t_sens < t_spec
    by_part = ops["sensitivity>=0.90/part"]["thresholds_by_part"]
    assert set(by_part) == {"HAND", "WRIST"}
    for part, t in by_part.items():
        m = (parts == part) & (labels == 1)
        assert (probs[m] > t).mean() >= 0.90
    card = _card(operating_points=ops)
    assert raw_threshold(card, "sensitivity>=0.90/part", "HAND") == by_part["HAND"]
    assert raw_threshold(card, "sensitivity>=0.90/part", "ELBOW") == t_sens  # no part threshold: global
    assert threshold_for(np.ones(5), np.linspace(0, 1, 5), "specificity>=0.90", 0.5) is None


@pytest.mark.parametrize("field,value,match", [
    ("calibration", {"image": {"method": "platt", "a": -1.0, "b": 0.0},
                     "study": {"method": "platt", "a": 1.0, "b": 0.0}}, "calibration.image.a"),
    ("calibration", {"image": {"method": "platt", "a": 1.0, "b": 0.0}}, "exactly"),
    ("operating_points", {"youden": {"threshold": 1.5}}, "threshold"),
    ("operating_points", {"x": {"threshold": 0.5, "thresholds_by_part": {"HAND": -0.1}}}, "HAND"),
    ("gate", {"method": "m", "output": "gate", "threshold": float("nan")}, "non-finite"),
    ("gate", {"method": "m", "output": "gate", "threshold": "1"}, "gate.threshold"),
    ("gate", {"method": "m", "output": "probability", "threshold": 1.0}, "gate.output"),
])
def test_card_refuses_bad_trust_fields(field, value, match):
    with pytest.raises(ModelError, match=match):
        _card(**{field: value})


def test_format_1_cards_still_load_and_format_2_round_trips():
    card = _card(calibration={"image": {"method": "platt", "a": 2.0, "b": -1.0},
                              "study": {"method": "platt", "a": 1.0, "b": 0.0}},
                 gate={"method": "m", "output": "gate", "threshold": 1.5, "fit": {"n": 3}})
    assert ModelCard.from_props(card.to_props()) == card
    old = {k: v for k, v in card.to_dict().items() if k not in FORMAT_2_FIELDS}
    old["format"] = 1
    loaded = ModelCard.from_dict(old)
    assert all(getattr(loaded, k) is None for k in FORMAT_2_FIELDS)
    with pytest.raises(ModelError, match="unknown fields"):
        ModelCard.from_dict({**old, "gate": None})  # a format-1 card with format-2 fields is malformed


def test_per_part_thresholds_become_the_default_only_when_they_win_on_val_by_the_margin():
    from edge.trust import default_operating_point
    from murakit.evaluation.calibration import PER_PART_MARGIN

    rng = np.random.default_rng(5)
    parts = np.array(["HAND", "WRIST"])[rng.integers(0, 2, 600)]
    labels = rng.integers(0, 2, 600)
    shift = np.where(parts == "HAND", 0.3, -0.3)  # each part needs its own threshold
    probs = np.clip(0.5 + shift + 0.12 * (labels - 0.5) + rng.normal(0, 0.03, 600), 0, 1)
    ops = fit_operating_points(labels, probs, np.arange(600), parts, youden=0.5)
    assert ops["youden/part"]["val_kappa_gain"] >= PER_PART_MARGIN and ops["youden/part"]["default"] is True
    assert default_operating_point(_card(operating_points=ops)) == "youden/part"
    same = np.clip(0.5 + 0.2 * (labels - 0.5) + rng.normal(0, 0.05, 600), 0, 1)  # one threshold fits all
    ops = fit_operating_points(labels, same, np.arange(600), parts, youden=0.5)
    assert "default" not in ops["youden/part"] and default_operating_point(_card(operating_points=ops)) == "youden"


def test_report_gives_the_ece_floor_beside_the_ece():
    from murakit.evaluation.trust import calibration_metrics, markdown_lines

    y, p, g = _views(80, 11, temperature=3.0)  # 80 test studies, an overconfident model
    c = fit_calibration(*_views(400, 12, temperature=3.0))
    card = _card(calibration=c)  # the fit's record (form, prior, cv_log_loss) is valid card content
    assert ModelCard.from_props(card.to_props()) == card
    m = calibration_metrics(card, y, p, g, n=200)
    for level in ("image", "study"):
        assert 0 < m[level]["ece_floor"] < m[level]["ece_floor_q95"] < 0.3
        assert m[level]["ece_raw"] > m[level]["ece_floor_q95"]  # the raw score's miscalibration is not noise
    text = "\n".join(markdown_lines({"models": {"cnn": {"image": m["image"], "study": m["study"]}}}))
    assert f"{m['study']['ece_floor']:.3f} / {m['study']['ece_floor_q95']:.3f}" in text


def test_calibration_check_scores_a_run_and_refuses_bad_input(tmp_path, capsys):
    for split, (n, seed) in {"val": (60, 13), "test": (80, 14)}.items():
        y, p, g = _views(n, seed, temperature=2.0)
        rows = "".join(f"x/{i}.png,s{gi},WRIST,{yi},{pi:.8f}\n" for i, (yi, pi, gi) in enumerate(zip(y, p, g)))
        (tmp_path / "run" / "cnn").mkdir(parents=True, exist_ok=True)
        (tmp_path / "run" / "cnn" / f"predictions_{split}.csv").write_text("path,study,part,label,probability\n" + rows)
    assert calibration_check.main([str(tmp_path / "run"), "--resamples", "50"]) == 0
    out = capsys.readouterr().out.splitlines()
    rows = [r.split(" | ") for r in out[2:]]
    assert [r[4] for r in rows] == ["raw", "old", "prev", "new", "new-1se"] and all(r[1] == "cnn" for r in rows)
    assert len({r[-1] for r in rows}) == 1  # study AUROC: the same under every calibrator
    assert rows[0][3] == "80/" + str(len(_views(80, 14)[0]))
    assert calibration_check.main([str(tmp_path / "missing")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not a run folder" in err[0]
    assert calibration_check.main([str(tmp_path)]) == 1  # a folder without predictions
    assert "no RUN" in capsys.readouterr().err
