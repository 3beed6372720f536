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
