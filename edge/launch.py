"""Console-script entry points: check the runtime dependencies, then run the command.

``edge-predict``, ``edge-verify`` and ``edge-serve`` start here rather than in :mod:`edge.cli`,
because importing the command modules imports numpy (and they import OpenCV and onnxruntime
on first use): a missing or broken dependency would end in a traceback before any of our code
ran. This module imports only the standard library and :mod:`edge.deps`, which turns such a
failure into one line naming the package, its installed version and the supported range
(exit 2).
"""

from __future__ import annotations

import importlib
import sys

from edge.deps import RUNTIME, require


def _launch(prog: str, target: str, argv) -> int:
    code = require(prog, RUNTIME)
    if code:
        return code
    module, func = target.split(":")
    return getattr(importlib.import_module(module), func)(argv)


def predict_main(argv=None) -> int:
    """``edge-predict``: :func:`edge.cli.predict_main` once numpy, OpenCV and onnxruntime import."""
    return _launch("edge-predict", "edge.cli:predict_main", argv)


def verify_main(argv=None) -> int:
    """``edge-verify``: :func:`edge.cli.verify_main` once numpy, OpenCV and onnxruntime import."""
    return _launch("edge-verify", "edge.cli:verify_main", argv)


def serve_main(argv=None) -> int:
    """``edge-serve``: :func:`edge.serve.cli.main` once numpy, OpenCV and onnxruntime import (the
    serve extra's own packages are checked by that command, which names the extra)."""
    return _launch("edge-serve", "edge.serve.cli:main", argv)


if __name__ == "__main__":  # python -m edge.launch predict|verify|serve ARGS
    commands = {"predict": predict_main, "verify": verify_main, "serve": serve_main}
    if len(sys.argv) < 2 or sys.argv[1] not in commands:
        print(f"usage: python -m edge.launch {{{'|'.join(commands)}}} ARGS", file=sys.stderr)
        sys.exit(2)
    sys.exit(commands[sys.argv[1]](sys.argv[2:]))
