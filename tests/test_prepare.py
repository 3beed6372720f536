"""The prepared cache: contents, no-op rerun, rebuild, resume after a crash, failures, loading."""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from _murafix import make_mura

from edge.errors import UserError
from edge.preprocess import PreprocessConfig, preprocess, preprocess_with_info
from murakit import pools
from murakit.data import prepared as P
from murakit.data.prepared import INDEX_COLUMNS, load_prepared, prepare
from murakit.errors import MurakitError

CFG = PreprocessConfig(size=32)
ROOT = Path(__file__).resolve().parents[1]


def _prepare(data, run, **kw):
    kw.setdefault("workers", 1)
    kw.setdefault("progress", False)
    return prepare(data, run, kw.pop("cfg", CFG), log=lambda *_: None, **kw)


TRUTH = {}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    TRUTH.update(make_mura(root, inverted_every=4, annotations=True))
    return root


@pytest.fixture(scope="module")
def built(data, tmp_path_factory):
    run = tmp_path_factory.mktemp("run")
    res = _prepare(data, run)
    return run, res


def test_cache_contents(data, built):
    run, res = built
    assert res.status == "done" and res.figures["n_failed"] == 0
    p = load_prepared(run)
    n = res.figures["n_images"]
    assert n == 24 == len(p)
    assert p.images.dtype == np.uint8 and p.images.shape == (n, 32, 32)
    assert isinstance(p.images, np.memmap)
    header = (run / "prepared/index.csv").read_text().splitlines()[0].split(",")
    assert header[:len(INDEX_COLUMNS)] == INDEX_COLUMNS
    assert p.label.dtype == np.int8 and set(p.label) == {0, 1}
    assert set(p.split) == {"train", "val", "test"}
    assert all(path.startswith("MURA-v1.1/") for path in p.path)
    assert p.config == CFG
    meta = json.loads((run / "prepared/config.json").read_text())
    assert meta["complete"] is True and meta["data_root"] == str(data.resolve())
    # every cached row is exactly the one preprocessing path applied to its file
    for i in range(n):
        assert np.array_equal(p.image(i), preprocess(data / p.path[i], CFG))
    assert set(p.select("test")) == {i for i in range(n) if "/valid/" in p.path[i]}
    assert not (run / "prepared.partial").exists()


def test_annotations_mapped_into_prepared_coordinates(data, built):
    run, _ = built
    p = load_prepared(run)
    ann = p.annotations
    assert ann is not None and ann["bbox"].shape == (len(p), 4)
    for i in range(len(p)):
        assert ann["true_inverted"][i] == int(TRUTH["inverted"][p.path[i]])
        _, info = preprocess_with_info(data / p.path[i], CFG)  # geometry from the source
        scale, ox, oy = info.scale, info.offset_x, info.offset_y
        assert float(p.columns["scale"][i]) == pytest.approx(scale, rel=1e-5)
        box = TRUTH["boxes"][p.path[i]]
        if box is not None:
            x0, y0, x1, y1 = box
            expect = [x0 * scale + ox, y0 * scale + oy, x1 * scale + ox, y1 * scale + oy]
            assert np.allclose(ann["bbox"][i], np.minimum(expect, 32), atol=0.006)
            assert ann["finding"][i] == "fracture"
        else:
            assert np.isnan(ann["bbox"][i]).all() and ann["finding"][i] == ""
    assert ann["true_inverted"].sum() >= 4  # the fixture inverted some images
    # the detector agrees with the generator's ground truth on these clean images
    assert np.array_equal(p.inverted, ann["true_inverted"] == 1)


def test_second_run_is_a_noop(data, built):
    run, _ = built
    before = {f: f.stat().st_mtime_ns for f in (run / "prepared").iterdir()}
    msgs = []
    res = prepare(data, run, CFG, workers=1, progress=False, log=msgs.append)
    assert res.status == "up-to-date" and res.figures["n_processed"] == 0
    assert "nothing to do" in msgs[-1]
    assert before == {f: f.stat().st_mtime_ns for f in (run / "prepared").iterdir()}


def test_force_rebuilds_an_up_to_date_cache(data, tmp_path):
    first = _prepare(data, tmp_path, workers=1, progress=False)
    again = _prepare(data, tmp_path, workers=1, progress=False, force=True)
    assert (first.status, again.status) == ("done", "done") and again.figures["reason"] == "rebuild forced"
    assert again.figures["n_processed"] == again.figures["n_images"] == first.figures["n_images"]
    assert again.paths == (tmp_path / "prepared",) and again.seconds > 0
    assert _prepare(data, tmp_path, workers=1, progress=False).status == "up-to-date"


def test_config_change_rebuilds_and_mismatch_is_refused(data, tmp_path):
    _prepare(data, tmp_path)
    with pytest.raises(MurakitError, match="size 32 but the model was trained with size 48: rerun murakit "
                                           "prepare DATA --size 48, or retrain"):
        load_prepared(tmp_path, PreprocessConfig(size=48))
    msgs = []
    res = prepare(data, tmp_path, PreprocessConfig(size=48), workers=1, progress=False, log=msgs.append)
    assert res.status == "done" and "size 32 -> 48" in res.figures["reason"]
    assert any("rebuilding" in m for m in msgs)
    assert load_prepared(tmp_path, PreprocessConfig(size=48)).images.shape[1:] == (48, 48)
    assert not list(tmp_path.glob(".prepared*"))


def test_resume_after_interruption(data, built, tmp_path, monkeypatch):
    fresh = load_prepared(built[0])
    real, calls = P.process_one, []

    def dying(task):
        calls.append(task)
        if len(calls) > 9:
            raise KeyboardInterrupt
        return real(task)

    monkeypatch.setattr(P, "process_one", dying)
    with pytest.raises(KeyboardInterrupt):
        _prepare(data, tmp_path, checkpoint_seconds=0)
    assert not (tmp_path / "prepared").exists()
    with pytest.raises(MurakitError, match="incomplete"):
        load_prepared(tmp_path)
    monkeypatch.setattr(P, "process_one", real)
    res = _prepare(data, tmp_path)
    assert res.status == "resumed" and res.figures["n_processed"] == len(fresh) - 9
    p = load_prepared(tmp_path)
    assert np.array_equal(np.asarray(p.images), np.asarray(fresh.images))
    assert (tmp_path / "prepared/index.csv").read_text() == (built[0] / "prepared/index.csv").read_text()


def test_resume_after_hard_kill(data, built, tmp_path):
    """SIGKILL mid-way (no cleanup runs): the periodic bitmap alone must be enough to resume."""
    code = f"""
import time, sys
sys.path[:0] = [{str(ROOT)!r}]
from murakit.data import prepared as P
from edge.preprocess import PreprocessConfig
real = P.process_one
def slow(task):
    time.sleep(0.15)
    return real(task)
P.process_one = slow
P.prepare({str(data)!r}, {str(tmp_path)!r}, PreprocessConfig(size=32), workers=1, progress=False,
          checkpoint_seconds=0)
"""
    proc = subprocess.Popen([sys.executable, "-c", code])
    progress = tmp_path / "prepared.partial/progress.npz"
    deadline = time.monotonic() + 60
    done = 0
    while time.monotonic() < deadline and done < 4:
        time.sleep(0.05)
        try:
            with np.load(progress) as z:
                done = int(z["done"].sum())
        except (OSError, ValueError, KeyError):
            pass
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert 4 <= done < 24, "the child finished or never started"
    assert not (tmp_path / "prepared").exists()
    res = _prepare(data, tmp_path)
    assert res.status == "resumed" and res.figures["n_processed"] < 24
    assert np.array_equal(np.asarray(load_prepared(tmp_path).images),
                          np.asarray(load_prepared(built[0]).images))


def test_pool_and_worker_writes_match_inline(data, built, tmp_path, monkeypatch):
    monkeypatch.setattr(P, "MIN_TASKS_FOR_POOL", 0)  # use the pool even for 24 images
    ref = np.asarray(load_prepared(built[0]).images)

    real_init, used = pools.SpawnPool.__init__, []

    def init(self, *args, **kwargs):
        real_init(self, *args, **kwargs)
        used.append(self.watch.context.get_start_method())

    monkeypatch.setattr(pools.SpawnPool, "__init__", init)
    res = _prepare(data, tmp_path / "pool", workers=2)
    assert used == ["spawn"]
    assert np.array_equal(np.asarray(load_prepared(tmp_path / "pool").images), ref)
    assert res.figures["n_processed"] == 24
    monkeypatch.undo()
    _prepare(data, tmp_path / "ww", worker_writes=True)
    assert np.array_equal(np.asarray(load_prepared(tmp_path / "ww").images), ref)


def test_unreadable_images_are_listed_and_skipped(tmp_path):
    data = tmp_path / "data"
    truth = make_mura(data)
    bad1, bad2 = truth["images"]["train"][1], truth["images"]["valid"][0]
    (data / bad1).write_bytes((data / bad1).read_bytes()[:40])  # truncated PNG
    (data / bad2).write_text("this is not an image")
    res = _prepare(data, tmp_path / "run")
    assert res.figures["n_failed"] == 2 and res.figures["n_images"] == 22
    lines = (tmp_path / "run/prepared/failed.csv").read_text().splitlines()
    assert lines[0] == "path,error" and len(lines) == 3
    assert {ln.split(",")[0] for ln in lines[1:]} == {bad1, bad2}
    p = load_prepared(tmp_path / "run")
    assert len(p) == 22 and bad1 not in set(p.path) and bad2 not in set(p.path)
    assert p.row.max() < len(p.images)


def test_partial_with_other_settings_starts_over(data, tmp_path, monkeypatch):
    real, calls = P.process_one, []

    def dying(task):
        calls.append(task)
        if len(calls) > 5:
            raise KeyboardInterrupt
        return real(task)

    monkeypatch.setattr(P, "process_one", dying)
    with pytest.raises(KeyboardInterrupt):
        _prepare(data, tmp_path)
    monkeypatch.setattr(P, "process_one", real)
    res = _prepare(data, tmp_path, cfg=PreprocessConfig(size=40))
    assert res.status == "done" and res.figures["n_processed"] == 24


def test_load_refuses_incomplete_or_inconsistent_caches(data, built, tmp_path):
    with pytest.raises(MurakitError, match="no prepared cache"):
        load_prepared(tmp_path)
    cache = tmp_path / "prepared"
    cache.mkdir()
    for f in ("index.csv", "config.json"):
        (cache / f).write_bytes((built[0] / "prepared" / f).read_bytes())
    with pytest.raises(MurakitError, match="images.npy"):
        load_prepared(tmp_path)
    np.save(cache / "images.npy", np.zeros((3, 32, 32), np.uint8))  # fewer rows than the index
    with pytest.raises(MurakitError, match="rows outside"):
        load_prepared(tmp_path)
    meta = json.loads((cache / "config.json").read_text())
    meta["complete"] = False
    (cache / "config.json").write_text(json.dumps(meta))
    with pytest.raises(MurakitError, match="no prepared cache"):
        load_prepared(tmp_path)


def test_cli_prepare(data, tmp_path, capsys):
    from murakit.cli import prepare as cmd_prepare

    parser = argparse.ArgumentParser()
    cmd_prepare.add_arguments(parser)
    args = parser.parse_args([str(data), "--run", str(tmp_path), "--size", "24", "--workers", "1",
                              "--no-progress"])
    assert cmd_prepare.run(args) == 0
    out = capsys.readouterr().out
    assert "24 images cached at 24x24" in out
    assert cmd_prepare.run(args) == 0
    assert "nothing to do" in capsys.readouterr().out
    assert parser.parse_args([str(data)]).run == "runs/default"
    with pytest.raises(UserError, match="size"):  # the CLI prints it as one line (edge.errors.UserError)
        cmd_prepare.run(parser.parse_args([str(data), "--run", str(tmp_path), "--size", "2"]))
    assert os.path.isfile(tmp_path / "prepared/images.npy")
