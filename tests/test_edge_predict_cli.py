"""edge-predict robustness: a closed pipe, bounded --threads, CAM overlay names that never
collide (a second run, a concurrent process)."""

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest
from _edgefix import cnn_model, write_images

from edge.cam import overlay
from edge.cli import cam_basename, max_threads, predict_main, write_new_file
from edge.predictor import Predictor

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("models")
    return {"cnn": cnn_model(d / "cnn.onnx"), "other": cnn_model(d / "other.onnx", seed=7)}


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    folder = tmp_path_factory.mktemp("MURA") / "XR_WRIST" / "patient11" / "study1_positive"
    folder.mkdir(parents=True)
    return write_images(folder, 3)


def _cli(*args, stdin=None):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-m", "edge.cli", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env, cwd=ROOT)


def test_closed_stdout_pipe_ends_quietly(models, study):
    """`edge-predict many --json | head -1`: the reader leaves after one line."""
    proc = _cli(*([study[0]] * 400), "--model", models["cnn"], "--json")
    first = proc.stdout.readline()
    proc.stdout.close()  # the reader goes away
    err = proc.stderr.read().decode()
    code = proc.wait(timeout=60)
    assert json.loads(first)["path"] == str(study[0])
    assert err == "", err  # no BrokenPipeError, no traceback, no 'Exception ignored'
    assert code == 141


@pytest.mark.parametrize("value", ["0", "-1", "5000", str(max_threads() + 1), "two", "1.5"])
def test_threads_out_of_range_is_one_line_exit_2(models, study, capsys, value):
    with pytest.raises(SystemExit) as exit_:
        predict_main([str(study[0]), "--model", str(models["cnn"]), "--threads", value])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("edge-predict: error: argument --threads") and "1 to" in err[0]


def test_threads_within_range_run(models, study, capsys):
    assert max_threads() == min(256, 4 * len(os.sched_getaffinity(0)))
    assert predict_main([str(study[0]), "--model", str(models["cnn"]), "--threads", str(max_threads())]) == 0


def test_cam_names_follow_patient_study_view_and_are_sanitised(tmp_path):
    assert cam_basename("/d/MURA/XR_WRIST/patient11/study1_positive/image1.png") == \
        "patient11_study1_positive_image1_cam"
    assert cam_basename("/x.png") == "x_cam"
    weird = cam_basename("/a/p a*t?i:ent/../stu\ndy/im age.png")
    assert "/" not in weird and " " not in weird and "\n" not in weird and weird.endswith("_cam")


def _cam_paths(out: str) -> list:
    paths = []
    for line in out.splitlines():
        d = json.loads(line)
        paths += d["cam"] if isinstance(d["cam"], list) else [d["cam"]]
    return paths


def test_second_run_never_overwrites_and_reports_its_own_files(models, study, tmp_path, capsys):
    cams = tmp_path / "cams"
    args = [str(study[0]), str(study[0].parent), "--model", str(models["cnn"]), "--cam", str(cams), "--json"]
    assert predict_main(args) == 0
    first = _cam_paths(capsys.readouterr().out)
    assert Path(first[0]).name == "patient11_study1_positive_image1_cam.png"
    assert len(set(first)) == 4  # image1 alone, then the study's image1..3: image1 gets _2
    before = {p: Path(p).read_bytes() for p in first}
    other = [str(study[0]), "--model", str(models["other"]), "--cam", str(cams), "--json"]
    assert predict_main(other) == 0
    second = _cam_paths(capsys.readouterr().out)
    assert second == [str(cams / "patient11_study1_positive_image1_cam_3.png")]
    assert all(Path(p).read_bytes() == b for p, b in before.items())  # the first run's files untouched
    pred = Predictor(models["other"]).predict(study[0], cam=True)
    want = overlay(pred.image, pred.cam)
    assert np.array_equal(cv2.imread(second[0], cv2.IMREAD_UNCHANGED), want)
    assert not [p for p in cams.iterdir() if p.name.startswith(".")]  # no temporary left behind


def test_concurrent_processes_get_distinct_files_holding_their_own_pictures(models, study, tmp_path):
    cams = tmp_path / "cams"
    procs = {name: _cli(*study, *study, "--model", models[name], "--cam", cams, "--json") for name in models}
    outs = {}
    for name, proc in procs.items():
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0 and err == b"", err
        outs[name] = _cam_paths(out.decode())
    every = outs["cnn"] + outs["other"]
    assert len(every) == len(set(every)) == 12 and len(list(cams.glob("*.png"))) == 12
    for name, paths in outs.items():
        pred = Predictor(models[name])
        for src, path in zip(list(study) * 2, paths):
            p = pred.predict(src, cam=True)
            assert np.array_equal(cv2.imread(path, cv2.IMREAD_UNCHANGED), overlay(p.image, p.cam)), (name, path)


def test_write_new_file_from_threads_never_loses_a_file(tmp_path):
    written = []

    def worker(i):
        for j in range(20):
            written.append((write_new_file(tmp_path, "same", ".bin", f"{i}-{j}".encode()), f"{i}-{j}".encode()))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({p for p, _ in written}) == 120
    assert all(p.read_bytes() == data for p, data in written)


def test_cam_folder_that_is_a_file_is_one_line_exit_2(models, study, tmp_path, capsys):
    f = tmp_path / "file"
    f.write_text("x")
    assert predict_main([str(study[0]), "--model", str(models["cnn"]), "--cam", str(f)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not a folder" in err[0]


def _without_timings(stdout: bytes) -> list:
    rows = [json.loads(line) for line in stdout.decode().splitlines()]
    for row in rows:
        for r in [row, *row.get("views", [])]:
            assert r.pop("preprocess_ms", 0) >= 0 and r.pop("inference_ms", 0) >= 0
    return rows


@pytest.mark.parametrize("workers", ["2", "3"])
def test_workers_change_neither_output_order_content_nor_exit_code(models, study, tmp_path, workers):
    """--workers N preprocesses the files in N processes ahead of the model; every line (its
    order, paths, probabilities to the last bit, labels), every error line and the exit code
    are those of one process. The mix has good files, a repeat, a missing file, a file that is
    not an image (refused inside a worker), a study folder (scored in the parent) between them."""
    bad = tmp_path / "notes.png"
    bad.write_bytes(b"not a png at all")
    inputs = [study[0], study[1], tmp_path / "missing.png", study[0], bad, study[0].parent, study[2], study[1]]
    runs = []
    for w in ("1", workers):
        proc = _cli(*inputs, "--model", models["cnn"], "--json", "--workers", w)
        out, err = proc.communicate(timeout=120)
        runs.append((_without_timings(out), err.decode(), proc.returncode))
    assert runs[0] == runs[1]
    assert runs[0][2] == 1 and len(runs[0][0]) == 6 and runs[0][1].count("edge-predict: error:") == 2


def test_many_files_take_the_pool_by_default(models, study):
    from edge.cpu import usable_cores
    from edge.parallel import AUTO_MIN_FILES, auto_workers

    assert auto_workers(1) == 1 and auto_workers(AUTO_MIN_FILES - 1) == 1
    assert auto_workers(AUTO_MIN_FILES) == usable_cores()
    proc = _cli(*([study[0], study[1]] * AUTO_MIN_FILES), "--model", models["cnn"], "--json")
    out, err = proc.communicate(timeout=120)
    rows = _without_timings(out)
    assert proc.returncode == 0 and err == b""
    assert [r["path"] for r in rows] == [str(p) for p in [study[0], study[1]] * AUTO_MIN_FILES]
    assert len({r["probability"] for r in rows[::2]}) == 1


def test_the_usable_core_count_has_one_home(monkeypatch):
    """edge.cpu.usable_cores is the count every default and bound reads; an affinity limit reaches them all."""
    from pathlib import Path

    from baseline.features import default_jobs
    from edge import cpu
    from murakit.checks import max_workers

    assert cpu.usable_cores() == len(os.sched_getaffinity(0))
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0})  # as under `taskset -c 0`
    assert cpu.usable_cores() == 1 and max_threads() == 4 and max_workers() == 4 and default_jobs() == 1
    assert cpu.cpu_info()["os_cpus"] == 1
    root = Path(__file__).resolve().parents[1]
    counted = [str(f.relative_to(root)) for pkg in ("edge", "baseline", "deep", "export", "murakit")
               for f in (root / pkg).rglob("*.py")
               if "sched_getaffinity" in f.read_text() or "os.cpu_count()" in f.read_text()]
    assert counted == ["edge/cpu.py"]
