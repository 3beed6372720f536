"""``murakit train cnn --local-workers N``: a multi-worker training job on one machine.

Starts N ``murakit train cnn --strategy multi-worker`` processes, each with a ``TF_CONFIG`` that
names N free 127.0.0.1 ports and its own task index (worker 0 is the chief), streams their
output line by line with a ``[worker i]`` prefix, and stops them together: on Ctrl-C, or as
soon as one exits with an error (the others would only wait for it until their collective
timeout). The same command rerun resumes from the chief's last committed epoch.

It is for tests and for trying the multi-worker path without a cluster: on one machine the
workers share its cores, so it is not faster than one process (docs/training.md).
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

GRACE_SECONDS = 10.0  # after SIGTERM, before SIGKILL
SURVIVOR_SECONDS = 5.0  # after a worker fails: time for the others to print their own last line


def free_ports(n: int) -> list:
    """N distinct TCP ports free on 127.0.0.1 now (held together while picking, then released)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def tf_config(ports, index: int) -> str:
    """The TF_CONFIG of worker ``index`` in a cluster of 127.0.0.1 ``ports``."""
    return json.dumps({"cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]},
                       "task": {"type": "worker", "index": index}})


def _pump(proc, prefix: str, out, lock, done: threading.Event) -> None:
    """Copy a worker's output to ``out``, one prefixed line at a time (carriage returns end lines too).

    Ends at the pipe's end, or once ``done`` is set and the worker has exited: a process the
    worker started (multiprocessing's resource tracker) can hold the pipe's write end open after
    the worker is gone, and a pump waiting for that end would outlive the job and write into an
    ``out`` its owner has closed. A closed ``out`` ends the pump too.
    """
    fd, pending = proc.stdout.fileno(), b""

    def emit(lines) -> bool:
        try:
            for line in lines:
                if line.strip():
                    with lock:
                        out.write(f"{prefix}{line.decode('utf-8', 'replace')}\n")
                        out.flush()
        except (ValueError, OSError):  # out was closed under us: nobody is reading any more
            return False
        return True

    while True:
        if select.select([fd], [], [], 0.2)[0]:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            *lines, pending = (pending + chunk).replace(b"\r", b"\n").split(b"\n")
            if not emit(lines):
                return
        elif done.is_set() and proc.poll() is not None:
            break
    emit([pending])


def _stop(procs, grace: float = GRACE_SECONDS) -> None:
    """SIGTERM every live worker's process group, SIGKILL what is left after ``grace`` seconds."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        live = [p for p in procs if p.poll() is None]
        for p in live:
            try:
                os.killpg(p.pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + wait
        while any(p.poll() is None for p in live) and time.monotonic() < deadline:
            time.sleep(0.05)


def _describe(code: int) -> str:
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


def run_local_workers(n: int, argv, *, out=None, env=None) -> int:
    """Run ``python -m murakit *argv`` as workers 0..n-1 of one job; returns the job's exit code.

    0 when every worker succeeded; else the first failed worker's code (130 on Ctrl-C).
    """
    out = sys.stdout if out is None else out
    ports = free_ports(n)
    lock = threading.Lock()
    base = {**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1"}
    here = str(Path(__file__).resolve().parents[2])  # the workers import this murakit, not another install
    base["PYTHONPATH"] = os.pathsep.join([here, *filter(None, [base.get("PYTHONPATH")])])
    procs, pumps, done = [], [], threading.Event()
    try:
        for i in range(n):
            p = subprocess.Popen([sys.executable, "-m", "murakit", *argv],
                                 env={**base, "TF_CONFIG": tf_config(ports, i)},
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
            procs.append(p)
            t = threading.Thread(target=_pump, args=(p, f"[worker {i}] ", out, lock, done), daemon=True)
            t.start()
            pumps.append(t)
        with lock:
            out.write(f"[launcher] {n} workers on 127.0.0.1 ports {', '.join(map(str, ports))} (PIDs "
                      f"{', '.join(str(p.pid) for p in procs)}); worker 0 is the chief\n")
            out.flush()
        code = _wait(procs, out, lock)
    except KeyboardInterrupt:
        _stop(procs)
        with lock:
            out.write("[launcher] interrupted: stopped every worker; rerun the same command to resume\n")
        code = 130
    done.set()
    for t in pumps:
        t.join(timeout=5)
    return code


def _wait(procs, out, lock) -> int:
    """Wait until all workers succeed (0) or one fails: then stop the rest and return its code."""
    while True:
        codes = [p.poll() for p in procs]
        failed = [(i, c) for i, c in enumerate(codes) if c not in (None, 0)]
        if failed:
            i, code = failed[0]
            deadline = time.monotonic() + SURVIVOR_SECONDS
            while any(p.poll() is None for p in procs) and time.monotonic() < deadline:
                time.sleep(0.05)
            with lock:
                out.write(f"[launcher] worker {i} {_describe(code)}: stopping the job; rerun the same command "
                          "to resume from the chief's last checkpoint\n")
                out.flush()
            _stop(procs)
            return code if code > 0 else 1
        if all(c == 0 for c in codes):
            return 0
        time.sleep(0.1)
