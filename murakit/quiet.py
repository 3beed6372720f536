"""Keep TensorFlow's start-up chatter away from users (``--verbose`` shows it again).

TensorFlow writes 6-8 lines to file descriptor 2 when it starts (absl's "All log messages
before absl::InitializeLog()", oneDNN and CUDA-driver notes, an error-level "failed call to
cuInit" on a CPU machine), from C++, before ``TF_CPP_MIN_LOG_LEVEL`` applies. They are not
for users. :func:`quiet_frameworks` points fd 2 at a pipe for the duration of a command and
forwards everything except those lines, so murakit's own messages and progress bars still
reach the terminal unchanged.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import select
import sys
import threading
import warnings

# C++ log lines (I1126 06:30:00.123 ..., or I0000 00:00:1795677653.0 ... with seconds since the
# epoch before absl sets its clock; Ray's [2026-11-26 07:21:06,795 E 1 1] core_worker.cc:2465: ...),
# absl's pre-init notice, and the
# Python-side notices TensorFlow, Keras and tf2onnx print at import or first use.
NOISE = re.compile(
    rb"^(?:[IWEF]\d{4} \d\d:\d\d:\d+\.\d+\s+\d+ \S+:\d+\]"
    rb"|\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ [IWEF] \d+ \d+\] \S+:\d+:"  # Ray's C++ core
    rb"|WARNING: All log messages before absl::InitializeLog"
    rb"|To enable the following instructions: .*rebuild TensorFlow"
    rb"|oneDNN custom operations are on"
    rb"|INFO: Created TensorFlow Lite XNNPACK delegate"
    rb"|fully_quantize: \d)")


def _forward(read_fd: int, write_fd: int, stop: threading.Event) -> None:
    """Copy from the pipe to the real stderr, dropping noise lines; \r-updates pass through.

    Ends at EOF, or once ``stop`` is set and the pipe has nothing left to read: a process the
    command started may outlive it holding the pipe's write end (multiprocessing's resource
    tracker lives until the interpreter exits), so EOF alone could come seconds late or never.
    """
    pending = b""
    with os.fdopen(read_fd, "rb", buffering=0) as src:
        while True:
            ready, _, _ = select.select([src], [], [], 0.05)
            if not ready:
                if stop.is_set():
                    break
                continue
            chunk = src.read(65536)
            if not chunk:
                break
            pending += chunk
            *done, pending = re.split(rb"(?<=[\r\n])", pending)
            out = b"".join(piece for piece in done if not NOISE.match(piece))
            if out:
                os.write(write_fd, out)
    if pending and not NOISE.match(pending):
        os.write(write_fd, pending)


def _silence_python_logs() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # after start-up, even C++ errors are ours to report
    for name in ("tensorflow", "absl", "tf2onnx", "keras", "onnxruntime", "h5py"):
        logging.getLogger(name).setLevel(logging.ERROR)
    for module in ("keras", "tensorflow", "tf2onnx", "onnx", "google.protobuf", "absl", "h5py", "numpy"):
        warnings.filterwarnings("ignore", module=module)


@contextlib.contextmanager
def quiet_frameworks(enabled: bool = True):
    """Drop framework start-up lines from fd 2 while the block runs (no-op when not enabled)."""
    if not enabled:
        yield
        return
    _silence_python_logs()
    try:
        sys.stderr.flush()
        real = os.dup(2)
    except (OSError, ValueError, AttributeError):  # no real stderr (embedded, closed): nothing to filter
        yield
        return
    read_fd, write_fd = os.pipe()
    os.dup2(write_fd, 2)
    os.close(write_fd)
    stop = threading.Event()
    thread = threading.Thread(target=_forward, args=(read_fd, real, stop), daemon=True)
    thread.start()
    try:
        yield
    finally:
        with contextlib.suppress(Exception):
            sys.stderr.flush()
        os.dup2(real, 2)  # closes our write end: EOF, unless a child process still holds one
        stop.set()  # then the forwarder drains what is there and ends
        thread.join(timeout=5)
        os.close(real)
