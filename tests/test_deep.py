"""deep: model building, CAM parity, the streaming pipeline, training/resume, explanations."""

import warnings

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")
import deep
from deep import DeepError, ModelConfig, TrainConfig

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


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Tiny model trained for a few epochs on separable blobs (shared by several tests)."""
    imgs, labels, boxes = blobs(160)
    out = tmp_path_factory.mktemp("train")
    tcfg = TrainConfig(epochs=4, batch_size=16, seed=3, patience=10)
    res = deep.train(imgs, np.arange(128), labels[:128], np.arange(128, 160), labels[128:], TINY, out,
                     tcfg, verbose=False)
    return res, imgs, labels, boxes, out, tcfg


def test_config_roundtrip_and_validation():
    cfg = ModelConfig(arch="mobilenetv3small", size=96)
    assert ModelConfig.from_json(cfg.to_json()) == cfg
    with pytest.raises(DeepError, match="unknown arch"):
        ModelConfig(arch="resnet9000")
    with pytest.raises(DeepError, match="unknown ModelConfig keys"):
        ModelConfig.from_dict({"arch": "small", "colour": 3})


def test_small_forward_and_cam_parity():
    model = deep.build_model(TINY)
    assert 1_000 < model.count_params() < 100_000
    assert deep.build_model(ModelConfig()).count_params() < 300_000  # default 128 px arch
    x = np.random.default_rng(0).random((3, S, S, 1)).astype(np.float32)
    p = model.predict(x, verbose=0)
    assert p.shape == (3, 1) and np.all((p >= 0) & (p <= 1))
    prob, cams = deep.cam(model, x)
    assert cams.shape == (3, S // 16, S // 16)
    np.testing.assert_allclose(prob, p[:, 0], atol=1e-6)
    bias = model.get_layer("head").get_weights()[1]
    np.testing.assert_allclose(1 / (1 + np.exp(-(cams.mean(axis=(1, 2)) + bias))), prob, atol=1e-5)


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
    ds = deep.make_dataset(imgs, rows, labels[rows], batch_size=3, sample_weights=(0.25, 0.75))
    xs, ys, ws = zip(*[(x.numpy(), y.numpy(), w.numpy()) for x, y, w in ds])
    x, y, w = np.concatenate(xs), np.concatenate(ys), np.concatenate(ws)
    assert x.dtype == np.float32 and x.shape == (7, S, S, 1)
    np.testing.assert_array_equal(x[..., 0], imgs[rows] / np.float32(255))  # == to_model_input
    np.testing.assert_array_equal(y[:, 0], labels[rows])
    np.testing.assert_array_equal(w, np.where(labels[rows] == 1, 0.75, 0.25))
    with pytest.raises(DeepError, match="empty"):
        deep.make_dataset(imgs, [], batch_size=4)
    with pytest.raises(DeepError, match="fewer than one batch"):
        deep.make_dataset(imgs, rows, labels[rows], batch_size=8, drop_remainder=True)


def test_augmentation_seeded_and_in_range():
    imgs, labels, _ = blobs(16)

    def first(seed):
        ds = deep.make_dataset(imgs, np.arange(16), labels, 8, augment=True, seed=seed)
        return next(iter(ds))[0].numpy()

    a, b, c = first(1), first(1), first(2)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert a.min() >= 0.0 and a.max() <= 1.0
    x = tf.constant(imgs[:8, :, :, None] / np.float32(255))
    aug = deep.augment_batch(x, tf.constant([0, 0], tf.int64)).numpy()
    assert aug.shape == x.shape and np.abs(aug - x.numpy()).mean() > 0.01


def _bar_tilts(max_rotation):
    """Per augmented image: |slope| (px per row) of the centre line of a vertical bright bar."""
    img = np.zeros((8, S, S, 1), np.float32)
    img[:, :, S // 2 - 3:S // 2 + 3] = 1.0
    aug = deep.augment_batch(tf.constant(img), tf.constant([3, 1], tf.int64), max_rotation).numpy()[..., 0]
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
    p_train = res.model(x, training=True).numpy()[:, 0]  # batch statistics
    assert p_inf.std() > 0.05  # not collapsed to one value (BatchNorm momentum pitfall)
    auc_inf, auc_train = deep.auroc(labels[va], p_inf), deep.auroc(labels[va], p_train)
    assert auc_inf > 0.9 and auc_inf >= auc_train - 0.05


def test_checkpoints_history_and_resume(trained, tmp_path):
    """Interrupted after 2 epochs + resumed to 4 == 4 epochs straight (the fixture), same seed."""
    res, imgs, labels, _, out, tcfg = trained
    assert [r["epoch"] for r in res.history] == [1, 2, 3, 4]
    assert (out / "best.keras").is_file() and (out / "last.keras").is_file()
    assert len((out / "history.csv").read_text().splitlines()) == 5
    args = (imgs, np.arange(128), labels[:128], np.arange(128, 160), labels[128:], TINY, tmp_path)
    first = deep.train(*args, TrainConfig(**{**tcfg.__dict__, "epochs": 2}), verbose=False)
    assert first.ran and len(first.history) == 2
    resumed = deep.train(*args, tcfg, verbose=False)
    assert resumed.ran and resumed.start_epoch == 2 and [r["epoch"] for r in resumed.history] == [1, 2, 3, 4]
    straight = deep.load_model(out / "last.keras").get_weights()
    for wa, wb in zip(straight, deep.load_model(tmp_path / "last.keras").get_weights()):
        np.testing.assert_allclose(wa, wb, atol=1e-4)
    assert resumed.history[3]["val_auroc"] == pytest.approx(res.history[3]["val_auroc"], abs=1e-3)
    assert not deep.train(*args, tcfg, verbose=False).ran  # complete: no-op
    with pytest.raises(DeepError, match="different"):
        deep.train(*args, TrainConfig(**{**tcfg.__dict__, "epochs": 6, "lr": 0.1}), verbose=False)
    (tmp_path / "last.keras").write_bytes(b"not a zip")
    with pytest.raises(DeepError, match="corrupt"):
        deep.train(*args, TrainConfig(**{**tcfg.__dict__, "epochs": 6}), verbose=False)


def test_a_checkpoint_newer_than_its_state_trains_again_not_force(trained, tmp_path):
    """Killed between last.keras and state.json at an epoch end: the rerun starts over (every
    epoch is seeded) and ends where a straight run ends, instead of asking for --force."""
    import json

    res, imgs, labels, _, _, tcfg = trained
    args = (imgs, np.arange(128), labels[:128], np.arange(128, 160), labels[128:], TINY, tmp_path)
    deep.train(*args, TrainConfig(**{**tcfg.__dict__, "epochs": 1}), verbose=False)
    state = json.loads((tmp_path / "state.json").read_text())
    state["iterations"] -= 1  # last.keras is one epoch ahead of what state.json records
    (tmp_path / "state.json").write_text(json.dumps(state))
    msgs = []
    again = deep.train(*args, TrainConfig(**{**tcfg.__dict__, "epochs": 2}), verbose=False, log=msgs.append)
    assert again.ran and again.start_epoch == 0 and [r["epoch"] for r in again.history] == [1, 2]
    assert any("training again from epoch 1" in m for m in msgs)
    for got, straight in zip(again.history, res.history[:2]):
        assert got["val_auroc"] == pytest.approx(straight["val_auroc"], abs=1e-3)
        assert got["loss"] == pytest.approx(straight["loss"], abs=1e-3)


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
    assert maps.shape == (8, S // 16, S // 16) and np.all(maps >= 0)
    np.testing.assert_allclose(prob, deep.predict(res.model, imgs, np.arange(128, 136)), atol=1e-5)
    _, m2 = deep.gradcam(res.model, x, layer="s0_add")
    assert m2.shape == (8, S // 8, S // 8)
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
