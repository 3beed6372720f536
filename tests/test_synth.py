"""The embedded default: MURA-v1.1 layout, CSV formats, quirks, determinism, bad input."""
from __future__ import annotations

import csv
import hashlib
import json
import re
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest

from murakit.data import synth
from murakit.errors import MurakitError

PART_RE = "|".join(synth.PARTS)
IMAGE_RE = re.compile(
    rf"^MURA-v1\.1/(train|valid)/XR_({PART_RE})/patient(\d{{5}})/study(\d+)_(positive|negative)"
    r"/image(\d+)\.png$")
STUDY_RE = re.compile(
    rf"^MURA-v1\.1/(train|valid)/XR_({PART_RE})/patient(\d{{5}})/study(\d+)_(positive|negative)"
    r"/,([01])$")


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth")
    synth.generate(out, n_studies=24, seed=3, workers=1, progress=False)
    return out


def _lines(path: Path) -> list[str]:
    text = path.read_text()
    assert text.endswith("\n")
    return text.splitlines()


def _pngs_on_disk(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in (root / "MURA-v1.1").rglob("*.png")
            if not p.name.startswith("._")}


def test_image_csvs_list_exactly_the_images(tree):
    listed = []
    for split in ("train", "valid"):
        lines = _lines(tree / f"MURA-v1.1/{split}_image_paths.csv")
        assert lines, split
        for line in lines:  # no header: every line is a path
            m = IMAGE_RE.match(line)
            assert m and m.group(1) == split, line
        listed += lines
    assert len(listed) == len(set(listed))
    assert set(listed) == _pngs_on_disk(tree)


def test_labeled_studies_format_and_labels(tree):
    image_studies = set()
    for split in ("train", "valid"):
        image_studies |= {p.rsplit("/", 1)[0] + "/" for p in
                          _lines(tree / f"MURA-v1.1/{split}_image_paths.csv")}
        for line in _lines(tree / f"MURA-v1.1/{split}_labeled_studies.csv"):
            m = STUDY_RE.match(line)
            assert m and m.group(1) == split, line
            assert int(m.group(6)) == (m.group(5) == "positive")
            assert (tree / line.rsplit(",", 1)[0]).is_dir()
    labeled = {line.rsplit(",", 1)[0] for s in ("train", "valid")
               for line in _lines(tree / f"MURA-v1.1/{s}_labeled_studies.csv")}
    assert labeled == image_studies


def test_patients_disjoint_and_studies_numbered(tree):
    patients = {}
    for split in ("train", "valid"):
        patients[split] = {IMAGE_RE.match(p).group(3) for p in
                           _lines(tree / f"MURA-v1.1/{split}_image_paths.csv")}
    assert patients["train"] and patients["valid"]
    assert not patients["train"] & patients["valid"]
    for line in _lines(tree / "MURA-v1.1/train_image_paths.csv"):
        folder = (tree / line).parent
        views = sorted(int(p.stem[5:]) for p in folder.glob("image*.png"))
        assert views == list(range(1, len(views) + 1))  # image1..imageN without holes


def test_appledouble_junk_present_unlisted_and_not_png(tree):
    junk = list((tree / "MURA-v1.1").rglob("._image*.png"))
    assert junk
    listed = (tree / "MURA-v1.1/train_image_paths.csv").read_text() + \
        (tree / "MURA-v1.1/valid_image_paths.csv").read_text()
    for j in junk:
        assert (j.parent / j.name[2:]).is_file()  # sits beside its image
        data = j.read_bytes()
        assert data[:4] == b"\x00\x05\x16\x07" and 0 < len(data) <= 8192
        assert cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED) is None
    assert "/._" not in listed


def test_images_channels_sizes_and_annotations(tree):
    rows = list(csv.DictReader((tree / "MURA-v1.1/synth_annotations.csv").read_text().splitlines()))
    assert {r["path"] for r in rows} == _pngs_on_disk(tree)
    channels, dtypes = set(), set()
    for r in rows:
        img = cv2.imread(str(tree / r["path"]), cv2.IMREAD_UNCHANGED)
        channels.add(1 if img.ndim == 2 else img.shape[2])
        dtypes.add(img.dtype)
        h, w = img.shape[:2]
        assert 90 <= max(h, w) <= 512 and min(h, w) >= 50
        assert img.std() > 0
        if r["finding"]:
            x0, y0, x1, y1 = (int(r[k]) for k in ("x0", "y0", "x1", "y1"))
            assert 0 <= x0 < x1 < w and 0 <= y0 < y1 < h
            assert r["finding"] in synth.FINDINGS
        else:
            assert r["x0"] == r["y0"] == r["x1"] == r["y1"] == ""
    assert channels == {1, 3}
    assert np.dtype(np.uint8) in dtypes
    assert {r["inverted"] for r in rows} <= {"0", "1"}


def test_abnormal_studies_show_a_finding_normal_ones_never(tree):
    rows = list(csv.DictReader((tree / "MURA-v1.1/synth_annotations.csv").read_text().splitlines()))
    by_study: dict[str, list[str]] = {}
    for r in rows:
        by_study.setdefault(r["path"].rsplit("/", 1)[0], []).append(r["finding"])
    assert any(s.endswith("positive") for s in by_study)
    assert any(s.endswith("negative") for s in by_study)
    for study, findings in by_study.items():
        if study.endswith("positive"):
            assert any(findings), study
            assert len({f for f in findings if f}) == 1  # one finding kind per study
        else:
            assert not any(findings), study


@pytest.mark.parametrize("kind", synth.FINDINGS)
def test_finding_box_covers_the_drawn_finding(kind):
    """Rendering the same view with and without the finding differs only inside its box.

    (For fractures with the fragment kept in place: the box marks the fracture site.)
    """
    plan = synth.StudyPlan(0, "train", "FOREARM", 1, 1, 1, 1)
    rng = np.random.default_rng(np.random.SeedSequence([5, 1]))
    spec = synth.study_spec(plan, rng)
    params = synth.finding_params(kind, rng)
    if kind == "fracture":  # a displaced / angulated distal fragment moves far from the site
        params.update(disp=0.0, ang=0.0, along=0.0)
    spec = replace(spec, finding=kind, params=params, show=(True,))
    with_f, box = synth.render_canvas("FOREARM", spec, 0, 1.0, 0.0, np.random.default_rng(9))
    without, none = synth.render_canvas("FOREARM", replace(spec, finding=""), 0, 1.0, 0.0,
                                        np.random.default_rng(9))
    assert none is None and box is not None
    diff = np.abs(with_f - without)
    x0, y0, x1, y1 = np.round(box).astype(int)
    inside = np.zeros(diff.shape, bool)
    inside[max(y0 - 3, 0):y1 + 4, max(x0 - 3, 0):x1 + 4] = True  # blur spreads a few px
    assert diff[inside].max() > 0.1
    assert diff[~inside].max() < 0.02


def test_same_seed_same_bytes_serial_or_parallel(tmp_path):
    a = synth.generate(tmp_path / "a", n_studies=8, seed=7, workers=1, progress=False)
    b = synth.generate(tmp_path / "b", n_studies=8, seed=7, workers=2, progress=False)
    c = synth.generate(tmp_path / "c", n_studies=8, seed=8, workers=1, progress=False)
    files_a = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    assert files_a == files_b
    for f in files_a:
        assert (a / f).read_bytes() == (b / f).read_bytes(), f
    assert (a / "train_image_paths.csv").read_bytes() != (c / "train_image_paths.csv").read_bytes()


def test_rerun_is_noop_and_foreign_tree_is_refused(tmp_path):
    root = synth.generate(tmp_path, n_studies=2, seed=1, workers=1, progress=False)
    marker = root / "train_image_paths.csv"
    before = marker.stat().st_mtime_ns
    assert synth.existing_matches(tmp_path, 2, 1)
    synth.generate(tmp_path, n_studies=2, seed=1, workers=1, progress=False)
    assert marker.stat().st_mtime_ns == before
    with pytest.raises(MurakitError, match="--force"):
        synth.generate(tmp_path, n_studies=3, seed=1, workers=1, progress=False)
    synth.generate(tmp_path, n_studies=3, seed=1, workers=1, progress=False, force=True)
    assert synth.existing_matches(tmp_path, 3, 1)
    assert not list(tmp_path.glob(".MURA-v1.1.*"))  # no temp or old trees left behind


def test_refuses_foreign_nonempty_folder(tmp_path):
    (tmp_path / "MURA-v1.1").mkdir()
    (tmp_path / "MURA-v1.1" / "precious.txt").write_text("x")
    with pytest.raises(MurakitError, match="already exists"):
        synth.generate(tmp_path, n_studies=2, progress=False)
    assert (tmp_path / "MURA-v1.1" / "precious.txt").exists()


@pytest.mark.parametrize("n", [0, -3, 2.5, True])
def test_bad_study_count_is_a_clear_error(tmp_path, n):
    with pytest.raises(MurakitError, match="positive integer"):
        synth.generate(tmp_path, n_studies=n, progress=False)
    assert not (tmp_path / "MURA-v1.1").exists()


def test_cli_synth(tmp_path, capsys):
    from murakit.cli import main

    assert main(["synth", str(tmp_path), "--studies", "0"]) == 2
    assert "positive integer" in capsys.readouterr().err
    assert main(["synth", str(tmp_path), "--studies", "2", "--no-progress"]) == 0
    assert "wrote 2 studies" in capsys.readouterr().out
    assert main(["synth", str(tmp_path), "--studies", "2", "--no-progress"]) == 0
    assert "nothing to do" in capsys.readouterr().out
    assert main(["synth", str(tmp_path), "--studies", "3", "--no-progress"]) == 2
    assert "--force" in capsys.readouterr().err


def test_plan_matches_mura_proportions_and_valid_share():
    plans = synth.plan_studies(1500, seed=0)
    assert len(plans) == 1500 and [p.index for p in plans] == list(range(1500))
    valid = np.mean([p.split == "valid" for p in plans])
    abnormal = np.mean([p.label for p in plans])
    views = np.mean([p.n_views for p in plans])
    assert abs(valid - synth.SynthSettings().valid_fraction) <= 0.01  # larger than MURA's ~8%, on purpose
    assert 0.33 <= abnormal <= 0.47
    assert 2.5 <= views <= 3.0
    assert {p.part for p in plans} == set(synth.PARTS)
    multi = {}
    for p in plans:
        multi.setdefault(p.patient, []).append(p)
    assert any(len(v) > 1 for v in multi.values())  # some patients have several studies
    dirs = [p.study_dir for p in plans]
    assert len(set(dirs)) == len(dirs)


# Digest of `generate(OUT, n_studies=12, seed=0)` as written by generator version 8 (the first
# whose pixels do not depend on the CPU: the same on an Intel Xeon with AVX-512 and, emulated,
# on AVX2 and SSE only; see test_bytes_do_not_depend_on_the_instruction_set): decoded pixels
# (not PNG bytes, which depend on the zlib build) + every CSV and junk file.
V8_DIGEST_12_STUDIES_SEED_0 = "49cb598dc0544f27dcaaee8a18c9556296f77ff1bb924bffbd12e9a65b86afd0"


def _digest(mura: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(mura.rglob("*")):
        if not p.is_file() or p.name == "synth.json":
            continue
        h.update(str(p.relative_to(mura)).encode())
        if p.suffix == ".png" and not p.name.startswith("._"):
            img = cv2.imread(str(p), cv2.IMREAD_UNCHANGED)
            h.update(str((img.shape, img.dtype)).encode())
            h.update(img.tobytes())
        else:
            h.update(p.read_bytes())
    return h.hexdigest()


def test_default_settings_reproduce_the_version_8_data():
    """The settings' defaults are exactly the embedded default (else bump GENERATOR_VERSION)."""
    assert synth.GENERATOR_VERSION == 8
    root = Path(synth.generate(_tmp("v8"), n_studies=12, seed=0, workers=1, progress=False))
    assert _digest(root) == V8_DIGEST_12_STUDIES_SEED_0


# Generate in a child whose every CPU-dispatched code path is off: OpenCV's optimisations and
# its dispatched kernels (SSE4.1 ... AVX-512), numpy's dispatch targets above its baseline
# (x86-64-v2: no AVX2, no AVX-512), OpenBLAS's kernels (Prescott) and glibc's FMA / AVX2 libm
# variants. 16 studies, seed 14: all four findings, a ring, a cast, 8-bit grey, RGB and 16-bit.
_CHILD = """
import json, sys
import cv2
cv2.setUseOptimized(False)
from numpy._core._multiarray_umath import __cpu_features__
from murakit.data import synth
synth.generate(sys.argv[1], n_studies=16, seed=14, workers=1, progress=False)
print(json.dumps({"cv2_optimized": cv2.useOptimized(), "cv2_features": cv2.getCPUFeaturesLine(),
                  "numpy_on": sorted(k for k, v in __cpu_features__.items() if v)}))
"""


def _no_simd_env() -> dict:
    import os

    from numpy._core._multiarray_umath import __cpu_baseline__, __cpu_dispatch__

    env = dict(os.environ)
    env["NPY_DISABLE_CPU_FEATURES"] = " ".join(f for f in __cpu_dispatch__ if f not in __cpu_baseline__)
    dispatched = [t[1:].rstrip("?") for t in cv2.getCPUFeaturesLine().split() if t.startswith("*")]
    env["OPENCV_CPU_DISABLE"] = ",".join(dispatched)
    env["OPENBLAS_CORETYPE"] = "Prescott"
    tunable = "glibc.cpu.hwcaps=-AVX512F,-AVX2,-FMA"
    env["GLIBC_TUNABLES"] = f"{env['GLIBC_TUNABLES']}:{tunable}" if env.get("GLIBC_TUNABLES") else tunable
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1])
    return env


def test_bytes_do_not_depend_on_the_instruction_set(tmp_path):
    """Same seed, same files with every SIMD path of OpenCV, numpy, OpenBLAS and libm switched off.

    Generator version 7 failed this (OpenCV's float blur / warp / resize and numpy's
    transcendental functions change their last bits with the instruction set): 29 of 34 images
    of the digest test differed between an AVX-512 and an AVX2 machine.
    """
    import subprocess
    import sys

    env = _no_simd_env()
    child = subprocess.run([sys.executable, "-c", _CHILD, str(tmp_path / "plain")], env=env, check=False,
                           capture_output=True, text=True, timeout=300)
    assert child.returncode == 0, child.stderr[-2000:]
    assert "unknown CPU feature" not in child.stderr
    seen = json.loads(child.stdout.strip().splitlines()[-1])
    assert seen["cv2_optimized"] is False
    assert all(t.endswith("?") for t in seen["cv2_features"].split() if t.startswith("*"))
    assert not set(env["NPY_DISABLE_CPU_FEATURES"].split()) & set(seen["numpy_on"])  # really off

    fast = synth.generate(tmp_path / "fast", n_studies=16, seed=14, workers=1, progress=False)
    plain = tmp_path / "plain" / "MURA-v1.1"
    names = sorted(p.relative_to(fast) for p in fast.rglob("*") if p.is_file())
    assert names == sorted(p.relative_to(plain) for p in plain.rglob("*") if p.is_file())
    differ = [str(n) for n in names if (fast / n).read_bytes() != (plain / n).read_bytes()]
    assert not differ, f"{len(differ)} of {len(names)} files differ, e.g. {differ[:3]}"


def test_exact_operations_match_opencv_and_numpy():
    """The CPU-independent replacements compute what the OpenCV / numpy calls they replace do
    (within float32 rounding), so version 8 looks like version 7."""
    from murakit.data.synth import exact

    rng = np.random.default_rng(0)
    img = rng.random((61, 47)).astype(np.float32)
    for sigma in (0.5, 0.7, 1.2, 2.6):
        np.testing.assert_allclose(exact.gaussian_blur(img, sigma),
                                   cv2.GaussianBlur(img, (0, 0), sigma), atol=1e-6)
    for size, cubic, flag in (((120, 90), False, cv2.INTER_LINEAR), ((200, 150), True, cv2.INTER_CUBIC)):
        np.testing.assert_allclose(exact.resize(img, size, cubic),
                                   cv2.resize(img, size, interpolation=flag), atol=1e-6)
    m = cv2.getRotationMatrix2D((20.5, 30.0), 23.0, 1.3)
    m[:, 2] += (4.25, -7.5)
    np.testing.assert_allclose(exact.warp_affine(img, m, (80, 70)),
                               cv2.warpAffine(img, m, (80, 70), flags=cv2.INTER_LINEAR), atol=1e-5)
    x = np.linspace(-20, 0, 10001, dtype=np.float32)
    np.testing.assert_allclose(exact.exp(x), np.exp(x.astype(np.float64)), rtol=3e-7)
    u = np.linspace(0, 1, 10001, dtype=np.float32)
    for g in (0.7, 1.5):
        np.testing.assert_allclose(exact.power(u, g), u.astype(np.float64) ** g, atol=3e-7)
    t = np.arange(1100) * 0.9
    np.testing.assert_allclose(exact.sin(t), np.sin(t), atol=1e-15)


def test_a_tree_of_another_generator_version_is_named_in_the_refusal(tmp_path):
    root = synth.generate(tmp_path, n_studies=2, seed=1, workers=1, progress=False)
    meta = json.loads((root / "synth.json").read_text())
    meta["version"] = synth.GENERATOR_VERSION - 1
    (root / "synth.json").write_text(json.dumps(meta))
    assert not synth.existing_matches(tmp_path, 2, 1)
    with pytest.raises(MurakitError, match=rf"version {synth.GENERATOR_VERSION}; it holds version "
                                           rf"{synth.GENERATOR_VERSION - 1}\).*--force"):
        synth.generate(tmp_path, n_studies=2, seed=1, workers=1, progress=False)


def _tmp(name: str) -> Path:
    import tempfile

    return Path(tempfile.mkdtemp(prefix=f"synth_{name}_"))


def _rows(root: Path) -> list[dict]:
    return list(csv.DictReader((root / "synth_annotations.csv").read_text().splitlines()))


def test_pixel_settings_keep_the_structure_and_change_the_pixels(tmp_path):
    """noise / exposure / contrast settings draw the same random numbers: same studies, views,
    labels and finding boxes, other pixels."""
    base = synth.generate(tmp_path / "a", n_studies=10, seed=4, workers=1, progress=False)
    other = synth.SynthSettings(studies=10, noise=3.0, bad_exposure=0.8, finding_contrast=0.5)
    alt = synth.generate(tmp_path / "b", seed=4, workers=1, progress=False, settings=other)
    assert _rows(base) == _rows(alt)
    for f in ("train_labeled_studies.csv", "valid_labeled_studies.csv"):
        assert (base / f).read_text() == (alt / f).read_text()
    path = _rows(base)[0]["path"]
    a, b = (cv2.imread(str(r.parent / path), cv2.IMREAD_UNCHANGED) for r in (base, alt))
    assert a.shape == b.shape and not np.array_equal(a, b)
    meta = json.loads((alt / "synth.json").read_text())
    assert synth.SynthSettings.from_dict(meta["settings"]) == other


def test_inversion_channels_and_sizes_follow_the_settings(tmp_path):
    s = synth.SynthSettings(studies=8, invert_prob=1.0, rgb_prob=1.0, u16_prob=0.0, min_side=200,
                            max_side=700, max_side_prob=0.5)
    root = synth.generate(tmp_path, seed=2, workers=1, progress=False, settings=s)
    rows = _rows(root)
    assert {r["inverted"] for r in rows} == {"1"}
    sides = []
    for r in rows:
        img = cv2.imread(str(root.parent / r["path"]), cv2.IMREAD_UNCHANGED)
        assert img.ndim == 3 and img.shape[2] == 3 and img.dtype == np.uint8
        sides.append(max(img.shape[:2]))
    assert 200 <= min(sides) and max(sides) <= 700 and 700 in sides


def _finding_strength(**settings) -> float:
    """Mean |with - without finding| inside the finding box of one forearm fracture view."""
    s = synth.SynthSettings(**settings)
    plan = synth.StudyPlan(0, "train", "FOREARM", 1, 1, 1, 1)
    rng = np.random.default_rng(np.random.SeedSequence([5, 1]))
    spec = synth.study_spec(plan, rng, s)
    params = synth.finding_params("lytic", rng, s.finding_size, s.finding_contrast)
    spec = replace(spec, finding="lytic", params=params, show=(True,))
    with_f, box = synth.render_canvas("FOREARM", spec, 0, 1.0, 0.0, np.random.default_rng(9))
    without, _ = synth.render_canvas("FOREARM", replace(spec, finding=""), 0, 1.0, 0.0,
                                     np.random.default_rng(9))
    x0, y0, x1, y1 = np.round(box).astype(int)
    return float(np.abs(with_f - without)[y0:y1, x0:x1].sum())


def test_finding_size_and_contrast_scale_the_finding():
    base = _finding_strength()
    assert _finding_strength(finding_contrast=0.4) < 0.6 * base
    assert _finding_strength(finding_size=0.5) < 0.6 * base
    assert _finding_strength(finding_size=1.5) > 1.3 * base


def test_plan_follows_valid_fraction_and_abnormal_scale():
    few = synth.plan_studies(600, seed=1, settings=synth.SynthSettings(abnormal_scale=0.5, valid_fraction=0.1))
    many = synth.plan_studies(600, seed=1)
    assert abs(np.mean([p.split == "valid" for p in few]) - 0.1) <= 0.01
    assert np.mean([p.label for p in few]) < 0.65 * np.mean([p.label for p in many])


@pytest.mark.parametrize("bad, message", [
    ({"noise": -1}, "noise"), ({"invert_prob": 1.5}, "invert_prob"), ({"studies": 0}, "positive integer"),
    ({"min_side": 300, "max_side": 200}, "below max_side"), ({"finding_mix": (1, 0, 0)}, "finding_mix"),
    ({"rgb_prob": 0.8, "u16_prob": 0.5}, "at most 1"), ({"show_prob": float("nan")}, "show_prob"),
])
def test_bad_settings_are_one_clear_error(bad, message):
    with pytest.raises(MurakitError, match=message):
        synth.SynthSettings(**bad)


def test_cli_preset_and_setting_flags(tmp_path, capsys):
    from murakit.cli import main

    args = ["synth", str(tmp_path), "--preset", "noisy", "--studies", "3", "--invert-prob", "1",
            "--finding-mix", "0.5,0,0.25,0.25", "--no-progress"]
    assert main(args) == 0
    meta = json.loads((tmp_path / "MURA-v1.1/synth.json").read_text())
    want = replace(synth.PRESETS["noisy"], studies=3, invert_prob=1.0, finding_mix=(0.5, 0, 0.25, 0.25))
    assert synth.SynthSettings.from_dict(meta["settings"]) == want
    capsys.readouterr()
    assert main(args) == 0 and "nothing to do" in capsys.readouterr().out
    assert main(args[:6] + ["--no-progress"]) == 2  # other settings, no --force
    err = capsys.readouterr().err
    assert "--force" in err and "--noise 2.5" in err
    assert main(["synth", str(tmp_path / "x"), "--noise", "-2"]) == 2
    err = capsys.readouterr().err
    assert "noise" in err and len(err.strip().splitlines()) == 1


def test_presets_are_valid_and_documented():
    from murakit.cli import build_parser

    text = build_parser()._subparsers._group_actions[0].choices["synth"].format_help()
    for name in synth.PRESETS:
        assert name in text
    for field in synth.SynthSettings().to_dict():
        assert f"--{field.replace('_', '-')}" in text
