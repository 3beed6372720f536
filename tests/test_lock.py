"""Run-folder stage locks (murakit.lock) and the run folder's own checks (murakit.layout)."""

import os
import signal
import subprocess
import sys

import pytest

from murakit.errors import MurakitError
from murakit.layout import ensure_dir
from murakit.lock import RunInUse, stage_lock

HOLD = """
import sys, time
from murakit.lock import stage_lock
with stage_lock(sys.argv[1], writes=sys.argv[2], reads=sys.argv[3:], create=True):
    print("held", flush=True)
    time.sleep(60)
"""


@pytest.fixture
def holder(tmp_path):
    """holder(writes, *reads): a process holding those locks until the test ends (or kills it)."""
    procs = []

    def start(writes, *reads):
        p = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path / "run"), writes, *reads],
                             stdout=subprocess.PIPE, text=True)
        assert p.stdout.readline().strip() == "held"
        procs.append(p)
        return p

    yield start
    for p in procs:
        p.kill()
        p.wait()


def test_a_held_stage_is_refused_naming_the_holder(tmp_path, holder):
    p = holder("prepared")
    run = tmp_path / "run"
    with pytest.raises(RunInUse, match=rf"in use by PID {p.pid} \(murakit prepare\)"), \
            stage_lock(run, writes="prepared"):
        pass
    # a reader of the stage does not wait for its writer either
    with pytest.raises(RunInUse), stage_lock(run, writes="baseline", reads=["prepared"]):
        pass


def test_readers_share_and_independent_stages_run_side_by_side(tmp_path, holder):
    holder("baseline", "prepared")  # train baseline
    with stage_lock(tmp_path / "run", writes="cnn", reads=["prepared"]):  # train cnn beside it
        pass
    # but nobody re-prepares the cache under them
    with pytest.raises(RunInUse, match="murakit train baseline"), stage_lock(tmp_path / "run", writes="prepared"):
        pass


def test_a_killed_holder_leaves_no_lock_behind(tmp_path, holder):
    p = holder("export", "cnn", "baseline", "prepared")
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    assert (tmp_path / "run" / ".locks" / "export.lock").exists()  # the file stays, the lock does not
    with stage_lock(tmp_path / "run", writes="export", reads=["cnn"]):
        pass


def test_locks_are_reentrant_in_one_process(tmp_path):
    with stage_lock(tmp_path, writes="prepared", create=True):
        with stage_lock(tmp_path, writes="prepared"):
            pass
        with stage_lock(tmp_path, writes="baseline", reads=["prepared"]):
            pass
    code = f"from murakit.lock import stage_lock\nwith stage_lock({str(tmp_path)!r}, writes='prepared'): print('ok')"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "ok\n"


def test_a_missing_run_folder_is_only_created_by_stages_that_start_a_run(tmp_path):
    with stage_lock(tmp_path / "none", writes="baseline", reads=["prepared"]):
        pass
    assert not (tmp_path / "none").exists()
    with stage_lock(tmp_path / "new", writes="prepared", create=True):
        pass
    assert (tmp_path / "new" / ".locks" / "prepared.lock").is_file()


@pytest.mark.parametrize("where, match", [("afile", "is a file"), ("afile/run", "is a file"),
                                          ("/proc", "cannot create"), ("/proc/self/x", "cannot create")])
def test_unusable_run_folders_are_one_line(tmp_path, where, match):
    (tmp_path / "afile").write_text("x")
    run = where if where.startswith("/") else tmp_path / where
    with pytest.raises(MurakitError, match=match) as e, stage_lock(run, writes="prepared", create=True):
        pass
    assert "\n" not in str(e.value)


def test_ensure_dir_creates_and_refuses_files(tmp_path):
    assert ensure_dir(tmp_path / "a" / "b").is_dir()
    (tmp_path / "f").write_text("x")
    with pytest.raises(MurakitError, match="--out folder .*is a file"):
        ensure_dir(tmp_path / "f" / "g", "--out folder")


def test_evaluate_is_refused_while_another_process_holds_the_report(tmp_path, holder):
    """mk.evaluate is the bench stage: it takes the report lock `murakit bench` takes (issue 26)."""
    import murakit as mk
    from murakit.cli import main

    run = tmp_path / "run"
    p = holder("report", "prepared", "baseline", "cnn", "export")  # a `murakit bench` of this run
    with pytest.raises(RunInUse, match=rf"in use by PID {p.pid} \(murakit bench\)"):
        mk.evaluate(run=run)
    assert not (run / "report").exists()  # refused before anything was written
    assert main(["bench", "--run", str(run)]) == 2  # the CLI's bench: the same stage, the same refusal
    p.kill()
    p.wait()
    # the holder gone, the stage runs and reports what is missing in its own words
    with pytest.raises(MurakitError, match="no trained or exported model") as e:
        mk.evaluate(run=run)
    assert not isinstance(e.value, RunInUse)
