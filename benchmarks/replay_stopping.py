"""Replay early stopping on curves recorded by ``tune_training.py`` (exact: stopping only truncates).

    python benchmarks/replay_stopping.py DIR/curves.jsonl [--patience 10] [--cap 100]

For each (recipe, seed) curve: the epoch where early stopping with ``--patience`` would stop
(or the end of the curve / the cap), the best validation epoch up to there, the test study
AUROC of that epoch (what the recipe would report), and the best test AUROC of the whole
curve (what an oracle would pick). Then the mean per recipe over seeds. A curve shorter than
the stop point is marked "cut": the recorded budget ended first.
"""
from __future__ import annotations

import argparse
import collections
import json


def monitored(curve: list[dict], smooth: int) -> list[float]:
    """The monitored value per epoch: val AUROC, or its trailing mean over ``smooth`` epochs."""
    vals = [r["val_auroc"] for r in curve]
    return [sum(vals[max(0, i - smooth + 1):i + 1]) / len(vals[max(0, i - smooth + 1):i + 1])
            for i in range(len(vals))]


def replay(curve: list[dict], patience: int, cap: int, smooth: int = 1) -> dict:
    """Early stopping on (smoothed) val AUROC (ties: lower val loss wins, as in deep.training)."""
    best, best_loss, best_i, wait = -1.0, float("inf"), 0, 0
    stop = None
    mon = monitored(curve, smooth)
    for i, r in enumerate(curve[:cap]):
        if mon[i] > best or (mon[i] == best and r["val_loss"] < best_loss) or i == 0:
            best, best_loss, best_i, wait = mon[i], r["val_loss"], i, 0
        else:
            wait += 1
            if wait >= patience:
                stop = i
                break
    end = stop if stop is not None else min(len(curve), cap) - 1
    reason = "early" if stop is not None else ("cap" if len(curve) >= cap else "cut")
    return {"stop_epoch": end + 1, "best_epoch": best_i + 1, "val": curve[best_i]["val_auroc"],
            "test": curve[best_i]["test_study_auroc"], "oracle": max(r["test_study_auroc"] for r in curve),
            "reason": reason, "seconds": sum(r["seconds"] for r in curve[:end + 1])}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("curves", nargs="+")
    p.add_argument("--patience", type=int, default=10)
    p.add_argument("--cap", type=int, default=100)
    p.add_argument("--smooth", type=int, default=1, help="monitor the trailing mean of this many epochs")
    args = p.parse_args(argv)
    curves = collections.defaultdict(list)
    for path in args.curves:
        with open(path) as f:
            for line in f:
                r = json.loads(line)
                curves[(r["name"], r["seed"])].append(r)
    per_recipe = collections.defaultdict(list)
    print("recipe     seed stop best  val    test   oracle reason  minutes")
    for (name, seed), curve in sorted(curves.items()):
        curve.sort(key=lambda r: r["epoch"])
        r = replay(curve, args.patience, args.cap, args.smooth)
        per_recipe[name].append(r)
        print(f"{name:10s} {seed:4d} {r['stop_epoch']:4d} {r['best_epoch']:4d}  {r['val']:.3f}  "
              f"{r['test']:.3f}  {r['oracle']:.3f}  {r['reason']:6s} {r['seconds'] / 60:5.1f}")
    print("\nrecipe     n  mean test  min test  mean stop")
    for name, rs in sorted(per_recipe.items()):
        t = [r["test"] for r in rs]
        print(f"{name:10s} {len(rs)}  {sum(t) / len(t):.3f}      {min(t):.3f}     "
              f"{sum(r['stop_epoch'] for r in rs) / len(rs):.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
