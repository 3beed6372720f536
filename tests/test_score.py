"""`murakit score` / `murakit evaluate`: inputs, parity with edge-predict, failures, formats,
resume after kill -9, protocol metrics, and the Ray engine against the local one."""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from _edgefix import cnn_model
from _murafix import make_mura, radiograph, write_png

from edge.cli import predict_main
from murakit.cli import main as murakit_main
from murakit.errors import MurakitError
from murakit.scoring import Job, collect_jobs, score
from murakit.scoring.evaluate import evaluate_folder, label_key
from murakit.scoring.inputs import study_and_part
from murakit.scoring.run import batches_todo
from murakit.scoring.tables import read_table, write_table

ROOT = Path(__file__).resolve().parents[1]
TOL = 1e-6  # murakit score vs edge-predict, Ray vs local: same code, batch vs single inference


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return cnn_model(tmp_path_factory.mktemp("model") / "tiny.onnx")


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """A MURA-v1.1 tree (24 images, 12 studies) plus one corrupt view and an AppleDouble file."""
    root = tmp_path_factory.mktemp("data")
    info = make_mura(root)
    study = root / Path(info["images"]["valid"][0]).parent
    write_png(study / "image9.png", radiograph(64, 64, 9))
    data = (study / "image9.png").read_bytes()
    (study / "image9.png").write_bytes(data[: len(data) // 2])  # truncated
    (study / "._image1.png").write_bytes(b"\0\5\26\7 AppleDouble")         # junk, not an image
    return root, info, study / "image9.png"


def _rows(path):
    return read_table(path, Path(path).suffix[1:])


def _edge_predict(paths, model) -> dict:
    """{path: probability} from ``edge-predict --json`` over the same files."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        assert predict_main([*map(str, paths), "--model", str(model), "--json"]) == 0
    return {d["path"]: d["probability"] for d in map(json.loads, out.getvalue().splitlines())}


# ---------------------------------------------------------------------------- inputs
def test_study_and_part_follow_mura_and_folders():
    assert study_and_part("/d/MURA-v1.1/valid/XR_ELBOW/patient11186/study1_positive/image2.png") == \
        ("MURA-v1.1/valid/XR_ELBOW/patient11186/study1_positive", "ELBOW")
    assert study_and_part("copy/valid/XR_hand/patient1/study2_negative/a.png") == \
        ("copy/valid/XR_hand/patient1/study2_negative", "HAND")  # the top folder is kept as named
    assert study_and_part("archive/p7/s3/view.jpg") == ("archive/p7/s3", "")
    assert study_and_part("view.png") == (".", "")
    assert label_key("MURA-v1.1/valid/XR_ELBOW/patient1/study1_positive/") == \
        label_key("elsewhere/valid/XR_ELBOW/patient1/study1_positive") == "valid/XR_ELBOW/patient1/study1_positive"


def test_collect_jobs_walks_lists_and_dedupes(tree, tmp_path):
    root, info, bad = tree
    walked = collect_jobs([root])
    assert len(walked) == 25 and all("._" not in j.path for j in walked)  # 24 views + the corrupt one
    assert walked == collect_jobs([root]) and walked == collect_jobs([root, root / "MURA-v1.1" / "valid"])
    listed = collect_jobs([root / "MURA-v1.1" / "valid_image_paths.csv"])  # header-less, relative to ../
    assert [j.path for j in listed] == [str(root / p) for p in info["images"]["valid"]]
    assert {j.study for j in listed} == set(info["studies"]["valid"])
    (tmp_path / "list.csv").write_text(f"path\n{bad}\nnot/there.png\n")
    jobs = collect_jobs([tmp_path / "list.csv"])
    assert [j.path for j in jobs] == [str(bad), str(tmp_path / "not" / "there.png")]
    with pytest.raises(MurakitError, match="no such file or folder"):
        collect_jobs([tmp_path / "missing"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(MurakitError, match="no images"):
        collect_jobs([tmp_path / "empty"])


def test_batches_are_cut_from_the_whole_job_list():
    js = [Job(f"{i}.png", "s", "") for i in range(10)]
    assert [[j.path for j in b] for b in batches_todo(js, {"1.png", "4.png", "5.png", "6.png", "7.png"}, 4)] == \
        [["0.png", "2.png", "3.png"], ["8.png", "9.png"]]


# ---------------------------------------------------------------------------- scoring
def test_score_matches_edge_predict_per_image(tree, model, tmp_path):
    root, _, bad = tree
    s = score([root], model, tmp_path / "out", workers=2, batch_size=5, progress=False)
    images = _rows(s.images)
    assert (s.n_images, s.n_failed, s.n_studies) == (24, 1, 12) and len(images) == 24
    expected = _edge_predict([r["path"] for r in images], model)
    for r in images:
        assert abs(r["probability"] - expected[r["path"]]) <= TOL
        assert r["label"] == ("abnormal" if r["probability"] > 0.5 else "normal") and r["threshold"] == 0.5
        rel = Path(r["path"]).relative_to(root).parent.as_posix()
        assert r["study"] == rel and r["part"] == rel.split("/")[2][3:]
    studies = _rows(s.studies)
    assert [x["study"] for x in studies] == sorted(x["study"] for x in studies)
    for st in studies:
        views = [r["probability"] for r in images if r["study"] == st["study"]]
        assert st["n_views"] == len(views) == 2 and abs(st["probability"] - np.mean(views)) < 1e-12
        assert st["label"] == ("abnormal" if st["probability"] > 0.5 else "normal")
    failures = _rows(s.failures)
    assert [f["path"] for f in failures] == [str(bad)]
    assert "corrupt or truncated" in failures[0]["error"] and "\n" not in failures[0]["error"]


def test_csv_list_gives_the_same_rows_as_the_folder(tree, model, tmp_path):
    root, _, _ = tree
    listed = score([root / "MURA-v1.1" / "valid_image_paths.csv"], model, tmp_path / "a", workers=1,
                   progress=False)
    walked = score([root / "MURA-v1.1" / "valid"], model, tmp_path / "b", workers=1, progress=False)
    a, b = _rows(listed.images), _rows(walked.images)
    assert len(a) == 8 and sorted(a, key=lambda r: r["path"]) == sorted(b, key=lambda r: r["path"])


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_formats_round_trip(tree, model, tmp_path, fmt):
    if fmt == "parquet":
        pytest.importorskip("pyarrow")
    root, _, _ = tree
    s = score([root / "MURA-v1.1" / "valid"], model, tmp_path / fmt, fmt=fmt, workers=1, progress=False)
    assert s.images.name == f"images.{fmt}" and s.studies.name == f"studies.{fmt}"
    images = read_table(s.images, fmt)
    assert set(images[0]) == {"path", "study", "part", "probability", "label", "threshold", "score", "gate_score"}
    assert all(isinstance(r["probability"], float) and 0 <= r["probability"] <= 1 for r in images)
    assert set(read_table(s.studies, fmt)[0]) == {"study", "part", "n_views", "probability", "label"}
    again = tmp_path / f"again.{fmt}"
    write_table(again, images, list(images[0]), fmt)
    assert read_table(again, fmt) == images  # floats exact in every format
    if fmt != "parquet":
        assert again.read_bytes() == s.images.read_bytes()


def test_tables_refuse_non_finite_probabilities(tmp_path):
    with pytest.raises(ValueError, match="non-finite"):
        write_table(tmp_path / "x.csv", [{"path": "a", "probability": float("nan")}], ["path", "probability"], "csv")
    assert not (tmp_path / "x.csv").exists()


def test_cli_exit_codes_and_one_line_errors(tree, model, tmp_path, capsys):
    root, _, bad = tree
    assert murakit_main(["score", str(root), "--model", str(model), "--out", str(tmp_path / "o"),
                         "--no-progress", "--workers", "1"]) == 1  # one image failed, the rest scored
    out = capsys.readouterr().out
    assert "24 images ->" in out and "1 failures ->" in out
    code = murakit_main(["score", str(bad.parent), "--model", str(tmp_path / "nope.onnx"), "--out",
                         str(tmp_path / "p"), "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "no such model file" in err[0]
    other = cnn_model(tmp_path / "other.onnx", seed=5)  # another model into the same folder: refused
    code = murakit_main(["score", str(root), "--model", str(other), "--out", str(tmp_path / "o"), "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "another job (model_sha256 differ)" in err[0]


def test_damaged_model_output_is_a_failure_row_not_a_label(tree, model, tmp_path, monkeypatch):
    from edge.predictor import Predictor
    from murakit.scoring.work import score_jobs

    root, _, _ = tree
    predictor = Predictor(model)
    monkeypatch.setattr(Predictor, "probabilities", staticmethod(lambda out: np.array([np.nan, 0.25])))
    rows = score_jobs(predictor, collect_jobs([root / "MURA-v1.1" / "valid" / "XR_HAND"])[:2])
    assert rows[0]["probability"] is None and "not a number in [0, 1]" in rows[0]["error"]
    assert rows[1]["probability"] == 0.25 and rows[1]["error"] == ""


def test_dicom_views_group_by_study_instance_uid(model, tmp_path):
    pytest.importorskip("pydicom")
    from murakit.data.dicom_write import DicomStyle, make_dataset, write_dicom

    def ids(n, study, part):
        return {"study_uid": f"1.2.826.0.1.{study}", "series_uid": f"1.2.826.0.1.{study}.1",
                "sop_uid": f"1.2.826.0.1.{study}.1.{n}", "body_part": part}

    export = tmp_path / "export"
    write_dicom(export / "a" / "A1", radiograph(96, 80, 1), DicomStyle(), **ids(1, 7, "WRIST"))
    write_png(export / "a" / "plain.png", radiograph(60, 50, 2))
    write_dicom(export / "b" / "A2.dcm", radiograph(90, 70, 3), DicomStyle(photometric="MONOCHROME1"),
                **ids(2, 7, "WRIST"))  # same study, another folder
    write_dicom(export / "b" / "B1", radiograph(80, 80, 4), DicomStyle(), **ids(3, 8, "UPPER ARM"))
    sr = make_dataset(np.zeros((1, 1), np.uint16), DicomStyle(), **ids(9, 7, None))
    for k in ("Rows", "Columns", "PixelData", "BitsAllocated", "BitsStored", "HighBit"):
        delattr(sr, k)
    sr.save_as(export / "b" / "SR0001", enforce_file_format=True)  # a DICOM object that is no image
    s = score([export], model, tmp_path / "out", workers=1, progress=False)
    images = {Path(r["path"]).name: r for r in _rows(s.images)}
    assert {k: (r["study"], r["part"]) for k, r in images.items()} == {
        "A1": ("1.2.826.0.1.7", "WRIST"), "A2.dcm": ("1.2.826.0.1.7", "WRIST"),
        "B1": ("1.2.826.0.1.8", "HUMERUS"), "plain.png": (f"{export}/a", "")}
    expected = _edge_predict([r["path"] for r in images.values()], model)
    assert all(abs(r["probability"] - expected[r["path"]]) <= TOL for r in images.values())
    studies = {r["study"]: r for r in _rows(s.studies)}
    assert studies["1.2.826.0.1.7"]["n_views"] == 2 and studies["1.2.826.0.1.8"]["n_views"] == 1
    failures = _rows(s.failures)
    assert [Path(f["path"]).name for f in failures] == ["SR0001"] and "not an image" in failures[0]["error"]


# ---------------------------------------------------------------------------- resume
def _big_tree(root: Path, n: int = 60) -> None:
    """``n`` 256 px views in MURA layout (slow enough to kill mid-run), two of them unreadable."""
    for i in range(n):
        path = root / "MURA-v1.1" / "valid" / "XR_WRIST" / f"patient{i // 3:05d}" / "study1_negative" / f"image{i % 3}.png"
        write_png(path, radiograph(256, 224, i))
    for k in (7, 17):
        (root / "MURA-v1.1" / "valid" / "XR_WRIST" / f"patient{k:05d}" / "study1_negative" / "image0.png").write_bytes(b"")


def test_resume_after_kill_9_gives_the_rows_of_an_uninterrupted_run(model, tmp_path):
    data, out, ref = tmp_path / "data", tmp_path / "out", tmp_path / "ref"
    _big_tree(data)
    cmd = [sys.executable, "-m", "murakit", "score", str(data), "--model", str(model), "--out", str(out),
           "--workers", "1", "--batch-size", "4", "--part-rows", "4", "--no-progress"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while len(list((out / "parts").glob("part-*.csv"))) < 3 and time.monotonic() < deadline:
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done = len(list((out / "parts").glob("part-*.csv")))
    assert 3 <= done < 15 and not (out / "images.csv").exists()  # really killed mid-run
    (out / "parts" / ".tmp-999-part-00099.csv").write_text("half a part")  # what a kill can leave
    resumed = score([data], model, out, workers=2, batch_size=4, part_rows=4, progress=False)
    assert resumed.n_scored_now == 60 - 4 * done  # nothing scored twice
    full = score([data], model, ref, workers=1, batch_size=4, progress=False)
    for name in ("images.csv", "studies.csv", "failures.csv"):
        assert (out / name).read_bytes() == (ref / name).read_bytes(), name
    paths = [r["path"] for r in _rows(out / "images.csv")] + [r["path"] for r in _rows(out / "failures.csv")]
    assert len(paths) == len(set(paths)) == 60 and full.n_failed == 2
    assert not list((out / "parts").glob(".tmp-*"))


def _pool_workers(pid: int) -> list:
    """Pids of the spawned pool workers among a process's children (not its resource tracker)."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [int(c) for c in children
            if b"spawn_main" in Path(f"/proc/{c}/cmdline").read_bytes().replace(b"\0", b" ")]


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs Linux /proc to find the pool's workers")
def test_a_killed_worker_does_not_stop_the_run(model, tmp_path):
    data, out, ref = tmp_path / "data", tmp_path / "out", tmp_path / "ref"
    _big_tree(data)
    cmd = [sys.executable, "-m", "murakit", "score", str(data), "--model", str(model), "--out", str(out),
           "--workers", "2", "--batch-size", "4", "--part-rows", "4", "--no-progress"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while len(list((out / "parts").glob("part-*.csv"))) < 2 and time.monotonic() < deadline:
        time.sleep(0.005)
    workers = _pool_workers(proc.pid)
    assert len(workers) == 2
    os.kill(workers[0], signal.SIGKILL)  # what the kernel's out-of-memory killer does
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 1 and "Traceback" not in stderr, stderr  # 1: the two empty files
    score([data], model, ref, workers=1, batch_size=4, progress=False)
    a, b = _rows(out / "images.csv"), _rows(ref / "images.csv")
    assert [r["path"] for r in a] == [r["path"] for r in b] and len(a) == 58
    assert all(abs(x["probability"] - y["probability"]) <= TOL for x, y in zip(a, b))
    assert _rows(out / "failures.csv") == _rows(ref / "failures.csv")


# ---------------------------------------------------------------------------- labels / evaluate
def test_labels_give_the_protocol_metrics(tree, model, tmp_path, capsys):
    from murakit.evaluation.metrics import evaluate

    root, info, _ = tree
    out = tmp_path / "o"
    code = murakit_main(["score", str(root / "MURA-v1.1" / "valid_image_paths.csv"), "--model", str(model),
                         "--out", str(out), "--workers", "1", "--no-progress", "--labels"])
    printed = capsys.readouterr().out
    assert code == 0 and "valid_labeled_studies.csv" in printed and "study kappa by part" in printed
    images = _rows(out / "images.csv")
    labels = {label_key(s): y for s, y in info["studies"]["valid"].items()}
    expect = evaluate([labels[label_key(r["study"])] for r in images], [r["probability"] for r in images],
                      [r["study"] for r in images], [r["part"] for r in images], 0.5)
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["study"]["auroc"] == pytest.approx(expect["study"]["auroc"])
    assert saved["image"]["kappa"] == pytest.approx(expect["image"]["kappa"])
    assert saved["counts"]["studies"] == 4 and saved["counts"]["unlabeled_images"] == 0
    assert f"{expect['study']['auroc']:.4f}" in printed


def test_evaluate_with_a_labels_csv_for_any_folder(model, tmp_path, capsys):
    for i in range(6):
        write_png(tmp_path / "archive" / f"case{i}" / "view1.png", radiograph(60, 50, i))
    score([tmp_path / "archive"], model, tmp_path / "o", workers=1, progress=False)
    labels = "study,label\n" + "".join(f"{tmp_path / 'archive' / f'case{i}'},{i % 2}\n" for i in range(5))
    (tmp_path / "labels.csv").write_text(labels)
    assert murakit_main(["evaluate", str(tmp_path / "o"), "--labels", str(tmp_path / "labels.csv")]) == 0
    printed = capsys.readouterr().out
    assert "5 labelled images (1 without a label), 5 studies (2 abnormal)" in printed
    metrics, _ = evaluate_folder(tmp_path / "o", tmp_path / "labels.csv")
    assert metrics["by_part"].keys() == {"UNKNOWN"}
    (tmp_path / "bad.csv").write_text("case0,maybe\n")
    assert murakit_main(["evaluate", str(tmp_path / "o"), "--labels", str(tmp_path / "bad.csv")]) == 2
    assert "not 'study,label'" in capsys.readouterr().err


# ---------------------------------------------------------------------------- Ray
@pytest.mark.slow
def test_ray_engine_equals_local(tree, model, tmp_path):
    import importlib.util

    if importlib.util.find_spec("ray") is None:  # not importorskip: murakit sets Ray's environment first
        pytest.skip("ray is not installed (the scale extra)")
    root, _, bad = tree
    local = score([root], model, tmp_path / "local", workers=1, progress=False)
    try:
        on_ray = score([root], model, tmp_path / "ray", engine="ray", workers=2, batch_size=8, progress=False)
        assert {n["NodeManagerAddress"] for n in sys.modules["ray"].nodes()} == {"127.0.0.1"}
    finally:
        if "ray" in sys.modules:
            sys.modules["ray"].shutdown()
    a = {r["path"]: r for r in _rows(local.images)}
    b = {r["path"]: r for r in _rows(on_ray.images)}
    assert a.keys() == b.keys() and len(a) == 24
    assert max(abs(a[k]["probability"] - b[k]["probability"]) for k in a) <= TOL
    assert all(a[k]["study"] == b[k]["study"] and a[k]["label"] == b[k]["label"] for k in a)
    assert _rows(on_ray.failures) == _rows(local.failures) and _rows(on_ray.failures)[0]["path"] == str(bad)
