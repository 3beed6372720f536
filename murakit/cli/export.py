"""``murakit export --run RUN``: CNN -> ONNX (+ INT8), baseline ONNX, golden sets.

Exit code 0 when every available model was exported; an INT8 model refused by the accuracy
gate or because it is not faster than float on this machine is *not* an error (the float model
is the deliverable and the refusal is printed in one line and recorded in export.json) unless
``--strict-int8`` is given, which makes it exit 1.
"""

from __future__ import annotations

from murakit.cli import add_run_argument
from murakit.pipeline.export import CALIBRATION_COUNT, GOLDEN_COUNT, MAX_INT8_DROP, MAX_INT8_LATENCY_RATIO


def add_arguments(parser) -> None:
    add_run_argument(parser)
    parser.add_argument("--golden", type=int, default=GOLDEN_COUNT,
                        help=f"validation images in each golden set (default {GOLDEN_COUNT})")
    parser.add_argument("--calibration", type=int, default=CALIBRATION_COUNT,
                        help=f"train images for INT8 calibration, first by sorted path (default {CALIBRATION_COUNT})")
    parser.add_argument("--max-int8-drop", type=float, default=MAX_INT8_DROP,
                        help=f"largest accepted study-AUROC drop of INT8 vs float on val (default {MAX_INT8_DROP})")
    parser.add_argument("--max-int8-latency-ratio", type=float, default=MAX_INT8_LATENCY_RATIO,
                        help="ship INT8 only when its latency / float's median is below this at batch 1 and 32 "
                             f"on this machine (default {MAX_INT8_LATENCY_RATIO}: strictly faster)")
    parser.add_argument("--no-int8", action="store_true", help="skip INT8 quantization")
    parser.add_argument("--strict-int8", action="store_true", help="exit 1 when the INT8 model is refused")
    parser.add_argument("--force", action="store_true", help="export again even if export.json is up to date")


def run(args) -> int:
    from murakit.pipeline.export import ExportOptions, export_run

    opts = ExportOptions(golden=args.golden, calibration=args.calibration, max_int8_drop=args.max_int8_drop,
                         int8=not args.no_int8, strict_int8=args.strict_int8,
                         max_int8_latency_ratio=args.max_int8_latency_ratio)
    result = export_run(args.run, opts, force=args.force)
    return 1 if result.figures["int8_refused"] else 0
