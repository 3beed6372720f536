"""DICOM murakit writes is valid DICOM: synth's DX/CR images, the TID 1500 SR and the CAM
Secondary Captures pass dciodvfy (dicom3tools) without errors and read back to the JSON answer."""

from __future__ import annotations

import pydicom
import pytest

from tests._pacsfix import dciodvfy


def test_synth_dicom_files_are_valid_dx_and_cr_objects(tmp_path):
    from murakit.data.dicom_synth import generate_dicom
    from murakit.data.dicom_write import TYPE2_EMPTY

    root, counts = generate_dicom(tmp_path, n_studies=8, seed=5, workers=1, progress=False)
    files = sorted(p for p in root.rglob("image*.dcm"))
    assert len(files) == sum(counts.values()) >= 8
    modalities = set()
    for f in files:
        assert dciodvfy(f) == [], f
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        modalities.add(ds.Modality)
        for keyword in ("PatientBirthDate", "PatientSex", "StudyDate", "AccessionNumber", "ReferringPhysicianName"):
            assert keyword in ds and not ds[keyword].value, keyword  # Type 2: present, empty, not invented
        assert set(TYPE2_EMPTY) - {"PatientName", "PatientID", "SeriesNumber", "InstanceNumber",
                                   "PatientOrientation"} <= set(ds.dir())
        if ds.Modality == "DX":
            assert ds.PresentationIntentType == "FOR PRESENTATION" and ds.ImageLaterality in ("R", "L")
    assert modalities == {"DX", "CR"}


def test_a_known_body_part_is_coded_and_bad_laterality_is_refused():
    import numpy as np

    from murakit.data.dicom_write import DicomStyle, make_dataset

    ids = {"study_uid": "1.2.3", "series_uid": "1.2.3.1", "sop_uid": "1.2.3.1.1"}
    ds = make_dataset(np.zeros((8, 8), np.uint8), DicomStyle(), body_part="WRIST", **ids)
    code = ds.AnatomicRegionSequence[0]
    assert (code.CodeValue, code.CodingSchemeDesignator) == ("74670003", "SCT")
    with pytest.raises(ValueError, match="laterality"):
        make_dataset(np.zeros((8, 8), np.uint8), DicomStyle(), laterality="left", **ids)


# ---------------------------------------------------------------- SR and SC from the answer
@pytest.fixture(scope="module")
def synth_dicom(tmp_path_factory):
    from murakit.data.dicom_synth import generate_dicom

    root, _ = generate_dicom(tmp_path_factory.mktemp("synthdcm"), n_studies=6, seed=11, workers=1, progress=False)
    return root


@pytest.fixture(scope="module")
def tiny_cnn(tmp_path_factory):
    from tests._edgefix import cnn_model

    return cnn_model(tmp_path_factory.mktemp("model") / "tiny.onnx")


def study_dirs(root):
    return sorted(p for p in root.glob("*/XR_*/patient*/study*"))[:2]


def sr_groups(path):
    """{tracking identifier: (finding meaning, probability, threshold, evaluations, source SOP UIDs)}."""
    import highdicom as hd

    sr = hd.sr.srread(path)
    out = {}
    for g in sr.content.get_image_measurement_groups():
        nums = {m.name.value: m.value for m in g.get_measurements()}
        evals = {q.name.value: q.value.value for q in g.get_qualitative_evaluations()}
        out[g.tracking_identifier] = (g.finding_type.meaning, nums["122157"], nums["122411"], evals,
                                      [s.referenced_sop_instance_uid for s in g.source_images])
    return out


def objects(folder):
    """{Modality: [(path, dataset)]} of every DICOM object under ``folder``."""
    out = {}
    for f in sorted(folder.rglob("*.dcm")):
        ds = pydicom.dcmread(f)
        out.setdefault(ds.Modality, []).append((f, ds))
    return out


def test_edge_predict_dicom_out_writes_valid_sr_and_sc_in_the_source_study(synth_dicom, tiny_cnn, tmp_path, capsys):
    import json

    from edge.cli import predict_main

    out = tmp_path / "results"
    dirs = study_dirs(synth_dicom)
    code = predict_main([*map(str, dirs), "--model", str(tiny_cnn), "--json", "--dicom-out", str(out), "--dicom-cam"])
    answers = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert code == 0 and len(answers) == 2
    found = objects(out)
    assert len(found["SR"]) == 2 and len(found["OT"]) == sum(a["n_views"] for a in answers)
    for f, _ in found["SR"] + found["OT"]:
        assert dciodvfy(f) == [], f
    for answer in answers:
        (sr_path, sr), = [(f, d) for f, d in found["SR"] if d.StudyInstanceUID == answer["study_uid"]]
        source = pydicom.dcmread(answer["views"][0]["path"], stop_before_pixels=True)
        assert sr.SeriesInstanceUID != source.SeriesInstanceUID and sr.PatientName == source.PatientName
        assert sr.PatientID == source.PatientID and sr.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.34"
        groups = sr_groups(sr_path)
        finding, p, t, evals, refs = groups["study"]
        assert p == answer["probability"] and t == answer["threshold"]  # the JSON's numbers, exactly
        assert finding == ("Abnormal" if p > t else "Normal")
        assert evals["263654008"] == ("52101004" if p > t else "272519000")
        assert refs == [v["sop_uid"] for v in answer["views"]]
        for k, v in enumerate(answer["views"], 1):
            assert groups[f"view {k}"][1] == v["probability"] and groups[f"view {k}"][4] == [v["sop_uid"]]
        assert "111101" not in evals  # no gate verdict in the answer: none in the SR
    for _, sc in found["OT"]:
        assert sc.BurnedInAnnotation == "YES" and list(sc.ImageType)[:2] == ["DERIVED", "SECONDARY"]
        assert "NOT FOR DIAGNOSTIC USE" in sc.SeriesDescription and sc.ImageComments == "NOT FOR DIAGNOSTIC USE"
        band = sc.pixel_array[: sc.Rows // 16]
        assert (band < 30).all(axis=-1).mean() > 0.5 and (band > 200).all(axis=-1).any()  # text burned in
        assert sc.SourceImageSequence[0].ReferencedSOPInstanceUID in {
            v["sop_uid"] for a in answers for v in a["views"]}
    again = tmp_path / "again"
    predict_main([*map(str, dirs), "--model", str(tiny_cnn), "--dicom-out", str(again)])
    capsys.readouterr()
    assert {d.SOPInstanceUID for _, d in objects(again)["SR"]} == {d.SOPInstanceUID for _, d in found["SR"]}


def test_the_sr_carries_the_gate_verdict_and_operating_point_when_the_answer_has_them(synth_dicom, tiny_cnn,
                                                                                         tmp_path):
    from edge.pacs.results import write_study_results
    from edge.predictor import Predictor, study_groups

    predictor = Predictor(tiny_cnn)
    answer = predictor.predict_group(study_groups(study_dirs(synth_dicom)[0])[0]).to_dict()
    answer["operating_point"] = "high_sensitivity"
    for k, v in enumerate(answer["views"]):
        v["gate"] = {"score": 0.1 * k, "threshold": 0.15, "passed": k < 2}
    (path,) = write_study_results(answer, predictor.card, tmp_path)
    assert dciodvfy(path) == []
    groups = sr_groups(path)
    assert groups["study"][3]["111101"] == ("128607" if len(answer["views"]) <= 2 else "128619")
    assert groups["view 1"][3]["111101"] == "128607"
    text = pydicom.dcmread(path).to_json()
    assert "operating_point=high_sensitivity" in text and f"weights_sha256={predictor.card.weights_sha256}" in text


def test_png_input_gets_one_line_and_no_sr(tiny_cnn, tmp_path, capsys):
    import cv2
    import numpy as np

    from edge.cli import predict_main

    cv2.imwrite(str(tmp_path / "x.png"), np.random.default_rng(0).integers(0, 255, (64, 64)).astype(np.uint8))
    code = predict_main([str(tmp_path / "x.png"), "--model", str(tiny_cnn), "--dicom-out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 0 and len(err) == 1 and "not DICOM, so no SR is written" in err[0]
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").rglob("*.dcm"))
    assert predict_main([str(tmp_path / "x.png"), "--model", str(tiny_cnn), "--dicom-cam"]) == 2
    assert "--dicom-cam needs --dicom-out" in capsys.readouterr().err


def test_murakit_score_dicom_out_matches_the_studies_table(synth_dicom, tiny_cnn, tmp_path, capsys):
    import csv

    from murakit.cli import main

    out = tmp_path / "dcm"
    assert main(["score", str(synth_dicom / "valid"), "--model", str(tiny_cnn), "--out", str(tmp_path / "s"),
                 "--workers", "1", "--no-progress", "--dicom-out", str(out)]) == 0
    capsys.readouterr()
    with open(tmp_path / "s" / "studies.csv", newline="") as f:
        studies = {r["study"]: float(r["probability"]) for r in csv.DictReader(f)}
    srs = objects(out)["SR"]
    assert len(srs) == len(studies) > 0
    for f, ds in srs:
        assert dciodvfy(f) == []
        assert sr_groups(f)["study"][1] == pytest.approx(studies[ds.StudyInstanceUID], abs=1e-12)


def test_score_rows_gate_columns_become_the_answer_gate():
    from murakit.scoring.dicom_out import _gate

    assert _gate({"gate_passed": "True", "gate_score": 0.1, "gate_threshold": 0.2}) == {
        "gate": {"score": 0.1, "threshold": 0.2, "passed": True}}
    assert _gate({"gate": '{"score": 1, "threshold": 2, "passed": false}'})["gate"]["passed"] is False
    assert _gate({"path": "x"}) == {}


def test_a_source_without_its_type2_attributes_still_gives_a_valid_sr(tmp_path):
    """PACS exports omit Type 2 attributes; the SR gets them empty (not invented) and stays valid."""
    import numpy as np

    from edge.pacs.results import write_study_results
    from edge.preprocess import PreprocessConfig
    from murakit.data.dicom_write import TYPE2_EMPTY, DicomStyle, make_dataset
    from tests._edgefix import card

    ds = make_dataset(np.zeros((40, 40), np.uint8), DicomStyle(), study_uid="1.2.3", series_uid="1.2.3.4",
                      sop_uid="1.2.3.4.5")
    for keyword in TYPE2_EMPTY:
        delattr(ds, keyword)
    ds.save_as(tmp_path / "a.dcm", enforce_file_format=True)
    answer = {"path": str(tmp_path / "a.dcm"), "type": "image", "probability": 0.7, "threshold": 0.5,
              "label": "abnormal", "study_uid": "1.2.3", "sop_uid": "1.2.3.4.5"}
    (path,) = write_study_results(answer, card("cnn", PreprocessConfig(size=32)), tmp_path / "o")
    assert dciodvfy(path) == []
    sr = pydicom.dcmread(path)
    assert sr.PatientID == "" and sr.PatientBirthDate == "" and sr_groups(path)["study"][:3] == ("Abnormal", 0.7, 0.5)
