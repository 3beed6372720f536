"""The edge runtime's third-party dependencies: the supported ranges, and one line when one is unusable.

A device's numpy, OpenCV and onnxruntime are not always chosen by whoever runs ``edge-predict``
(vendor images, pinned fleets, boards whose wheels lag). When one of them is missing or fails
to import - the classic case is an onnxruntime built for NumPy 1.x beside NumPy 2, whose import
prints a page of text and raises ``ImportError`` - the commands say so in one line naming the
package, its installed version and the range this release supports, and exit 2
(:func:`require`, called by :mod:`edge.launch` before anything else is imported).

The ranges below are pyproject.toml's (``tests/test_floors.py`` checks they agree), and their
lower bounds are the versions ``make floors`` installs and runs (docs/compatibility.md).
Stdlib only: this module must import when every dependency is broken.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.metadata
import os
import re
import sys
import tempfile
import threading

from edge.errors import first_line

# (import name, distributions that provide it (the first is the one pyproject.toml names), range)
NUMPY = ("numpy", ("numpy",), ">=1.24")
OPENCV = ("cv2", ("opencv-python-headless", "opencv-python", "opencv-contrib-python-headless",
                  "opencv-contrib-python"), ">=4.10.0.84")
ONNXRUNTIME = ("onnxruntime", ("onnxruntime", "onnxruntime-gpu", "onnxruntime-openvino", "onnxruntime-directml"),
               ">=1.18.1")
RUNTIME = (NUMPY, OPENCV, ONNXRUNTIME)  # numpy first: OpenCV and onnxruntime fail when it does
PYDICOM = ("pydicom", ("pydicom",), ">=3.0.1")  # the dicom extra; imported only when a DICOM file is read


def installed_version(dists) -> tuple | None:
    """``(distribution, version)`` of the first of ``dists`` that is installed, from its metadata
    (so a package that cannot be imported still has a version), or None."""
    for dist in dists:
        try:
            return dist, importlib.metadata.version(dist)
        except (importlib.metadata.PackageNotFoundError, ValueError):
            continue
    return None


def _release(version: str) -> tuple:
    """Leading numeric release of a version string: ``1.17.3`` -> (1, 17, 3), ``2.0.0rc1`` -> (2, 0, 0)."""
    m = re.match(r"\d+(?:\.\d+)*", version.strip())
    return tuple(int(p) for p in m.group(0).split(".")) if m else ()


def in_range(version: str, spec: str) -> bool | None:
    """Whether ``version`` satisfies ``spec`` (``>=``, ``>``, ``<``, ``<=``, ``==`` clauses joined by
    commas, release numbers only); None when the version cannot be read."""
    v = _release(version)
    if not v:
        return None
    ops = {">=": lambda a, b: a >= b, "<=": lambda a, b: a <= b, ">": lambda a, b: a > b,
           "<": lambda a, b: a < b, "==": lambda a, b: a == b}
    for clause in filter(None, (c.strip() for c in spec.split(","))):
        op = re.match(r"[<>=]=?", clause).group(0)
        bound = _release(clause[len(op):])
        width = max(len(v), len(bound))  # 1.24 == 1.24.0
        if not ops[op](v + (0,) * (width - len(v)), bound + (0,) * (width - len(bound))):
            return False
    return True


@contextlib.contextmanager
def _captured_stderr():
    """Collect what an import writes to stderr, Python-level and C-level (fd 2), and yield a
    getter for it. A NumPy-1.x extension imported under NumPy 2 prints a page of text with a
    ``Traceback`` header before it raises; a user must see one line, not that."""
    text = []
    saved_py = sys.stderr
    try:
        fd = sys.stderr.fileno() if sys.stderr is not None else 2
        saved_fd = os.dup(fd)
    except (AttributeError, ValueError, OSError):  # a replaced stderr without a descriptor
        fd = saved_fd = None
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        try:
            if saved_fd is not None:
                sys.stderr.flush()
                os.dup2(tmp.fileno(), fd)
            sys.stderr = _Sink(text)
            yield lambda: "".join(text) + _read(tmp)
        finally:
            sys.stderr = saved_py
            if saved_fd is not None:
                os.dup2(saved_fd, fd)
                os.close(saved_fd)


class _Sink:
    """A write-only text stream that keeps what it is given."""

    def __init__(self, into: list):
        self.into = into

    def write(self, s: str) -> int:
        self.into.append(s)
        return len(s)

    def flush(self) -> None:
        pass


def _read(tmp) -> str:
    tmp.flush()
    tmp.seek(0)
    return tmp.read().decode("utf-8", "replace")


_NUMPY_ABI = re.compile(r"compiled using NumPy (\S+) cannot be run in\s+NumPy (\S+)")


def _why(error: BaseException, written: str = "") -> str:
    """``Type: first line`` of the error, or of the first error in its chain that has a message;
    for a bare error, what the import wrote. onnxruntime 1.17 under NumPy 2 raises a bare
    ``ImportError`` after NumPy printed why (a module built for NumPy 1.x), so that is the line."""
    seen, e = set(), error
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if str(e).strip():
            return f"{type(e).__name__}: {first_line(e, 160)}"
        e = e.__cause__ or e.__context__
    abi = _NUMPY_ABI.search(written)
    if abi:
        return f"{type(error).__name__}: built for NumPy {abi.group(1)}, cannot run with NumPy {abi.group(2)}"
    said = [ln.strip() for ln in written.splitlines() if ln.strip() and not ln[0].isspace()
            and not ln.startswith(("Traceback", "  File"))]
    return f"{type(error).__name__}: {said[0][:160]}" if said else type(error).__name__


_CAPTURE = threading.Lock()  # one capture at a time: fd 2 is process-wide


def problem(module: str, dists, spec: str, hint: str = "", quiet: bool = True) -> str | None:
    """One line saying why ``module`` is unusable (missing, or its import fails), or None.

    The import runs with stderr captured: on success whatever it wrote is passed on
    unchanged; on failure it is dropped and the exception's first line is quoted instead.
    ``hint`` is the command that installs a supported version (default ``pip install 'dist<spec>'``;
    an extra's package names the extra instead). ``quiet=False`` imports without the capture
    (for imports that may happen on a server's worker threads, whose output must not be lost).
    """
    if module in sys.modules and sys.modules[module] is not None:
        return None
    found = installed_version(dists)
    want = f"{dists[0]}{spec}"
    hint = hint or f"pip install '{want}'"
    error, written = None, ""
    try:
        if not quiet:
            raise OSError("no capture asked for")
        with _CAPTURE, _captured_stderr() as noise:
            try:
                importlib.import_module(module)
            except Exception as e:  # noqa: BLE001  a broken extension raises ImportError, AttributeError, OSError...
                error = e
            written = noise()
    except OSError:  # no capture (asked for, or no temp file): a plain import
        try:
            importlib.import_module(module)
        except Exception as e:  # noqa: BLE001
            error = e
    if error is None:
        if written:
            sys.stderr.write(written)
        return None
    if found is None and isinstance(error, ModuleNotFoundError) and error.name == module:
        return f"{dists[0]} is not installed; murakit's edge runtime supports {want}: {hint}"
    why = _why(error, written)
    if found is None:
        return f"{module} cannot be imported ({why}); murakit's edge runtime supports {want}: {hint}"
    dist, version = found
    fits = in_range(version, spec)
    verdict = "outside the supported range" if fits is False else "within the supported range; reinstall it"
    if fits is not False:
        hint = f"pip install --force-reinstall '{dist}=={version}'"
    return f"{dist} {version} cannot be imported ({why}); murakit's edge runtime supports {want} ({verdict}): {hint}"


def check(deps=RUNTIME) -> str | None:
    """The first unusable dependency's line, or None when all of ``deps`` import."""
    for module, dists, spec in deps:
        line = problem(module, dists, spec)
        if line:
            return line
    return None


def require(prog: str, deps=RUNTIME) -> int:
    """0 when ``deps`` import; else print ``prog: error: <line>`` on stderr and return 2."""
    line = check(deps)
    if line is None:
        return 0
    print(f"{prog}: error: {line}", file=sys.stderr)
    return 2
