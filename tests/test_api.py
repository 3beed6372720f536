"""The Python API (murakit.api): light import, plain data underneath, tables and pictures on top.

The stages that train and export are exercised end to end by tests/test_notebook.py (the
walkthrough calls every API function); here: the data, display and edge pieces, in seconds.
"""

from __future__ import annotations

import subprocess
import sys

import cv2
import numpy as np
import pytest
from _edgefix import cnn_model, write_images
from _murafix import make_mura

import murakit as mk
from edge.errors import ModelError
from edge.predictor import Predictor
from murakit.api import Evaluation, Picture, TrainedModel
from murakit.errors import MurakitError

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_import_murakit_loads_no_framework():
    """The API is re-exported from murakit (loaded on first use): `import murakit` stays as light as before."""
    code = ("import sys, murakit; heavy = ('tensorflow', 'keras', 'sklearn', 'matplotlib', 'onnx', 'nbclient', "
            "'IPython', 'cv2', 'onnxruntime', 'murakit.api'); print([m for m in heavy if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    assert {"synthesize", "load_dataset", "prepare", "explore", "train_baseline", "train_cnn", "evaluate",
            "explain", "export", "predict"} <= set(mk.__all__)


def test_load_dataset_counts_studies_per_split_part_and_label(tmp_path):
    truth = make_mura(tmp_path, parts=("ELBOW", "HAND"), patients_per_part=(6, 2))
    ds = mk.load_dataset(tmp_path)
    assert ds.layout == "mura-csv" and ds.root == tmp_path.resolve()
    for split in ("train", "valid"):
        studies = ds.counts["studies"][split]
        n_abnormal = sum(c["abnormal"] for c in studies.values())
        n_total = sum(c["normal"] + c["abnormal"] for c in studies.values())
        assert n_total == len(truth["studies"][split])
        assert n_abnormal == sum(truth["studies"][split].values())
    assert ds.counts["totals"]["images"] == len(ds.index.records) == sum(map(len, truth["images"].values()))
    html = ds._repr_html_()
    assert html.startswith("<table>") and html.count("<tr>") == 1 + 4  # header + 2 splits x 2 parts
    assert repr(ds).splitlines()[1].split() == ["split", "part", "normal", "studies", "abnormal", "studies",
                                                "images"]


def test_load_dataset_refuses_a_folder_without_data(tmp_path):
    with pytest.raises(MurakitError, match="no such data folder"):
        mk.load_dataset(tmp_path / "missing")


def test_prepare_refuses_bad_settings_in_one_line(tmp_path):
    make_mura(tmp_path / "data")
    with pytest.raises(mk.UserError, match="size") as e:
        mk.prepare(tmp_path / "data", run=tmp_path / "run", size=3)
    assert "\n" not in str(e.value)
    assert not (tmp_path / "run" / "prepared").exists()


def test_api_module_holds_only_the_stage_calls():
    """The split of issue 26: results in murakit.results, their faces in murakit.display, and
    murakit.api only the mk.* calls (still exporting the result types under their old names)."""
    from murakit import api, display, results

    own = sorted(n for n, v in vars(api).items() if isinstance(v, type) and v.__module__ == "murakit.api")
    assert own == []
    assert api.Evaluation is results.Evaluation and api.Picture is display.Picture
    calls = [n for n in api.__all__ if callable(getattr(api, n)) and not isinstance(getattr(api, n), type)]
    assert set(calls) == set(mk.API) and all(getattr(mk, n) is getattr(api, n) for n in calls)


def test_grid_draws_the_finding_box_only_where_given():
    from murakit.display import grid_png

    images = [np.full((32, 32, 3), 90, np.uint8), np.full((32, 32, 3), 160, np.uint8)]

    def lime(png):
        img = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR).astype(int)
        return int(((img[..., 1] > 150) & (img[..., 1] - img[..., 2] > 100) & (img[..., 1] - img[..., 0] > 100)).sum())

    boxed = grid_png(images, ["a", "b"], boxes=[(8, 8, 24, 24), None], ncols=2)
    assert boxed.startswith(PNG_MAGIC)
    assert lime(boxed) > 20 and lime(grid_png(images, ["a", "b"], ncols=2)) == 0


class _Prepared:
    """The slice of murakit.data.prepared.Prepared that the default explain picks read."""

    def __init__(self, split, label, bbox):
        self.split, self.label = np.array(split), np.array(label)
        self.annotations = None if bbox is None else {"bbox": np.array(bbox, float)}

    def select(self, split):
        return np.flatnonzero(self.split == split)


def test_default_explain_picks_are_seeded_test_images_showing_their_finding():
    from murakit.pipeline.explain import pick_test_images

    nan = [np.nan] * 4
    split = ["train"] * 4 + ["test"] * 8
    label = [1, 1, 0, 0] + [1, 1, 1, 1, 0, 0, 0, 0]
    bbox = [[0, 0, 4, 4]] * 4 + [[1, 1, 5, 5], nan, [2, 2, 6, 6], nan] + [nan] * 4
    prep = _Prepared(split, label, bbox)
    picks = pick_test_images(prep, per_class=2, seed=3)
    assert picks[:2] == [4, 6]  # abnormal test images with a finding box, before the normal ones
    assert set(picks[2:]) <= {8, 9, 10, 11} and len(picks) == 4
    assert picks == pick_test_images(prep, per_class=2, seed=3)
    again = [pick_test_images(_Prepared(split, label, None), 2, seed) for seed in range(8)]
    assert all(set(p[:2]) <= {4, 5, 6, 7} for p in again) and len({tuple(p) for p in again}) > 1  # no boxes: any abnormal
    assert pick_test_images(prep, per_class=9, seed=0)[:4] == [4, 6, 8, 9]  # fewer than asked: all there are


def test_picture_round_trips_pixels():
    img = np.zeros((6, 9, 3), np.uint8)
    img[2:4, 3:7] = (10, 200, 30)
    pic = Picture.from_array(img, "x")
    assert pic._repr_png_().startswith(PNG_MAGIC)
    assert np.array_equal(pic.to_array(), img)


def _report(diff_ci, int8: bool = True) -> dict:
    def model(auc, ci, size):
        m = {"auroc": auc, "kappa": 0.5, "accuracy": 0.8, "sensitivity": 0.7, "specificity": 0.9, "f1": 0.6}
        return {"image": dict(m), "study": {**m, "auroc_ci": ci, "kappa_ci": [0.3, 0.7]}, "by_part": {},
                "threshold": 0.5, "size_bytes": size, "latency_ms_p50": 1.0, "latency_ms_p95": 2.0,
                "throughput_ips": 1000.0, "train_seconds": 1.0}

    models = {"baseline": model(0.7, [0.6, 0.8], 2048), "cnn": model(0.9, [0.85, 0.95], 4096)}
    if int8:
        models["cnn_onnx_int8"] = model(0.9, [None, None], 1024)  # a one-class resample leaves no interval
    return {"dataset": {"images": 30, "studies": 12}, "models": models,
            "comparisons": {"cnn_vs_baseline": {"auroc_diff": 0.2, "ci": diff_ci, "models": ["cnn", "baseline"]}}}


def test_evaluation_table_shows_intervals_and_the_paired_difference():
    ev = Evaluation(_report([0.05, 0.35]), {})
    html = ev._repr_html_()
    assert "0.900 [0.850, 0.950]" in html and "0.700 [0.600, 0.800]" in html
    assert "2 KiB" in html and "12 studies" in html
    assert ev.differences()._repr_html_().count("excludes 0") == 1
    assert "includes 0" in repr(Evaluation(_report([-0.05, 0.35]), {}).differences())
    assert "<td>0.900</td>" in html  # no interval: the point estimate alone, no "[None, None]"
    assert "latency p50" in repr(ev.cost())


def test_trained_model_reads_metrics_as_plain_data():
    m = {"image": {k: 0.5 for k in ("auroc", "kappa", "accuracy", "sensitivity", "specificity", "f1")},
         "study": {"auroc": 0.75, "kappa": None, "accuracy": 0.5, "sensitivity": 0.5, "specificity": 0.5,
                   "f1": 0.5},
         "threshold": 0.4, "epochs": 3, "best_epoch": 2}
    t = TrainedModel("cnn", m, None, "done")
    assert t.study_auroc == 0.75
    assert "best epoch 2 of 3" in repr(t) and "–" in repr(t)  # undefined kappa shown as a dash
    assert t.metrics is m  # the table is a view; the data is the dict


def test_predict_matches_the_edge_predictor_and_draws_cams(tmp_path):
    model = cnn_model(tmp_path / "cnn.onnx")
    study = tmp_path / "study1_positive"
    write_images(study, 3)
    ans = mk.predict(study, model=model, cam=True)
    ref = Predictor(model).predict_study(study)
    assert ans.probability == pytest.approx(ref.probability, abs=1e-7)
    assert ans.to_dict() == {**ref.to_dict(), "preprocess_ms": ans.to_dict()["preprocess_ms"],
                             "inference_ms": ans.to_dict()["inference_ms"]}
    assert len(ans.overlays) == 3 and all(o.to_array().shape == (32, 32, 3) for o in ans.overlays)
    grid = cv2.imdecode(np.frombuffer(ans.cam_grid()._repr_png_(), np.uint8), cv2.IMREAD_COLOR)
    assert grid.shape[1] > grid.shape[0] > 32  # three overlays side by side, titled
    html = ans._repr_html_()
    assert html.count("<tr>") == 1 + 3 + 1 and "study (3 views, mean)" in html
    one = mk.predict(study / "image1.png", model=model)
    assert one.overlays == [] and 0.0 <= one.probability <= 1.0
    with pytest.raises(ValueError, match="cam=True"):
        one.cam_grid()


def test_predict_refuses_a_missing_model(tmp_path):
    with pytest.raises(ModelError, match="no such model file"):
        mk.predict(tmp_path / "x.png", run=tmp_path / "run")
