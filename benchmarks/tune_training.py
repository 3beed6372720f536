"""Measure training recipes on a prepared run: one curve per (recipe, seed), written as JSON lines.

    python benchmarks/tune_training.py --run RUN --out DIR --name r10 --seed 0 \
        [--max-epochs 30] [--patience 1000] [--rotation 10] [--no-hflip] [--vflip] ...

Trains ``deep.train`` on RUN/prepared (train split; val split for the schedule) into
``DIR/NAME-sSEED/`` and appends one JSON object per epoch to ``DIR/curves.jsonl``: the
history row plus the test study AUROC of that epoch's model. With a large ``--patience`` the
whole curve is recorded, and early stopping with any smaller patience can be replayed from it
exactly (stopping only truncates the curve); ``benchmarks/replay_stopping.py`` does that.
This is how the augmentation defaults in docs/training.md were measured.
"""
from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path


def parse(argv=None):
    from deep import AugmentConfig, TrainConfig

    a, t = AugmentConfig(), TrainConfig()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--name", required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-epochs", type=int, default=30)
    p.add_argument("--patience", type=int, default=1000)
    p.add_argument("--lr-patience", type=int, default=t.lr_patience)
    p.add_argument("--min-steps", type=int, default=t.min_steps)
    p.add_argument("--no-augment", action="store_true")
    p.add_argument("--rotation", type=float, default=a.max_rotation)
    p.add_argument("--scale", type=float, default=a.scale)
    p.add_argument("--shift", type=float, default=a.shift)
    p.add_argument("--brightness", type=float, default=a.brightness)
    p.add_argument("--contrast", type=float, default=a.contrast)
    p.add_argument("--no-hflip", action="store_true")
    p.add_argument("--vflip", action="store_true")
    p.add_argument("--width", type=int, default=None)
    return p.parse_args(argv)


def configs(args):
    import deep

    aug = None if args.no_augment else deep.AugmentConfig(
        hflip=not args.no_hflip, vflip=args.vflip, max_rotation=args.rotation, scale=args.scale,
        shift=args.shift, brightness=args.brightness, contrast=args.contrast)
    tcfg = replace(deep.TrainConfig(), max_epochs=args.max_epochs, patience=args.patience,
                   lr_patience=args.lr_patience, min_steps=args.min_steps, seed=args.seed, augment=aug)
    return tcfg


def main(argv=None) -> int:
    import keras

    import deep
    from murakit.data.prepared import load_prepared
    from murakit.evaluation.metrics import study_level

    args = parse(argv)
    prep = load_prepared(args.run)
    pos = {s: prep.select(s) for s in ("train", "val", "test")}
    tr, va, te = pos["train"], pos["val"], pos["test"]
    cfg = deep.ModelConfig(size=prep.config.size, **({"width": args.width} if args.width else {}))
    tcfg = configs(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    curves = out / "curves.jsonl"

    def on_epoch_end(row, model):
        p = deep.predict(model, prep.images, prep.row[te])
        st = study_level(prep.label[te], p, prep.study[te])
        rec = {"name": args.name, "seed": args.seed, "run": str(args.run), **row,
               "test_study_auroc": round(deep.auroc(st["label"], st["prob"]), 6), "time": time.time()}
        with open(curves, "a") as f:
            f.write(json.dumps(rec) + "\n")

    keras.utils.set_random_seed(args.seed)
    lw = deep.class_weights(prep.label[tr], prep.study[tr])
    res = deep.train(prep.images, prep.row[tr], prep.label[tr], prep.row[va], prep.label[va], cfg,
                     out / f"{args.name}-s{args.seed}", tcfg, loss_weights=lw, val_groups=prep.study[va],
                     verbose=False, log=print, on_epoch_end=on_epoch_end)
    print(json.dumps({"name": args.name, "seed": args.seed, "best_epoch": res.best_epoch,
                      "epochs": len(res.history), "why": res.why_stopped(tcfg.patience),
                      "train_config": tcfg.to_dict()}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
