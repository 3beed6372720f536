"""The ``murakit`` command line: one subcommand per pipeline stage.

Each subcommand lives in ``murakit/cli/<name>.py`` with ``add_arguments(parser)`` and
``run(args) -> int``. Those modules import TensorFlow & co. inside ``run``, so building the
parser (and ``murakit synth --help``) stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from murakit import __version__

# (command, module, help). "train" has its own sub-subcommands below.
COMMANDS = [
    ("synth", "murakit.cli.synth", "write a synthetic MURA-v1.1-shaped data set"),
    ("prepare", "murakit.cli.prepare", "preprocess every image once into the run's cache"),
    ("explore", "murakit.cli.explore", "audit a data set: counts, sizes, exposure, inversion"),
    ("explain", "murakit.cli.explain", "write CAM / Grad-CAM overlays for images"),
    ("export", "murakit.cli.export", "convert models to ONNX, quantise, record golden outputs"),
    ("verify", "murakit.cli.verify", "check exported models against golden outputs and Keras"),
    ("bench", "murakit.cli.bench", "benchmark all models of a run and write the report"),
    ("demo", "murakit.cli.demo", "run the whole pipeline on the synthetic default"),
]
TRAIN_COMMANDS = [
    ("baseline", "murakit.cli.train_baseline", "train the HOG + SVM baseline"),
    ("cnn", "murakit.cli.train_cnn", "train the CNN"),
]


def _add(sub, name, module, help_):
    p = sub.add_parser(name, help=help_, description=help_)
    importlib.import_module(module).add_arguments(p)
    p.set_defaults(_module=module)
    return p


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="murakit", description="Detect abnormal bone radiographs (MURA-v1.1 layout).")
    parser.add_argument("--version", action="version", version=f"murakit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module, help_ in COMMANDS[:3]:
        _add(sub, name, module, help_)
    train = sub.add_parser("train", help="train a model (baseline or cnn)")
    tsub = train.add_subparsers(dest="model", metavar="MODEL")
    for name, module, help_ in TRAIN_COMMANDS:
        _add(tsub, name, module, help_)
    for name, module, help_ in COMMANDS[3:]:
        _add(sub, name, module, help_)
    return parser


def main(argv=None) -> int:
    """Run the CLI; returns the exit code (0 ok, 1 partial failure, 2 error, 130 interrupted)."""
    from edge.errors import EdgeError
    from murakit.errors import MurakitError

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ start-up chatter is not for users
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_module", None):
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(importlib.import_module(args._module).run(args) or 0)
    except (MurakitError, EdgeError) as e:
        print(f"murakit: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("murakit: interrupted; rerun the same command to continue", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
