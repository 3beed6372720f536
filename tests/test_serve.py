"""edge-serve: a real server process on a free 127.0.0.1 port, called over HTTP with httpx.

Covers: parity with edge-predict (image and study, 1e-6), CAM overlays, every error status,
503 + Retry-After beyond the uploading limit (a stalled upload takes no scoring slot), 408 and
close when an upload outlives the time limit, metrics,
the model card and probes, the bind/token rule, SIGTERM (in-flight finishes, new connections
refused, exit 0), a burst of malformed uploads followed by a correct answer, and the batcher
and upload parser on their own.
"""

import asyncio
import base64
import http.client
import json
import socket
import time

import cv2
import numpy as np
import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")

from _edgefix import baseline_model, cnn_model, radiograph, write_images
from _servefix import Server, jpeg_bytes, malformed_uploads, png_bytes

from edge.cli import predict_main
from edge.serve import cli as serve_cli
from edge.serve.batcher import Batcher
from edge.serve.limits import Limits, ServeError, check_bind, is_loopback, read_token, token_matches
from edge.serve.uploads import ApiError, parse_uploads, safe_name

TOL = 1e-6
# small limits so that every bound can be hit with tiny inputs
LIMITS = ["--threads", "1", "--workers", "1", "--max-body-mb", "0.25", "--max-files", "4",
          "--max-pixels", "10000", "--max-inflight", "3", "--max-uploading", "3", "--min-upload-kbps", "0",
          "--timeout", "3"]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve")
    model = cnn_model(root / "cnn.onnx")
    study = root / "study1"
    images = write_images(study, 3)
    return {"root": root, "model": model, "study": study, "images": images}


@pytest.fixture(scope="module")
def server(files):
    srv = Server(files["model"], *LIMITS)
    yield srv
    assert srv.stop() == 0
    assert "Traceback" not in srv.proc.stderr.read()


@pytest.fixture(scope="module")
def expected(files):
    """edge-predict --json for each image and for the study folder: {name: dict}."""
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = predict_main([*map(str, files["images"]), str(files["study"]), "--model", str(files["model"]),
                             "--json", "--threads", "1"])
    assert code == 0
    rows = [json.loads(line) for line in out.getvalue().splitlines()]
    return {r["path"].split("/")[-1]: r for r in rows}


def post(server, parts, cam=False, headers=None, client=None):
    """POST /v1/predict with [(field, filename, bytes)]; returns the httpx response."""
    files = [(field, (name, data, "application/octet-stream")) for field, name, data in parts]
    url = server.url + "/v1/predict" + ("?cam=1" if cam else "")
    return (client or httpx).post(url, files=files, headers=headers, timeout=30)


def image_parts(paths):
    return [("file", p.name, p.read_bytes()) for p in paths]


def assert_json_error(r, status):
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert set(body) == {"error"} and body["error"] and "\n" not in body["error"]
    assert "Traceback" not in r.text
    return body["error"]


# ------------------------------------------------------------------ predictions
def test_single_image_equals_edge_predict(server, files, expected):
    for path in files["images"]:
        r = post(server, image_parts([path]))
        assert r.status_code == 200, r.text
        got, want = r.json(), expected[path.name]
        assert set(got) == set(want)
        assert got["path"] == path.name and got["type"] == "image"
        assert abs(got["probability"] - want["probability"]) <= TOL
        assert got["label"] == want["label"] and got["threshold"] == want["threshold"]
        assert got["preprocess_ms"] >= 0 and got["inference_ms"] >= 0


def test_study_is_the_mean_of_its_views_as_in_edge_predict(server, files, expected):
    r = post(server, image_parts(files["images"]))
    assert r.status_code == 200, r.text
    got, want = r.json(), expected["study1"]
    assert set(got) == set(want)
    assert got["type"] == "study" and got["n_views"] == 3
    assert [v["path"] for v in got["views"]] == [p.name for p in files["images"]]
    for v, w in zip(got["views"], want["views"]):
        assert abs(v["probability"] - w["probability"]) <= TOL
    assert abs(got["probability"] - np.mean([v["probability"] for v in got["views"]])) <= 1e-12
    assert abs(got["probability"] - want["probability"]) <= TOL and got["label"] == want["label"]


def test_cam_overlays_are_base64_pngs_of_the_model_size(server, files):
    one = post(server, image_parts(files["images"][:1]), cam=True).json()
    two = post(server, image_parts(files["images"][:2]), cam=True).json()
    assert isinstance(one["cam"], str) and len(two["cam"]) == 2
    for b64 in [one["cam"], *two["cam"]]:
        img = cv2.imdecode(np.frombuffer(base64.b64decode(b64), np.uint8), cv2.IMREAD_UNCHANGED)
        assert img.shape == (32, 32, 3) and img.dtype == np.uint8
    # drawn by edge.cam.overlay, as edge-predict --cam and murakit explain draw it (docs/cam.md)
    from edge.cam import overlay
    from edge.predictor import Predictor

    pred = Predictor(files["model"]).predict(files["images"][0], cam=True)
    got = cv2.imdecode(np.frombuffer(base64.b64decode(one["cam"]), np.uint8), cv2.IMREAD_UNCHANGED)
    assert np.array_equal(got, overlay(pred.image, pred.cam))
    assert "cam" not in post(server, image_parts(files["images"][:1])).json()


def test_upload_name_is_reduced_to_a_base_name(server, files):
    data = files["images"][0].read_bytes()
    body, ctype = multipart([("file", "../../etc/C:\\x\\radio\x07graph.png", data)])
    r = httpx.post(server.url + "/v1/predict", content=body, headers={"content-type": ctype})
    assert r.json()["path"] == "radiograph.png"
    assert post(server, [("file", "", data)]).json()["path"] == "file1"


def test_jpeg_upload_is_scored(server):
    r = post(server, [("file", "view.jpg", jpeg_bytes(radiograph(60, 50, 3)))])
    assert r.status_code == 200 and 0.0 <= r.json()["probability"] <= 1.0


# ------------------------------------------------------------------ errors
def multipart(parts, boundary="b0undary"):
    body = b"".join(f"--{boundary}\r\nContent-Disposition: form-data; name=\"{f}\"; filename=\"{n}\"\r\n"
                    f"Content-Type: application/octet-stream\r\n\r\n".encode() + d + b"\r\n" for f, n, d in parts)
    return body + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def test_400_bad_image_and_malformed_body(server, files):
    png = files["images"][0].read_bytes()
    assert "x.png" in assert_json_error(post(server, [("file", "x.png", png[:60])]), 400)
    # a study with one bad view is refused whole, naming the view (a partial mean is not the protocol)
    parts = image_parts(files["images"][:2]) + [("file", "bad.png", png[:60])]
    assert "bad.png" in assert_json_error(post(server, parts), 400)
    body, ctype = multipart([("file", "a.png", png)])
    r = httpx.post(server.url + "/v1/predict", content=body[:-30], headers={"content-type": ctype})
    assert "malformed multipart" in assert_json_error(r, 400)
    r = httpx.post(server.url + "/v1/predict", content=body, headers={"content-type": "multipart/form-data"})
    assert "boundary" in assert_json_error(r, 400)


def test_413_body_files_and_pixels(server, files):
    big = np.random.default_rng(0).integers(0, 256, (400, 400), dtype=np.uint8)  # ~160 KB PNG noise
    r = post(server, [("file", "a.png", png_bytes(big)), ("file", "b.png", png_bytes(big))])
    assert "byte limit" in assert_json_error(r, 413)
    r = post(server, image_parts(files["images"]) * 2)
    assert "limit of 4" in assert_json_error(r, 413)
    r = post(server, [("file", "wide.png", png_bytes(radiograph(120, 120, 1)))])
    assert "120x120" in assert_json_error(r, 413)


def test_415_wrong_type(server):
    assert "notes.txt" in assert_json_error(post(server, [("file", "notes.txt", b"not an image\n")]), 415)
    r = httpx.post(server.url + "/v1/predict", json={"file": "x"})
    assert "multipart/form-data" in assert_json_error(r, 415)


def test_422_missing_field(server, files):
    r = post(server, [("image", "a.png", files["images"][0].read_bytes())])
    assert "'file'" in assert_json_error(r, 422)


def test_404_405_and_unknown_paths_are_json(server):
    assert_json_error(httpx.get(server.url + "/nope"), 404)
    assert_json_error(httpx.delete(server.url + "/v1/model"), 405)
    assert_json_error(httpx.get(server.url + "/v1/predict"), 405)


def start_upload(port, parts, sent=0.5):
    """Send the headers and part of a multipart body; returns (socket, the rest of the body)."""
    body, ctype = multipart(parts)
    head = (f"POST /v1/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {ctype}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    k = int(len(body) * sent)
    s.sendall(head + body[:k])
    return s, body[k:]


def read_response(s):
    resp = http.client.HTTPResponse(s)
    resp.begin()
    return resp.status, dict(resp.getheaders()), json.loads(resp.read())


def gauge(server, name="inflight") -> float:
    text = httpx.get(server.url + "/metrics").text
    return float(next(ln.split()[-1] for ln in text.splitlines() if ln.startswith(f"edge_serve_{name}_requests ")))


def wait_for(cond, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.02)
    return False


def test_503_with_retry_after_beyond_the_uploading_limit(server, files):
    parts = image_parts(files["images"][:1])
    held = [start_upload(server.port, parts) for _ in range(3)]  # uploading, waiting for their bodies
    try:
        assert wait_for(lambda: gauge(server, "uploading") == 3)
        assert gauge(server, "inflight") == 0  # a stalled upload takes no scoring slot
        r = post(server, parts)
        assert "busy: 3 uploads" in assert_json_error(r, 503)
        assert int(r.headers["retry-after"]) >= 1
    finally:
        answers = []
        for s, rest in held:
            s.sendall(rest)
            answers.append(read_response(s))
            s.close()
    assert [a[0] for a in answers] == [200, 200, 200]
    assert post(server, parts).status_code == 200


def test_408_and_close_when_an_upload_outlives_the_time_limit(server, files):
    s, _ = start_upload(server.port, image_parts(files["images"][:1]))  # never finishes its body
    t0 = time.monotonic()
    status, headers, body = read_response(s)
    assert status == 408 and "upload too slow" in body["error"] and 2.5 < time.monotonic() - t0 < 15
    assert headers.get("connection") == "close" and s.recv(1) == b""  # closed by the server
    s.close()


# ------------------------------------------------------------------ model, probes, metrics, page
def test_model_card_and_probes(server):
    card = httpx.get(server.url + "/v1/model").json()
    assert card["kind"] == "cnn" and card["threshold"] == 0.5 and card["preprocess"]["size"] == 32
    assert card["labels"] == ["normal", "abnormal"] and card["version"] == "test"
    assert httpx.get(server.url + "/healthz").json() == {"status": "alive"}
    assert httpx.get(server.url + "/readyz").json() == {"status": "ready"}


def test_metrics_count_requests_errors_latency_and_batches(server, files):
    post(server, image_parts(files["images"][:1]))
    post(server, [("file", "t.txt", b"text")])
    r = httpx.get(server.url + "/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    text = r.text
    assert 'edge_serve_requests_total{endpoint="/v1/predict",status="200"}' in text
    assert 'edge_serve_errors_total{kind="wrong_type"}' in text
    assert 'edge_serve_request_seconds_bucket{endpoint="/v1/predict",le="0.1"}' in text
    count = float(next(ln.split()[-1] for ln in text.splitlines() if ln.startswith("edge_serve_batch_images_count")))
    assert count >= 2  # warm-up + at least one request
    httpx.get(server.url + "/random-probe-path")
    assert "random-probe-path" not in httpx.get(server.url + "/metrics").text  # bounded label set


def test_page_is_self_contained_html(server):
    r = httpx.get(server.url + "/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    page = r.text
    assert "/v1/predict?cam=1" in page and "/v1/model" in page
    assert "http://" not in page and "https://" not in page and "//cdn" not in page  # no external assets
    csp = r.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "connect-src 'self'" in csp  # and the browser enforces it


# ------------------------------------------------------------------ robustness


def test_burst_of_malformed_uploads_then_a_correct_answer(server, files, expected):
    png = files["images"][0].read_bytes()
    jpeg = jpeg_bytes(radiograph(60, 50, 2))
    statuses = {}
    uploads = malformed_uploads(png, jpeg, 300, seed=1)
    with httpx.Client(timeout=30) as client:
        for kind, data in uploads:
            r = post(server, [("file", f"{kind}.png", data)], client=client)
            body = r.json()  # always JSON
            if r.status_code == 200:  # a byte flip can leave a valid image (most are caught as corrupt)
                assert kind.endswith("flipped") and 0.0 <= body["probability"] <= 1.0
            else:
                assert r.status_code in (400, 413, 415) and set(body) == {"error"}, (kind, r.status_code)
            statuses.setdefault(kind, set()).add(r.status_code)
        good = post(server, image_parts(files["images"][:1]), client=client).json()
    assert len(statuses) == 15 and server.proc.poll() is None
    assert abs(good["probability"] - expected[files["images"][0].name]["probability"]) <= TOL


def test_sigterm_finishes_inflight_requests_and_refuses_new_ones(files, expected):
    srv = Server(files["model"], "--threads", "1")
    s, rest = start_upload(srv.port, image_parts(files["images"][:1]))
    assert wait_for(lambda: gauge(srv, "uploading") == 1)
    srv.terminate()

    def refused():
        try:
            socket.create_connection(("127.0.0.1", srv.port), timeout=1).close()
            return False
        except ConnectionRefusedError:
            return True

    assert wait_for(refused), "new connections still accepted after SIGTERM"
    s.sendall(rest)
    status, _, body = read_response(s)
    s.close()
    assert status == 200
    assert abs(body["probability"] - expected[files["images"][0].name]["probability"]) <= TOL
    assert srv.proc.wait(30) == 0
    assert "Traceback" not in srv.proc.stderr.read()


# ------------------------------------------------------------------ bind rule and token
def test_non_loopback_bind_needs_a_token_or_insecure(files, capsys):
    assert serve_cli.main(["--model", str(files["model"]), "--host", "0.0.0.0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--token-file" in err[0] and "--insecure" in err[0]
    for host in ("127.0.0.1", "127.8.9.1", "::1", "[::1]", "localhost"):
        assert is_loopback(host)
        check_bind(host, None, False)
    for host in ("0.0.0.0", "::", "10.0.0.5", "192.168.1.2", "example.org"):
        assert not is_loopback(host)
        with pytest.raises(ServeError):
            check_bind(host, None, False)
        check_bind(host, "token.txt", False)
        check_bind(host, None, True)


def test_token_file_rules(tmp_path):
    good = tmp_path / "token"
    good.write_text("  s3cret-token-0123456789\n")
    assert read_token(good) == "s3cret-token-0123456789"
    for text in ("short", "two words here and there", ""):
        (tmp_path / "bad").write_text(text)
        with pytest.raises(ServeError):
            read_token(tmp_path / "bad")
    with pytest.raises(ServeError, match="cannot read"):
        read_token(tmp_path / "missing")
    assert token_matches("Bearer s3cret-token-0123456789", "s3cret-token-0123456789")
    assert token_matches("bearer s3cret-token-0123456789", "s3cret-token-0123456789")
    for header in (None, "", "s3cret-token-0123456789", "Basic s3cret-token-0123456789", "Bearer s3cret"):
        assert not token_matches(header, "s3cret-token-0123456789")


def test_token_is_required_on_the_api_but_not_on_probes_or_page(files, tmp_path):
    token = "tok-" + "x" * 28
    (tmp_path / "token").write_text(token)
    with Server(files["model"], "--threads", "1", "--token-file", tmp_path / "token") as srv:
        auth = {"Authorization": f"Bearer {token}"}
        for path in ("/v1/model", "/metrics"):
            r = httpx.get(srv.url + path)
            assert_json_error(r, 401)
            assert r.headers["www-authenticate"] == "Bearer"
            assert_json_error(httpx.get(srv.url + path, headers={"Authorization": "Bearer wrong"}), 401)
            assert httpx.get(srv.url + path, headers=auth).status_code == 200
        parts = image_parts(files["images"][:1])
        assert_json_error(post(srv, parts), 401)
        assert post(srv, parts, headers=auth).status_code == 200
        for path in ("/", "/healthz", "/readyz"):
            assert httpx.get(srv.url + path).status_code == 200


# ------------------------------------------------------------------ start-up failures: one line, exit 2
def test_startup_failures_are_one_line(files, tmp_path, capsys, monkeypatch):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not onnx")
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    cases = [(["--model", str(bad)], "not a loadable ONNX model"),
             (["--model", str(files["model"]), "--port", str(busy.getsockname()[1])], "cannot listen"),
             (["--model", str(files["model"]), "--max-files", "0"], "max-files"),
             (["--model", str(files["model"]), "--token-file", str(tmp_path / "none")], "token file")]
    try:
        for argv, message in cases:
            assert serve_cli.main(argv) == 2
            err = capsys.readouterr().err.strip().splitlines()
            assert len(err) == 1 and err[0].startswith("edge-serve: error:") and message in err[0], err
    finally:
        busy.close()
    monkeypatch.setattr(serve_cli, "missing_extra", lambda: ["fastapi", "uvicorn"])
    assert serve_cli.main(["--model", str(files["model"])]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pip install 'murakit[serve]'" in err[0]


def test_baseline_model_is_served_without_cam(tmp_path, files):
    model = baseline_model(tmp_path / "baseline.onnx")
    with Server(model, "--threads", "1") as srv:
        r = post(srv, image_parts(files["images"][:2]), cam=True)
        assert r.status_code == 200 and r.json()["n_views"] == 2 and "cam" not in r.json()
        assert httpx.get(srv.url + "/v1/model").json()["kind"] == "baseline"


# ------------------------------------------------------------------ batcher and uploads, in process
def _echo_run(calls):
    def run(x):
        calls.append(len(x))
        time.sleep(0.005)
        return {"probability": x.reshape(len(x), -1)[:, :1] * 2.0}
    return run


def _batch(batcher_kwargs, jobs, gap_s=0.0):
    calls = []

    async def main():
        b = Batcher(_echo_run(calls), **batcher_kwargs)
        b.start()

        async def one(i, rows):
            await asyncio.sleep(gap_s * i)
            return await b.infer(np.full((rows, 2), float(i), np.float32))

        out = await asyncio.gather(*(one(i, rows) for i, rows in enumerate(jobs)))
        await b.stop()
        return out

    return asyncio.run(main()), calls


def test_batcher_merges_concurrent_jobs_and_slices_their_outputs():
    results, calls = _batch({"max_batch": 32, "max_wait_s": 0.2, "expected": lambda: 1}, [1, 2, 3], gap_s=0.01)
    assert calls == [6]
    for i, (res, rows) in enumerate(zip(results, [1, 2, 3])):
        assert res.outputs["probability"].shape == (rows, 1) and np.all(res.outputs["probability"] == 2.0 * i)
        assert res.batch_size == 6 and res.run_ms > 0


def test_batcher_bounds_batch_size_and_can_be_turned_off():
    _, calls = _batch({"max_batch": 4, "max_wait_s": 0.2, "expected": lambda: 1}, [2, 2, 2, 2, 2])
    assert sum(calls) == 10 and max(calls) <= 4
    _, calls = _batch({"batching": False, "max_wait_s": 0.2, "expected": lambda: 1}, [1, 1, 1])
    assert calls == [1, 1, 1]


def test_batcher_never_waits_for_a_lone_request():
    t0 = time.perf_counter()
    _, calls = _batch({"max_batch": 32, "max_wait_s": 5.0, "expected": lambda: 0}, [1])
    assert calls == [1] and time.perf_counter() - t0 < 2.5


def test_batcher_failure_reaches_every_job_and_the_loop_lives_on():
    async def main():
        fail = {"on": True}

        def run(x):
            if fail["on"]:
                raise RuntimeError("boom")
            return {"probability": x[:, :1]}

        b = Batcher(run, max_wait_s=0.1, expected=lambda: 1)
        b.start()
        out = await asyncio.gather(*(b.infer(np.zeros((1, 2), np.float32)) for _ in range(3)),
                                   return_exceptions=True)
        fail["on"] = False
        ok = await b.infer(np.ones((1, 2), np.float32))
        await b.stop()
        return out, ok

    out, ok = asyncio.run(main())
    assert all(isinstance(e, RuntimeError) for e in out) and ok.outputs["probability"][0, 0] == 1.0


def test_parse_uploads_in_memory_with_limits():
    body, ctype = multipart([("file", "a.png", b"\x89PNG-one"), ("other", "x", b"ignored"),
                             ("file", "dir/b.png", b"two")])
    ups = parse_uploads(body, ctype, max_files=4)
    assert [(u.name, u.data) for u in ups] == [("a.png", b"\x89PNG-one"), ("b.png", b"two")]
    with pytest.raises(ApiError) as e:
        parse_uploads(body, ctype, max_files=1)
    assert e.value.status == 413
    many, ctype = multipart([("x", "n", b"")] * 50)
    with pytest.raises(ApiError) as e:
        parse_uploads(many, ctype, max_files=2)
    assert e.value.status == 413
    with pytest.raises(ApiError) as e:
        parse_uploads(body, "text/plain", max_files=4)
    assert e.value.status == 415
    assert safe_name("..", 0) == "file1" and safe_name("a/b\\c.png", 3) == "c.png" and safe_name(None, 1) == "file2"


def test_limits_are_validated():
    with pytest.raises(ServeError, match="--max-batch"):
        Limits(max_batch=0)
    with pytest.raises(ServeError, match="--timeout"):
        Limits(timeout_s=float("nan"))
    assert Limits().max_inflight >= 1


def test_dicom_study_upload_carries_its_uids_like_edge_predict(server, files, tmp_path):
    """Two DICOM views of one study: the JSON has the study's UID, each view's SOP UID and the
    part, and the probabilities of edge-predict on the same folder (which groups by UID)."""
    pytest.importorskip("pydicom")
    import contextlib
    import io

    from _edgefix import radiograph

    from murakit.data.dicom_write import write_dicom

    study = tmp_path / "dicom_study"
    study.mkdir()
    paths = [write_dicom(study / f"view{k}.dcm", radiograph(60, 50 + 10 * k, seed=k),
                         study_uid="1.2.826.0.1.7", series_uid="1.2.826.0.1.7.1", sop_uid=f"1.2.826.0.1.7.1.{k}",
                         body_part="WRIST") for k in (1, 2)]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert predict_main([str(study), "--model", str(files["model"]), "--json", "--threads", "1"]) == 0
    ref = json.loads(out.getvalue())
    r = post(server, image_parts(paths))
    assert r.status_code == 200, r.text
    got = r.json()
    assert got["study_uid"] == ref["study_uid"] == "1.2.826.0.1.7" and got["part"] == ref["part"] == "WRIST"
    assert [v["sop_uid"] for v in got["views"]] == [v["sop_uid"] for v in ref["views"]]
    assert got["probability"] == pytest.approx(ref["probability"], abs=TOL)
    one = post(server, image_parts(paths[:1])).json()  # a single view: its own identifiers
    assert one["study_uid"] == "1.2.826.0.1.7" and one["sop_uid"] == "1.2.826.0.1.7.1.1"
    png = post(server, image_parts(files["images"][:1])).json()
    assert "study_uid" not in png and "sop_uid" not in png
