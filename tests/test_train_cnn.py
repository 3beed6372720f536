"""`murakit train cnn` and `murakit explain` on a tiny hand-written prepared cache."""

import csv
import json
import shutil

import numpy as np
import pytest

pytest.importorskip("tensorflow")
from edge.preprocess import PreprocessConfig
from murakit.cli import main

S = 32


def write_cache(run, n=64, size=S, splits=("train",) * 40 + ("val",) * 12 + ("test",) * 12, seed=0):
    """RUN/prepared per docs/architecture.md: 2 views per study; abnormal studies show a bright square."""
    rng = np.random.default_rng(seed)
    prep = run / "prepared"
    prep.mkdir(parents=True)
    imgs = rng.integers(0, 70, (n, size, size)).astype(np.uint8)
    header = ["split", "part", "patient", "study", "path", "label", "row", "inverted",
              "finding", "bx0", "by0", "bx1", "by1", "true_inverted"]
    rows = []
    for i in range(n):
        study, label = i // 2, (i // 2) % 2
        box = [""] * 4
        if label:
            y, x = rng.integers(2, size - 10, 2)
            imgs[i, y:y + 8, x:x + 8] = 230
            box = [x, y, x + 7, y + 7]
        part = ("WRIST", "HAND")[study % 4 // 2]
        path = f"MURA-v1.1/x/XR_{part}/patient{study:05d}/study1_{'positive' if label else 'negative'}/image{i % 2 + 1}.png"
        rows.append([splits[i], part, f"patient{study:05d}", path.rsplit("/", 1)[0], path, label, i, 0,
                     "fracture" if label else "", *box, 0])
    np.save(prep / "images.npy", imgs)
    with open(prep / "index.csv", "w", newline="") as f:
        csv.writer(f).writerows([header] + rows)
    meta = {"preprocess": PreprocessConfig(size=size).to_dict(), "murakit_version": "test",
            "data_root": str(run), "seed": seed, "complete": True}
    (prep / "config.json").write_text(json.dumps(meta))
    return imgs


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """One epoch of `murakit train cnn` on the tiny cache (shared by the tests below)."""
    run = tmp_path_factory.mktemp("run")
    imgs = write_cache(run)
    code = main(["train", "cnn", "--run", str(run), "--epochs", "1", "--batch-size", "8", "--no-progress"])
    assert code == 0
    return run, imgs


def test_train_writes_artifacts_and_metrics(trained_run):
    run, _ = trained_run
    cnn = run / "cnn"
    for name in ("best.keras", "last.keras", "history.csv", "state.json", "card.json",
                 "predictions_val.csv", "predictions_test.csv"):
        assert (cnn / name).is_file(), name
    m = json.loads((cnn / "metrics.json").read_text())
    for level in ("image", "study"):
        assert set(m[level]) >= {"auroc", "kappa", "accuracy", "sensitivity", "specificity", "f1"}
    assert set(m["by_part"]) == {"WRIST", "HAND"} and 0 <= m["threshold"] <= 1
    assert m["arch"] == "small" and m["epochs"] == 1 and m["train_seconds"] > 0
    assert m["stop_reason"] == "max_epochs"
    assert 0 <= m["pointing_game"] <= 1 and m["pointing_game_detail"]["images"] == 6
    with open(cnn / "predictions_test.csv") as f:
        preds = list(csv.DictReader(f))
    assert len(preds) == 12 and list(preds[0]) == ["path", "study", "part", "label", "probability"]
    # the part head, trained with it: labels (sorted training parts) in the card, accuracy per epoch
    assert json.loads((cnn / "card.json").read_text())["model_config"]["parts"] == ["HAND", "WRIST"]
    with open(cnn / "history.csv") as f:
        assert 0 <= float(next(csv.DictReader(f))["val_part_accuracy"]) <= 1
    assert all(0 <= float(p["probability"]) <= 1 for p in preds)
    from edge.card import read_card
    from edge.protobuf import sha256_file

    card = read_card(cnn / "card.json")
    assert card.model_config["size"] == S and card.preprocess.size == S and card.threshold == m["threshold"]
    assert card.weights_sha256 == sha256_file(cnn / "best.keras") and card.kind == "cnn"
    assert card.metrics["test"]["study"] == m["study"]


def test_a_run_from_before_the_part_head_is_still_up_to_date(trained_run, tmp_path, capsys):
    """state.json without ``parts`` / ``part_weight`` (written before the head): the rerun does not
    ask for --force; the run stays as it was trained (its export fits a part head instead)."""
    run = tmp_path / "old"
    shutil.copytree(trained_run[0], run)
    state = json.loads((run / "cnn" / "state.json").read_text())
    state["model_config"].pop("parts")
    state["train_config"].pop("part_weight")
    (run / "cnn" / "state.json").write_text(json.dumps(state))
    assert main(["train", "cnn", "--run", str(run), "--epochs", "1", "--batch-size", "8", "--no-progress"]) == 0
    assert "already trained" in capsys.readouterr().out


def test_rerun_is_noop_then_resumes_with_more_epochs(trained_run, capsys):
    run, _ = trained_run
    args = ["train", "cnn", "--run", str(run), "--batch-size", "8", "--no-progress"]
    assert main(args + ["--epochs", "1"]) == 0
    assert "already trained" in capsys.readouterr().out
    assert main(args + ["--epochs", "2"]) == 0
    out = capsys.readouterr().out
    assert "resuming from epoch 2" in out and "stopped: epoch cap reached (2 epochs)" in out
    assert len((run / "cnn" / "history.csv").read_text().splitlines()) == 3
    assert json.loads((run / "cnn" / "metrics.json").read_text())["epochs"] == 2
    assert main(args + ["--epochs", "3", "--max-rotation", "5"]) == 2  # other settings: no resume
    assert "different train config" in capsys.readouterr().err


def test_explain_writes_overlays(trained_run, tmp_path, capsys):
    import cv2

    run, imgs = trained_run
    a, b = tmp_path / "a" / "image1.png", tmp_path / "b" / "image1.png"
    for p, img in ((a, imgs[1]), (b, imgs[2])):
        p.parent.mkdir()
        cv2.imwrite(str(p), np.repeat(img[:, :, None], 3, axis=2))
    out = tmp_path / "out"
    assert main(["explain", str(a), str(b), "--run", str(run), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert text.count("probability") == 2
    pngs = sorted(out.glob("*_cam.png"))
    assert len(pngs) == 2  # same file name in two folders: no overwrite
    assert cv2.imread(str(pngs[0])).shape == (S, S, 3)
    assert main(["explain", str(a), "--run", str(run), "--out", str(out), "--gradcam"]) == 0
    assert main(["explain", str(tmp_path / "missing.png"), "--run", str(run), "--out", str(out)]) == 1


def test_corrupt_last_checkpoint_is_a_clear_error(trained_run, tmp_path, capsys):
    run = tmp_path / "copy"
    shutil.copytree(trained_run[0], run)
    (run / "cnn" / "last.keras").write_bytes(b"\x00" * 100)
    code = main(["train", "cnn", "--run", str(run), "--epochs", "5", "--batch-size", "8", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "corrupt" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("extra, splits, message", [
    (["--size", "64"], None, "rerun murakit prepare"),
    (["--weights", "nope.weights.h5"], None, "weights file not found"),
    (["--max-rotation", "200"], None, "--max-rotation must be a number in [0, 180]"),
    (["--part-weight", "-1"], None, "--part-weight must be a number in [0, 10]"),
    ([], ("train",) * 52 + ("test",) * 12, "no val"),
])
def test_bad_inputs_exit_2(tmp_path, capsys, extra, splits, message):
    run = tmp_path / "run"
    write_cache(run, splits=splits or ("train",) * 40 + ("val",) * 12 + ("test",) * 12)
    code = main(["train", "cnn", "--run", str(run), "--epochs", "1", "--batch-size", "8", "--no-progress", *extra])
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err


def test_mismatched_weights_file_exit_2(tmp_path, capsys):
    import deep

    wrong = tmp_path / "wide.weights.h5"
    wide = deep.ModelConfig().width * 2  # not the width train cnn builds
    deep.build_model(deep.ModelConfig(size=S, width=wide)).save_weights(wrong)
    run = tmp_path / "run"
    write_cache(run)
    code = main(["train", "cnn", "--run", str(run), "--epochs", "1", "--batch-size", "8", "--no-progress",
                 "--weights", str(wrong)])
    err = capsys.readouterr().err
    assert code == 2 and "does not match" in err


def test_missing_cache_exit_2(tmp_path, capsys):
    assert main(["train", "cnn", "--run", str(tmp_path / "none")]) == 2
    assert "murakit prepare" in capsys.readouterr().err


def test_help_states_the_default_recipe(capsys):
    """--help quotes the defaults from deep's dataclasses, and building it imports no TensorFlow."""
    import subprocess
    import sys

    from deep.config import AugmentConfig, TrainConfig

    with pytest.raises(SystemExit):
        main(["train", "cnn", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    t, a = TrainConfig(), AugmentConfig()
    assert f"stops after {t.patience} epochs without a gain" in text
    assert f"--epochs ({t.max_epochs}) is only a cap" in text
    assert f"rotation up to {a.max_rotation:g} degrees" in text and "horizontal flips" in text
    code = "import sys; from murakit.cli import build_parser; build_parser(); print('tensorflow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"

