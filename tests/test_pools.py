"""murakit.pools: every way of calling a stage that starts worker processes ends, within seconds,
with the documented outcome (docs/architecture.md, "Worker processes").

Each program runs in its own interpreter with a timeout, so a regression to the old respawn loop
shows as a failed test (TimeoutExpired), never as a hung suite.

- a script without ``if __name__ == "__main__":``   -> one error line naming the fix, exit 1
- ``python -`` (the program on stdin)               -> runs in-process after a one-line notice
- ``python -c``, a guarded script                   -> runs with its workers, nothing on stderr
- workers that die while starting / an initializer that raises / a worker that dies working
                                                    -> one line, after at most START_ATTEMPTS deaths
- ``murakit score``'s pool: the same for its workers, and for a script without the guard
"""

from __future__ import annotations

import hashlib
import operator
import os
import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from murakit import pools
from murakit.errors import MurakitError

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 120  # seconds; each case below takes a few
GUARD = 'if __name__ == "__main__":'
# generate() with 2 workers whatever the machine: 10 studies are enough for it to use its pool
SYNTH = "from murakit.data import synth\nsynth.generate('data', n_studies=10, seed=3, workers=2, progress=False)\n"
# A spawn worker runs `python -c 'from multiprocessing.spawn import spawn_main; ...' --multiprocessing-fork`:
# this sitecustomize ends exactly those, before they import anything (as a crash at start would).
# Prepended to a program: records the worker count of every SpawnPool it starts, checked at exit.
PROBE = ("from murakit import pools\nstarted = []\n_init = pools.SpawnPool.__init__\n"
         "pools.SpawnPool.__init__ = lambda self, n, *a, **k: (started.append(n), _init(self, n, *a, **k))[1]\n")
DIE_AT_START = "import os, sys\nif '--multiprocessing-fork' in sys.argv:\n    os._exit(7)\n"


@pytest.fixture(autouse=True)
def _keep_excepthook(monkeypatch):
    """A pool that stops installs murakit's one-line hook in this process: undone after each test."""
    monkeypatch.setattr(sys, "excepthook", sys.excepthook)


def _env(tmp_path: Path, die_at_start: bool = False) -> dict:
    path = [str(ROOT)]
    if die_at_start:
        hook = tmp_path / "hook"
        hook.mkdir(exist_ok=True)
        (hook / "sitecustomize.py").write_text(DIE_AT_START)
        path.insert(0, str(hook))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return {**env, "PYTHONPATH": os.pathsep.join(path)}


def _run(args: list, tmp_path: Path, stdin: str | None = None, die_at_start: bool = False):
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, *args], check=False, cwd=tmp_path, input=stdin, capture_output=True,
                          text=True, timeout=TIMEOUT, env=_env(tmp_path, die_at_start))
    return proc, time.monotonic() - t0


def _tree(folder: Path) -> dict:
    """{relative path: sha256} of every file under ``folder``."""
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _one_error_line(stderr: str, *needles: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("murakit: error: "), stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


# ------------------------------------------------------------------ how the stage is called

def test_a_script_without_the_guard_stops_with_one_line_naming_the_fix(tmp_path):
    (tmp_path / "noguard.py").write_text(SYNTH)
    proc, seconds = _run(["noguard.py"], tmp_path)
    assert proc.returncode == 1
    _one_error_line(proc.stderr, GUARD)
    assert seconds < 60
    data = tmp_path / "data"
    assert not (data / "MURA-v1.1").exists()
    # the workers stopped before the stage did anything: no second temp tree, none left behind
    assert not [p for p in data.iterdir() if ".tmp-" in p.name]


def test_prepare_in_a_script_without_the_guard_stops_at_its_lock(tmp_path):
    # the data exist, so synthesize() is a no-op in the workers; prepare() is refused before its lock
    (tmp_path / "make.py").write_text(GUARD + "\n" + textwrap.indent(SYNTH, "    "))
    assert _run(["make.py"], tmp_path)[0].returncode == 0
    (tmp_path / "noguard.py").write_text(SYNTH + "import murakit as mk\nfrom murakit.data import prepared\n"
                                         "prepared.MIN_TASKS_FOR_POOL = 0\n"
                                         "mk.prepare('data', run='run', size=32, workers=2)\n")
    proc, _ = _run(["noguard.py"], tmp_path)
    assert proc.returncode == 1
    _one_error_line(proc.stderr, GUARD)
    assert not (tmp_path / "run" / "prepared" / "index.csv").exists()


def test_a_python_m_module_without_the_guard_stops_the_same_way(tmp_path):
    (tmp_path / "noguard_mod.py").write_text(SYNTH)
    proc, _ = _run(["-m", "noguard_mod"], tmp_path)
    assert proc.returncode == 1
    _one_error_line(proc.stderr, GUARD)


def test_a_program_on_stdin_runs_in_process_after_one_notice(tmp_path):
    (tmp_path / "a").mkdir()
    twice = SYNTH + SYNTH.replace("seed=3", "seed=4").replace("'data'", "'data4'")
    stdin, _ = _run(["-"], tmp_path / "a", stdin=PROBE + twice + "assert started == []\n")
    assert stdin.returncode == 0, stdin.stderr
    lines = stdin.stderr.strip().splitlines()
    assert len(lines) == 1 and "standard input" in lines[0] and "this process" in lines[0], stdin.stderr  # once
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "guarded.py").write_text(GUARD + "\n" + textwrap.indent(PROBE + SYNTH + "assert started == [2]\n", "    "))
    pooled, _ = _run(["guarded.py"], tmp_path / "b")
    assert pooled.returncode == 0 and pooled.stderr == "", pooled.stderr
    # in-process or with workers, the same bytes
    assert _tree(tmp_path / "a" / "data") == _tree(tmp_path / "b" / "data") != {}


@pytest.mark.parametrize("how", ["-c", "-i"])
def test_python_c_and_the_interactive_interpreter_keep_their_workers(tmp_path, how):
    # __main__ has no file: workers do not re-import it, the pool runs as usual
    program = PROBE + SYNTH + "assert started == [2]\nprint('finished')\n"
    proc, _ = _run(["-c", program] if how == "-c" else ["-i", "-q"], tmp_path, stdin=None if how == "-c" else program)
    assert proc.returncode == 0 and "finished" in proc.stdout, proc.stderr
    assert proc.stderr.replace(">>>", "").replace("...", "").strip() == "", proc.stderr  # the prompts only
    assert (tmp_path / "data" / "MURA-v1.1" / "synth.json").is_file()


def test_a_jupyter_kernel_keeps_its_workers(tmp_path):
    import importlib.util

    nbformat = pytest.importorskip("nbformat")
    pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    spec = importlib.util.spec_from_file_location("run_notebook", ROOT / "docs" / "run_notebook.py")
    runner = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(runner)  # the kernel test_notebook.py uses: this venv's
    cell = PROBE + SYNTH + "assert started == [2], started\n"
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(cell)]), str(tmp_path / "nb.ipynb"))
    t0 = time.monotonic()
    nb, _, _ = runner.execute(tmp_path / "nb.ipynb", workdir=tmp_path, timeout=TIMEOUT)
    outputs = nb.cells[0].outputs
    assert not [o for o in outputs if o.output_type == "error" or o.get("name") == "stderr"], outputs
    assert (tmp_path / "data" / "MURA-v1.1" / "synth.json").is_file()
    assert time.monotonic() - t0 < TIMEOUT


def test_what_main_unreadable_says(tmp_path, monkeypatch):
    import types

    fake = types.ModuleType("__main__")
    monkeypatch.setitem(sys.modules, "__main__", fake)
    assert pools.main_unreadable() is None  # python -c, the interactive interpreter, Jupyter
    fake.__file__ = "<stdin>"
    assert "standard input" in pools.main_unreadable()
    fake.__file__ = str(tmp_path / "gone.py")
    assert "no longer exists" in pools.main_unreadable()
    (tmp_path / "gone.py").write_text("")
    assert pools.main_unreadable() is None


def _readme_snippet() -> str:
    """The README's Python API block, as written."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"^```python\n(.*?)^```$", text, flags=re.MULTILINE | re.DOTALL)
    assert len(blocks) == 1 and "mk.synthesize" in blocks[0]
    return blocks[0]


def test_the_readme_snippet_as_a_script_without_the_guard_fails_in_one_line(tmp_path):
    # (under the guard it runs in test_readme.py)
    (tmp_path / "snippet.py").write_text(_readme_snippet())
    proc, seconds = _run(["snippet.py"], tmp_path)
    assert proc.returncode == 1
    _one_error_line(proc.stderr, GUARD)
    assert seconds < 60


@pytest.mark.slow
def test_the_readme_snippet_on_stdin_works_in_process(tmp_path):
    proc, _ = _run(["-"], tmp_path, stdin=_readme_snippet())
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "standard input" in lines[0], proc.stderr
    assert (tmp_path / "runs" / "nb" / "report" / "report.json").is_file()


# ------------------------------------------------------------------ workers that die

def test_workers_that_die_at_start_stop_the_stage_after_bounded_attempts(tmp_path):
    (tmp_path / "guarded.py").write_text(GUARD + "\n" + textwrap.indent(SYNTH, "    "))
    proc, seconds = _run(["guarded.py"], tmp_path, die_at_start=True)
    assert proc.returncode == 1
    line = _one_error_line(proc.stderr, "worker processes died while starting", "exit code 7")
    assert int(re.search(r"error: (\d+) synth", line).group(1)) == pools.START_ATTEMPTS
    assert seconds < 60


def test_pool_results_and_order():
    with pools.SpawnPool(2, "test") as pool:
        assert list(pool.imap(abs, range(-40, 0), chunksize=3)) == list(range(40, 0, -1))
        assert sorted(pool.imap_unordered(abs, range(-40, 0), chunksize=7)) == list(range(1, 41))


def test_an_initializer_that_raises_is_one_line_at_the_first_death():
    t0 = time.monotonic()
    with pytest.raises(MurakitError, match=r"a test worker process could not start: ZeroDivisionError: division by zero"), \
            pools.SpawnPool(2, "test", operator.truediv, (1, 0)) as pool:
        list(pool.imap(abs, range(10)))
    assert time.monotonic() - t0 < 60


def test_a_worker_that_dies_at_start_is_counted_up_to_the_bound():
    with pytest.raises(MurakitError, match=rf"^{pools.START_ATTEMPTS} test worker processes died while starting "
                                           r"\(the last: exit code 5\)"), \
            pools.SpawnPool(1, "test", os._exit, (5,)) as pool:
        list(pool.imap(abs, range(10)))


def test_a_worker_that_dies_while_working_ends_the_wait():
    # multiprocessing.Pool alone would wait for the lost task forever
    with pytest.raises(MurakitError, match=r"a test worker process died while working \(exit code 3"), \
            pools.SpawnPool(2, "test") as pool:
        list(pool.imap(os._exit, [3]))


# ------------------------------------------------------------------ murakit score's pool

@pytest.fixture(scope="module")
def scoring(tmp_path_factory):
    from _edgefix import cnn_model
    from _murafix import make_mura

    root = tmp_path_factory.mktemp("score")
    make_mura(root / "data")
    return root / "data", cnn_model(root / "tiny.onnx")


def test_score_workers_that_die_at_start_stop_with_one_line(scoring, tmp_path):
    data, model = scoring
    proc, seconds = _run(["-m", "murakit", "score", str(data), "--model", str(model), "--out", str(tmp_path / "out"),
                          "--workers", "2", "--batch-size", "4", "--no-progress"], tmp_path, die_at_start=True)
    assert proc.returncode == 2
    _one_error_line(proc.stderr, f"{pools.START_ATTEMPTS} score worker processes died while starting", "exit code 7")
    assert seconds < 60
    assert not (tmp_path / "out" / "images.csv").exists()


def test_score_from_a_script_without_the_guard_stops_with_one_line(scoring, tmp_path):
    data, model = scoring
    (tmp_path / "noguard.py").write_text(f"from murakit.scoring import score\n"
                                         f"score([{str(data)!r}], {str(model)!r}, 'out', workers=2, progress=False)\n")
    proc, _ = _run(["noguard.py"], tmp_path)
    assert proc.returncode == 1
    _one_error_line(proc.stderr, GUARD)


RAY_DIES_STARTING = """
import os, sys
from murakit.errors import MurakitError
from murakit.scoring import ray_engine, score

class RaisesStarting(ray_engine.Scorer):  # defined in __main__: Ray ships it by value to the actors
    def __init__(self, model, config, threads=1, **options):
        raise ValueError("no model here")

class DiesStarting(ray_engine.Scorer):
    def __init__(self, model, config, threads=1, **options):
        os._exit(3)  # as a crash in onnxruntime's start-up would

for n, scorer in enumerate([RaisesStarting, DiesStarting]):
    ray_engine.Scorer = scorer
    try:
        score([sys.argv[1]], sys.argv[2], f"out{n}", engine="ray", workers=1, batch_size=4, progress=False)
    except MurakitError as e:
        print(e)
"""


@pytest.mark.slow
def test_ray_actors_that_die_at_start_end_the_run(scoring, tmp_path):
    """Ray Data restarted an actor whose process died in its constructor without end (measured:
    still looping after 200 s); now a bounded number of restarts, then one MurakitError line. A
    constructor that raises: one line with its exception."""
    import importlib.util

    if importlib.util.find_spec("ray") is None:
        pytest.skip("ray is not installed (the scale extra)")
    data, model = scoring
    proc, seconds = _run(["-c", RAY_DIES_STARTING, str(data), str(model)], tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    # (Ray's own raylet lines may come after it on stdout)
    ours = [ln for ln in proc.stdout.splitlines() if ln.startswith("the Ray engine failed")]
    assert len(ours) == 2, proc.stdout[-2000:]
    assert ours[0] == ("the Ray engine failed (ActorDiedError: an actor could not start: ValueError: no model here); "
                       "finished batches are saved: rerun to continue")
    assert re.fullmatch(r"the Ray engine failed \(ActorDiedError: [^\x1b]*\); finished batches .*", ours[1])
    assert seconds < TIMEOUT
