"""Run the edge runtime at the lowest versions pyproject.toml allows (or at chosen versions).

Every ``>=`` lower bound of the base install (and of the extras asked for) is pinned to exactly
that version (``numpy>=1.24`` -> ``numpy==1.24``) in a constraints file; a clean virtualenv
(no system site-packages, so nothing from the dev install leaks in) gets this project installed
under those constraints, and the committed regression fixture (tests/data/regression: a tiny
CNN and its golden set) is run through the installed ``edge-predict`` and ``edge-verify``. A
floor that does not exist, cannot be installed beside the other floors, or fails to run fails
the check: a declared lower bound is one that has been run. Stdlib only, so it runs under any
Python (the venv's interpreter is chosen with ``--python``, default the lowest supported one
found: 3.10 when installed).

Usage (from the repository root)::

    python benchmarks/floors.py                           # base install, every floor
    python benchmarks/floors.py --free numpy              # floors, but the newest numpy pip picks
    python benchmarks/floors.py --extras dicom,serve      # the extras' floors too
    python benchmarks/floors.py --pin onnxruntime==1.22.1 --free numpy --row
                                                          # one row of docs/compatibility.md

Venvs are cached under ``.venv-floors/`` (git-ignored), keyed on the constraints, the extras,
the interpreter and pyproject.toml's install tables; a second run with the same key only re-runs
the checks (seconds, offline). The project is installed editable, so code changes need no rebuild.
Exit codes: 0 pass, 1 a check failed, 2 the venv could not be built (a floor that does not
exist or cannot be installed with the others). ``make floors`` runs the base and extras sets.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "data" / "regression"
CACHE = ROOT / ".venv-floors"
PROJECT = "murakit"
# the runtime distributions a table row reports (plus whatever --pin names)
REPORTED = ("onnxruntime", "numpy", "opencv-python-headless")
EXTRA_REPORTED = {"dicom": ("pydicom", "pylibjpeg"), "serve": ("fastapi", "uvicorn", "python-multipart")}
PNG_CASE, DICOM_CASE = "test_data_set_1", "test_data_set_4"
INSTALL_TIMEOUT = 900
RUN_TIMEOUT = 120

_REQ = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(\[[^\]]*\])?\s*([^;]*?)\s*(?:;\s*(.*))?$")


class FloorError(Exception):
    """The venv could not be built, or a check failed; the message is one line."""

    def __init__(self, message: str, code: int = 1):
        super().__init__(message)
        self.code = code


def normalize(name: str) -> str:
    """PEP 503 name: ``Opencv_Python.Headless`` -> ``opencv-python-headless``."""
    return re.sub(r"[-_.]+", "-", name).lower()


def parse_requirement(text: str) -> tuple:
    """``(name, extras, specifier, marker)`` of a PEP 508 string such as ``uvloop>=0.19; sys_platform != 'win32'``."""
    m = _REQ.match(text)
    if not m:
        raise FloorError(f"cannot parse the requirement {text!r}", 2)
    name, extras, spec, marker = m.groups()
    return normalize(name), (extras or "").strip("[]"), spec.replace(" ", ""), (marker or "").strip()


def requirements(pyproject: dict, extras=()) -> list:
    """The base dependencies plus those of ``extras``, self-references (``murakit[dicom]``) expanded."""
    project = pyproject["project"]
    optional = project.get("optional-dependencies", {})
    out, todo, seen = list(project["dependencies"]), list(extras), set()
    while todo:
        extra = todo.pop(0)
        if extra in seen:
            continue
        if extra not in optional:
            raise FloorError(f"pyproject.toml has no extra {extra!r} (has: {', '.join(sorted(optional))})", 2)
        seen.add(extra)
        for req in optional[extra]:
            name, inner, _, _ = parse_requirement(req)
            if name == PROJECT:
                todo += [e.strip() for e in inner.split(",") if e.strip()]
            else:
                out.append(req)
    return out


def floor_of(spec: str):
    """The version after ``>=`` in a specifier (``>=1.24,<3`` -> ``1.24``), or None."""
    for part in spec.split(","):
        if part.startswith(">="):
            return part[2:]
    return None


def constraints(reqs, free=(), pins=()) -> list:
    """Constraint lines: each requirement's floor pinned with ``==`` (its marker kept), except the
    names in ``free`` (left to pip) and those given in ``pins`` (``name==version`` overrides).

    A requirement without a ``>=`` floor is an error: an unbounded range promises every
    release ever made, which nobody has run.
    """
    free = {normalize(f) for f in free}
    override = {}
    for pin in pins:
        name, _, spec, _ = parse_requirement(pin)
        if not spec.startswith("=="):
            raise FloorError(f"--pin {pin!r}: expected name==version", 2)
        override[name] = spec
    lowest = {}  # name -> (floor, marker); a name listed twice (base and an extra) gets the higher floor
    for req in reqs:
        name, _, spec, marker = parse_requirement(req)
        if name in free or name in override:
            continue
        floor = floor_of(spec)
        if floor is None:
            raise FloorError(f"{req!r} has no lower bound (>=): every range needs a floor that has been run", 2)
        if name not in lowest or _release(floor) > _release(lowest[name][0]):
            lowest[name] = (floor, marker)
    lines = [f"{name}=={floor}" + (f"; {marker}" if marker else "") for name, (floor, marker) in lowest.items()]
    lines += [f"{name}{spec}" for name, spec in sorted(override.items())]
    return sorted(lines)


def _release(version: str) -> tuple:
    m = re.match(r"\d+(?:\.\d+)*", version)
    return tuple(int(p) for p in m.group(0).split(".")) if m else ()


def lowest_python() -> str:
    """The lowest interpreter that pyproject's requires-python allows and this machine has."""
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    low = tuple(int(p) for p in meta["project"]["requires-python"].removeprefix(">=").split("."))
    pyenv = Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv") / "versions"
    for minor in range(low[1], 20):
        candidates = [shutil.which(f"python{low[0]}.{minor}"), *sorted(pyenv.glob(f"{low[0]}.{minor}.*/bin/python3"))]
        for exe in filter(None, candidates):
            with contextlib.suppress(OSError, subprocess.TimeoutExpired):
                if _run([exe, "-c", "import venv, ssl"], timeout=30).returncode == 0:  # pyenv shims may not run
                    return str(exe)
    return sys.executable


def _env(offline: bool = False) -> dict:
    """The parent's environment minus what would leak the dev install into the floor venv;
    ``offline``: every HTTP(S) request goes to a closed port, so a library that downloads at
    run time fails the check instead of passing on a machine that happens to be online
    (pydicom 3.0.0 fetched its example files on ``import pydicom``)."""
    drop = ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME", "PYTHONSTARTUP", "MURAKIT_MODEL")
    env = {k: v for k, v in os.environ.items() if k not in drop and k.lower() not in ("no_proxy", "all_proxy")}
    if offline:
        for k in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
            env[k] = "http://127.0.0.1:9"
        env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"  # edge-serve's own port stays reachable
    return env


def _run(cmd, cwd=None, timeout=RUN_TIMEOUT, offline=True) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in cmd], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env=_env(offline), check=False)


def _last_line(text: str) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip() and not ln.startswith("WARNING: Location")]
    return lines[-1].strip()[:300] if lines else ""


@contextlib.contextmanager
def _locked(path: Path):
    """An exclusive lock (fcntl) so two test runs never build the same venv at once."""
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _install_relevant() -> dict:
    """What of pyproject.toml an install depends on ([project], [build-system], setuptools'
    package lists): a comment or a lint setting changed there does not rebuild the venvs."""
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return {"project": meta["project"], "build-system": meta.get("build-system"),
            "setuptools": meta.get("tool", {}).get("setuptools")}


def venv_for(python: str, lines, extras, cache: Path = CACHE, label: str = "", outside=None) -> tuple:
    """Build (or reuse) the venv for these constraints; returns ``(venv, build_seconds or None)``.

    ``outside``: requirement names to install under the constraints first, then the project
    with ``--no-deps``, so a version its ranges exclude (below a floor) can still be measured,
    as on a device whose onnxruntime is pinned by its vendor.
    """
    version = _run([python, "-c", "import sys; print('%d.%d.%d' % sys.version_info[:3])"]).stdout.strip()
    if not version:
        raise FloorError(f"{python}: not a working Python interpreter", 2)
    key_text = json.dumps({"python": [python, version], "constraints": list(lines), "extras": sorted(extras), "outside": outside,
                           "pyproject": _install_relevant(), "root": str(ROOT)})
    key = hashlib.sha256(key_text.encode()).hexdigest()[:12]
    label = label or ("base" if not extras else "-".join(sorted(extras)))
    venv = cache / f"py{version}-{label}-{key}"
    stamp = venv / ".floors-complete"
    with _locked(cache / f".lock-{label}"):
        if stamp.exists():
            return venv, None
        t0 = time.perf_counter()
        shutil.rmtree(venv, ignore_errors=True)
        cache.mkdir(parents=True, exist_ok=True)
        (cache / ".gitignore").write_text("*\n")
        made = _run([python, "-m", "venv", venv], timeout=300)
        if made.returncode != 0:
            raise FloorError(f"python -m venv failed: {_last_line(made.stderr)}", 2)
        cfile = venv / "floors-constraints.txt"
        cfile.write_text("".join(f"{ln}\n" for ln in lines))
        target = f"{ROOT}[{','.join(sorted(extras))}]" if extras else str(ROOT)
        # nice: the floor build shares the machine with other work; pip's wheel cache makes a rebuild cheap
        pip = ["nice", "-n", "10", venv / "bin" / "python", "-m", "pip", "install", "--disable-pip-version-check",
               "--no-input", "-c", cfile]
        if shutil.which("nice") is None:
            pip = pip[3:]
        steps = [[*pip, *outside], [*pip, "--no-deps", "-e", target]] if outside else [[*pip, "-e", target]]
        for cmd in steps:
            out = _run(cmd, cwd=ROOT, timeout=INSTALL_TIMEOUT, offline=False)
            if out.returncode != 0:
                break
        if out.returncode != 0:
            shutil.rmtree(venv, ignore_errors=True)
            detail = [ln.strip() for ln in (out.stdout + out.stderr).splitlines()
                      if ln.startswith("ERROR") or "depends on" in ln or "requested" in ln]
            raise FloorError("pip could not install the floors: " + " | ".join(detail[:6] or [_last_line(out.stderr)]),
                             2)
        seconds = time.perf_counter() - t0
        stamp.write_text(json.dumps({"build_seconds": round(seconds, 1), "constraints": list(lines)}))
        stale = re.compile(rf"py{re.escape(version)}-{re.escape(label)}-[0-9a-f]{{12}}")
        for old in cache.iterdir():  # this label's venv for a stale key: pyproject or pins changed
            if old != venv and stale.fullmatch(old.name):
                shutil.rmtree(old, ignore_errors=True)
        return venv, seconds


def installed(venv: Path, names) -> dict:
    """Installed versions (distribution metadata, so a package that fails to import still has one)."""
    code = ("import importlib.metadata as m, json, sys\n"
            "out = {'python': '%d.%d.%d' % sys.version_info[:3]}\n"
            f"for n in {sorted(set(names))!r}:\n"
            "    try:\n        out[n] = m.version(n)\n"
            "    except m.PackageNotFoundError:\n        out[n] = None\n"
            "print(json.dumps(out))")
    out = _run([venv / "bin" / "python", "-c", code])
    if out.returncode != 0:
        raise FloorError(f"cannot read the installed versions: {_last_line(out.stderr)}")
    return json.loads(out.stdout)


def _fixture(work: Path) -> tuple:
    shutil.copytree(FIXTURE / "golden", work / "golden")
    shutil.copy2(FIXTURE / "model.onnx", work / "model.onnx")
    manifest = json.loads((work / "golden" / "model" / "manifest.json").read_text())
    return work / "model.onnx", manifest


def _recorded_probability(venv: Path, work: Path, case: str) -> float:
    code = ("import sys; from edge.golden import read_golden\n"
            "_, cases = read_golden('golden/model')\n"
            f"print(float(next(c for c in cases if c.directory.name == {case!r}).outputs['probability'].ravel()[0]))")
    out = _run([venv / "bin" / "python", "-c", code], cwd=work)
    if out.returncode != 0:
        raise FloorError(f"cannot read the recorded probability: {_last_line(out.stderr)}")
    return float(out.stdout)


def _predict(venv: Path, work: Path, source: Path, label: int, recorded: float, prog_note: str) -> float:
    """edge-predict --json on one fixture case: exit 0, the recorded label, the recorded probability."""
    out = _run([venv / "bin" / "edge-predict", source, "--model", "model.onnx", "--json", "--threads", "1"], cwd=work)
    if out.returncode != 0:
        raise FloorError(f"edge-predict {prog_note} exited {out.returncode}: {_last_line(out.stderr)}")
    d = json.loads(out.stdout.strip().splitlines()[-1])
    diff = abs(d["probability"] - recorded)
    if d["label"] != ("normal", "abnormal")[label] or diff > 1e-4:
        raise FloorError(f"edge-predict {prog_note}: {d['label']} p={d['probability']} (recorded: "
                         f"{('normal', 'abnormal')[label]} p={recorded})")
    return diff


_LOCAL = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # 127.0.0.1 never goes through a proxy


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve_check(venv: Path, work: Path, image: Path, recorded: float) -> float:
    """edge-serve on 127.0.0.1: /healthz answers, POST /v1/predict gives the recorded probability."""
    port = _free_port()
    proc = subprocess.Popen([str(venv / "bin" / "edge-serve"), "--model", "model.onnx", "--port", str(port)],
                            cwd=work, env=_env(offline=True), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise FloorError(f"edge-serve exited {proc.returncode}: {_last_line(proc.stderr.read())}")
            try:
                with _LOCAL.open(f"{base}/healthz", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise FloorError("edge-serve did not answer /healthz within 60 s")
            time.sleep(0.2)
        boundary = "floorsboundary"
        body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"source.png\"\r\n"
                "Content-Type: image/png\r\n\r\n").encode() + image.read_bytes() + f"\r\n--{boundary}--\r\n".encode()
        req = urllib.request.Request(f"{base}/v1/predict", data=body, method="POST",
                                     headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
        try:
            with _LOCAL.open(req, timeout=30) as r:
                d = json.loads(r.read())
        except urllib.error.HTTPError as e:
            raise FloorError(f"edge-serve POST /v1/predict: HTTP {e.code} {e.read()[:200]!r}") from None
        p = d.get("probability", (d.get("results") or [{}])[0].get("probability"))
        if p is None or abs(p - recorded) > 1e-4:
            raise FloorError(f"edge-serve POST /v1/predict: unexpected answer {json.dumps(d)[:200]}")
        return abs(p - recorded)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _scale_check(venv: Path, work: Path, manifest: dict, recorded: float) -> float:
    """``murakit score --engine ray --format parquet`` over the fixture's PNG cases (a local Ray):
    exit 0, one Parquet row per image, the recorded probability for the PNG case."""
    pngs = [c["dir"] for c in manifest["cases"] if (work / "golden" / "model" / c["dir"] / "source.png").exists()]
    inputs = work / "pngs"
    for d in pngs:
        (inputs / d).mkdir(parents=True)
        shutil.copy2(work / "golden" / "model" / d / "source.png", inputs / d / "source.png")
    out = _run([venv / "bin" / "murakit", "score", inputs, "--model", "model.onnx", "--out", "scored", "--engine",
                "ray", "--format", "parquet", "--workers", "1", "--no-progress"], cwd=work, timeout=600)
    if out.returncode != 0:
        raise FloorError(f"murakit score --engine ray exited {out.returncode}: {_last_line(out.stderr)}")
    code = ("import json, pyarrow.parquet as pq\n"
            "t = pq.read_table('scored/images.parquet').to_pydict()\n"
            "print(json.dumps(dict(zip(t['path'], t['probability']))))")
    got = _run([venv / "bin" / "python", "-c", code], cwd=work)
    if got.returncode != 0:
        raise FloorError(f"cannot read scored/images.parquet: {_last_line(got.stderr)}")
    rows = json.loads(got.stdout)
    mine = [p for path, p in rows.items() if Path(path).parent.name == PNG_CASE]
    if len(rows) != len(pngs) or len(mine) != 1 or abs(mine[0] - recorded) > 1e-4:
        raise FloorError(f"murakit score --engine ray: unexpected rows {json.dumps(rows)[:200]}")
    return abs(mine[0] - recorded)


def check(venv: Path, extras=()) -> dict:
    """Run the fixture through the venv's installed commands; raises FloorError on any failure."""
    result = {}
    with tempfile.TemporaryDirectory(prefix="floors-") as tmp:
        work = Path(tmp) / "device"  # outside the source tree, as on a device
        work.mkdir()
        _, manifest = _fixture(work)
        labels = {c["dir"]: c["label"] for c in manifest["cases"]}
        png = work / "golden" / "model" / PNG_CASE / "source.png"
        recorded = _recorded_probability(venv, work, PNG_CASE)
        result["predict_png_diff"] = _predict(venv, work, png, labels[PNG_CASE], recorded, "(PNG)")
        if "dicom" in extras:
            dcm = work / "golden" / "model" / DICOM_CASE / "source.dcm"
            result["predict_dicom_diff"] = _predict(venv, work, dcm, labels[DICOM_CASE],
                                                    _recorded_probability(venv, work, DICOM_CASE), "(DICOM)")
        out = _run([venv / "bin" / "edge-verify", "model.onnx", "--json", "--threads", "1"], cwd=work)
        if out.returncode != 0:
            raise FloorError(f"edge-verify exited {out.returncode}: {_last_line(out.stderr or out.stdout)}")
        d = json.loads(out.stdout.strip().splitlines()[-1])
        if not d["passed"] or d["cases"] != len(manifest["cases"]):
            raise FloorError(f"edge-verify: {json.dumps(d)}")
        result["verify"] = {"cases": d["cases"], "worst": d["worst"]}
        if "dicom" in extras:  # with pydicom the DICOM cases' pipeline is checked too, not skipped
            table = _run([venv / "bin" / "edge-verify", "model.onnx", "--threads", "1"], cwd=work)
            if table.returncode != 0 or "pipeline check skipped" in table.stdout:
                raise FloorError(f"edge-verify (dicom extra): DICOM pipeline not checked: {_last_line(table.stdout)}")
        if "serve" in extras:
            result["serve_diff"] = _serve_check(venv, work, png, recorded)
        if "scale" in extras:
            result["scale_diff"] = _scale_check(venv, work, manifest, recorded)
    return result


def row(versions: dict, result: dict, error: str = "") -> str:
    """One Markdown row of docs/compatibility.md."""
    worst = result.get("verify", {}).get("worst", {})
    fmt = "{:.1e}".format
    verdict = (f"PASS {result['verify']['cases']}/{result['verify']['cases']}" if result else f"FAIL: {error}")
    return (f"| {versions.get('onnxruntime')} | {versions.get('numpy')} | {versions.get('opencv-python-headless')} "
            f"| {versions.get('python')} | {verdict} | {fmt(worst['probability']) if 'probability' in worst else '-'} "
            f"| {fmt(worst['cam']) if 'cam' in worst else '-'} | {time.strftime('%Y-%m-%d')} |")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="floors.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--extras", default="", help="comma-separated extras whose floors to add (e.g. dicom,serve)")
    p.add_argument("--free", action="append", default=[], metavar="NAME",
                   help="leave NAME unpinned (pip picks the newest the others allow); repeatable")
    p.add_argument("--pin", action="append", default=[], metavar="NAME==VERSION",
                   help="pin NAME to VERSION instead of its floor (or in addition); repeatable")
    p.add_argument("--outside-range", action="store_true",
                   help="install the pins even where pyproject's ranges exclude them (the project itself with "
                        "--no-deps): measures a version below a floor")
    p.add_argument("--python", help="interpreter of the venv (default: the lowest supported one found)")
    p.add_argument("--cache", default=str(CACHE), help="folder of the cached venvs (default .venv-floors/)")
    p.add_argument("--label", default="", help="name of the venv in the cache (default: the extras)")
    p.add_argument("--row", action="store_true", help="print a docs/compatibility.md table row (also on FAIL)")
    p.add_argument("--json", action="store_true", help="print one JSON line")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    extras = [e.strip() for e in args.extras.split(",") if e.strip()]
    python = args.python or lowest_python()
    versions, result, error, code, seconds = {}, {}, "", 0, None
    try:
        reqs = requirements(tomllib.loads((ROOT / "pyproject.toml").read_text()), extras)
        lines = constraints(reqs, args.free, args.pin)
        label = args.label or "-".join(["base", *sorted(extras)] + [f"{normalize(n)}" for n in sorted(args.free)]
                                       + [p.replace("==", "-") for p in sorted(args.pin)])
        outside = sorted({parse_requirement(r)[0] + (f"; {parse_requirement(r)[3]}" if parse_requirement(r)[3] else "")
                          for r in reqs}) if args.outside_range else None
        venv, seconds = venv_for(python, lines, extras, Path(args.cache), label + ("-outside" if outside else ""),
                                 outside)
        names = [parse_requirement(r)[0] for r in reqs] + list(REPORTED) + [parse_requirement(p)[0] for p in args.pin]
        versions = installed(venv, names)
        result = check(venv, extras)
    except FloorError as e:
        error, code = str(e), e.code
    except subprocess.TimeoutExpired as e:
        error, code = f"timed out after {e.timeout:.0f} s: {' '.join(map(str, e.cmd))[:200]}", 1
    if args.json:
        print(json.dumps({"passed": not error, "error": error, "extras": extras, "free": args.free, "pin": args.pin,
                          "versions": versions, "result": result, "build_seconds": seconds}))
    elif args.row:
        print(row(versions, result, error))
    else:
        built = f"built in {seconds:.0f} s" if seconds is not None else "cached venv"
        what = ", ".join(["base", *extras] + [f"{n} free" for n in args.free] + args.pin)
        shown = ", ".join(f"{k} {v}" for k, v in sorted(versions.items()) if v)
        if error:
            print(f"floors.py: FAIL ({what}): {error}", file=sys.stderr)
            if shown:
                print(f"  installed: {shown}", file=sys.stderr)
        else:
            worst = result["verify"]["worst"]
            print(f"floors.py: PASS ({what}; {built}): edge-predict and edge-verify "
                  f"{result['verify']['cases']}/{result['verify']['cases']}, max |diff| "
                  + ", ".join(f"{k} {v:.1e}" for k, v in sorted(worst.items())))
            print(f"  installed: {shown}")
    return code


if __name__ == "__main__":
    sys.exit(main())
