"""The edge-serve page in a real headless browser (Debian's Chromium driven by Playwright).

Uploads a study through the page's file input, reads the probability and label the page
shows, and checks that every view's CAM overlay rendered (naturalWidth > 0). `.ci/run`
installs Chromium and sets MURAKIT_REQUIRE_BROWSER=1, so in CI a missing browser fails
instead of skipping.
"""

import os

import httpx
import pytest

pytest.importorskip("fastapi")

from _browserfix import browser_missing, token_flow, upload_error, upload_study
from _edgefix import cnn_model, write_images
from _servefix import Server

missing = browser_missing()
if missing and os.environ.get("MURAKIT_REQUIRE_BROWSER") == "1":
    raise RuntimeError(f"browser test required but {missing}")
pytestmark = pytest.mark.skipif(missing is not None, reason=missing or "")


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("page")
    model = cnn_model(root / "cnn.onnx")
    images = write_images(root / "study", 3)
    with Server(model, "--threads", "1") as srv:
        yield srv, images, root


def test_page_scores_a_study_and_renders_its_cams(served):
    srv, images, root = served
    shot = root / "page.png"
    seen = upload_study(srv.url, images, screenshot=shot)
    files = [("file", (p.name, p.read_bytes())) for p in images]
    api = httpx.post(srv.url + "/v1/predict", files=files).json()

    assert seen["model_name"] == "cnn \u00b7 tiny \u00b7 float32" and seen["model_version"] == "test"
    assert seen["probability"] == pytest.approx(api["probability"], abs=5e-4)  # the page shows 3 decimals
    assert seen["label"] == api["label"] and seen["threshold"] == pytest.approx(api["threshold"])
    assert [name for name, _ in seen["views"]] == [p.name for p in images]
    for (_, text), view in zip(seen["views"], api["views"]):
        assert f"p = {view['probability']:.3f}" in text
    assert len(seen["cam_widths"]) == 3 and all(w == 32 for w in seen["cam_widths"])
    assert all(u.startswith(srv.url) for u in seen["requests"])  # nothing fetched from elsewhere
    assert shot.stat().st_size > 10_000


def test_page_shows_the_servers_error(served):
    srv, _, root = served
    bad = root / "notes.png"
    bad.write_bytes(b"this is not an image")
    assert "not a PNG, JPEG or DICOM image" in upload_error(srv.url, bad)


def test_page_asks_for_the_token_when_the_server_wants_one(served):
    _, images, root = served
    token = "page-token-" + "y" * 20
    (root / "token").write_text(token)
    with Server(root / "cnn.onnx", "--threads", "1", "--token-file", root / "token") as srv:
        seen = token_flow(srv.url, token, images[:2])
    assert seen["before"] == "\u2026"  # nothing about the model before the token
    assert seen["model_name"].startswith("cnn") and seen["label"] in ("normal", "abnormal")
    assert not seen["token_box_visible"]
