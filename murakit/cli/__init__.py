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
    ("calibrate", "murakit.cli.calibrate", "refit a trained model's calibrators from its val predictions"),
    ("export", "murakit.cli.export", "convert models to ONNX, quantise, record golden outputs"),
    ("verify", "murakit.cli.verify", "check exported models against golden outputs and Keras"),
    ("bench", "murakit.cli.bench", "benchmark all models of a run and write the report"),
    ("demo", "murakit.cli.demo", "run the whole pipeline on the synthetic default"),
    ("score", "murakit.cli.score", "score an archive of radiographs with an exported model (resumable)"),
    ("evaluate", "murakit.cli.evaluate", "the MURA protocol's metrics of a scored folder"),
]
TRAIN_COMMANDS = [
    ("baseline", "murakit.cli.train_baseline", "train the HOG + SVM baseline"),
    ("cnn", "murakit.cli.train_cnn", "train the CNN"),
]


def add_run_argument(parser) -> None:
    """``--run RUN``, the run folder every stage command reads and writes (default ``layout.DEFAULT_RUN``)."""
    from murakit.layout import DEFAULT_RUN

    parser.add_argument("--run", default=str(DEFAULT_RUN), help="run folder (default: %(default)s)")


def _add(sub, name, module, help_):
    p = sub.add_parser(name, help=help_, description=help_)
    importlib.import_module(module).add_arguments(p)
    # also accepted after the command; SUPPRESS keeps `murakit --verbose CMD` from being reset
    p.add_argument("--verbose", action="store_true", default=argparse.SUPPRESS,
                   help="show the frameworks' own log lines and full tracebacks")
    p.set_defaults(_module=module)
    return p


# Which optional extra provides a module a command may need (see pyproject's extras).
EXTRA_OF_MODULE = {
    "tensorflow": "train", "keras": "train", "tf2onnx": "train", "onnx": "train", "skl2onnx": "train",
    "sklearn": "train", "skimage": "train", "matplotlib": "train", "tqdm": "train", "sympy": "train",
    "pydicom": "dicom", "pylibjpeg": "dicom", "fastapi": "serve", "uvicorn": "serve",
    "prometheus_client": "serve", "multipart": "serve", "ray": "scale", "pyarrow": "scale",
}


def missing_extra_message(e: ModuleNotFoundError) -> str:
    """One line naming the extra that provides a missing module."""
    top = (e.name or "").split(".")[0]
    extra = EXTRA_OF_MODULE.get(top)
    if extra is None:
        return f"missing Python module {top or e}; reinstall murakit (pip install '.[train]')"
    return f"this command needs the '{extra}' extra ({top} is not installed): pip install 'murakit[{extra}]'"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="murakit", description="Detect abnormal bone radiographs (MURA-v1.1 layout).")
    parser.add_argument("--version", action="version", version=f"murakit {__version__}")
    parser.add_argument("--verbose", action="store_true",
                        help="show the frameworks' own log lines and full tracebacks")
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
    from edge.errors import UserError, first_line
    from murakit.quiet import quiet_frameworks

    try:
        args = build_parser().parse_args(argv)
    except KeyboardInterrupt:  # Ctrl-C while the command modules load
        print("murakit: interrupted", file=sys.stderr)
        return 130
    if not getattr(args, "_module", None):
        build_parser().print_help(sys.stderr)
        return 2
    try:
        with quiet_frameworks(not args.verbose):
            return int(importlib.import_module(args._module).run(args) or 0)
    except UserError as e:  # every package's user-facing errors (edge.errors.UserError)
        print(f"murakit: error: {e}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as e:
        print(f"murakit: error: {missing_extra_message(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("murakit: interrupted; rerun the same command to continue", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `murakit ... | head`: the reader is gone, nothing more to say
        _quiet_stdout()
        return 0
    except Exception as e:
        if args.verbose:
            raise
        print(f"murakit: error: unexpected failure ({type(e).__name__}: {first_line(e)}); "
              "rerun with --verbose for the traceback", file=sys.stderr)
        return 2


def _quiet_stdout() -> None:
    """Point stdout at /dev/null so Python's exit-time flush does not raise again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


if __name__ == "__main__":
    sys.exit(main())
