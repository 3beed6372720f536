"""`pip install .` alone (no `train` extra) gives a working edge runtime in a clean virtualenv.

Builds a fresh venv (no system site-packages, so it has never seen TensorFlow), installs a copy
of the project into it (pip reuses its wheel cache), and runs `edge-predict` / `edge-verify` on
the committed regression model from a folder outside the source tree; `murakit score` runs there
too (CSV with the edge runtime only; Parquet and Ray name the `scale` extra). Skip with
MURAKIT_SKIP_INSTALL_TEST=1 (it runs in `make test` by default).
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parents[1]
REGRESSION = ROOT / "tests" / "data" / "regression"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.environ.get("MURAKIT_SKIP_INSTALL_TEST") == "1",
                       reason="MURAKIT_SKIP_INSTALL_TEST=1"),
]


def _copy_project(dest: Path) -> Path:
    """Copy what a wheel build needs (pyproject, README, the packages), not .venv/runs/tests."""
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    dest.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        if (ROOT / name).exists():
            shutil.copy2(ROOT / name, dest / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for pattern in meta["tool"]["setuptools"]["packages"]["find"]["include"]:
        pkg = pattern.rstrip("*")  # "edge*" -> the top-level package edge/ (sub-packages inside)
        shutil.copytree(ROOT / pkg, dest / pkg, ignore=ignore)
    return dest


def _run(cmd, cwd, check=True):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "MURAKIT_MODEL")}
    out = subprocess.run([str(c) for c in cmd], cwd=cwd, capture_output=True, text=True, env=env, timeout=600,
                         check=False)
    if check and out.returncode != 0:
        raise AssertionError(f"{cmd} failed ({out.returncode}):\n{out.stdout}\n{out.stderr}")
    return out


def test_pip_install_gives_working_edge_runtime(tmp_path):
    src = _copy_project(tmp_path / "src")
    venv = tmp_path / "venv"
    base = getattr(sys, "_base_executable", sys.executable)
    _run([base, "-m", "venv", venv], tmp_path)
    py, bindir = venv / "bin" / "python", venv / "bin"
    _run([py, "-m", "pip", "install", "--disable-pip-version-check", "--no-input", "-q", src], tmp_path)

    work = tmp_path / "device"  # outside the source tree: imports must come from the install
    shutil.copytree(REGRESSION / "golden", work / "golden")
    shutil.copy2(REGRESSION / "model.onnx", work / "model.onnx")
    code = ("import importlib.util as u, edge;"
            "print([m for m in ('tensorflow','keras','sklearn','matplotlib','tf2onnx','onnx')"
            " if u.find_spec(m)], edge.__file__)")
    probe = _run([py, "-c", code], work)
    missing, where = probe.stdout.strip().split("] ")
    assert missing == "[" and str(venv) in where

    image = work / "golden" / "model" / "test_data_set_1" / "source.png"
    out = _run([bindir / "edge-predict", image, "--model", "model.onnx", "--json", "--threads", "1"], work)
    d = json.loads(out.stdout.strip().splitlines()[-1])
    manifest = json.loads((work / "golden" / "model" / "manifest.json").read_text())
    assert d["path"] == str(image) and d["threshold"] == 0.5 and d["label"] in ("normal", "abnormal")
    assert manifest["cases"][1]["label"] == 1 and d["label"] == "abnormal"

    verify = _run([bindir / "edge-verify", "model.onnx"], work)
    assert "PASS: 7/7" in verify.stdout  # DICOM cases: runtime checked, pipeline skipped with a note
    assert "3 DICOM source(s): pipeline check skipped" in verify.stdout and "murakit[dicom]" in verify.stdout

    dcm = work / "golden" / "model" / "test_data_set_4" / "source.dcm"  # base install: no pydicom
    no_extra = _run([bindir / "edge-predict", dcm, "--model", "model.onnx"], work, check=False)
    assert no_extra.returncode == 1 and no_extra.stdout == ""
    assert no_extra.stderr.strip().splitlines() == [(
        f"edge-predict: error: {dcm}: is a DICOM file; reading DICOM needs the dicom extra: "
        "pip install 'murakit[dicom]'")]

    # DICOM results need the pacs extra: one line naming it, nothing written
    sr = _run([bindir / "edge-predict", image, "--model", "model.onnx", "--dicom-out", "sr"], work, check=False)
    assert sr.returncode == 2 and sr.stdout == "" and not (work / "sr").exists()
    assert sr.stderr.strip().splitlines() == [sr.stderr.strip()] and "pip install 'murakit[pacs]'" in sr.stderr

    bad = _run([bindir / "edge-predict", "missing.png", "--model", "model.onnx"], work, check=False)
    assert bad.returncode == 1 and bad.stderr.strip().startswith("edge-predict: error:")
    assert "Traceback" not in bad.stderr

    # edge-serve is installed with the runtime but needs the serve extra: one line naming it
    serve = _run([bindir / "edge-serve", "--model", "model.onnx"], work, check=False)
    assert serve.returncode == 2 and serve.stdout == ""
    assert serve.stderr.strip().splitlines() == [serve.stderr.strip()]
    assert "pip install 'murakit[serve]'" in serve.stderr
    code = "import importlib.resources as r; print(r.files('edge.serve').joinpath('page.html').read_text()[:15])"
    page = _run([py, "-c", code], work)
    assert page.stdout.strip() == "<!doctype html>"  # the page ships as package data

    # the application needs the train extra: one line saying so, not a ModuleNotFoundError traceback
    synth = _run([bindir / "murakit", "synth", "data"], work, check=False)
    err = synth.stderr.strip().splitlines()
    assert synth.returncode == 2 and len(err) == 1 and "pip install 'murakit[train]'" in err[0], synth.stderr

    # murakit score needs only the edge runtime: CSV output, the local engine, the protocol's metrics;
    # the golden DICOM sources are failure rows naming the dicom extra, the PNGs are scored
    labels = "".join(f"golden/model/{c['dir']},{c['label']}\n" for c in manifest["cases"])
    (work / "labels.csv").write_text(labels)
    scored = _run([bindir / "murakit", "score", "golden", "--model", "model.onnx", "--out", "scored",
                   "--no-progress", "--labels", "labels.csv"], work, check=False)
    assert scored.returncode == 1 and "Traceback" not in scored.stderr, scored.stderr
    assert "4 labelled images (0 without a label), 4 studies (2 abnormal)" in scored.stdout
    rows = (work / "scored" / "images.csv").read_text().splitlines()
    assert rows[0] == "path,study,part,probability,label,threshold,score,gate_score" and len(rows) == 1 + 4
    probability = {r.split(",")[0]: float(r.split(",")[3]) for r in rows[1:]}
    assert abs(probability[str(Path("golden") / "model" / "test_data_set_1" / "source.png")] - d["probability"]) <= 1e-6
    failures = (work / "scored" / "failures.csv").read_text().splitlines()[1:]
    assert len(failures) == 3 and all("source.dcm" in f and "murakit[dicom]" in f for f in failures)
    for extra_only in (["--format", "parquet"], ["--engine", "ray"]):
        out = _run([bindir / "murakit", "score", "golden", "--model", "model.onnx", "--out", "other", *extra_only],
                   work, check=False)
        err = out.stderr.strip().splitlines()
        assert out.returncode == 2 and len(err) == 1 and "pip install 'murakit[scale]'" in err[0], out.stderr
        assert not (work / "other").exists()  # refused before anything is written
