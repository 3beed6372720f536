"""MURA-v1.1 indexing (CSV formats, folder walk, quirks, problems) and patient splits."""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from _murafix import make_classes, make_mura, radiograph, write_png

from murakit.data.mura import ImageRecord, index_dataset
from murakit.data.splits import assign_splits
from murakit.errors import MurakitError


def _pairs(ds):
    return sorted((r.relpath, r.label) for r in ds.records)


@pytest.mark.parametrize("crlf,bom,slash", [(False, False, True), (True, True, True),
                                            (True, False, False)])
def test_csv_formats_give_the_same_index(tmp_path, crlf, bom, slash):
    truth = make_mura(tmp_path, crlf=crlf, bom=bom, slash=slash)
    ds = index_dataset(tmp_path)
    assert ds.layout == "mura-csv"
    assert ds.root == tmp_path.resolve()
    expected = sorted((rel, truth["studies"][s][rel.rsplit("/", 1)[0]])
                      for s in ("train", "valid") for rel in truth["images"][s])
    assert _pairs(ds) == expected
    assert not any(ds.problems.counts().values())
    r = ds.records[0]
    assert r.relpath == "MURA-v1.1/train/XR_ELBOW/patient00001/study1_positive/image1.png"
    assert (r.split, r.part, r.patient, r.label) == ("train", "ELBOW", "patient00001", 1)
    assert r.study == "XR_ELBOW/patient00001/study1_positive"
    assert r.path == str(tmp_path.resolve() / r.relpath)


def test_csv_blank_lines_and_mura_dir_itself(tmp_path):
    make_mura(tmp_path)
    csv = tmp_path / "MURA-v1.1" / "train_image_paths.csv"
    csv.write_text("\n\n" + csv.read_text().replace("\n", "\n\n"))
    whole, inner = index_dataset(tmp_path), index_dataset(tmp_path / "MURA-v1.1")
    assert _pairs(whole) == _pairs(inner)
    assert inner.root == tmp_path.resolve()
    assert not any(inner.problems.counts().values())


def test_folder_walk_without_csv_ignores_appledouble_and_non_images(tmp_path):
    make_mura(tmp_path)
    with_csv = _pairs(index_dataset(tmp_path))
    mura = tmp_path / "MURA-v1.1"
    for f in mura.glob("*.csv"):
        f.unlink()
    study = mura / "train/XR_ELBOW/patient00001/study1_positive"
    (study / "._image1.png").write_bytes(b"\x00\x05\x16\x07AppleDouble")
    (study / ".DS_Store").write_bytes(b"junk")
    (study / "notes.txt").write_text("not an image")
    (mura / "train/XR_ELBOW/._patient00001").mkdir()
    ds = index_dataset(tmp_path)
    assert ds.layout == "mura-folders"
    assert _pairs(ds) == with_csv
    # an upper-case suffix is still an image
    write_png(study / "tmp.png", radiograph(30, 30, 1))
    shutil.move(study / "tmp.png", study / "image9.PNG")
    assert len(index_dataset(tmp_path)) == len(with_csv) + 1


def test_missing_images_and_unlabeled_studies_are_reported(tmp_path):
    truth = make_mura(tmp_path)
    mura = tmp_path / "MURA-v1.1"
    gone = truth["images"]["train"][0]
    (tmp_path / gone).unlink()
    # a study on disk and in the image list, but without a label line
    extra = "MURA-v1.1/train/XR_HAND/patient09999/study1"
    write_png(tmp_path / extra / "image1.png", radiograph(40, 40, 7))
    with open(mura / "train_image_paths.csv", "a") as f:
        f.write(extra + "/image1.png\n")
    with open(mura / "train_labeled_studies.csv", "a") as f:
        f.write("MURA-v1.1/train/XR_HAND/patient09998/study1_positive/,1\n")  # no images
        f.write("MURA-v1.1/train/XR_HAND/garbage\n")  # unparseable
    # on disk but not listed
    write_png(mura / "valid/XR_HAND/patient09997/study1_negative/image1.png", radiograph(40, 40, 8))
    ds = index_dataset(tmp_path)
    c = ds.problems.counts()
    assert c["missing_images"] == 1 and ds.problems.missing_images == [gone]
    assert ds.problems.unlabeled_studies == [extra]
    assert ds.problems.labels_without_images == ["MURA-v1.1/train/XR_HAND/patient09998/study1_positive"]
    assert c["unlisted_images"] == 1 and c["bad_lines"] == 1
    n_listed = sum(len(v) for v in truth["images"].values())
    assert len(ds) == n_listed - 1
    assert any("missing on disk" in line for line in ds.problems.lines())


def test_label_conflict_csv_wins(tmp_path):
    truth = make_mura(tmp_path)
    mura = tmp_path / "MURA-v1.1"
    study = next(s for s, lab in truth["studies"]["valid"].items() if lab == 1)
    text = (mura / "valid_labeled_studies.csv").read_text()
    (mura / "valid_labeled_studies.csv").write_text(text.replace(f"{study}/,1", f"{study}/,0"))
    ds = index_dataset(tmp_path)
    assert ds.problems.label_conflicts == [study]
    assert {r.label for r in ds.records if r.relpath.startswith(study + "/")} == {0}


def test_class_folder_tree(tmp_path):
    make_classes(tmp_path, n_normal=12, n_abnormal=9)
    (tmp_path / "normal" / "._img000.png").write_bytes(b"junk")
    ds = index_dataset(tmp_path)
    assert ds.layout == "classes" and len(ds) == 21
    assert Counter(r.label for r in ds.records) == {0: 12, 1: 9}
    assert all(r.part == "UNKNOWN" and r.split == "all" for r in ds.records)
    assert len({r.study for r in ds.records}) == len({r.patient for r in ds.records}) == 21
    split = assign_splits(ds.records, seed=3)
    assert set(split) == {"train", "val", "test"}
    assert np.array_equal(split, assign_splits(ds.records, seed=3))


def test_unknown_layout_and_missing_folder(tmp_path):
    (tmp_path / "stuff").mkdir()
    write_png(tmp_path / "stuff" / "a.png", radiograph(30, 30, 0))
    with pytest.raises(MurakitError, match="unknown data layout"):
        index_dataset(tmp_path)
    with pytest.raises(MurakitError, match="no such data folder"):
        index_dataset(tmp_path / "nope")
    (tmp_path / "MURA-v1.1" / "train").mkdir(parents=True)
    with pytest.raises(MurakitError, match="no usable images"):
        index_dataset(tmp_path)


def test_annotations_are_loaded(tmp_path):
    truth = make_mura(tmp_path, inverted_every=3, annotations=True)
    ds = index_dataset(tmp_path)
    assert set(ds.annotations) == set(truth["inverted"])
    for rel, inv in truth["inverted"].items():
        assert ds.annotations[rel].inverted == inv
        assert ds.annotations[rel].bbox == truth["boxes"][rel]


def _append(path, text: bytes) -> None:
    with open(path, "ab") as f:
        f.write(text)


def _outside(tmp_path):
    """A radiograph outside the data root (``tmp_path/data``)."""
    out = tmp_path / "outside" / "secret.png"
    write_png(out, radiograph(40, 40, 9))
    return out


@pytest.mark.parametrize("kind", ["dotdot", "symlink_file", "symlink_dir", "symlink_dir_walk"])
def test_paths_leading_outside_the_data_root_are_refused_and_counted(tmp_path, kind):
    data = tmp_path / "data"
    make_mura(data, csv=kind != "symlink_dir_walk")
    mura, secret = data / "MURA-v1.1", _outside(tmp_path)
    study = mura / "train/XR_ELBOW/patient99999/study1_positive"
    if kind == "dotdot":  # the study folder exists, so the OS would resolve the ../ segments
        study.mkdir(parents=True)
        rel = "MURA-v1.1/train/XR_ELBOW/patient99999/study1_positive/../../../../../outside/secret.png"
    elif kind == "symlink_file":
        study.mkdir(parents=True)
        (study / "image1.png").symlink_to(secret)
        rel = "MURA-v1.1/train/XR_ELBOW/patient99999/study1_positive/image1.png"
    else:
        study.parent.mkdir(parents=True)
        (secret.parent / "study").mkdir()
        shutil.copyfile(secret, secret.parent / "study" / "image1.png")
        study.symlink_to(secret.parent / "study", target_is_directory=True)
        rel = "MURA-v1.1/train/XR_ELBOW/patient99999/study1_positive/image1.png"
    if kind != "symlink_dir_walk":
        _append(mura / "train_image_paths.csv", (rel + "\n").encode())
        _append(mura / "train_labeled_studies.csv", b"MURA-v1.1/train/XR_ELBOW/patient99999/study1_positive/,1\n")
    ds = index_dataset(data)
    assert not [r for r in ds.records if "patient99999" in r.relpath]
    assert all(Path(r.path).resolve().is_relative_to(data.resolve()) for r in ds.records)
    assert ds.problems.counts()["outside_root"] == 1
    assert any("outside the data root" in line for line in ds.problems.lines())


def test_a_symlink_out_of_a_class_folder_is_refused(tmp_path):
    make_classes(tmp_path / "data")
    (tmp_path / "data" / "abnormal" / "x.png").symlink_to(_outside(tmp_path))
    ds = index_dataset(tmp_path / "data")
    assert ds.problems.outside_root == ["abnormal/x.png"] and len(ds) == 9


def test_symlinks_inside_the_root_are_fine(tmp_path):
    make_mura(tmp_path, csv=False)
    study = tmp_path / "MURA-v1.1/train/XR_ELBOW/patient00001/study1_positive"
    (study / "image9.png").symlink_to(study / "image1.png")
    ds = index_dataset(tmp_path)
    assert any(r.relpath.endswith("patient00001/study1_positive/image9.png") for r in ds.records)
    assert not ds.problems.outside_root


@pytest.mark.parametrize("edit, match", [
    (lambda m: _append(m / "train_image_paths.csv", "MURA-v1.1/train/XR_ELBOW/pä/s/image1.png\n".encode("latin-1")),
     r"train_image_paths.csv line \d+: not UTF-8"),
    (lambda m: (m / "valid_labeled_studies.csv").write_bytes((m / "valid_labeled_studies.csv").read_text()
                                                             .encode("utf-16")), "valid_labeled_studies.csv line 1: not UTF-8"),
    (lambda m: _append(m / "train_image_paths.csv", b'"' + b"a" * 200_000 + b'"\n'),
     r"train_image_paths.csv line \d+: not a MURA CSV \(field larger than field limit"),
    (lambda m: ((m / "train_labeled_studies.csv").unlink(), (m / "train_labeled_studies.csv").mkdir()),
     "train_labeled_studies.csv: not a file"),
    (lambda m: (m / "synth_annotations.csv").write_text(
        (m / "synth_annotations.csv").read_text().replace(",4,6,20,30", ",abc,6,20,30", 1)),
     r"synth_annotations.csv line \d+: bad box coordinate .*'abc'"),
    (lambda m: (m / "synth_annotations.csv").write_text(
        (m / "synth_annotations.csv").read_text().replace(",4,6,20,30", ",inf,6,20,30", 1)),
     "not a finite number"),
])
def test_damaged_csvs_are_one_line_errors_naming_file_and_line(tmp_path, edit, match):
    make_mura(tmp_path, annotations=True)
    edit(tmp_path / "MURA-v1.1")
    with pytest.raises(MurakitError, match=match) as e:
        index_dataset(tmp_path)
    assert "\n" not in str(e.value)


def _records(n_patients, studies_per_patient=2, split="train"):
    out = []
    for p in range(n_patients):
        for s in range(studies_per_patient):
            label = int((p * 7 + s) % 3 == 0)
            study = f"XR_WRIST/patient{p:05d}/study{s + 1}"
            out.append(ImageRecord(split, "WRIST", f"patient{p:05d}", study, "", study + "/image1.png",
                                   label))
    return out


def test_splits_are_patient_disjoint_deterministic_and_stratified():
    records = _records(300) + [
        ImageRecord("valid", "HAND", f"patient9{p:04d}", f"XR_HAND/patient9{p:04d}/study1", "", "x", p % 2)
        for p in range(40)]
    split = assign_splits(records, seed=0)
    owners = {}
    for r, s in zip(records, split):
        owners.setdefault(r.patient, set()).add(s)
    assert all(len(v) == 1 for v in owners.values())
    assert all(s == "test" for r, s in zip(records, split) if r.split == "valid")
    n_val = len({r.patient for r, s in zip(records, split) if s == "val"})
    assert abs(n_val - 30) <= 1  # 10% of the 300 MURA-train patients
    val_lab = np.mean([r.label for r, s in zip(records, split) if s == "val"])
    train_lab = np.mean([r.label for r, s in zip(records, split) if s == "train"])
    assert abs(val_lab - train_lab) < 0.1
    assert np.array_equal(split, assign_splits(records, seed=0))
    assert not np.array_equal(split, assign_splits(records, seed=1))
