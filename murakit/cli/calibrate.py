"""``murakit calibrate --run RUN``: refit a trained model's calibrators and operating points.

Rewrites ``RUN/<model>/card.json`` from ``RUN/<model>/predictions_val.csv`` with today's fitting
rule, without retraining (see :mod:`murakit.pipeline.calibrate`); then ``murakit export``
carries the new card into the ONNX files and ``murakit bench --force`` reports the new ECEs.
"""

from __future__ import annotations

from murakit.cli import add_run_argument


def add_arguments(parser) -> None:
    add_run_argument(parser)
    parser.add_argument("--model", choices=("cnn", "baseline"), action="append",
                        help="only this model (repeatable; default: every trained model of the run)")
    parser.add_argument("--force", action="store_true", help="rewrite the card even if its calibrators are current")


def run(args) -> int:
    from murakit.pipeline.calibrate import calibrate_run

    res = calibrate_run(args.run, models=args.model, force=args.force)
    if res.status == "done":
        print(f"calibrate: done; now `murakit export --run {args.run}` (the exports are stale) "
              f"and `murakit bench --run {args.run} --force`")
    return 0
