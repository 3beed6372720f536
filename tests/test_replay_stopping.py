"""benchmarks/replay_stopping.py: the replay that docs/training.md's tables come from."""
import importlib.util
import json
from dataclasses import replace
from pathlib import Path

import pytest

from deep.config import TrainConfig

_SPEC = importlib.util.spec_from_file_location(
    "replay_stopping", Path(__file__).resolve().parents[1] / "benchmarks" / "replay_stopping.py")
rs = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(rs)

# Chance for 10 epochs, a rise, then a plateau: without warm-up the rule cuts the rate in the
# chance phase; with a 15-epoch warm-up it keeps 1e-3 until the plateau after the rise.
AUROCS = [0.50, 0.52, 0.49, 0.51, 0.50, 0.52, 0.50, 0.51, 0.49, 0.50,
          0.60, 0.70, 0.80, 0.85, 0.86] + [0.86] * 20


def _recorded(aurocs, tcfg, test=None):
    """A curve as training records it under ``tcfg``: each row carries the rate it was trained with."""
    rows = [{"epoch": e, "val_auroc": a, "val_loss": 1.0 - a, "lr": 0.0, "seconds": 1.0}
            for e, a in enumerate(aurocs, 1)]
    for r, t in zip(rows, test or []):
        r["test_study_auroc"] = t
    rec = rs.replay(rows, tcfg)
    for r, lr in zip(rows, rec["lrs"]):
        r["lr"] = lr
    return rows[:rec["stop_epoch"]]


def test_replay_is_exact_until_the_rule_departs_from_the_recorded_learning_rate():
    cold, warm = replace(TrainConfig(), warmup_epochs=0), TrainConfig()
    curve = _recorded(AUROCS, cold)
    again = rs.replay(curve, cold)
    assert again["lrs"] == [r["lr"] for r in curve]  # the recording rule reproduces its own path
    assert again["exact_to"] == again["stop_epoch"] == len(curve) and again["reason"] == "early"
    first_drop = next(r["epoch"] for r in curve if r["lr"] < 1e-3)
    assert first_drop <= 10  # cut in the chance phase
    other = rs.replay(curve, warm)
    assert other["exact_to"] == first_drop - 1  # warm-up keeps 1e-3 there: the curve is no longer its run
    assert all(lr == 1e-3 for lr in other["lrs"][:15])
    assert rs.lr_path([1e-3, 1e-3, 3e-4, 3e-4, 9e-5]) == "1e-3, 3e-4 from 3, 9e-5 from 5"


def test_cut_curve_and_kept_epoch_test_auroc():
    warm = TrainConfig()
    test = [0.5 + 0.01 * e for e in range(len(AUROCS))]
    curve = _recorded(AUROCS, warm, test)[:20]  # the recording ended before the rule stops
    r = rs.replay(curve, warm)
    assert r["reason"] == "cut" and r["stop_epoch"] == 20
    assert r["test"] == test[r["best_epoch"] - 1] and r["oracle"] == max(test[:20])


def _write_curves(path, names_seeds):
    test = [0.6 + 0.001 * e for e in range(len(AUROCS))]
    rows = [{"name": name, "seed": seed, **row} for name, seed in names_seeds
            for row in _recorded(AUROCS, TrainConfig(), test)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_markdown_tables(tmp_path, capsys):
    curves = tmp_path / "curves.jsonl"
    _write_curves(curves, [("r10", 0), ("r10", 1), ("none", 0)])
    assert rs.main([str(curves), "--markdown", "--against", "smooth=1,auroc_tolerance=0"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "A: recipe; B: smooth=1, auroc_tolerance=0"
    table = [line for line in lines if line.startswith("|")]
    assert table[0].startswith("| curve | seed | A stop | A kept | A test AUROC | A exact to | B stop")
    assert [row.split(" | ")[:2] for row in table[2:]] == [["| none", "0"], ["| r10", "0"], ["| r10", "1"]]
    assert rs.main([str(curves), "--markdown", "--by-name"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert len(table) == 4 and table[2].startswith("| none |") and table[2].count("(") == 1  # no seed 1


def test_history_csv_and_clear_errors(tmp_path, capsys):
    run = tmp_path / "P9" / "cnn"
    run.mkdir(parents=True)
    rows = _recorded(AUROCS, TrainConfig())
    (run / "history.csv").write_text("epoch,val_loss,val_auroc,lr,seconds\n" + "".join(
        f"{r['epoch']},{r['val_loss']},{r['val_auroc']},{r['lr']},1.0\n" for r in rows))
    assert rs.main(["--history", str(run / "history.csv"), "--markdown", "--lr-path"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "| curve | stop | kept | exact to | learning rate |" and out[2].startswith("| P9 |")
    (tmp_path / "bad.csv").write_text("epoch,val_auroc\n1,0.5\n")
    for argv, msg in [(["--history", str(tmp_path / "bad.csv")], "lacks val_loss, lr"),
                      ([str(tmp_path / "missing.jsonl")], "cannot read the curves"),
                      (["--history", str(run / "history.csv"), "--against", "smoth=1"], "KEY one of"),
                      ([], "give curves.jsonl")]:
        with pytest.raises(SystemExit) as e:
            rs.main(argv)
        assert e.value.code == 2 and msg in capsys.readouterr().err
