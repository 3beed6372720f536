"""The fuzz runner: run a command as a user would, and judge what came out.

A :class:`Case` is one hostile input (a command line, or a scenario of several processes:
an interruption, two processes at once). :class:`Runner` runs it in a subprocess against a
given source tree (``PYTHONPATH=tree``, so the same cases run against an older checkout),
with a timeout, and measures the peak resident memory of the process and its children
(``os.wait4``). :func:`judge` puts every case in exactly one class:

``clean``      a result, or exactly one line on stderr with the documented exit code
``traceback``  a Python traceback, an "unexpected failure" line (an exception only a
               catch-all kept off the screen), or death by a signal nobody sent
``hang``       no answer within the case's timeout
``memory``     peak RSS above the case's budget
``wrong``      any other broken promise: another exit code, nonsense accepted (exit 0),
               several lines, nothing on stderr, or a failed result check

Only the standard library is used here, so the runner itself never depends on the tree
under test.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

OUTCOMES = ("clean", "traceback", "hang", "wrong", "memory")
PROGRAMS = {
    "murakit": "from murakit.cli import main",
    "edge-predict": "from edge.cli import predict_main as main",
    "edge-verify": "from edge.cli import verify_main as main",
}
EDGE_BUDGET_MB = 512  # documented peak for any single input on a device
MURAKIT_BUDGET_MB = 1024  # murakit commands without TensorFlow
TF_BUDGET_MB = 3072  # commands that load TensorFlow (its import alone is ~600 MB)
_USAGE = re.compile(r"^usage: ")
_TRACEBACK = ("Traceback (most recent call last)", "unexpected failure")


@dataclass
class Result:
    """One finished (or killed) process."""

    argv: list
    returncode: int | None
    stdout: str
    stderr: str
    seconds: float
    peak_mb: float
    timed_out: bool = False
    killed_by_us: bool = False

    def err_lines(self) -> list:
        """Non-empty stderr lines, argparse's usage block dropped (its error line is kept)."""
        lines = [ln for ln in self.stderr.splitlines() if ln.strip()]
        if lines and _USAGE.match(lines[0]):
            lines = [ln for ln in lines if ": error:" in ln]
        return lines


@dataclass
class Step:
    """What one process of a case must do: exit codes allowed, stderr lines when failing."""

    result: Result
    expect: tuple = (0,)
    err_lines: int | None = 1
    budget_mb: float = EDGE_BUDGET_MB


@dataclass
class Case:
    """One fuzz case.

    Either ``argv`` (a program of :data:`PROGRAMS` and its arguments, run in the case's
    folder) or ``scenario`` (a function ``(runner, folder) -> (list of Step, problem or None)``).
    ``setup(folder)`` prepares the folder first; ``check(folder, result)`` returns a problem
    (str) for a result that exited as expected but is wrong.
    """

    cls: str
    name: str
    argv: list | None = None
    expect: tuple = (2,)
    err_lines: int | None = 1
    timeout: float = 60.0
    budget_mb: float = EDGE_BUDGET_MB
    setup: object = None
    check: object = None
    scenario: object = None
    fast: bool = False
    env: dict = field(default_factory=dict)


@dataclass
class Verdict:
    case: Case
    outcome: str
    detail: str
    seconds: float
    peak_mb: float


class Runner:
    """Runs murakit's programs from ``tree`` with ``python``.

    Parameters
    ----------
    tree : Path
        Source checkout to test (put first on ``PYTHONPATH``).
    python : str
        Interpreter with the dependencies installed.
    """

    def __init__(self, tree, python: str = sys.executable):
        self.tree = Path(tree).resolve()
        self.python = python

    def env(self, extra: dict | None = None) -> dict:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(self.tree), str(self.tree / "tests")])
        env.update({"PYTHONDONTWRITEBYTECODE": "1", "TF_CPP_MIN_LOG_LEVEL": env.get("TF_CPP_MIN_LOG_LEVEL", "")})
        env.pop("MURAKIT_MODEL", None)
        env.update(extra or {})
        return {k: v for k, v in env.items() if v != ""}

    def command(self, argv: list) -> list:
        prog, *args = argv
        if prog == "python":
            return [self.python, *args]
        code = f"import sys; {PROGRAMS[prog]}; sys.exit(main(sys.argv[1:]))"
        return [self.python, "-c", code, *args]

    def start(self, argv: list, cwd, env: dict | None = None, preexec=None):
        """Start a process; returns a handle for :meth:`finish` (output goes to temp files)."""
        # closed by finish(); temp files, not pipes: a killed process cannot block on a full pipe
        out, err = tempfile.TemporaryFile(), tempfile.TemporaryFile()  # noqa: SIM115
        # preexec (one case) only drops capabilities; the runner starts no threads
        p = subprocess.Popen(self.command(argv), cwd=str(cwd), env=self.env(env), stdout=out, stderr=err,
                             stdin=subprocess.DEVNULL, start_new_session=True,
                             preexec_fn=preexec)  # noqa: PLW1509
        return {"p": p, "out": out, "err": err, "t0": time.monotonic(), "argv": list(argv), "killed": False,
                "hwm": 0.0, "parent_mb": _vm_mb("self", "VmHWM")}

    @staticmethod
    def signal(handle, sig=signal.SIGKILL) -> None:
        """Send ``sig`` to the process (the user's Ctrl-C or kill -9)."""
        handle["killed"] = True
        try:
            os.kill(handle["p"].pid, sig)
        except ProcessLookupError:
            pass

    def finish(self, handle, timeout: float) -> Result:
        """Wait (at most ``timeout`` s from start); the peak RSS is the child's VmHWM, polled.

        ``wait4``'s ru_maxrss alone would not do: Linux carries the high-water mark of the forked
        copy of this (test) process into the exec'd child, so a child of a process that once held
        850 MB reports at least 850 MB - even after this process gave the memory back. It is used
        only when it exceeds this process's own high-water mark (VmHWM, not its current RSS).
        """
        p, timed_out, status, usage = handle["p"], False, None, None
        while True:
            handle["hwm"] = max(handle["hwm"], _vm_mb(p.pid, "VmHWM"))
            pid, status, usage = os.wait4(p.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() - handle["t0"] > timeout:
                timed_out = True
                with _suppress():
                    os.killpg(p.pid, signal.SIGKILL)
                _, status, usage = os.wait4(p.pid, 0)
                break
            time.sleep(0.01)
        p.returncode = os.waitstatus_to_exitcode(status)
        with _suppress():  # children left behind by a killed leader (pool workers)
            os.killpg(p.pid, signal.SIGKILL)
        texts = []
        for f in (handle["out"], handle["err"]):
            f.seek(0)
            texts.append(f.read().decode("utf-8", "replace"))
            f.close()
        return Result(handle["argv"], p.returncode, texts[0], texts[1], time.monotonic() - handle["t0"],
                      _peak_mb(handle, usage.ru_maxrss / 1024.0), timed_out, handle["killed"])

    def run(self, argv: list, cwd, timeout: float = 60.0, env: dict | None = None, preexec=None) -> Result:
        return self.finish(self.start(argv, cwd, env, preexec), timeout)


def _vm_mb(pid, field: str) -> float:
    """``field`` (VmRSS, VmHWM) of /proc/PID/status in MB; 0 when the process is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024.0
    except (OSError, ValueError, IndexError):
        pass
    return 0.0


def _peak_mb(handle, maxrss_mb: float) -> float:
    inherited = handle["parent_mb"] * 1.05 + 16  # the fork's copy of our peak, and a margin
    return max(handle["hwm"], maxrss_mb if maxrss_mb > inherited else 0.0)


class _suppress:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return exc[0] is not None and issubclass(exc[0], (ProcessLookupError, PermissionError, ChildProcessError))


def _prog(argv) -> str:
    return argv[0] if argv and argv[0] in PROGRAMS else ""


def judge_step(step: Step) -> tuple:
    """(outcome, detail) of one process against its promises (see the module docstring)."""
    r = step.result
    text = r.stdout + r.stderr
    if r.timed_out:
        return "hang", f"no answer after {r.seconds:.0f} s"
    if any(t in text for t in _TRACEBACK):
        line = next((ln for ln in reversed(r.stderr.splitlines()) if ln.strip()), "")
        return "traceback", line[:160]
    if r.returncode is not None and r.returncode < 0 and not r.killed_by_us:
        return "traceback", f"killed by signal {-r.returncode} ({signal.Signals(-r.returncode).name})"
    if r.peak_mb > step.budget_mb:
        return "memory", f"peak RSS {r.peak_mb:.0f} MB > {step.budget_mb:.0f} MB"
    if r.killed_by_us and r.returncode is not None and r.returncode < 0:
        return "clean", "killed"
    if r.returncode not in step.expect:
        lines = r.err_lines()
        return "wrong", f"exit {r.returncode}, expected {'/'.join(map(str, step.expect))}: " + \
            (lines[-1][:140] if lines else "(stderr empty)")
    if r.returncode != 0 and step.err_lines is not None:
        lines = r.err_lines()
        prog = _prog(r.argv)
        if len(lines) != step.err_lines:
            shown = " | ".join(ln[:70] for ln in lines[:3])
            return "wrong", f"{len(lines)} stderr lines, expected {step.err_lines}: {shown}"
        if prog and not all(ln.startswith((f"{prog}: ", f"{prog} ")) for ln in lines):
            return "wrong", f"stderr line not from {prog}: {lines[0][:120]}"
    return "clean", ""


def judge(steps: list, problem: str | None) -> tuple:
    """Worst outcome over the steps of a case, then the case's own check."""
    order = {"hang": 0, "traceback": 1, "memory": 2, "wrong": 3, "clean": 4}
    verdicts = sorted((judge_step(s) for s in steps), key=lambda v: order[v[0]])
    if verdicts and verdicts[0][0] != "clean":
        return verdicts[0]
    if problem:
        return "wrong", problem
    return "clean", ""


def run_case(runner: Runner, case: Case, folder) -> Verdict:
    """Set up ``folder``, run ``case`` in it and judge it."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    try:
        if case.setup:
            case.setup(folder)
        if case.scenario:
            steps, problem = case.scenario(runner, folder)
        else:
            r = runner.run(case.argv, folder, case.timeout, case.env)
            steps = [Step(r, case.expect, case.err_lines, case.budget_mb)]
            problem = None
            if case.check and r.returncode in case.expect and not r.timed_out:
                problem = case.check(folder, r)
    except Exception as e:  # noqa: BLE001  a broken case must be visible, not crash the campaign
        return Verdict(case, "wrong", f"case setup failed: {type(e).__name__}: {e}", time.monotonic() - t0, 0.0)
    outcome, detail = judge(steps, problem)
    peak = max((s.result.peak_mb for s in steps), default=0.0)
    return Verdict(case, outcome, detail, time.monotonic() - t0, peak)


def table(verdicts: list, title: str = "") -> str:
    """Plain-text table: per class, how many cases were tried and how each ended."""
    classes = sorted({v.case.cls for v in verdicts}, key=lambda c: [v.case.cls for v in verdicts].index(c))
    rows = [["class", "tried", *OUTCOMES, "max MB"]]
    for c in classes + ["all"]:
        vs = [v for v in verdicts if c in ("all", v.case.cls)]
        rows.append([c, str(len(vs)), *(str(sum(v.outcome == o for v in vs)) for o in OUTCOMES),
                     f"{max((v.peak_mb for v in vs), default=0):.0f}"])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ([title] if title else []) + ["  ".join(x.rjust(w) if i else x.ljust(w) for i, (x, w) in
                                                    enumerate(zip(r, widths))) for r in rows]
    return "\n".join(lines)


def failures(verdicts: list) -> str:
    """One line per case that was not clean."""
    return "\n".join(f"  {v.outcome:9s} {v.case.cls}/{v.case.name}: {v.detail}"
                     for v in verdicts if v.outcome != "clean")
