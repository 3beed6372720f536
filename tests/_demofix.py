"""Run the installed ``murakit`` as a user does; the shared quick demo's result (see conftest.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

DEMO_TIMEOUT_S = 1200  # the quick demo takes ~2 min alone; a loaded shared machine can stretch it


def venv_env() -> dict:
    """The environment of a user of this install: its bin first on PATH, no MURAKIT_MODEL."""
    env = {k: v for k, v in os.environ.items() if k != "MURAKIT_MODEL"}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def run_murakit(cwd: Path, *args: str, timeout: float = DEMO_TIMEOUT_S) -> subprocess.CompletedProcess:
    """Run the installed ``murakit`` command in ``cwd``; output captured as text."""
    return subprocess.run(["murakit", *args], check=False, cwd=cwd, env=venv_env(), capture_output=True, text=True,
                          timeout=timeout)


@dataclass(frozen=True)
class QuickDemo:
    """A finished quick demo: ``root/runs/default`` is its run folder, ``stdout`` and ``stderr``
    what it printed."""

    root: Path
    stdout: str
    stderr: str = ""

    @property
    def run(self) -> Path:
        return self.root / "runs" / "default"
