"""``murakit verify --run RUN``: prove the exported models still give the lab's outputs.

Prints one table (card, golden, Keras and OpenCV DNN checks per model; see
:mod:`murakit.pipeline.verify`). Exit code 0 when every check passes, 1 on any drift.
"""

from __future__ import annotations

from murakit.cli import add_run_argument


def add_arguments(parser) -> None:
    add_run_argument(parser)
    parser.add_argument("--threads", type=int, help="onnxruntime intra-op threads")
    parser.add_argument("--no-keras", action="store_true", help="skip the Keras comparison (no TensorFlow)")
    parser.add_argument("--no-opencv", action="store_true", help="skip the OpenCV DNN comparison")


def run(args) -> int:
    from murakit.pipeline.verify import verify

    res = verify(args.run, threads=args.threads, keras=not args.no_keras, opencv=not args.no_opencv)
    n, bad = len(res.figures["rows"]), res.figures["failed"]
    print(f"verify: {'FAIL' if bad else 'PASS'} ({n - bad}/{n} checks ok)")
    return 1 if bad else 0
