"""edge-serve --audit-log: content, privacy, rotation and the rule that nothing is answered
unaudited (a log on /dev/full: every write fails with ENOSPC, as on a full disk)."""

import hashlib
import json
import os

import numpy as np
import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")
pytest.importorskip("pydicom")

from _edgefix import cnn_model, write_images
from _servefix import Server

from edge.predictor import Predictor
from edge.serve import cli as serve_cli
from edge.serve.audit import AuditLog, audit_record
from murakit.data.dicom_write import DicomStyle, write_dicom

MARKER = "ZQXAUDITMARKER"
KEYS = {"time", "request_id", "client", "endpoint", "status", "model", "operating_point", "probability", "label",
        "threshold", "gate", "study_uid", "views"}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("audit")
    images = write_images(root / "study1", 3)
    pic = (np.random.default_rng(0).integers(0, 4096, (64, 64))).astype(np.uint16)
    dcm = write_dicom(root / "view.dcm", pic, DicomStyle(), study_uid="1.2.826.0.1.77", series_uid="1.2.826.0.1.77.1",
                      sop_uid="1.2.826.0.1.77.1.1", body_part="HAND",
                      tags={"PatientName": f"{MARKER}^JANE", "PatientID": f"ID{MARKER}", "PatientBirthDate": "19230417"})
    return {"root": root, "model": cnn_model(root / "cnn.onnx"), "images": images, "dicom": dcm}


def post(srv, parts):
    return httpx.post(srv.url + "/v1/predict", timeout=30,
                      files=[("file", (name, data, "application/octet-stream")) for name, data in parts])


def lines(path) -> list:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_every_answer_is_one_audit_line_with_inputs_model_and_answer(files, tmp_path):
    log = tmp_path / "audit.jsonl"
    imgs = [p.read_bytes() for p in files["images"]]
    dcm = files["dicom"].read_bytes()
    with Server(files["model"], "--threads", "1", "--audit-log", log) as srv:
        answers = [post(srv, [(f"{MARKER}-a.png", imgs[0])]),                        # one image
                   post(srv, [(f"{MARKER}-{i}.png", d) for i, d in enumerate(imgs)]),  # a study
                   post(srv, [(f"{MARKER}.dcm", dcm)]),                               # DICOM
                   post(srv, [(f"{MARKER}-bad.png", imgs[0][:50])])]                  # refused: 400
    assert [r.status_code for r in answers] == [200, 200, 200, 400]
    got = lines(log)
    assert len(got) == 4 and all(set(g) == KEYS for g in got)
    card = Predictor(files["model"]).card
    for g, r in zip(got, answers):
        assert g["request_id"] == r.headers["x-request-id"] and g["status"] == r.status_code
        assert g["endpoint"] == "/v1/predict" and g["client"] == "127.0.0.1"
        assert g["model"]["weights_sha256"] == card.weights_sha256 and g["model"]["name"] == "cnn.onnx"
        answer = r.json() if r.status_code == 200 else {}
        # copied from the answer when it has them (a model without a gate: gate null), null when refused
        assert g["operating_point"] == answer.get("operating_point") and g["gate"] == answer.get("gate")
    one, study, dicom, bad = got
    assert [v["sha256"] for v in one["views"]] == [hashlib.sha256(imgs[0]).hexdigest()]
    assert one["probability"] == answers[0].json()["probability"] and one["label"] == answers[0].json()["label"]
    assert one["views"][0]["probability"] == one["probability"]
    assert [v["sha256"] for v in study["views"]] == [hashlib.sha256(d).hexdigest() for d in imgs]
    assert [v["probability"] for v in study["views"]] == [v["probability"] for v in answers[1].json()["views"]]
    assert study["probability"] == answers[1].json()["probability"]
    assert dicom["views"][0]["sop_uid"] == "1.2.826.0.1.77.1.1" and dicom["study_uid"] == "1.2.826.0.1.77"
    assert dicom["views"][0]["sha256"] == hashlib.sha256(dcm).hexdigest()
    assert bad["probability"] is None and bad["views"][0]["sha256"] == hashlib.sha256(imgs[0][:50]).hexdigest()
    text = log.read_text()
    assert MARKER not in text and "19230417" not in text and ".png" not in text and ".dcm" not in text
    assert oct(os.stat(log).st_mode & 0o777) == "0o600"


def test_gate_and_operating_point_are_taken_from_the_answer_when_present():
    answer = {"type": "image", "path": "secret.png", "probability": 0.7, "label": "abnormal", "threshold": 0.5,
              "operating_point": "high_sensitivity", "gate": {"score": 1.2, "threshold": 3.0, "passed": True}}
    rec = audit_record(request_id="r", client="127.0.0.1", endpoint="/v1/predict", status=200, model={},
                       upload_sha256=["ab" * 32], answer=answer)
    assert rec["operating_point"] == "high_sensitivity" and rec["gate"]["passed"] is True
    assert rec["views"][0]["gate"] == answer["gate"] and "secret" not in json.dumps(rec)


def test_a_log_that_cannot_be_written_means_503_never_an_unaudited_answer(files):
    png = files["images"][0].read_bytes()
    with Server(files["model"], "--threads", "1", "--audit-log", "/dev/full") as srv:  # ENOSPC on every write
        for _ in range(2):
            r = post(srv, [("a.png", png)])
            assert r.status_code == 503 and set(r.json()) == {"error"} and "audit log" in r.json()["error"]
            assert "probability" not in r.text
        ready = httpx.get(srv.url + "/readyz")
        assert ready.status_code == 503 and "audit log" in ready.json()["error"]
        assert post(srv, [("a.png", png[:40])]).status_code == 503  # a refusal is not given unaudited either
    assert "Traceback" not in srv.proc.stderr.read()


def test_log_is_rotated_by_size(files, tmp_path):
    log = tmp_path / "audit.jsonl"
    png = files["images"][0].read_bytes()
    with Server(files["model"], "--threads", "1", "--audit-log", log, "--audit-max-mb", "0.002",
                "--audit-backups", "2") as srv:
        ids = [post(srv, [("a.png", png)]).headers["x-request-id"] for _ in range(12)]
    kept = [log.with_name("audit.jsonl.2"), log.with_name("audit.jsonl.1"), log]
    assert all(p.exists() for p in kept) and not log.with_name("audit.jsonl.3").exists()
    assert all(p.stat().st_size <= 0.002 * 2**20 for p in kept)
    got = [g["request_id"] for p in kept for g in lines(p)]
    assert got == ids[-len(got):] and len(got) >= 4  # the newest lines, in order; the oldest dropped


def test_an_audit_log_that_cannot_be_opened_stops_the_start(files, tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    assert serve_cli.main(["--model", str(files["model"]), "--audit-log", str(tmp_path / "file" / "audit")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("edge-serve: error: --audit-log") and "cannot open" in err[0]


def test_audit_log_writes_whole_lines_and_raises_on_a_full_disk(tmp_path):
    log = AuditLog(tmp_path / "a.jsonl")
    log.write({"a": 1})
    log.write({"b": [1, 2]})
    log.close()
    assert lines(tmp_path / "a.jsonl") == [{"a": 1}, {"b": [1, 2]}]
    full = AuditLog("/dev/full")
    with pytest.raises(OSError):
        full.write({"a": 1})
    full.close()
