"""The project's own regression test: today's preprocessing + onnxruntime must reproduce the
outputs recorded for the committed tiny model (tests/data/regression/, rebuilt only on purpose
by tests/data/regression/make.py)."""

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from edge.cli import verify_main
from edge.golden import read_golden, verify_golden
from edge.predictor import Predictor
from edge.preprocess import preprocess, to_model_input
from edge.protobuf import sha256_file

HERE = Path(__file__).parent / "data" / "regression"
MODEL = HERE / "model.onnx"
GOLDEN = HERE / "golden" / "model"


def test_fixture_is_small_and_consistent():
    manifest = json.loads((GOLDEN / "manifest.json").read_text())
    assert MODEL.stat().st_size < 100_000
    assert manifest["model_sha256"] == sha256_file(MODEL)
    assert manifest["tolerances"] == {"probability": 1e-4, "cam": 1e-4}
    labels = [c["label"] for c in manifest["cases"]]
    assert len(labels) >= 3 and set(labels) == {0, 1}


def test_todays_pipeline_reproduces_the_recorded_outputs():
    pred = Predictor(MODEL)
    _, cases = read_golden(GOLDEN)
    for case in cases:
        x = to_model_input(preprocess(case.source, pred.config))[None]
        assert np.array_equal(x, case.input)  # preprocessing is bit-exact today
        got = pred.run(x)
        for name, ref in case.outputs.items():
            assert np.max(np.abs(got[name] - ref)) <= 1e-4, (case.directory.name, name)
    probs = np.concatenate([c.outputs["probability"] for c in cases]).ravel()
    assert probs.max() - probs.min() > 0.5  # the fixture separates its cases, so drift shows
    assert verify_main([str(MODEL)]) == 0


def test_dicom_cases_pin_the_dicom_path():
    """The DICOM golden cases read through edge.dicom; the two whose window is linear give
    exactly their PNG twin's model input (the SIGMOID one remaps contrast, so it differs)."""
    _, cases = read_golden(GOLDEN)
    by_dir = {c.directory.name: c for c in cases}
    dicom = [c for c in cases if c.info.get("source_file") == "source.dcm"]
    assert len(dicom) == 3 and {c.info["label"] for c in dicom} == {0, 1}
    for case in dicom:
        twin = by_dir[case.info["twin"]]
        assert case.info["label"] == twin.info["label"]
        same = np.array_equal(case.input, twin.input)
        assert same == ("SIGMOID" not in case.info["dicom"]), case.directory.name


@pytest.mark.parametrize("change", [{"clip_low": 5.0, "clip_high": 95.0}, {"invert": "always"},
                                    {"clahe": True}])
def test_a_preprocessing_change_is_detected(change):
    pred = Predictor(MODEL)
    pred.config = dataclasses.replace(pred.config, **change)
    report = verify_golden(pred, GOLDEN)
    assert not report.passed
    worst_pipeline = max(max(c.pipeline.values()) for c in report.cases)
    worst_runtime = max(max(c.runtime.values()) for c in report.cases)
    assert worst_pipeline > 1e-4 and worst_runtime <= 1e-4  # the drift is pinned on preprocessing
