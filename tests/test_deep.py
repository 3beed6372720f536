"""deep: model building, CAM parity, the streaming pipeline, training/resume, explanations."""

import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")
import deep
from deep import AugmentConfig, DeepError, ModelConfig, TrainConfig

S = 32
TINY = ModelConfig(size=S, width=8, dropout=0.0)


def blobs(n, size=S, seed=0):
    """uint8 (n, size, size) noise; label-1 images carry a bright 8x8 square. Returns images, labels, boxes."""
    rng = np.random.default_rng(seed)
    imgs = rng.integers(0, 70, (n, size, size)).astype(np.uint8)
    labels = np.arange(n) % 2
    boxes = np.full((n, 4), np.nan)
    for i in np.flatnonzero(labels):
        y, x = rng.integers(2, size - 10, 2)
        imgs[i, y:y + 8, x:x + 8] = 230
        boxes[i] = (x, y, x + 7, y + 7)
    return imgs, labels, boxes


# Dropout 0.2 (the default): an exact resume must reproduce its masks too. With a part head: the
# joint loss, its two outputs and its part targets must resume exactly as well.
PARTS = ("ELBOW", "HAND", "WRIST")
DROP = ModelConfig(size=S, width=8, parts=PARTS)
BLOB_PARTS = np.asarray(PARTS)[np.arange(160) % 3]  # no cue in the images: the head cannot learn them
# 8 steps a pass, min_steps 16 -> 2 passes an epoch; lr_patience 1 so the LR schedule acts.
TRAIN_CFG = TrainConfig(max_epochs=4, batch_size=16, seed=3, patience=10, lr_patience=1, min_steps=16,
                        warmup_epochs=0)


def _train(out, tcfg, imgs, labels, **kw):
    return deep.train(imgs, np.arange(128), labels[:128], np.arange(128, 160), labels[128:], DROP, out,
                      tcfg, verbose=False, train_parts=BLOB_PARTS[:128], val_parts=BLOB_PARTS[128:], **kw)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Tiny model trained 4 epochs without interruption on separable blobs (shared by several tests)."""
    imgs, labels, boxes = blobs(160)
    out = tmp_path_factory.mktemp("train")
    res = _train(out, TRAIN_CFG, imgs, labels)
    return res, imgs, labels, boxes, out, TRAIN_CFG


def test_config_roundtrip_and_validation():
    cfg = ModelConfig(arch="mobilenetv3small", size=96)
    assert ModelConfig.from_json(cfg.to_json()) == cfg
    with pytest.raises(DeepError, match="unknown arch"):
        ModelConfig(arch="resnet9000")
    with pytest.raises(DeepError, match="unknown ModelConfig keys"):
        ModelConfig.from_dict({"arch": "small", "colour": 3})
    tcfg = TrainConfig(augment=AugmentConfig(max_rotation=5.0, vflip=True))
    assert TrainConfig.from_json(tcfg.to_json()) == tcfg
    assert TrainConfig.from_dict({**tcfg.to_dict(), "augment": None}).augment is None
    assert "max_epochs" not in tcfg.resume_key() and tcfg.resume_key()["augment"]["vflip"] is True
    for bad in ({"max_epochs": 0}, {"patience": 1.5}, {"lr": -1.0}, {"augment": "yes"}):
        with pytest.raises(DeepError):
            TrainConfig(**bad)
    for bad in ({"max_rotation": 200}, {"scale": -0.1}, {"contrast": 1.0}, {"hflip": 1}):
        with pytest.raises(DeepError, match="augmentation"):
            AugmentConfig(**bad)


def test_importing_the_configs_does_not_import_tensorflow():
    import subprocess
    import sys

    code = "import sys, deep.config, deep; deep.DeepError; print('tensorflow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_small_forward_and_cam_parity():
    model = deep.build_model(TINY)
    assert 1_000 < model.count_params() < 100_000
    assert deep.build_model(ModelConfig()).count_params() < 300_000  # default 128 px arch
    x = np.random.default_rng(0).random((3, S, S, 1)).astype(np.float32)
    p = model.predict(x, verbose=0)
    assert p.shape == (3, 1) and np.all((p >= 0) & (p <= 1))
    cmodel = deep.cam_model(model)
    prob, cams = deep.cam(model, x, cmodel)
    assert cams.shape == (3, S, S)  # the (S/16, S/16) grid placed on the canvas
    np.testing.assert_allclose(prob, p[:, 0], atol=1e-6)
    grid = np.asarray(keras.Model(cmodel.input, cmodel.get_layer("cam_grid").output)(x))
    assert grid.shape == (3, S // 16, S // 16)
    bias = model.get_layer("head").get_weights()[1]
    np.testing.assert_allclose(1 / (1 + np.exp(-(grid.mean(axis=(1, 2)) + bias))), prob, atol=1e-5)
    # placing interpolates between cells (and pools cells whose evidence coincides): no new extremes
    assert np.all(cams.max(axis=(1, 2)) <= grid.max(axis=(1, 2)) + 1e-5)
    assert np.all(cams.min(axis=(1, 2)) >= grid.min(axis=(1, 2)) - 1e-5)


def test_no_random_ops_at_inference():
    model = deep.build_model(ModelConfig(size=S, width=8, dropout=0.5))
    x = np.random.default_rng(1).random((2, S, S, 1)).astype(np.float32)
    np.testing.assert_array_equal(model(x, training=False), model(x, training=False))


@pytest.mark.parametrize("arch", ["densenet169", "mobilenetv3small"])
def test_backbones_build_and_train_one_step(arch):
    model = deep.build_model(ModelConfig(arch=arch, size=64))
    # Eager: tracing + graph optimisation of DenseNet-169 takes minutes on 2 cores, one eager step seconds.
    model.compile(optimizer="adam", loss="binary_crossentropy", run_eagerly=True)
    x = np.random.default_rng(0).random((2, 64, 64, 1)).astype(np.float32)
    loss = model.train_on_batch(x, np.array([[0.0], [1.0]], np.float32))
    assert np.isfinite(loss)
    prob, cams = deep.cam(model, x)
    assert cams.shape[0] == 2 and np.all((prob >= 0) & (prob <= 1))


def test_weights_file_match_and_mismatch(tmp_path):
    a = deep.build_model(TINY)
    path = tmp_path / "tiny.weights.h5"
    a.save_weights(path)
    b = deep.build_model(TINY, weights=path)
    x = np.random.default_rng(2).random((2, S, S, 1)).astype(np.float32)
    np.testing.assert_allclose(a.predict(x, verbose=0), b.predict(x, verbose=0), atol=1e-6)
    with pytest.raises(DeepError, match="does not match"):
        deep.build_model(ModelConfig(size=S, width=16), weights=path)
    with pytest.raises(DeepError, match="does not match"), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Keras warns per skipped container before failing
        deep.build_model(ModelConfig(arch="mobilenetv3small", size=S), weights=path)
    with pytest.raises(DeepError, match="not found"):
        deep.build_model(TINY, weights=tmp_path / "missing.weights.h5")


def test_dataset_streams_in_order_and_weights():
    imgs, labels, _ = blobs(20)
    rows = np.array([5, 3, 19, 0, 7, 11, 2])
    from edge.preprocess import to_model_input

    ds = deep.make_dataset(imgs, rows, labels[rows], batch_size=3, sample_weights=(0.25, 0.75))
    xs, ys, ws = zip(*[(x.numpy(), y.numpy(), w.numpy()) for x, y, w in ds])
    x, y, w = np.concatenate(xs), np.concatenate(ys), np.concatenate(ws)
    assert x.dtype == np.float32 and x.shape == (7, S, S, 1)
    np.testing.assert_array_equal(x, to_model_input(imgs[rows]))  # the device's input, bit for bit
    np.testing.assert_array_equal(y[:, 0], labels[rows])
    np.testing.assert_array_equal(w, np.where(labels[rows] == 1, 0.75, 0.25))
    with pytest.raises(DeepError, match="empty"):
        deep.make_dataset(imgs, [], batch_size=4)
    with pytest.raises(DeepError, match="fewer than one batch"):
        deep.make_dataset(imgs, rows, labels[rows], batch_size=8, drop_remainder=True)


def test_augmentation_seeded_and_in_range():
    imgs, labels, _ = blobs(16)

    def first(seed):
        ds = deep.make_dataset(imgs, np.arange(16), labels, 8, augment=AugmentConfig(), seed=seed)
        return next(iter(ds))[0].numpy()

    a, b, c = first(1), first(1), first(2)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert a.min() >= 0.0 and a.max() <= 1.0
    x = tf.constant(imgs[:8, :, :, None] / np.float32(255))
    aug = deep.augment_batch(x, tf.constant([0, 0], tf.int64)).numpy()
    assert aug.shape == x.shape and np.abs(aug - x.numpy()).mean() > 0.01
    off = AugmentConfig(hflip=False, max_rotation=0, scale=0, shift=0, brightness=0, contrast=0)
    np.testing.assert_array_equal(deep.augment_batch(x, tf.constant([0, 0], tf.int64), off).numpy(), x.numpy())


def test_flips_follow_the_config():
    img = np.zeros((16, S, S, 1), np.float32)
    img[:, :4, :4] = 1.0  # a bright top-left corner
    x, seed = tf.constant(img), tf.constant([5, 2], tf.int64)
    only = {"max_rotation": 0, "scale": 0, "shift": 0, "brightness": 0, "contrast": 0}
    h = deep.augment_batch(x, seed, AugmentConfig(hflip=True, **only)).numpy()
    v = deep.augment_batch(x, seed, AugmentConfig(hflip=False, vflip=True, **only)).numpy()
    assert h[:, :4, -4:].any() and not h[:, -4:, :4].any()  # mirrored left/right only
    assert v[:, -4:, :4].any() and not v[:, :4, -4:].any()  # mirrored top/bottom only
    assert h[:, :4, :4].any()  # about half keep the original orientation


def test_passes_make_small_epochs_longer():
    imgs, labels, _ = blobs(40)
    assert deep.passes_per_epoch(40, TrainConfig(batch_size=8, min_steps=12)) == 3  # 5 steps a pass
    assert deep.passes_per_epoch(4000, TrainConfig(batch_size=8, min_steps=12)) == 1
    ds = deep.make_dataset(imgs, np.arange(40), labels, 8, augment=None, shuffle=True, seed=1,
                           drop_remainder=True, passes=3)
    seen = np.concatenate([x.numpy()[..., 0].reshape(8, -1)[:, 0] for x, _, _ in ds])
    assert len(seen) == 120  # 3 passes of 5 full batches
    assert not np.array_equal(seen[:40], seen[40:80])  # each pass in its own order


def _bar_tilts(max_rotation):
    """Per augmented image: |slope| (px per row) of the centre line of a vertical bright bar."""
    img = np.zeros((8, S, S, 1), np.float32)
    img[:, :, S // 2 - 3:S // 2 + 3] = 1.0
    aug = deep.augment_batch(tf.constant(img), tf.constant([3, 1], tf.int64),
                             AugmentConfig(max_rotation=max_rotation)).numpy()[..., 0]
    rows = np.arange(S // 4, 3 * S // 4)  # stay clear of the rotated corners
    cols = np.arange(S, dtype=np.float32)
    tilts = []
    for a in aug:
        centre = (a[rows] * cols).sum(1) / np.maximum(a[rows].sum(1), 1e-6)
        tilts.append(abs(np.polyfit(rows, centre, 1)[0]))
    return np.array(tilts)


def test_augmentation_rotation_is_bounded_by_max_rotation():
    assert _bar_tilts(0.0).max() < 0.02  # flips, scale and shift keep a vertical bar vertical
    tilts = _bar_tilts(30.0)
    assert tilts.max() > np.tan(np.radians(5)) and tilts.max() <= np.tan(np.radians(30)) + 0.02


def test_auroc_and_class_weights():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    p = np.round(rng.random(200), 1)  # many ties
    assert deep.auroc(y, p) == pytest.approx(roc_auc_score(y, p), abs=1e-12)
    assert np.isnan(deep.auroc(np.ones(5), np.arange(5)))
    # 3 studies: two abnormal (one with 3 views), one normal -> per-study counts, not per image
    w_norm, w_abn = deep.class_weights([1, 1, 1, 1, 0], ["a", "a", "a", "b", "c"])
    assert (w_norm, w_abn) == pytest.approx((2 / 3, 1 / 3))
    with pytest.raises(DeepError):
        deep.class_weights([0, 0, 0])


def test_inference_mode_outputs_differ_and_match_training_quality(trained):
    res, imgs, labels, *_ = trained
    va = np.arange(128, 160)
    p_inf = deep.predict(res.model, imgs, va)
    x = imgs[va, :, :, None] / np.float32(255)
    p_train = deep.probability_model(res.model)(x, training=True).numpy()[:, 0]  # batch statistics
    assert p_inf.std() > 0.05  # not collapsed to one value (BatchNorm momentum pitfall)
    auc_inf, auc_train = deep.auroc(labels[va], p_inf), deep.auroc(labels[va], p_train)
    assert auc_inf > 0.9 and auc_inf >= auc_train - 0.05


def test_checkpoints_history_and_stop_reason(trained):
    res, imgs, labels, _, out, tcfg = trained
    assert [r["epoch"] for r in res.history] == [1, 2, 3, 4]
    assert res.stop_reason == "max_epochs" and "epoch cap reached (4 epochs)" in res.why_stopped()
    assert (out / "best.keras").is_file() and (out / "last.keras").is_file()
    assert len((out / "history.csv").read_text().splitlines()) == 5
    assert not [f.name for f in out.iterdir() if f.name.startswith(".")]  # no pending/temp files left
    assert not _train(out, tcfg, imgs, labels).ran  # complete: no-op
    with pytest.raises(DeepError, match="different"):
        _train(out, replace(tcfg, max_epochs=6, lr=0.1), imgs, labels)


def _schedule(aurocs, losses=None, **tcfg):
    """Replay ``deep.schedule_step`` on val AUROCs (and losses) -> (state, learning rates).
    No warm-up unless given (the short sequences below test the counters themselves)."""
    from deep.training import _new_state

    tcfg = TrainConfig(**{"warmup_epochs": 0, **tcfg})
    state, lrs, lr = _new_state(DROP, tcfg, {}), [], tcfg.lr
    for epoch, auc in enumerate(aurocs, 1):
        lrs.append(lr)
        loss = 1.0 if losses is None else losses[epoch - 1]
        _, new_lr = deep.schedule_step(state, tcfg, {"epoch": epoch, "val_auroc": auc, "val_loss": loss, "lr": lr})
        lr = lr if new_lr is None else new_lr
        if state["stop_reason"]:
            break
    return state, lrs


def test_early_stopping_and_plateau_schedule():
    state, lrs = _schedule([0.6, 0.7, 0.8, 0.79, 0.78, 0.8, 0.77, 0.76, 0.75, 0.7, 0.9],
                           patience=5, lr_patience=2, lr_factor=0.5, max_epochs=50, smooth=1)
    assert state["stop_reason"] == "early_stop" and state["epoch"] == 8 and state["best_epoch"] == 3
    assert lrs == pytest.approx([1e-3] * 5 + [5e-4] * 2 + [2.5e-4], rel=1e-6)  # halved after 2 and 4 epochs without a gain
    msg = deep.stop_message(state["stop_reason"], state["epoch"], state["best_epoch"], state["best_auroc"], 5)
    assert msg.startswith("stopped: early stop at epoch 8") and "best epoch 3 (recent mean val AUROC 0.8000)" in msg
    state, _ = _schedule([0.5, 0.6, 0.7], max_epochs=3)
    assert state["stop_reason"] == "max_epochs" and state["best_epoch"] == 3
    assert "still improving" in deep.stop_message("max_epochs", 3, 3, 0.7)
    state, _ = _schedule([0.7, 0.7, 0.7], max_epochs=3, smooth=1)  # ties: lower val loss (equal) -> no gain
    assert state["best_epoch"] == 1 and state["wait"] == 2


def test_warm_up_keeps_the_learning_rate_and_the_run_while_at_chance():
    """A small, hard training set: the val AUROC sits at chance for 14 epochs, then the model
    finds the signal. Without the warm-up the plateau rule cut the learning rate at epoch 8 and
    stopped the run at epoch 13; with it the rate stays until the plateau after the rise."""
    aurocs = [0.52, 0.50, 0.53, 0.49, 0.51, 0.50, 0.52, 0.48, 0.51, 0.50, 0.52, 0.50, 0.51, 0.50,
              0.60, 0.70, 0.78, 0.82, 0.84, 0.85, 0.85, 0.85, 0.85, 0.85, 0.85]
    cold, cold_lrs = _schedule(aurocs, smooth=1, warmup_epochs=0)
    warm, warm_lrs = _schedule(aurocs, smooth=1, warmup_epochs=15)
    assert cold["stop_reason"] == "early_stop" and cold["epoch"] == 13 and cold_lrs[7] < 1e-3
    assert warm_lrs[:24] == [1e-3] * 24 and warm_lrs[24] < 1e-3 and warm["best_epoch"] == 20
    assert warm["stop_reason"] == "" and warm["epoch"] == len(aurocs)  # patience 10 counts from 20
    assert TrainConfig().warmup_epochs == 15
    with pytest.raises(DeepError, match="warmup_epochs"):
        TrainConfig(warmup_epochs=-1)


def test_smoothing_ignores_one_lucky_epoch():
    """A spike at epoch 3 wins the raw comparison; the 3-epoch mean prefers the later plateau."""
    aurocs = [0.60, 0.70, 0.90, 0.80, 0.85, 0.87, 0.88, 0.88, 0.88, 0.87, 0.86, 0.86, 0.85]
    raw, _ = _schedule(aurocs, patience=6, smooth=1, auroc_tolerance=0.0)
    mean, _ = _schedule(aurocs, patience=6, smooth=3, auroc_tolerance=0.0)
    assert raw["best_epoch"] == 3 and raw["stop_reason"] == "early_stop" and raw["epoch"] == 9
    assert mean["best_epoch"] == 9 and mean["best_auroc"] == pytest.approx(0.88)  # 3 epochs at 0.88
    rows = mean["history"]
    assert [r["val_auroc_mean"] for r in rows[:3]] == pytest.approx([0.60, 0.65, 0.7333333], abs=1e-6)


def test_auroc_ties_are_decided_by_the_validation_loss():
    """Within 0.005 of the best mean AUROC the lower loss wins; a tiny loss gain keeps the best
    model but does not reset the patience (a run crawling at the smallest LR ends)."""
    aurocs = [0.80, 0.900, 0.902, 0.899, 0.901, 0.890, 0.90, 0.90]
    losses = [0.50, 0.400, 0.390, 0.350, 0.3499, 0.30, 0.3498, 0.3497]
    state, _ = _schedule(aurocs, losses, smooth=1, patience=3, auroc_tolerance=0.005, min_loss_delta=0.001)
    # 3, 4: ties with lower losses (new best, patience reset); 5: a loss gain below 0.001 (best,
    # no reset); 6: below the band; 7: tiny loss gain again -> best 7, stopped after 3 waits
    assert state["best_epoch"] == 7 and state["stop_reason"] == "early_stop" and state["epoch"] == 7
    # epoch 6: lowest loss but AUROC 0.890 is below the tie band (0.902 - 0.005): not the best
    state, _ = _schedule(aurocs, losses, smooth=1, patience=3, auroc_tolerance=0.0)
    assert state["best_epoch"] == 3  # no tolerance: the raw maximum


# Exact resume means the same ops on the same inputs; on CPU they give the same floats, and the
# history is rounded to 6 decimals. 1e-5 leaves room for a multi-threaded reduction summing in
# another order; a different dropout mask, shuffle order or optimizer state moves the loss by >1e-3.
RESUME_TOL = 1e-5


def _same_history(a, b):
    assert [r["epoch"] for r in a] == [r["epoch"] for r in b]
    for ra, rb in zip(a, b):
        for k in ("loss", "val_loss", "val_auroc", "lr"):
            assert ra[k] == pytest.approx(rb[k], abs=RESUME_TOL), (ra["epoch"], k)


class _Killed(Exception):
    """Stands in for SIGKILL at a chosen point of the epoch-end commit."""


def test_killed_and_resumed_equals_uninterrupted(trained, tmp_path, monkeypatch):
    """Stopped at a cap after epoch 1, killed while committing epoch 2 (models written, state.json
    not) and epoch 3 (state.json written, models not renamed): each rerun resumes by itself, and
    the history and weights equal the uninterrupted run's."""
    import deep.training as dt

    res, imgs, labels, _, out, tcfg = trained
    assert _train(tmp_path, replace(tcfg, max_epochs=1), imgs, labels).stop_reason == "max_epochs"
    real_write, real_recover = dt.write_text, dt.recover

    def write_text(path, text):  # kill before the commit of epoch 2
        if path.name == "state.json" and '"epoch": 2,' in text:
            raise _Killed
        real_write(path, text)

    monkeypatch.setattr(dt, "write_text", write_text)
    with pytest.raises(_Killed):
        _train(tmp_path, tcfg, imgs, labels)
    assert ".last-e0002.keras" in {f.name for f in tmp_path.iterdir()}
    assert deep.read_state(tmp_path)["epoch"] == 1
    monkeypatch.setattr(dt, "write_text", real_write)

    def recover(out_dir, state):  # kill right after the commit of epoch 3
        if state and state["epoch"] == 3 and (Path(out_dir) / ".last-e0003.keras").exists():
            raise _Killed
        real_recover(out_dir, state)

    monkeypatch.setattr(dt, "recover", recover)
    with pytest.raises(_Killed):
        _train(tmp_path, tcfg, imgs, labels)
    assert deep.read_state(tmp_path)["epoch"] == 3  # committed; last.keras still holds epoch 2
    monkeypatch.undo()
    resumed = _train(tmp_path, tcfg, imgs, labels)
    assert resumed.ran and resumed.start_epoch == 3
    _same_history(res.history, resumed.history)
    for wa, wb in zip(deep.load_model(out / "last.keras").get_weights(),
                      deep.load_model(tmp_path / "last.keras").get_weights()):
        np.testing.assert_allclose(wa, wb, atol=1e-5)
    assert not [f.name for f in tmp_path.iterdir() if f.name.startswith(".")]


def test_corrupt_checkpoint_is_a_clear_error(trained, tmp_path):
    import shutil

    _, imgs, labels, _, out, tcfg = trained
    shutil.copytree(out, tmp_path, dirs_exist_ok=True)
    (tmp_path / "last.keras").write_bytes(b"not a zip")
    with pytest.raises(DeepError, match="corrupt"):
        _train(tmp_path, replace(tcfg, max_epochs=6), imgs, labels)


def test_a_checkpoint_newer_than_its_state_trains_again_not_force(trained, tmp_path):
    """A last.keras that state.json does not describe (the pending-file commit rules this out
    after a kill, so files mixed by hand): the rerun starts over (every epoch is seeded) and
    ends where a straight run ends, instead of asking for --force."""
    import json

    res, imgs, labels, _, _, tcfg = trained
    _train(tmp_path, replace(tcfg, max_epochs=1), imgs, labels)
    state = json.loads((tmp_path / "state.json").read_text())
    state["iterations"] -= 1  # last.keras is one epoch ahead of what state.json records
    (tmp_path / "state.json").write_text(json.dumps(state))
    msgs = []
    again = _train(tmp_path, replace(tcfg, max_epochs=2), imgs, labels, log=msgs.append)
    assert again.ran and again.start_epoch == 0 and [r["epoch"] for r in again.history] == [1, 2]
    assert any("training again from epoch 1" in m for m in msgs)
    for got, straight in zip(again.history, res.history[:2]):
        assert got["val_auroc"] == pytest.approx(straight["val_auroc"], abs=1e-5)
        assert got["loss"] == pytest.approx(straight["loss"], abs=1e-5)


def test_train_rejects_bad_inputs(tmp_path):
    imgs, labels, _ = blobs(40)
    with pytest.raises(DeepError, match="expects 48x48"):
        deep.train(imgs, np.arange(30), labels[:30], np.arange(30, 40), labels[30:],
                   ModelConfig(size=48), tmp_path)
    with pytest.raises(DeepError, match="empty split"):
        deep.train(imgs, np.arange(30), labels[:30], [], [], TINY, tmp_path)
    with pytest.raises(DeepError, match="both normal and abnormal"):
        deep.train(imgs, np.arange(30), labels[:30], [0, 2], [0, 0], TINY, tmp_path, TrainConfig(batch_size=8))
    with pytest.raises(DeepError, match="fewer than one batch"):
        deep.train(imgs, np.arange(30), labels[:30], np.arange(30, 40), labels[30:], TINY, tmp_path)


def test_gradcam_shapes_and_layers(trained):
    res, imgs, *_ = trained
    x = imgs[128:136, :, :, None] / np.float32(255)
    prob, maps = deep.gradcam(res.model, x)
    assert maps.shape == (8, S, S) and np.all(maps >= 0)  # placed on the canvas
    np.testing.assert_allclose(prob, deep.predict(res.model, imgs, np.arange(128, 136)), atol=1e-5)
    _, m2 = deep.gradcam(res.model, x, layer="s0_add")
    assert m2.shape == (8, S, S) and not np.allclose(m2, maps)
    with pytest.raises(DeepError):
        deep.gradcam(res.model, x, layer="gap")


def test_pointing_game_hand_made():
    cams = np.zeros((4, 4, 4), np.float32)
    cams[0, 0, 0] = 1  # peak near (0, 0) of a 32 px image
    cams[1, 3, 3] = 1  # peak near (28, 28)
    cams[2, 0, 3] = 1  # peak near (28, 0)
    boxes = np.array([[0, 0, 8, 8], [20, 20, 31, 31], [0, 20, 10, 31], [np.nan] * 4])
    assert deep.pointing_game(cams, boxes, 32) == pytest.approx(2 / 3)
    assert np.isnan(deep.pointing_game(cams[3:], boxes[3:], 32))
    # tolerance: a box just beside the peak counts only with a margin
    near = np.array([[8, 8, 12, 12]] * 1, float)
    assert deep.pointing_game(cams[:1], near, 32, tolerance=0.0) == 0.0
    assert deep.pointing_game(cams[:1], near, 32, tolerance=0.3) == 1.0


# ------------------------------------------------------------------ the body-part head ----

def part_bars(n, seed=0):
    """``blobs`` plus a body part per image, named by the height of a bright bar across it.
    Returns images, abnormality labels, part names."""
    imgs, labels, _ = blobs(n, seed=seed)
    part = (np.arange(n) // 2) % 3  # independent of the label (which alternates)
    for i, k in enumerate(part):
        imgs[i, 1 + 12 * k:3 + 12 * k, :] = 160
    return imgs, labels, np.asarray(PARTS)[part]


@pytest.mark.parametrize("shuffled", [False, True])
def test_part_head_learns_the_part_and_a_shuffled_control_stays_at_chance(tmp_path, shuffled):
    """Trained jointly, the head names the part of unseen images; trained on shuffled part labels
    (no relation to the image) the same recipe is at chance (1/3) on them: the accuracy measures
    the images, not the head's capacity to memorise."""
    imgs, labels, parts = part_bars(224)
    train_parts = np.random.default_rng(0).permutation(parts[:160]) if shuffled else parts[:160]
    cfg = ModelConfig(size=S, width=8, dropout=0.0, parts=PARTS)
    tcfg = TrainConfig(max_epochs=3, batch_size=16, seed=3, min_steps=30, warmup_epochs=0, part_weight=0.5)
    res = deep.train(imgs, np.arange(160), labels[:160], np.arange(160, 224), labels[160:], cfg, tmp_path, tcfg,
                     verbose=False, train_parts=train_parts, val_parts=parts[160:])
    out = deep.predict_outputs(res.model, imgs, np.arange(160, 224))
    assert out.shape == (64, 1 + len(PARTS)) and np.allclose(out[:, 1:].sum(1), 1, atol=1e-5)
    acc = float(np.mean(np.asarray(PARTS)[out[:, 1:].argmax(1)] == parts[160:]))
    assert res.history[-1]["val_part_accuracy"] == pytest.approx(acc, abs=1e-6) or res.best_epoch < 3
    if shuffled:
        assert acc < 0.6  # chance 1/3; 64 images: 0.6 is > 3 standard deviations above it
    else:
        assert acc >= 0.9
    # the probability output is the one it always was: (B, 1), what CAM and every consumer read
    np.testing.assert_allclose(deep.predict(res.model, imgs, np.arange(160, 224)), out[:, 0], atol=1e-6)
    prob, cams = deep.cam(res.model, to_input(imgs[160:164]))
    assert prob.shape == (4,) and cams.shape == (4, S, S)


def to_input(u8):
    from edge.preprocess import to_model_input

    return to_model_input(u8)


def test_part_head_config_errors_and_older_checkpoints(tmp_path):
    from deep.training import _new_state

    assert ModelConfig.from_dict({**ModelConfig(parts=PARTS).to_dict(), "parts": list(PARTS)}).parts == PARTS
    for bad in (["HAND"], ["HAND", "HAND"], "HAND", [3, 4]):
        with pytest.raises(DeepError, match="part"):
            ModelConfig(parts=bad)
    with pytest.raises(DeepError, match="part_weight"):
        TrainConfig(part_weight=-1.0)
    imgs, labels, parts = part_bars(48)
    tcfg = TrainConfig(batch_size=8)
    args = (imgs, np.arange(40), labels[:40], np.arange(40, 48), labels[40:])
    with pytest.raises(DeepError, match="one body part per training image"):
        deep.train(*args, DROP, tmp_path, tcfg)
    with pytest.raises(DeepError, match=r"\['KNEE'\] are not among"):
        deep.train(*args, DROP, tmp_path, tcfg, train_parts=np.r_[parts[:39], ["KNEE"]])
    with pytest.raises(DeepError, match="no part head"):
        deep.train(*args, TINY, tmp_path, tcfg, train_parts=parts[:40])
    # a state.json written before the part head (no "parts", no "part_weight") resumes headless
    old = _new_state(TINY, tcfg, {})
    old["model_config"].pop("parts")
    old["train_config"].pop("part_weight")
    deep.check_resumable(old, TINY, tcfg, {})
    with pytest.raises(DeepError, match="different model config"):
        deep.check_resumable(old, DROP, tcfg, {})
    with pytest.raises(DeepError, match="different train config"):
        deep.check_resumable(_new_state(DROP, tcfg, {}), DROP, replace(tcfg, part_weight=0.5), {})


def test_a_model_without_part_head_has_one_output_everywhere():
    model = deep.build_model(TINY)
    assert len(model.outputs) == 1 and deep.part_output(model) is None
    assert deep.probability_model(model) is model
    joint = deep.build_model(DROP)
    assert [tuple(o.shape) for o in joint.outputs] == [(None, 1), (None, len(PARTS))]
    x = np.random.default_rng(0).random((2, S, S, 1)).astype(np.float32)
    np.testing.assert_allclose(deep.probability_model(joint)(x), joint(x)[0], atol=1e-7)
