"""The edge runtime at its declared floors, and one line when a runtime dependency is broken.

``test_*_at_the_declared_floors`` build (once; cached under .venv-floors/) a clean venv with
every lower bound of pyproject.toml's base install pinned exactly, on the lowest supported
Python this machine has, and run the installed ``edge-predict`` and ``edge-verify`` on the
regression fixture (benchmarks/floors.py; ``make floors`` adds the extras). Cold: ~20-30 s
each (pip's wheel cache); warm: a few seconds. Skip with MURAKIT_SKIP_INSTALL_TEST=1, like
the other install test. The rest fake broken or missing packages and run in a second.
"""

import importlib.util
import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import tomllib

from edge import deps

ROOT = Path(__file__).resolve().parents[1]
REGRESSION = ROOT / "tests" / "data" / "regression"

_spec = importlib.util.spec_from_file_location("floors", ROOT / "benchmarks" / "floors.py")
floors = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(floors)

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
skip_install = pytest.mark.skipif(os.environ.get("MURAKIT_SKIP_INSTALL_TEST") == "1",
                                  reason="MURAKIT_SKIP_INSTALL_TEST=1")


# ---------------------------------------------------------------- the declared ranges
def test_runtime_ranges_are_pyprojects():
    declared = {floors.parse_requirement(r)[0]: floors.parse_requirement(r)[2]
                for r in PYPROJECT["project"]["dependencies"]}
    ours = {dists[0]: spec for _, dists, spec in deps.RUNTIME}
    assert ours == declared
    dicom = {floors.parse_requirement(r)[0]: floors.parse_requirement(r)[2]
             for r in PYPROJECT["project"]["optional-dependencies"]["dicom"]}
    assert dicom["pydicom"] == deps.PYDICOM[2]


def test_constraints_pin_every_floor_and_refuse_an_unbounded_range():
    reqs = floors.requirements(PYPROJECT, ["dev"])  # dev pulls in murakit[dicom] and murakit[serve]
    names = {floors.parse_requirement(r)[0] for r in reqs}
    assert {"numpy", "onnxruntime", "pydicom", "fastapi", "pytest"} <= names and "murakit" not in names
    lines = floors.constraints(reqs)
    assert "onnxruntime==1.18.1" in lines and "numpy==1.24.1" in lines  # dicom's numpy floor is the higher one
    assert "numpy==1.24" in floors.constraints(floors.requirements(PYPROJECT))
    assert "uvloop==0.19; sys_platform != 'win32'" in lines  # the marker is kept
    assert all("==" in ln and ">" not in ln.split(";")[0] for ln in lines)
    free = floors.constraints(reqs, free=["NumPy"], pins=["onnxruntime==1.22.1"])
    assert not any(ln.startswith("numpy") for ln in free) and "onnxruntime==1.22.1" in free
    with pytest.raises(floors.FloorError, match="no lower bound"):
        floors.constraints(["numpy"])
    with pytest.raises(floors.FloorError, match="no extra 'gpu'"):
        floors.requirements(PYPROJECT, ["gpu"])


def test_in_range():
    assert deps.in_range("1.19.0", ">=1.19") and deps.in_range("1.24", ">=1.24.0")
    assert deps.in_range("1.17.3", ">=1.19") is False and deps.in_range("2.1.0", ">=1.24,<2") is False
    assert deps.in_range("4.10.0.84", ">=4.10.0.84") and deps.in_range("4.9.0.80", ">=4.10.0.84") is False
    assert deps.in_range("garbage", ">=1") is None


# ---------------------------------------------------------------- one line when a package is broken
def _fake_package(root: Path, module: str, dist: str, version: str, body: str) -> Path:
    """A package ``module`` (with ``dist``'s metadata at ``version``) that shadows the real one."""
    (root / module).mkdir(parents=True)
    (root / module / "__init__.py").write_text(textwrap.dedent(body))
    info = root / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    return root


NUMPY1_ORT = """
    import sys
    # what onnxruntime 1.17.3 (built for NumPy 1.x) does under NumPy 2.4 (measured): NumPy prints a
    # page of text with a traceback, then the import ends in a bare ImportError
    sys.stderr.write("\\nA module that was compiled using NumPy 1.x cannot be run in\\nNumPy 2.4.6 as it may crash. "
                     "To support both 1.x and 2.x\\nversions of NumPy, ...\\n\\nTraceback (most recent call last):\\n"
                     '  File "<string>", line 1, in <module>\\n')
    raise ImportError
"""


def _launch(args, shadow: Path, cwd: Path):
    env = {**os.environ, "PYTHONPATH": f"{shadow}{os.pathsep}{ROOT}"}
    return subprocess.run([sys.executable, "-m", "edge.launch", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=120, check=False)


@pytest.mark.parametrize("command", ["verify", "predict", "serve"])
def test_broken_onnxruntime_import_is_one_line(tmp_path, command):
    shadow = _fake_package(tmp_path / "shadow", "onnxruntime", "onnxruntime", "1.17.3", NUMPY1_ORT)
    args = {"verify": [REGRESSION / "model.onnx"], "serve": ["--model", REGRESSION / "model.onnx", "--port", "0"],
            "predict": [REGRESSION / "golden" / "model" / "test_data_set_1" / "source.png",
                        "--model", REGRESSION / "model.onnx"]}[command]
    out = _launch([command, *map(str, args)], shadow, tmp_path)
    assert out.returncode == 2 and out.stdout == "", out.stderr
    assert out.stderr.splitlines() == [
        (f"edge-{command}: error: onnxruntime 1.17.3 cannot be imported (ImportError: built for NumPy 1.x, cannot run "
        "with NumPy 2.4.6); murakit's edge runtime supports onnxruntime>=1.18.1 (outside the supported range): "
        "pip install 'onnxruntime>=1.18.1'")]


def test_broken_numpy_is_one_line_even_though_edge_imports_it(tmp_path):
    # edge/__init__ imports numpy: a broken numpy must not end `import edge.launch` in a traceback
    shadow = _fake_package(tmp_path / "shadow", "numpy", "numpy", "1.23.0",
                           "raise ImportError('libopenblas.so.0: cannot open shared object file')\n")
    out = _launch(["verify", str(REGRESSION / "model.onnx")], shadow, tmp_path)
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr.splitlines() == [
        ("edge-verify: error: numpy 1.23.0 cannot be imported (ImportError: libopenblas.so.0: cannot open shared "
        "object file); murakit's edge runtime supports numpy>=1.24 (outside the supported range): "
        "pip install 'numpy>=1.24'")]


def test_broken_package_within_range_says_reinstall(tmp_path):
    shadow = _fake_package(tmp_path / "shadow", "cv2", "opencv-python-headless", "4.11.0.86",
                           "raise AttributeError('_ARRAY_API not found')\n")
    out = _launch(["predict", "x.png"], shadow, tmp_path)
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr.splitlines() == [
        ("edge-predict: error: opencv-python-headless 4.11.0.86 cannot be imported (AttributeError: _ARRAY_API not "
        "found); murakit's edge runtime supports opencv-python-headless>=4.10.0.84 (within the supported range; "
        "reinstall it): pip install --force-reinstall 'opencv-python-headless==4.11.0.86'")]


def test_missing_package_is_one_line(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # `import onnxruntime` -> ModuleNotFoundError
    monkeypatch.setattr(deps, "installed_version", lambda dists: None)
    assert deps.require("edge-verify") == 2
    assert capsys.readouterr().err.splitlines() == [
        ("edge-verify: error: onnxruntime is not installed; murakit's edge runtime supports onnxruntime>=1.18.1: "
        "pip install 'onnxruntime>=1.18.1'")]


def test_too_old_pydicom_names_its_version_and_the_range(monkeypatch):
    from edge.dicom import read_dicom_info
    from edge.errors import ImageError

    dcm = REGRESSION / "golden" / "model" / "test_data_set_4" / "source.dcm"
    monkeypatch.setitem(sys.modules, "pydicom.pixels", None)  # pydicom 2.x has no pydicom.pixels
    monkeypatch.setattr(deps, "installed_version", lambda dists: ("pydicom", "2.4.4"))
    with pytest.raises(ImageError) as e:
        read_dicom_info(dcm)
    assert str(e.value) == (
        f"{dcm}: pydicom 2.4.4 cannot be imported (ModuleNotFoundError: import of pydicom.pixels halted; None in "
        "sys.modules); murakit's edge runtime supports pydicom>=3.0.1 (outside the supported range): "
        "pip install 'murakit[dicom]'")


def test_working_imports_pass_through_and_keep_their_output(tmp_path, monkeypatch, capfd):
    assert deps.check() is None  # this venv's numpy, OpenCV and onnxruntime import
    assert capfd.readouterr().err == ""
    # a package that imports fine but writes to stderr (Python- and C-level): captured, then passed on
    (tmp_path / "chatty_floor_pkg.py").write_text("import os, sys\nsys.stderr.write('py says hi\\n')\n"
                                                  "os.write(2, b'fd says hi\\n')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert deps.problem("chatty_floor_pkg", ("no-such-dist",), ">=1") is None
    assert "chatty_floor_pkg" in sys.modules
    err = capfd.readouterr().err
    assert "py says hi" in err and "fd says hi" in err


# ---------------------------------------------------------------- the floors, installed and run
def _floors(*args):
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "floors.py"), "--json", *args], cwd=ROOT,
                         capture_output=True, text=True, timeout=900, check=False)
    assert out.stdout.strip(), out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1]), out


def _declared_floor(dist: str) -> str:
    spec = next(floors.parse_requirement(r)[2] for r in PYPROJECT["project"]["dependencies"]
                if floors.parse_requirement(r)[0] == dist)
    return floors.floor_of(spec)


def _same_release(installed: str, floor: str) -> bool:
    return deps.in_range(installed, f"=={floor}") is True


@pytest.mark.slow
@skip_install
def test_edge_runtime_at_the_declared_floors(tmp_path):
    d, _ = _floors()
    assert d["passed"], d["error"]
    v = d["versions"]
    for dist in ("numpy", "opencv-python-headless", "onnxruntime"):
        assert _same_release(v[dist], _declared_floor(dist)), (dist, v[dist])
    # on the lowest supported Python this machine has (3.10 here: requires-python's own floor)
    lowest = subprocess.run([floors.lowest_python(), "-c", "import sys; print('%d.%d.%d' % sys.version_info[:3])"],
                            capture_output=True, text=True, timeout=60, check=True).stdout.strip()
    assert v["python"] == lowest
    assert deps.in_range(lowest, PYPROJECT["project"]["requires-python"])
    assert d["result"]["verify"]["cases"] == 7 and d["result"]["predict_png_diff"] <= 1e-4
    assert max(d["result"]["verify"]["worst"].values()) <= 1e-4

    # the venv's own console script (edge.launch) turns a broken onnxruntime into one line
    venv = next(p for p in Path(floors.CACHE).glob(f"py{v['python']}-base-*") if re.search(r"-base-[0-9a-f]{12}$", p.name))
    shadow = _fake_package(tmp_path / "shadow", "onnxruntime", "onnxruntime", "1.17.3", NUMPY1_ORT)
    # `make test-avx2` names this venv's numpy and OpenCV dispatch targets; the floors' older numpy
    # and OpenCV do not know some of them and would say so on stderr
    emulation = ("VIRTUAL_ENV", "NPY_DISABLE_CPU_FEATURES", "OPENCV_CPU_DISABLE")
    env = {k: val for k, val in os.environ.items() if k not in emulation}
    env["PYTHONPATH"] = str(shadow)
    broken = subprocess.run([str(venv / "bin" / "edge-verify"), str(REGRESSION / "model.onnx")], env=env,
                            cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False)
    assert broken.returncode == 2 and broken.stdout == ""
    assert len(broken.stderr.splitlines()) == 1 and "onnxruntime 1.17.3 cannot be imported" in broken.stderr


@pytest.mark.slow
@skip_install
def test_opencv_floor_beside_the_newest_numpy():
    # the kind of failure: a floor built for NumPy 1.x beside the NumPy 2 pip installs with it
    # (OpenCV < 4.10.0.84). onnxruntime's floor, 1.18.1, caps numpy < 2 itself, so pip never pairs
    # them; the newest onnxruntime goes with numpy 2 here.
    d, _ = _floors("--free", "numpy", "--free", "onnxruntime")
    assert d["passed"], d["error"]
    assert _same_release(d["versions"]["opencv-python-headless"], _declared_floor("opencv-python-headless"))
    assert re.match(r"[2-9]\.", d["versions"]["numpy"]), d["versions"]
