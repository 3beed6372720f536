"""``murakit explore``: summary counts, flags, inversion-detector figures, plots; cache reuse."""

from __future__ import annotations

import argparse
import json

import numpy as np
from _murafix import make_mura, radiograph, write_png

from edge.preprocess import PreprocessConfig
from murakit.data.prepared import prepare
from murakit.evaluation.explore import flag_images, inversion_accuracy


def _expected_counts(truth):
    images = {"train": 0, "valid": 0}
    for split, rels in truth["images"].items():
        images[split] = len(rels)
    return images


def test_explore_raw_then_cached(tmp_path, capsys):
    from murakit.cli import explore as cmd_explore

    data, run = tmp_path / "data", tmp_path / "run"
    truth = make_mura(data, inverted_every=4, annotations=True)
    # one flat (low-contrast) image in an existing study
    flat = "MURA-v1.1/train/XR_ELBOW/patient00001/study1_positive/image3.png"
    write_png(data / flat, np.full((50, 40), 120, np.uint8) + (radiograph(50, 40, 3) // 64))
    with open(data / "MURA-v1.1/train_image_paths.csv", "a") as f:
        f.write(flat + "\n")
    parser = argparse.ArgumentParser()
    cmd_explore.add_arguments(parser)
    assert cmd_explore.run(parser.parse_args([str(data), "--run", str(run), "--workers", "1"])) == 0
    assert "summary.json" in capsys.readouterr().out
    s = json.loads((run / "explore/summary.json").read_text())
    n = _expected_counts(truth)
    t = s["counts"]["totals"]
    assert t["images"] == n["train"] + n["valid"] + 1
    assert t["by_split"]["test"]["images"] == n["valid"]
    assert t["by_split"]["train"]["images"] + t["by_split"]["val"]["images"] == n["train"] + 1
    assert t["studies"] == sum(len(v) for v in truth["studies"].values())
    studies = s["counts"]["studies"]
    abnormal_valid = sum(truth["studies"]["valid"].values())
    assert sum(c["abnormal"] for c in studies["test"].values()) == abnormal_valid
    assert set(studies["test"]) == {"ELBOW", "HAND"}
    assert s["pixel_stats"]["source"].startswith("raw") and s["pixel_stats"]["n"] == t["images"]
    assert s["flagged"]["low_contrast"]["paths"] == [flat]
    n_inv = sum(truth["inverted"].values())
    assert s["flagged"]["inverted"]["count"] == n_inv
    inv = s["inversion_detector"]
    assert inv["n_inverted"] == n_inv and inv["accuracy_inverted"] == 1.0
    assert inv["meets_goal"] is True
    for png in s["plots"]:
        assert (run / "explore" / png).stat().st_size > 1000
    assert "Inversion detector" in (run / "explore/summary.md").read_text()

    # with a prepared cache of the same data, explore reads its statistics and agrees
    prepare(data, run, PreprocessConfig(size=32), workers=1, progress=False, log=lambda *_: None)
    assert cmd_explore.run(parser.parse_args([str(data), "--run", str(run), "--workers", "1"])) == 0
    s2 = json.loads((run / "explore/summary.json").read_text())
    assert s2["pixel_stats"]["source"] == "prepared cache"
    assert s2["counts"] == s["counts"]
    assert s2["flagged"] == s["flagged"]
    assert s2["inversion_detector"] == s["inversion_detector"]

    # the stage checks its own freshness: a rerun writes nothing, --force redoes it
    from murakit.evaluation.explore import explore

    before = (run / "explore/summary.json").stat().st_mtime_ns
    again = explore(data, run, workers=1, log=lambda *_: None)
    assert again.status == "up-to-date" and again.figures == s2
    assert (run / "explore/summary.json").stat().st_mtime_ns == before
    assert cmd_explore.run(parser.parse_args([str(data), "--run", str(run), "--workers", "1"])) == 0
    assert "is up to date" in capsys.readouterr().out
    forced = explore(data, run, workers=1, log=lambda *_: None, force=True)
    assert forced.status == "done" and forced.figures["counts"] == s["counts"]
    assert (run / "explore/summary.json").stat().st_mtime_ns > before


def test_flags_and_detector_accuracy():
    mean = np.array([0.30, 0.31, 0.29, 0.32, 0.30, 0.95, 0.31, np.nan])
    std = np.array([0.20, 0.21, 0.01, 0.22, 0.20, 0.20, 0.19, np.nan])
    low, unusual = flag_images(mean, std)
    assert list(np.flatnonzero(low)) == [2]
    assert list(np.flatnonzero(unusual)) == [5]
    detected = np.array([1, 1, 0, 0, 0, 1], bool)
    truth = np.array([1, 1, 1, 0, 0, -1], np.int8)
    acc = inversion_accuracy(detected, truth, list("abcdef"))
    assert acc["accuracy_inverted"] == 2 / 3 and acc["accuracy_normal"] == 1.0
    assert acc["misclassified"] == ["c"] and acc["meets_goal"] is False
    assert inversion_accuracy(detected, np.full(6, -1, np.int8), list("abcdef")) is None
