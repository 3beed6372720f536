"""Run edge-predict on files in subprocesses and judge each outcome (fuzz slice and campaign).

A run is *clean* when it ends in a result (exit 0, one JSON line, nothing on stderr) or in
exactly one ``edge-predict: error: ...`` line with exit 1 and nothing on stdout. The other
verdicts name what went wrong: a traceback, a hang (timeout), a wrong answer (a damaged file
scored, a valid file refused, a decoder complaint followed by a score), memory above the
per-input budget, or library log lines on stderr.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from edge.image import classify_decoder_output

# Run edge.cli as edge-predict and, at exit, append the process's own peak resident size
# (VmHWM, KiB) to $FUZZ_PEAK_FILE: ru_maxrss would include the parent's size across fork+exec.
WRAPPER = r"""
import atexit, os, re, runpy, sys
import edge
assert os.path.dirname(os.path.dirname(edge.__file__)) == os.environ["PYTHONPATH"], edge.__file__
def _peak():
    with open("/proc/self/status") as f:
        kib = re.search(r"VmHWM:\s+(\d+)", f.read()).group(1)
    with open(os.environ["FUZZ_PEAK_FILE"], "w") as f:
        f.write(kib)
atexit.register(_peak)
sys.argv = ["edge-predict", *sys.argv[1:]]
runpy.run_module("edge.cli", run_name="__main__")
"""
LIBRARY_MARKERS = ("libpng", "Corrupt JPEG", "Premature end", "[ WARN", "[ERROR", "OpenCV", "libjpeg",
                   "Exception ignored")


def run_edge_predict(code_root, files, model, timeout: float, peak_file, python=sys.executable) -> dict:
    """Run ``edge-predict FILES --model MODEL --json`` with ``code_root`` first on the path (from
    the peak file's folder: ``python -c`` puts the working folder before PYTHONPATH)."""
    env = {**os.environ, "PYTHONPATH": str(code_root), "FUZZ_PEAK_FILE": str(peak_file)}
    Path(peak_file).unlink(missing_ok=True)
    t0 = time.perf_counter()
    proc = subprocess.Popen([python, "-c", WRAPPER, *map(str, files), "--model", str(model), "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, start_new_session=True,
                            cwd=Path(peak_file).parent)
    try:
        out, err = proc.communicate(timeout=timeout)
        code = proc.returncode
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)  # the child we started, and only it
        out, err = proc.communicate()
        code = None
    seconds = time.perf_counter() - t0
    peak = Path(peak_file)
    kib = int(peak.read_text()) if peak.exists() and peak.read_text().strip() else None
    return {"code": code, "stdout": out.decode("utf-8", "replace"), "stderr": err.decode("utf-8", "replace"),
            "seconds": seconds, "peak_bytes": None if kib is None else kib * 1024}


def library_lines(stderr: str) -> list:
    """stderr lines that are not edge-predict's own."""
    return [line for line in stderr.splitlines() if line.strip() and not line.startswith("edge-predict: ")]


def judge(run: dict, expect: str, budget: int, resting: int) -> dict:
    """Verdict flags of one single-file run (see the module docstring)."""
    out = [line for line in run["stdout"].splitlines() if line.strip()]
    err = [line for line in run["stderr"].splitlines() if line.strip()]
    scored = run["code"] == 0 and len(out) == 1 and _is_json(out[0])
    refused = run["code"] == 1 and not out and len(err) == 1 and err[0].startswith("edge-predict: error: ")
    complained = classify_decoder_output(run["stderr"])[0] is not None  # benign notes (iCCP) are not
    complained = complained and not refused
    flags = {
        "hang": run["code"] is None,
        "traceback": "Traceback" in run["stderr"],
        "memory": run["peak_bytes"] is not None and run["peak_bytes"] - resting > budget,
        "log": bool(library_lines(run["stderr"])),
        "wrong": (expect == "refuse" and run["code"] == 0) or (expect == "valid" and run["code"] != 0)
        or (run["code"] == 0 and complained),
    }
    flags["clean"] = (scored and not err or refused) and not any(flags.values())
    return flags


def _is_json(line: str) -> bool:
    try:
        return isinstance(json.loads(line), dict)
    except ValueError:
        return False
