"""A short soak of a real edge-serve (``make soak`` runs 10,000 requests: benchmarks/soak_serve.py).

500 requests mixing valid images and studies, malformed uploads, stalled uploads, oversized
bodies and a missing field, at concurrency 32 from 127.0.0.1, with the audit log on: no status
outside the documented ones and no transport error, every valid answer equal to edge-predict's,
the server's RSS within 5% of its size after a warm-up of the same mix, one audit line per
request that reached the service.
"""

import contextlib
import io
import json

import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")

from _edgefix import cnn_model, radiograph, write_images
from _servefix import Server, jpeg_bytes, malformed_uploads
from _soak import DOCUMENTED, Soak

from edge.cli import predict_main

MAX_BODY_MB = 1


def expected_probabilities(model, images, study) -> dict:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert predict_main([*map(str, images), str(study), "--model", str(model), "--json", "--threads", "1"]) == 0
    rows = [json.loads(line) for line in out.getvalue().splitlines()]
    return {("study" if r["type"] == "study" else r["path"].split("/")[-1]): r["probability"] for r in rows}


def soak_server(model, audit, *extra):
    return Server(model, "--threads", "1", "--workers", "2", "--max-body-mb", MAX_BODY_MB, "--header-timeout", "1",
                  "--min-upload-kbps", "64", "--timeout", "20", "--audit-log", audit, *extra)


def make_soak(root, url, seed=0):
    model = root / "cnn.onnx"
    images = sorted((root / "study").glob("*.png"))
    expected = expected_probabilities(model, images, root / "study")
    png = images[0].read_bytes()
    return Soak(url, [(p.name, p.read_bytes()) for p in images], expected,
                malformed_uploads(png, jpeg_bytes(radiograph(60, 50, 2)), 60, seed=seed), MAX_BODY_MB * 2**20, seed)


def test_short_soak(tmp_path):
    cnn_model(tmp_path / "cnn.onnx")
    write_images(tmp_path / "study", 3)
    audit = tmp_path / "audit.jsonl"
    with soak_server(tmp_path / "cnn.onnx", audit) as srv:
        soak = make_soak(tmp_path, srv.url)
        soak.run(soak.plan(150), 32)  # warm-up: every kind, allocator pools grown
        rss0 = srv.rss_kb()
        warm = sum(soak.statuses.values())
        seconds = soak.run(soak.plan(500), 32)
        rss1 = srv.rss_kb()
    report = soak.report()
    assert soak.undocumented == [] and soak.mismatches == [], report
    assert sum(soak.statuses.values()) == warm + 500
    kinds = {k for k, _ in soak.statuses}
    assert kinds == {"valid_image", "valid_study", "malformed", "stalled", "oversized", "no_file_field"}
    assert all(s == 408 for (k, s) in soak.statuses if k == "stalled"), report["statuses"]
    assert all(s == 413 for (k, s) in soak.statuses if k == "oversized"), report["statuses"]
    assert (rss1 - rss0) / rss0 < 0.05, (rss0, rss1, report)
    lines = [json.loads(line) for line in audit.read_text().splitlines()]
    answered = sum(n for (k, s), n in soak.statuses.items() if k != "stalled")
    assert len(lines) >= answered and {g["status"] for g in lines} <= DOCUMENTED
    print(f"soak: 500 requests in {seconds:.1f} s, RSS {rss0 / 1024:.1f} -> {rss1 / 1024:.1f} MiB; {report['latency']}")
