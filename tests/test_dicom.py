"""DICOM in, end to end: reading (modality LUT, VOI, MONOCHROME1), PNG/DICOM equality, refusals,
pydicom's own test files, study grouping, privacy, and ``murakit prepare`` / ``synth`` on DICOM.

Every DICOM file here is written by the tests themselves (murakit.data.dicom_write) or ships in
the pydicom wheel (``pydicom.data``); nothing is downloaded.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

pydicom = pytest.importorskip("pydicom")

from _edgefix import cnn_model, radiograph

from edge.cli import predict_main
from edge.dicom import apply_window, is_dicom, map_body_part, read_dicom
from edge.errors import ImageError
from edge.loader import is_image_file, load_image
from edge.predictor import Predictor
from murakit.data.dicom_write import DicomStyle, available_syntaxes, make_dataset, write_dicom

ROOT = Path(__file__).resolve().parents[1]
MARKER = "ZQXPRIVATEMARKER"
DOB = "19230417"
PRIVATE = {"PatientName": f"{MARKER}^JANE", "PatientID": f"ID{MARKER}", "PatientBirthDate": DOB,
           "AccessionNumber": f"A{MARKER}"[:16], "InstitutionName": f"{MARKER} HOSPITAL",
           "ReferringPhysicianName": f"DR^{MARKER}", "OtherPatientIDs": f"O{MARKER}",
           "StudyID": MARKER[:16], "PatientAddress": f"1 {MARKER} ROAD"}


def ids(n: int, study: int = 1, part: str | None = "HAND", private: bool = False) -> dict:
    return {"study_uid": f"1.2.826.0.1.{study}", "series_uid": f"1.2.826.0.1.{study}.1",
            "sop_uid": f"1.2.826.0.1.{study}.1.{n}", "body_part": part, "tags": dict(PRIVATE) if private else None}


def picture12(h: int = 96, w: int = 80, seed: int = 0) -> np.ndarray:
    """uint16 (h, w) radiograph whose values are 12-bit numbers shifted left by 4: exactly
    representable in 16 and in 12 bits stored."""
    base = radiograph(h, w, seed).astype(np.float64) * 16 + np.random.default_rng(seed).integers(0, 16, (h, w))
    return (np.clip(base, 0, 4095).astype(np.uint16) << 4)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return cnn_model(tmp_path_factory.mktemp("model") / "tiny.onnx")


def run_cli(argv, capsys):
    code = predict_main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


# ---------------------------------------------------------------- recognising DICOM
def test_dicom_is_recognised_by_content(tmp_path):
    pic = picture12()
    write_dicom(tmp_path / "IM0001", pic, DicomStyle(), **ids(1))
    write_dicom(tmp_path / "1.2.840.99.504", pic, DicomStyle(preamble=False, syntax="implicit"), **ids(2))
    write_dicom(tmp_path / "bare_explicit", pic, DicomStyle(preamble=False), **ids(3))
    (tmp_path / "._IM0001").write_bytes((tmp_path / "IM0001").read_bytes())  # AppleDouble name
    (tmp_path / "DICOMDIR").write_bytes((tmp_path / "IM0001").read_bytes())
    (tmp_path / "notes.txt").write_text("not an image\n")
    cv2.imwrite(str(tmp_path / "a.png"), radiograph(40, 40, 1))
    found = sorted(p.name for p in tmp_path.iterdir() if is_image_file(p))
    assert found == ["1.2.840.99.504", "IM0001", "a.png", "bare_explicit"]
    assert is_image_file(tmp_path / "broken.dcm")  # by name: a bad .dcm is reported, not ignored
    assert not is_dicom(b"\x89PNG\r\n\x1a\n" + bytes(200)) and not is_dicom(b"")
    for name in ("IM0001", "1.2.840.99.504", "bare_explicit"):
        assert np.allclose(load_image(tmp_path / name), load_image(tmp_path / "IM0001"), atol=1e-6)


# ---------------------------------------------------------------- PNG / DICOM equality
EQUAL_STYLES = {
    "mono2-16bit-rescale-full-window": DicomStyle(bits_stored=16, rescale=(0.5, -1024.0), window="full"),
    "mono1-12bit": DicomStyle(photometric="MONOCHROME1", bits_stored=12),
    "no-window-tags": DicomStyle(bits_stored=16, window="none"),
    "mono1-12bit-signed-implicit": DicomStyle(photometric="MONOCHROME1", bits_stored=12, signed=True,
                                              rescale=(2.0, 100.0), syntax="implicit"),
    "rle": DicomStyle(photometric="MONOCHROME1", bits_stored=16, syntax="rle"),
    "jpeg-lossless": DicomStyle(bits_stored=12, window="none", syntax="jpeg-lossless"),
    "jpeg2000-lossless": DicomStyle(photometric="MONOCHROME1", bits_stored=16, syntax="jpeg2000-lossless"),
}


@pytest.mark.parametrize("name", list(EQUAL_STYLES))
def test_dicom_scores_like_the_same_pixels_as_png(tmp_path, model, name):
    style = EQUAL_STYLES[name]
    if style.syntax not in ("explicit", "implicit") and style.syntax not in available_syntaxes():
        pytest.skip(f"no {style.syntax} codec installed")
    pred = Predictor(model)
    for seed in range(3):
        pic = picture12(96 + 8 * seed, 80, seed)
        png, dcm = tmp_path / f"{seed}.png", tmp_path / f"{seed}.dcm"
        assert cv2.imwrite(str(png), pic)
        write_dicom(dcm, pic, style, **ids(seed))
        a, b = pred.predict(png), pred.predict(dcm)
        assert abs(a.probability - b.probability) <= 1e-3, (name, seed)
        u8a, u8b = pred.preprocess(png), pred.preprocess(dcm)
        assert np.abs(u8a.astype(int) - u8b.astype(int)).max() <= 1


def test_inverted_picture_in_dicom_is_corrected_like_an_inverted_png(tmp_path, model):
    """A MONOCHROME2 file whose picture is itself inverted (bones dark) is caught by invert=auto."""
    pic = picture12()
    inv = (65535 - pic).astype(np.uint16)
    write_dicom(tmp_path / "inv.dcm", inv, DicomStyle(), **ids(1))
    assert cv2.imwrite(str(tmp_path / "inv.png"), inv)
    pred = Predictor(model)
    from edge.preprocess import preprocess_with_info

    _, info_d = preprocess_with_info(tmp_path / "inv.dcm", pred.config)
    _, info_p = preprocess_with_info(tmp_path / "inv.png", pred.config)
    assert info_d.inverted and info_p.inverted
    assert abs(pred.predict(tmp_path / "inv.dcm").probability - pred.predict(tmp_path / "inv.png").probability) < 1e-3


# ---------------------------------------------------------------- the grayscale pipeline
def _ds_with(stored: np.ndarray, **elements):
    """A MONOCHROME2 16-bit dataset holding ``stored`` words, with extra elements set."""
    ds = make_dataset(np.zeros(stored.shape, np.uint16), DicomStyle(window="none"), **ids(1))
    ds.PixelData = stored.astype("<u2").tobytes()
    for k, v in elements.items():
        setattr(ds, k, v)
    return ds


def _read(ds, tmp_path, voi="window"):
    path = tmp_path / "x.dcm"
    ds.save_as(path, enforce_file_format=True)
    return read_dicom(path.read_bytes(), str(path), voi)[0]


def test_monochrome1_is_inverted_after_voi(tmp_path):
    """Window [1000, 3000) on MONOCHROME1: stored 500 (below the window) is white, 3500 black.
    Inverting before VOI would window the complement and give the opposite clipping."""
    stored = np.tile(np.array([500, 1000, 2000, 3000, 3500], np.uint16), (4, 1))
    ds = _ds_with(stored, PhotometricInterpretation="MONOCHROME1", BitsStored=12, HighBit=11,
                  WindowCenter="2000.5", WindowWidth="2001")
    got = _read(ds, tmp_path)
    expect = 1.0 - np.clip((stored - 2000.0) / 2000.0 + 0.5, 0, 1)
    assert np.allclose(got, expect, atol=1e-6)
    assert got[0, 0] == 1.0 and got[0, -1] == 0.0


@pytest.mark.parametrize("function", ["LINEAR", "LINEAR_EXACT", "SIGMOID"])
def test_window_functions_match_pydicom(function):
    from pydicom.pixels.processing import apply_windowing

    stored = np.arange(0, 4096, 7, dtype=np.uint16).reshape(1, -1)
    ds = _ds_with(stored, BitsStored=12, HighBit=11, WindowCenter="1500", WindowWidth="800",
                  VOILUTFunction=function)
    ref = apply_windowing(stored.astype(np.float64), ds)  # pydicom maps onto 0..4095
    ours = apply_window(stored.astype(np.float32), 1500.0, 800.0, function)
    assert np.allclose(ours * 4095.0, ref, atol=0.05)


def test_voi_policy_full_ignores_the_window(tmp_path):
    stored = np.tile(np.arange(0, 4000, 40, dtype=np.uint16), (3, 1))
    ds = _ds_with(stored, BitsStored=12, HighBit=11, WindowCenter="2000", WindowWidth="400")
    windowed, full = _read(ds, tmp_path, "window"), _read(ds, tmp_path, "full")
    assert (windowed == 0).sum() > 40 and (windowed == 1).sum() > 40  # clipped outside the window
    assert np.allclose(full, (stored - 0.0) / 3960.0, atol=1e-6)       # min..max of the image


def test_lut_sequences_match_pydicom(tmp_path):
    from pydicom.dataset import Dataset
    from pydicom.pixels.processing import apply_modality_lut, apply_voi

    stored = np.tile(np.arange(0, 1024, 4, dtype=np.uint16), (2, 1))
    mlut, vlut = Dataset(), Dataset()
    mlut.LUTDescriptor, mlut.ModalityLUTType = [1024, 0, 16], "US"
    mlut.add_new("LUTData", "US", [int(v) for v in (np.arange(1024) ** 1.5).astype(int)])
    vlut.LUTDescriptor = [4096, 0, 12]
    vlut.add_new("LUTData", "OW", np.sqrt(np.arange(4096) * 4095).astype("<u2").tobytes())
    ds = _ds_with(stored, BitsStored=10, HighBit=9, ModalityLUTSequence=[mlut], VOILUTSequence=[vlut])
    ref = apply_voi(apply_modality_lut(stored, ds), ds) / 4095.0
    assert np.allclose(_read(ds, tmp_path), ref, atol=1e-6)


def test_bits_stored_high_bit_and_sign_are_honoured(tmp_path):
    rng = np.random.default_rng(0)
    v12 = rng.integers(0, 4096, (8, 8)).astype(np.uint16)
    # 12 bits stored low, junk (an old overlay) in the 4 unused high bits: the junk is ignored
    junk = _ds_with(v12 | (rng.integers(0, 16, v12.shape).astype(np.uint16) << 12), BitsStored=12, HighBit=11)
    clean = _ds_with(v12, BitsStored=12, HighBit=11)
    # 12 bits stored high (HighBit 15): the values are the top 12 bits
    high = _ds_with(v12 << 4, BitsStored=12, HighBit=15)
    full = (v12 - v12.min()) / float(v12.max() - v12.min())
    for ds in (junk, clean, high):
        assert np.allclose(_read(ds, tmp_path, "full"), full, atol=1e-6)
    # signed 12-bit in 16: -2048..2047 with the sign bit at bit 11 (and the high bits unused)
    signed_vals = v12.astype(np.int64) - 2048
    words = (signed_vals & 0xFFF).astype(np.uint16)
    sds = _ds_with(words, BitsStored=12, HighBit=11, PixelRepresentation=1)
    want = (signed_vals - signed_vals.min()) / float(signed_vals.max() - signed_vals.min())
    assert np.allclose(_read(sds, tmp_path, "full"), want, atol=1e-6)


# ---------------------------------------------------------------- refusals
def _one_error(path, model, capsys, *extra):
    code, out, err = run_cli([path, "--model", model, *extra], capsys)
    lines = err.strip().splitlines()
    assert code == 1 and out == "" and len(lines) == 1 and lines[0].startswith("edge-predict: error: ")
    assert "Traceback" not in err
    return lines[0]


def test_refusals_are_one_clear_line(tmp_path, model, capsys):
    from pydicom.data import get_testdata_file

    pic = picture12()
    cases = {}
    ds = make_dataset(np.concatenate([pic, pic]), DicomStyle(), **ids(1))
    ds.NumberOfFrames, ds.Rows = 2, pic.shape[0]
    ds.save_as(tmp_path / "multi.dcm", enforce_file_format=True)
    cases["multi.dcm"] = "multi-frame DICOM (2 frames)"
    write_dicom(tmp_path / "ok.dcm", pic, DicomStyle(), **ids(2))
    data = (tmp_path / "ok.dcm").read_bytes()
    (tmp_path / "cut_pixels.dcm").write_bytes(data[:-500])
    cases["cut_pixels.dcm"] = "truncated DICOM file (pixel data has"
    (tmp_path / "cut_header.dcm").write_bytes(data[:200])
    cases["cut_header.dcm"] = "no pixel data (not an image, or a truncated file)"
    huge = make_dataset(np.zeros((2, 2), np.uint16), DicomStyle(), **ids(3))
    huge.Rows, huge.Columns = 30000, 30000
    huge.save_as(tmp_path / "huge.dcm", enforce_file_format=True)
    cases["huge.dcm"] = "above the 64,000,000-pixel limit"
    for name, want in cases.items():
        assert want in _one_error(tmp_path / name, model, capsys), name
    for name, want in {"examples_rgb_color.dcm": "colour DICOM (RGB",
                       "examples_palette.dcm": "colour DICOM (PALETTE COLOR",
                       "reportsi.dcm": "DICOM Basic Text SR Storage object has no pixel data",
                       "waveform_ecg.dcm": "12-lead ECG Waveform Storage object has no pixel data",
                       "rtdose_1frame.dcm": "RT Dose Storage object is not a radiograph"}.items():
        assert want in _one_error(get_testdata_file(name), model, capsys), name
    dicomdir = Path(get_testdata_file("DICOMDIR", read=False) or get_testdata_file("DICOMDIR-empty.dcm"))
    assert "is a DICOMDIR" in _one_error(dicomdir, model, capsys)


HIDE = {
    # pydicom not installed: its import fails and find_spec finds nothing
    "pydicom": "import importlib.util as u; f = u.find_spec; "
               "u.find_spec = lambda n, *a: None if n.split('.')[0] == 'pydicom' else f(n, *a); "
               "sys.modules['pydicom'] = None",
    # the JPEG-lossless decoder plugin not installed: pydicom's decoder has no plugin left
    "libjpeg": "from pydicom.pixels.decoders import JPEGLosslessSV1Decoder as D; "
               "[D.remove_plugin(p) for p in D.available_plugins]",
}


def _hidden_run(hide: str, argv: list) -> subprocess.CompletedProcess:
    """Run edge-predict in a fresh interpreter as if ``hide`` were not installed."""
    code = (f"import sys; {HIDE[hide]}; from edge.cli import predict_main; "
            f"sys.exit(predict_main({[str(a) for a in argv]!r}))")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120,
                          check=False)


def test_missing_decoder_and_missing_pydicom_name_what_to_install(tmp_path, model):
    if "jpeg-lossless" not in available_syntaxes():
        pytest.skip("pylibjpeg-libjpeg not installed")
    write_dicom(tmp_path / "jl.dcm", picture12(), DicomStyle(bits_stored=12, syntax="jpeg-lossless"), **ids(1))
    out = _hidden_run("libjpeg", [tmp_path / "jl.dcm", "--model", model])
    assert out.returncode == 1 and out.stdout == "" and "Traceback" not in out.stderr
    assert out.stderr.strip().splitlines() == [(
        f"edge-predict: error: {tmp_path / 'jl.dcm'}: pixels are compressed with JPEG Lossless, Non-Hierarchical, "
        "First-Order Prediction (Process 14 [Selection Value 1]) (1.2.840.10008.1.2.4.70) and no decoder for it "
        "is installed: pip install pylibjpeg pylibjpeg-libjpeg (or pip install 'murakit[dicom]')")]
    out = _hidden_run("pydicom", [tmp_path / "jl.dcm", tmp_path, "--model", model])
    assert out.returncode == 1 and out.stdout == "" and "Traceback" not in out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 2 and all(line.endswith("pip install 'murakit[dicom]'") for line in lines)


# ---------------------------------------------------------------- pydicom's own test files
def test_every_pydicom_test_file_ends_in_a_prediction_or_one_clean_line(tmp_path, model):
    """All files that ship in pydicom's wheel (DICOM of every kind, plus its README/JSON/dumps),
    in one edge-predict run: one JSON line or exactly one error line each, exit code 1."""
    from pydicom.data import get_testdata_files

    files = sorted(f for f in get_testdata_files() if os.path.isfile(f))
    assert len(files) > 150
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-m", "edge.cli", "--json", "--model", str(model), *files],
                         capture_output=True, text=True, env=env, timeout=300, check=False)
    assert out.returncode == 1 and "Traceback" not in out.stderr
    results = [json.loads(line) for line in out.stdout.splitlines()]
    errors = [line for line in out.stderr.splitlines() if line.startswith("edge-predict: error: ")]
    others = [line for line in out.stderr.splitlines()
              if not line.startswith(("edge-predict: error: ", "edge-predict: warning: "))]
    assert others == []  # no library log line, no warning module output
    scored = {r["path"] for r in results}
    failed = {line[len("edge-predict: error: "):].split(": ", 1)[0] for line in errors}
    assert len(results) + len(errors) == len(files) and scored | failed == set(files)
    assert all(0.0 <= r["probability"] <= 1.0 for r in results)
    assert len(results) >= 40  # the monochrome single-frame images are read, compressed ones too
    decoded = {Path(r["path"]).name for r in results}
    assert {"MR_small_RLE.dcm", "MR_small_jp2klossless.dcm", "JPGExtended.dcm", "CT_small.dcm"} <= decoded


# ---------------------------------------------------------------- studies
def test_folder_views_group_by_study_instance_uid(tmp_path, model, capsys):
    folder = tmp_path / "export"
    folder.mkdir()
    pics = [picture12(96, 80, s) for s in range(4)]
    write_dicom(folder / "A1", pics[0], DicomStyle(), **ids(1, study=7, part="WRIST"))
    write_dicom(folder / "A2.dcm", pics[1], DicomStyle(photometric="MONOCHROME1", bits_stored=12),
                **ids(2, study=7, part="WRIST"))
    write_dicom(folder / "B1", pics[2], DicomStyle(window="none"), **ids(3, study=8, part="UPPER ARM"))
    cv2.imwrite(str(folder / "plain.png"), radiograph(60, 50, 3))
    (folder / "._A1").write_bytes(b"\x00\x05\x16\x07" + bytes(100))
    sr = make_dataset(np.zeros((1, 1), np.uint16), DicomStyle(), **ids(9, study=7))
    for k in ("Rows", "Columns", "PixelData", "BitsAllocated", "BitsStored", "HighBit"):
        delattr(sr, k)
    sr.save_as(folder / "SR0001", enforce_file_format=True)
    code, out, err = run_cli([folder, "--model", model, "--json"], capsys)
    assert code == 0
    studies = [json.loads(line) for line in out.splitlines()]
    assert [s.get("study_uid") for s in studies] == [None, "1.2.826.0.1.7", "1.2.826.0.1.8"]
    assert [s["n_views"] for s in studies] == [1, 2, 1]
    s7, s8 = studies[1], studies[2]
    assert s7["part"] == "WRIST" and s8["part"] == "HUMERUS" and "part" not in studies[0]
    assert [v["sop_uid"] for v in s7["views"]] == ["1.2.826.0.1.7.1.1", "1.2.826.0.1.7.1.2"]
    assert s7["probability"] == pytest.approx(np.mean([v["probability"] for v in s7["views"]]))
    assert err.strip().splitlines() == [(f"edge-predict: note: {folder / 'SR0001'}: skipped "
                                         "(DICOM Digital X-Ray Image Storage - For Presentation object, not an image)")]


def test_body_part_outside_mura_warns_or_is_refused(tmp_path, model, capsys):
    write_dicom(tmp_path / "chest.dcm", picture12(), DicomStyle(), **ids(1, part="CHEST"))
    code, out, err = run_cli([tmp_path / "chest.dcm", "--model", model, "--json"], capsys)
    assert code == 0 and json.loads(out)["study_uid"] == "1.2.826.0.1.1" and "part" not in json.loads(out)
    assert err.strip().splitlines() == [(
        f"edge-predict: warning: {tmp_path / 'chest.dcm'}: body part 'CHEST' is not one of the seven MURA "
        "upper-extremity parts (ELBOW, FINGER, FOREARM, HAND, HUMERUS, SHOULDER, WRIST); the model was not "
        "trained on it")]
    assert "refused (--strict-part)" in _one_error(tmp_path / "chest.dcm", model, capsys, "--strict-part")


@pytest.mark.parametrize("raw,part", [("HAND ", "HAND"), ("wrist", "WRIST"), ("UPPER ARM", "HUMERUS"),
                                      ("Upper_Arm", "HUMERUS"), ("LEFT ELBOW", "ELBOW"), ("THUMB", "FINGER"),
                                      ("XR_SHOULDER", "SHOULDER"), ("LOWER ARM", "FOREARM"), ("CHEST", None),
                                      ("", None), (None, None)])
def test_body_part_mapping(raw, part):
    assert map_body_part(raw) == part


# ---------------------------------------------------------------- privacy
def _all_text(folder: Path) -> str:
    """Every file name and every file's bytes under ``folder``, as one string."""
    chunks = []
    for p in folder.rglob("*"):
        chunks.append(p.name)
        if p.is_file():
            chunks.append(p.read_bytes().decode("latin-1"))
    return "\n".join(chunks)


def test_no_patient_value_reaches_any_output(tmp_path, model, capsys):
    study = tmp_path / "in"
    study.mkdir()
    pic = picture12()
    write_dicom(study / "v1", pic, DicomStyle(), **ids(1, private=True))
    write_dicom(study / "v2.dcm", pic, DicomStyle(photometric="MONOCHROME1", bits_stored=12), **ids(2, private=True))
    write_dicom(study / "chest", pic, DicomStyle(), **ids(3, study=2, part="CHEST", private=True))
    (tmp_path / "cut.dcm").write_bytes((study / "v1").read_bytes()[:-300])
    multi = make_dataset(np.concatenate([pic, pic]), DicomStyle(), **ids(4, private=True))
    multi.NumberOfFrames, multi.Rows = 2, pic.shape[0]
    multi.save_as(tmp_path / "multi.dcm", enforce_file_format=True)
    cams = tmp_path / "cams"
    texts = []
    for args in ([study, "--json", "--cam", cams], [study, "--strict-part"], [study / "v1", study / "v2.dcm"],
                 [tmp_path / "cut.dcm", tmp_path / "multi.dcm", "--json"]):
        _, out, err = run_cli([*args, "--model", model], capsys)
        texts += [out, err]
    assert any("sop_uid" in t for t in texts) and any("error" in t for t in texts) and any(cams.iterdir())
    blob = "\n".join(texts) + _all_text(cams)
    assert MARKER not in blob and DOB not in blob
    for value in PRIVATE.values():
        assert value not in blob


# ---------------------------------------------------------------- murakit prepare / synth
def _mura_dicom_tree(root: Path, private: bool = False) -> list:
    """A tiny MURA-v1.1 layout with .dcm views (4 studies, 2 patients) and its CSVs."""
    rels, studies = [], []
    for k, (part, patient, study, label) in enumerate([("WRIST", 1, 1, 1), ("WRIST", 1, 2, 0),
                                                        ("HAND", 2, 1, 0), ("ELBOW", 3, 1, 1)]):
        sdir = f"MURA-v1.1/train/XR_{part}/patient{patient:05d}/study{study}_{'positive' if label else 'negative'}"
        studies.append(f"{sdir}/,{label}")
        for v in range(2):
            rel = f"{sdir}/image{v + 1}.dcm"
            style = DicomStyle(photometric="MONOCHROME1" if v else "MONOCHROME2", bits_stored=12 if v else 16)
            write_dicom(root / rel, picture12(90, 70, k * 2 + v), style, **ids(v, study=k, part=part, private=private))
            rels.append(rel)
    (root / "MURA-v1.1" / "train_image_paths.csv").write_text("".join(r + "\n" for r in rels))
    (root / "MURA-v1.1" / "train_labeled_studies.csv").write_text("".join(s + "\n" for s in studies))
    return rels


def _prepare(argv, capsys):
    from murakit.cli import main

    code = main(["prepare", *map(str, argv), "--workers", "1", "--no-progress", "--size", "32"])
    out = capsys.readouterr()
    return code, out.out + out.err


def test_prepare_reads_the_mura_layout_with_dicom_files(tmp_path, capsys):
    from murakit.data.prepared import load_prepared

    rels = _mura_dicom_tree(tmp_path / "data", private=True)
    code, text = _prepare([tmp_path / "data", "--run", tmp_path / "run"], capsys)
    assert code == 0
    prep = load_prepared(tmp_path / "run")
    assert sorted(prep.path) == sorted(rels) and len(prep) == 8
    assert set(prep.part) == {"WRIST", "HAND", "ELBOW"} and prep.label.sum() == 4
    assert prep.config.dicom_voi == "window" and not (tmp_path / "run" / "prepared" / "failed.csv").read_text().count("\n") > 1
    assert MARKER not in text + _all_text(tmp_path / "run")


def test_prepare_reads_a_dicom_tree_with_a_labels_csv(tmp_path, capsys):
    from murakit.data.prepared import load_prepared

    data = tmp_path / "pacs"
    pic = picture12()
    # patient P1: two studies (one labelled by UID, one by its folder); patient P2: one study
    layout = [("P1/visit1", 11, "P1"), ("P1/visit1", 11, "P1"), ("P1/visit2", 12, "P1"), ("P2/x", 13, "P2"),
              ("P2/unlabelled", 14, "P2")]
    for n, (folder, study, who) in enumerate(layout):
        tags = {**PRIVATE, "PatientID": f"{who}{MARKER}"}
        write_dicom(data / folder / f"IM{n}", pic, DicomStyle(photometric="MONOCHROME1" if n % 2 else "MONOCHROME2"),
                    study_uid=f"1.2.3.{study}", series_uid=f"1.2.3.{study}.1", sop_uid=f"1.2.3.{study}.1.{n}",
                    body_part=["WRIST", "WRIST", "HAND", "CHEST", "HAND"][n], tags=tags)
    (data / "P1" / "._IM0").write_bytes(b"\x00\x05\x16\x07")
    labels = tmp_path / "labels.csv"
    labels.write_text("study,label\n1.2.3.11,1\nP1/visit2/,0\n./P2/x,abnormal\nmissing/folder,0\n")
    code, text = _prepare([data, "--labels", labels, "--run", tmp_path / "run"], capsys)
    assert code == 0, text
    prep = load_prepared(tmp_path / "run")
    rows = sorted(zip(prep.path, prep.study, prep.patient, prep.part, prep.label.tolist()))
    assert rows == [("P1/visit1/IM0", "1.2.3.11", "patient00001", "WRIST", 1),
                    ("P1/visit1/IM1", "1.2.3.11", "patient00001", "WRIST", 1),
                    ("P1/visit2/IM2", "1.2.3.12", "patient00001", "HAND", 0),
                    ("P2/x/IM3", "1.2.3.13", "patient00002", "UNKNOWN", 1)]
    assert "1 studies without a label" in text and "1 labelled studies with no image" in text
    assert MARKER not in text + _all_text(tmp_path / "run")
    # the Python API's prepare takes the same labels= (one stage under both)
    import murakit as mk

    api = mk.prepare(data, run=tmp_path / "api", labels=labels, size=prep.config.size, workers=1)
    assert sum(c["images"] for c in api.splits.values()) == 4
    same = load_prepared(tmp_path / "api")
    assert sorted(zip(same.path, same.study, same.label.tolist())) == [r[:2] + r[4:] for r in rows]


def test_synth_format_dicom_writes_a_readable_mixed_set(tmp_path, capsys):
    from murakit.cli import main
    from murakit.data.mura import index_dataset

    argv = ["synth", str(tmp_path / "s"), "--studies", "6", "--format", "dicom", "--workers", "1", "--no-progress"]
    assert main(argv) == 0
    assert "DICOM images" in capsys.readouterr().out
    ds = index_dataset(tmp_path / "s")
    assert len(ds) >= 6 and all(r.relpath.endswith(".dcm") for r in ds.records)
    styles, uids = set(), {}
    for r in ds.records:
        head = pydicom.dcmread(r.path, stop_before_pixels=True)
        styles.add((head.PhotometricInterpretation, int(head.BitsStored)))
        uids.setdefault(r.study, set()).add(head.StudyInstanceUID)
        assert map_body_part(head.get("BodyPartExamined")) in (r.part, None)
        assert load_image(r.path).dtype == np.float32
    assert len(styles) >= 2
    assert all(len(u) == 1 for u in uids.values()) and len(set.union(*uids.values())) == len(uids)
    first = {r.relpath: pydicom.dcmread(r.path, stop_before_pixels=True).SOPInstanceUID for r in ds.records}
    assert main(argv) == 0 and "nothing to do" in capsys.readouterr().out
    assert main([*argv, "--force", "--studies", "6"]) == 0  # same seed: same UIDs (deterministic)
    again = {r.relpath: pydicom.dcmread(r.path, stop_before_pixels=True).SOPInstanceUID
             for r in index_dataset(tmp_path / "s").records}
    assert again == first


def test_jpeg_lossless_encoder_round_trips_through_libjpeg():
    libjpeg = pytest.importorskip("libjpeg")
    from murakit.data.jpeg_lossless import encode

    rng = np.random.default_rng(1)
    cases = [(rng.integers(0, 65536, (37, 53)).astype(np.uint16), 16),
             (rng.integers(0, 4096, (64, 40)).astype(np.uint16), 12),
             (rng.integers(0, 256, (9, 300)).astype(np.uint8), 8),
             (np.full((16, 16), 3, np.uint16), 12),
             (np.tile(np.array([0, 65535], np.uint16), (8, 8)), 16)]  # +-32768 differences (SSSS 16)
    for img, bits in cases:
        out = libjpeg.decode(encode(img, bits))
        assert out.shape == img.shape and np.array_equal(out.astype(np.int64), img.astype(np.int64)), bits
    with pytest.raises(ValueError):
        encode(np.full((4, 4), 5000, np.uint16), 12)


def test_load_image_refuses_unknown_voi_policy(tmp_path):
    write_dicom(tmp_path / "a.dcm", picture12(), DicomStyle(), **ids(1))
    with pytest.raises(ValueError):
        load_image(tmp_path / "a.dcm", dicom_voi="auto")
    from edge.preprocess import PreprocessConfig

    with pytest.raises(ValueError):
        PreprocessConfig(dicom_voi="auto")
    assert PreprocessConfig.from_dict({k: v for k, v in PreprocessConfig().to_dict().items()
                                       if k != "dicom_voi"}).dicom_voi == "window"  # older models
    with pytest.raises(ImageError):
        read_dicom(b"\x00" * 128 + b"DICM" + b"\x02\x00\x10\x00UI\x40\x00", "junk.dcm")


# ---------------------------------------------------------------- the lookup-table route
_STYLES = {
    "mono1-rescale-window": DicomStyle(photometric="MONOCHROME1", rescale=(1.0, -1024.0), window="full"),
    "sigmoid-signed": DicomStyle(signed=True, rescale=(0.5, 100.0), window="sigmoid"),
    "8-bit-no-window": DicomStyle(bits_stored=8, window="none"),
    "12-bit-slope": DicomStyle(bits_stored=12, rescale=(2.5, -7.0), photometric="MONOCHROME1"),
}


@pytest.mark.parametrize("voi", ["window", "full"])
@pytest.mark.parametrize("style", list(_STYLES))
def test_lookup_table_route_equals_per_pixel_maths(tmp_path, style, voi):
    """DICOM pixels take one integer gather through a table of the greys each stored value
    gives (edge.dicom.indexed_picture); the picture and the preprocessed model input must be
    bit-identical to the per-pixel float route (displayed_picture, then preprocess's float path)."""
    from edge.dicom import IndexedPicture, _parse, _pydicom, displayed_picture, stored_values
    from edge.preprocess import PreprocessConfig, preprocess_with_info

    pic = radiograph(150, 122, 3)
    path = write_dicom(tmp_path / "x.dcm", pic, _STYLES[style], **ids(1))
    data = path.read_bytes()
    ds = _parse(_pydicom("x"), data, "x")
    reference = displayed_picture(stored_values(ds), ds, voi).astype(np.float32)
    indexed = read_dicom(data, "x", voi, indexed=True)[0]
    assert isinstance(indexed, IndexedPicture)
    assert np.array_equal(np.sort(indexed.order), np.unique(indexed.index))  # every word held, once
    assert np.all(np.diff(indexed.table[indexed.order]) >= 0)                # in grey order
    assert np.array_equal(indexed.picture(), reference)
    assert np.array_equal(read_dicom(data, "x", voi)[0], reference)
    cfg = PreprocessConfig(size=64, dicom_voi=voi)
    got, got_info = preprocess_with_info(path, cfg)
    want, want_info = preprocess_with_info(reference, cfg)  # a float array: the float path
    assert np.array_equal(got, want)
    assert got_info == want_info


def test_lut_sequences_take_the_lookup_table_route(tmp_path):
    from pydicom.dataset import Dataset

    from edge.dicom import IndexedPicture
    from edge.preprocess import PreprocessConfig, preprocess_with_info

    rng = np.random.default_rng(1)
    stored = rng.integers(0, 1024, (40, 30)).astype(np.uint16)
    mlut, vlut = Dataset(), Dataset()
    mlut.LUTDescriptor, mlut.ModalityLUTType = [1024, 0, 16], "US"
    mlut.add_new("LUTData", "US", [int(v) for v in (1023 - np.arange(1024)) ** 1.5])  # not monotone up
    vlut.LUTDescriptor = [4096, 0, 12]
    vlut.add_new("LUTData", "OW", np.sqrt(np.arange(4096) * 4095).astype("<u2").tobytes())
    for voi in ("window", "full"):
        ds = _ds_with(stored, BitsStored=10, HighBit=9, ModalityLUTSequence=[mlut], VOILUTSequence=[vlut])
        path = tmp_path / "x.dcm"
        ds.save_as(path, enforce_file_format=True)
        indexed = read_dicom(path.read_bytes(), "x", voi, indexed=True)[0]
        assert isinstance(indexed, IndexedPicture)
        assert np.array_equal(indexed.picture(), read_dicom(path.read_bytes(), "x", voi)[0])
        cfg = PreprocessConfig(dicom_voi=voi)
        assert np.array_equal(preprocess_with_info(path, cfg)[0], preprocess_with_info(indexed.picture(), cfg)[0])


# ---------------------------------------------------------------- headers that lie (docs/dicom.md)
def _lut_item(descriptor, data):
    from pydicom.dataset import Dataset

    item = Dataset()
    item.LUTDescriptor = descriptor
    item.add_new("LUTData", "US", data)
    return item


REFUSED_HEADERS = {
    "slope 0": ({"RescaleSlope": "0", "RescaleIntercept": "0"}, "RescaleSlope is 0"),
    "slope NaN": ({"RescaleSlope": "NaN", "RescaleIntercept": "0"}, "RescaleSlope is not a number"),
    "intercept inf": ({"RescaleSlope": "1", "RescaleIntercept": "inf"}, "RescaleIntercept is inf"),
    "intercept beyond float32": ({"RescaleSlope": "1", "RescaleIntercept": "1e308"}, "beyond the float32 range"),
    "slope that flattens": ({"RescaleSlope": "1e-300", "RescaleIntercept": "0"}, "to the same number"),
    "HighBit above BitsAllocated": ({"HighBit": 20}, "HighBit 20 is inconsistent"),
    "HighBit below BitsStored - 1": ({"BitsStored": 12, "HighBit": 4}, "HighBit 4 is inconsistent"),
    "BitsStored above BitsAllocated": ({"BitsStored": 20}, "BitsStored 20"),
    "VOI LUT shorter than its descriptor": ({"VOILUTSequence": lambda: [_lut_item([65535, 0, 16], [1, 2, 3])]},
                                            "promises 65,535 entries but LUT Data holds 3"),
    "VOI LUT of 40 bits": ({"VOILUTSequence": lambda: [_lut_item([4, 0, 40], [1, 2, 3, 4])]}, "40-bit entries"),
    "modality LUT of 2 values": ({"ModalityLUTSequence": lambda: [_lut_item([4, 0], [1, 2, 3, 4])]},
                                 "three numbers"),
}


@pytest.mark.parametrize("case", sorted(REFUSED_HEADERS))
def test_header_values_that_break_the_standard_are_one_line_and_exit_1(tmp_path, model, capsys, case):
    elements, want = REFUSED_HEADERS[case]
    ds = _ds_with(picture12(16, 16), **{k: v() if callable(v) else v for k, v in elements.items()})
    ds.save_as(tmp_path / "x.dcm", enforce_file_format=True)
    assert want in _one_error(tmp_path / "x.dcm", model, capsys)


@pytest.mark.parametrize("window,function,warning", [
    (("2000", "0"), "LINEAR", "WindowWidth 0 is invalid for LINEAR (must be >= 1)"),
    (("2000", "0.5"), "LINEAR", "WindowWidth 0.5 is invalid for LINEAR (must be >= 1)"),
    (("2000", "-3"), "SIGMOID", "WindowWidth -3 is invalid for SIGMOID (must be > 0)"),
    (("NaN", "400"), "LINEAR", "not a finite number"),
    (("2000", "inf"), "LINEAR_EXACT", "not a finite number"),
])
def test_an_invalid_window_falls_back_to_the_full_range_with_a_warning(tmp_path, model, capsys, window,
                                                                         function, warning):
    stored = picture12(32, 32)
    ds = _ds_with(stored, WindowCenter=window[0], WindowWidth=window[1], VOILUTFunction=function)
    ds.save_as(tmp_path / "w.dcm", enforce_file_format=True)
    full = _ds_with(stored)
    assert np.array_equal(_read(ds, tmp_path, "window"), _read(full, tmp_path, "full"))
    ds.save_as(tmp_path / "w.dcm", enforce_file_format=True)
    code, out, err = run_cli([tmp_path / "w.dcm", "--model", model, "--json"], capsys)
    lines = err.strip().splitlines()
    assert code == 0 and len(out.splitlines()) == 1 and len(lines) == 1
    assert lines[0].startswith("edge-predict: warning: ") and warning in lines[0] and "full range" in lines[0]


def test_a_valid_window_gives_no_warning(tmp_path, model, capsys):
    ds = _ds_with(picture12(32, 32), WindowCenter="30000", WindowWidth="1")  # width 1 is the LINEAR minimum
    ds.save_as(tmp_path / "ok.dcm", enforce_file_format=True)
    code, _, err = run_cli([tmp_path / "ok.dcm", "--model", model], capsys)
    assert code == 0 and err == ""


def _deflated(ds, path):
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.1.99"
    ds.save_as(path, enforce_file_format=True)
    return path


def test_deflated_files_read_and_a_deflate_bomb_is_refused_under_the_budget(tmp_path, model):
    from _fuzzdicom import deflated_file

    from edge.dicom import INFLATE_LIMIT

    stored = picture12(48, 40)
    ok = _deflated(_ds_with(stored), tmp_path / "ok.dcm")
    assert np.array_equal(read_dicom(ok.read_bytes(), "ok", "full")[0], _read(_ds_with(stored), tmp_path, "full"))
    # zeros compressed as a stream (~130 KB): this test process never holds the inflated bytes,
    # which would raise its memory high-water mark for the subprocess measurements of other tests
    path = tmp_path / "bomb.dcm"
    path.write_bytes(deflated_file(_ds_with(stored), tail_zeros=INFLATE_LIMIT + 2**20))
    assert path.stat().st_size < 2**20
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    # /usr/bin/time's %M is this process's own peak; resource limits would only hide an overshoot
    out = subprocess.run(["/usr/bin/time", "-f", "peak %M", sys.executable, "-m", "edge.cli", str(path),
                          "--model", str(model)], capture_output=True, text=True, env=env, timeout=120, check=False)
    lines = [ln for ln in out.stderr.strip().splitlines() if not ln.startswith("Command exited")]
    assert out.returncode == 1 and "inflates past the 128 MiB limit" in lines[0] and len(lines) == 2
    assert int(lines[1].split()[1]) * 1024 < 512 * 2**20  # the edge budget (was 1 GB before)


def test_declared_sizes_are_checked_before_any_pixel_work(tmp_path, model, capsys):
    """A header promising 6000 x 5000 pixels with 4 bytes of data: refused on the budget (the
    declared size), not as a truncated file after decoding was attempted."""
    ds = _ds_with(np.zeros((2, 2), np.uint16))
    ds.Rows, ds.Columns, ds.BitsAllocated, ds.BitsStored, ds.HighBit = 5000, 6000, 32, 32, 31
    ds.save_as(tmp_path / "big.dcm", enforce_file_format=True)
    assert "per-image budget" in _one_error(tmp_path / "big.dcm", model, capsys)


def test_a_huge_private_element_is_never_loaded(tmp_path, model):
    from _fuzzdicom import _big_private

    _big_private(200 * 2**20)(tmp_path / "priv.dcm")  # a sparse file: written without the 200 MB in memory
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(["/usr/bin/time", "-f", "peak %M", sys.executable, "-m", "edge.cli", str(tmp_path / "priv.dcm"),
                          "--model", str(model), "--json"], capture_output=True, text=True, env=env, timeout=120,
                         check=False)
    assert out.returncode == 0 and len(out.stdout.splitlines()) == 1
    assert int(out.stderr.split()[-1]) * 1024 < 512 * 2**20  # the file's 200 MB + no copy of the element
