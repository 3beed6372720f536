"""Fast, seeded slice of the image fuzz campaign (the full one: benchmarks/fuzz_images.py).

About a hundred valid and hostile files (truncations, byte flips in headers and data, absurd
and zero sizes in IHDR/SOF, bad chunk lengths and CRCs, palette / interlaced / 16-bit /
alpha PNGs, progressive JPEGs, JPEGs without SOF, random bytes, empty and text files) go
through ONE edge-predict process. Every input must be accounted for by exactly one line:
a JSON result on stdout or one ``edge-predict: error: <path>: ...`` line on stderr; nothing
else may appear (no traceback, no libpng/libjpeg/OpenCV line), valid files are scored,
damaged ones refused, exit code 1, within a time limit.
"""

import json
from pathlib import Path

import numpy as np
import pytest
from _edgefix import cnn_model
from _fuzzrun import run_edge_predict
from _hostile import hostile_files, valid_files

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    d = tmp_path_factory.mktemp("fuzz")
    rng = np.random.default_rng(20240611)
    cases = []
    for i, (name, data, expect) in enumerate(valid_files(rng) + hostile_files(rng, per_kind=4)):
        path = d / f"{i:03d}_{name}"
        path.write_bytes(data)
        cases.append((path, expect))
    return cases, cnn_model(d / "model.onnx")


def test_every_input_gets_one_clean_line(corpus, tmp_path):
    cases, model = corpus
    run = run_edge_predict(ROOT, [p for p, _ in cases], model, timeout=120, peak_file=tmp_path / "peak")
    assert run["code"] == 1, run["stderr"][-3000:]
    assert "Traceback" not in run["stderr"]
    scored = [json.loads(line)["path"] for line in run["stdout"].splitlines() if line.strip()]
    errors = [line for line in run["stderr"].splitlines() if line.strip()]
    assert all(e.startswith("edge-predict: error: ") for e in errors), [e for e in errors if "error" not in e]
    refused = [e[len("edge-predict: error: "):].split(": ")[0] for e in errors]
    assert sorted(scored + refused) == sorted(str(p) for p, _ in cases)  # one line per input, no more
    for path, expect in cases:
        if expect == "valid":
            assert str(path) in scored, (path.name, [e for e in errors if str(path) in e])
        elif expect == "refuse":
            assert str(path) in refused, path.name
    assert len(cases) >= 95 and len(refused) >= 60
