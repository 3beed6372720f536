"""Every command in README.md runs as written.

The convention README.md follows: each fenced block's info string says what the block is.

- ```sh      commands meant to run as written, from the repository root, after `make demo` (its run
             folder is runs/default: data in runs/default/data, models in runs/default/export/).
- ```python  code meant to run as one script, under the ``if __name__ == "__main__":`` guard the
             README asks scripts for (the stages start worker processes).
- ```text    an illustration that cannot run here (real MURA at ~/data, a PACS export, a device,
             placeholders such as RUN). Not run.

Every block carries one of the three: a bare fence fails the test, so a new block is a decision.

How the sh blocks run: in a fresh folder holding a copy of the session's quick demo at runs/default
and tests/data linked from the repository; with this venv's bin first on PATH and MURAKIT_MODEL
unset; line by line in order (a backslash continues a line), each in its own ``bash -e -o pipefail``
with a timeout; each must exit 0 and print no traceback. Skipped, and only these (``SKIPPED``,
matched whole): ``make demo`` and ``make test`` (the suite cannot call itself; CI runs them) and
``pip install .`` / ``pip install '.[extra]'`` (this venv already has every extra).
A line starting ``edge-serve`` starts the server in the background with ``--port 0`` added; the
block's later lines must be curl calls to 127.0.0.1:8000, and reach the server on the port it
chose (the one rewrite: 8000 may be taken on a shared machine); each must answer JSON without an
"error". After the block the server gets SIGTERM and must exit 0.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest
from _demofix import venv_env

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
KINDS = ("sh", "python", "text")
SKIPPED = re.compile(r"(make demo|make test|pip install (\.|'\.\[[a-z]+(,[a-z]+)*\]'))(\s+#.*)?")
SKIP_PREFIXES = ("make ", "pip ")  # a line starting so must match SKIPPED whole: nothing chained after it
SERVER_URL = "127.0.0.1:8000"
LINE_TIMEOUT_S = 300
READY_TIMEOUT_S = 120


@dataclass(frozen=True)
class Block:
    """One fenced block of README.md: its opening fence's line (1-based), info string and body lines."""

    line: int
    info: str
    body: tuple

    def commands(self) -> list:
        """Shell command lines: backslash continuations kept with their newline (bash joins them),
        blank and comment-only lines dropped."""
        out, pending = [], ""
        for raw in self.body:
            pending += raw
            if raw.endswith("\\"):
                pending += "\n"
                continue
            if pending.strip() and not pending.lstrip().startswith("#"):
                out.append(pending.strip())
            pending = ""
        assert not pending, f"README.md:{self.line}: the block ends with a backslash"
        return out


def readme_blocks(text: str) -> list:
    """The fenced blocks of a markdown text, in order."""
    blocks, start, info, body = [], None, "", []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.startswith("```"):
            body.append(line)
        elif start is None:
            start, info, body = n, line[3:].strip(), []
        else:
            assert line == "```", f"README.md:{n}: a fence opens inside the block opened at line {start}"
            blocks.append(Block(start, info, tuple(body)))
            start = None
    assert start is None, f"README.md:{start}: block never closed"
    return blocks


BLOCKS = readme_blocks(README.read_text(encoding="utf-8"))


def is_skipped(command: str) -> bool:
    """A line the test does not run (it must then match SKIPPED whole: see the test below)."""
    return command.startswith(SKIP_PREFIXES)


def runnable(block: Block) -> bool:
    """A python block, or an sh block with at least one line that is not skipped."""
    return block.info == "python" or (block.info == "sh" and any(not is_skipped(c) for c in block.commands()))


# ------------------------------------------------------------------ the convention (fast)


def test_every_block_says_whether_it_runs():
    bad = [f"README.md:{b.line}: ```{b.info}" for b in BLOCKS if b.info not in KINDS]
    assert bad == [], f"info string must be one of {KINDS}"
    assert sum(runnable(b) for b in BLOCKS) >= 4  # the parser finds them (today: DICOM, scoring, device, serving, API)


def test_skipped_lines_are_only_the_allowed_ones():
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    extras = set(tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"])
    targets = set(re.findall(r"^([a-z]+):", (REPO / "Makefile").read_text(), flags=re.MULTILINE))
    skipped = [c for b in BLOCKS if b.info == "sh" for c in b.commands() if is_skipped(c)]
    assert {"make demo", "make test"} <= set(skipped)  # the quick start
    for command in skipped:
        assert SKIPPED.fullmatch(command), f"skipped line does more than the allow-list says: {command!r}"
        words = shlex.split(command, comments=True)
        if words[0] == "make":
            assert words[1] in targets, command
        for extra in re.findall(r"\[([a-z,]+)\]", words[-1]):
            assert set(extra.split(",")) <= extras, f"no such extra in pyproject.toml: {command!r}"


def test_server_blocks_are_followed_by_local_curl_calls_only():
    for block in (b for b in BLOCKS if b.info == "sh"):
        commands = [c for c in block.commands() if not is_skipped(c)]
        starts = [i for i, c in enumerate(commands) if c.startswith("edge-serve")]
        if not starts:
            continue
        assert len(starts) == 1, f"README.md:{block.line}: one server per block"
        assert not {"--port", "--host"} & set(shlex.split(commands[starts[0]], comments=True)), block.line
        for c in commands[starts[0] + 1:]:
            assert c.startswith("curl ") and SERVER_URL in c, f"README.md:{block.line}: {c!r}"


# ------------------------------------------------------------------ running them (slow)


@pytest.fixture(scope="module")
def workspace(quick_demo, tmp_path_factory) -> Path:
    """A repository-root stand-in: a copy of the quick demo at runs/default, tests/data linked."""
    root = tmp_path_factory.mktemp("readme")
    shutil.copytree(quick_demo.run, root / "runs" / "default", symlinks=True)
    (root / "tests").mkdir()
    (root / "tests" / "data").symlink_to(REPO / "tests" / "data", target_is_directory=True)
    return root


def line_env() -> dict:
    return {**venv_env(), "NO_PROXY": "127.0.0.1", "no_proxy": "127.0.0.1"}  # curl talks to the local server


def run_line(command: str, cwd: Path, where: str) -> subprocess.CompletedProcess:
    """Run one README line with bash in ``cwd``; assert exit code 0 and no traceback."""
    proc = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", command], check=False, cwd=cwd,
                          env=line_env(), capture_output=True, text=True, timeout=LINE_TIMEOUT_S)
    detail = f"{where}: {command}\nexit {proc.returncode}\nstdout: {proc.stdout[-1500:]}\nstderr: {proc.stderr[-1500:]}"
    assert proc.returncode == 0, detail
    assert "Traceback" not in proc.stderr, detail
    return proc


class BackgroundServer:
    """A README ``edge-serve`` line started with ``--port 0``; its log goes to a file."""

    def __init__(self, command: str, cwd: Path):
        self.log = cwd / "edge-serve.log"
        with open(self.log, "w") as log:
            self.proc = subprocess.Popen([*shlex.split(command, comments=True), "--port", "0"], cwd=cwd,
                                         env=line_env(), stdout=log, stderr=subprocess.STDOUT)
        self.port = self._wait_ready()

    def _wait_ready(self) -> int:
        """The port from the server's first line, once GET /readyz answers 200 (bounded wait)."""
        no_proxy = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        deadline, port = time.monotonic() + READY_TIMEOUT_S, None
        while time.monotonic() < deadline and self.proc.poll() is None:
            found = re.search(r"on http://127\.0\.0\.1:(\d+)/", self.log.read_text())
            port = int(found.group(1)) if found else None
            try:
                if port and no_proxy.open(f"http://127.0.0.1:{port}/readyz", timeout=2).status == 200:
                    return port
            except OSError:  # not listening yet, or 503 while warming up
                pass
            time.sleep(0.1)
        self.stop()
        raise AssertionError(f"edge-serve never became ready:\n{self.log.read_text()[-2000:]}")

    def stop(self) -> int:
        """SIGTERM, then the exit code (killed after 30 s)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


def run_sh_block(block: Block, cwd: Path) -> None:
    server = None
    try:
        for command in block.commands():
            if is_skipped(command):
                continue
            if command.startswith("edge-serve"):
                server = BackgroundServer(command, cwd)
                continue
            if server is not None:
                command = command.replace(SERVER_URL, f"127.0.0.1:{server.port}")
            proc = run_line(command, cwd, f"README.md:{block.line}")
            if server is not None:
                body = json.loads(proc.stdout)
                assert isinstance(body, dict) and "error" not in body, (command, body)
    finally:
        code = server.stop() if server is not None else 0
    assert code == 0, f"edge-serve exited {code} on SIGTERM:\n{server.log.read_text()[-2000:]}"


def run_python_block(block: Block, cwd: Path) -> None:
    script = cwd / f"readme_{block.line}.py"
    script.write_text('if __name__ == "__main__":\n' + textwrap.indent("\n".join(block.body), "    ") + "\n")
    run_line(shlex.join([sys.executable, script.name]), cwd, f"README.md:{block.line}")


@pytest.mark.slow
@pytest.mark.parametrize("block", [b for b in BLOCKS if runnable(b)], ids=lambda b: f"line{b.line}-{b.info}")
def test_readme_block_runs_as_written(block, workspace):
    if block.info == "python":
        run_python_block(block, workspace)
    else:
        run_sh_block(block, workspace)
