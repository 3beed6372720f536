"""Replay the training recipe's stopping rule on curves recorded by ``tune_training.py``.

    python benchmarks/replay_stopping.py DIR/curves.jsonl [--patience 10] [--smooth 3] \
        [--auroc-tolerance 0.005] [--min-loss-delta 0.001] [--cap 100]

Feeds each (recipe, seed) curve's validation AUROC and loss, epoch by epoch, to
``deep.schedule_step`` (the code training runs) with the given settings, and prints where
training would stop, the epoch it would keep, that epoch's test study AUROC (what the recipe
reports) and the best test AUROC of the whole curve (an oracle). Exact for the stopping and
the kept epoch; the learning-rate drops are the ones the curve was recorded with. A curve
that ends before the rule stops it is marked "cut" (its recorded budget ended first).
"""
from __future__ import annotations

import argparse
import collections
import json
from dataclasses import replace


def replay(curve: list[dict], tcfg) -> dict:
    from deep.training import schedule_step

    state = {"epoch": 0, "best_auroc": -1.0, "best_epoch": 0, "wait": 0, "lr_wait": 0,
             "stopped_early": False, "stop_reason": "", "history": []}
    for r in curve[:tcfg.max_epochs]:
        schedule_step(state, tcfg, {k: r[k] for k in ("epoch", "val_auroc", "val_loss", "lr")})
        if state["stop_reason"]:
            break
    end, best = state["epoch"], state["best_epoch"]
    reason = {"early_stop": "early", "max_epochs": "cap"}.get(state["stop_reason"], "cut")
    return {"stop_epoch": end, "best_epoch": best, "val": state["best_auroc"],
            "test": curve[best - 1]["test_study_auroc"],
            "oracle": max(r["test_study_auroc"] for r in curve), "reason": reason,
            "seconds": sum(r["seconds"] for r in curve[:end])}


def main(argv=None) -> int:
    from deep.config import TrainConfig

    t = TrainConfig()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("curves", nargs="+")
    p.add_argument("--patience", type=int, default=t.patience)
    p.add_argument("--smooth", type=int, default=t.smooth)
    p.add_argument("--auroc-tolerance", type=float, default=t.auroc_tolerance)
    p.add_argument("--min-loss-delta", type=float, default=t.min_loss_delta)
    p.add_argument("--cap", type=int, default=t.max_epochs)
    args = p.parse_args(argv)
    tcfg = replace(t, patience=args.patience, smooth=args.smooth, auroc_tolerance=args.auroc_tolerance,
                   min_loss_delta=args.min_loss_delta, max_epochs=args.cap)
    curves = collections.defaultdict(list)
    for path in args.curves:
        with open(path) as f:
            for line in f:
                r = json.loads(line)
                curves[(r["name"], r["seed"])].append(r)
    per_recipe = collections.defaultdict(list)
    print("recipe     seed stop kept  val    test   oracle reason  minutes")
    for (name, seed), curve in sorted(curves.items()):
        curve.sort(key=lambda r: r["epoch"])
        r = replay(curve, tcfg)
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
