"""tf.distribute training: sharding, 2 local workers == 1 process, a killed worker and a resume, mirrored."""

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
import deep
from deep import AugmentConfig, DeepError
from deep.distribute import read_tf_config, worker_rank
from murakit.cli import main
from murakit.pipeline.launch import free_ports, tf_config

ROOT = Path(__file__).resolve().parents[1]

# A 2-replica step is the one-process step on the same global batch: the same images, the same
# augmentation draws and Dropout mask rows (deep.distribute), BatchNorm statistics of the whole
# batch. What differs is float32 rounding: synchronized BatchNorm's variance is E[x^2] - E[x]^2
# (one process: the mean squared deviation) and gradients are summed across replicas in another
# order, a few ulps per step. Over 48 steps (3 epochs of 16, 2 replicas: mirrored and 2 workers)
# no loss or AUROC printed to 6 decimals moved by more than 1e-6; 1e-4 leaves room for other
# CPUs' kernels, while a wrong shard (another image, draw or mask) moved the loss by > 1e-3.
# Val AUROC is a rank statistic of predictions that agree to ~1e-6: it must be equal.
LOSS_TOL = 1e-4
COMMON = ["--epochs", "2", "--batch-size", "8", "--min-steps", "4", "--seed", "5", "--no-progress"]


def _history(run):
    with open(run / "cnn" / "history.csv") as f:
        return [{k: float(v) for k, v in row.items() if v != ""} for row in csv.DictReader(f)]


def _same_curves(a, b):
    assert [r["epoch"] for r in a] == [r["epoch"] for r in b]
    for ra, rb in zip(a, b):
        assert ra["val_auroc"] == rb["val_auroc"], ra["epoch"]
        assert ra.get("val_part_accuracy") == rb.get("val_part_accuracy"), ra["epoch"]  # the part head's
        for k in ("loss", "val_loss", "lr"):
            assert ra[k] == pytest.approx(rb[k], abs=LOSS_TOL), (ra["epoch"], k)


# ------------------------------------------------------------------ fast units ----

def test_tf_config_is_checked_and_ranked():
    assert read_tf_config({}) is None
    cfg = read_tf_config({"TF_CONFIG": tf_config([1111, 2222, 3333], 2)})
    assert worker_rank(cfg) == (2, 3)
    chief = {"cluster": {"chief": ["a:1"], "worker": ["b:1", "c:1"]}, "task": {"type": "worker", "index": 0}}
    assert worker_rank(chief) == (1, 3)
    for bad in ("{not json", '{"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": 3}}',
                '{"cluster": {"ps": ["a:1"]}, "task": {"type": "ps", "index": 0}}'):
        with pytest.raises(DeepError) as e:
            read_tf_config({"TF_CONFIG": bad})
        assert "\n" not in str(e.value)


def test_the_cli_offers_the_strategies_deep_knows():
    from deep.distribute import STRATEGIES
    from murakit.pipeline.train_cnn import STRATEGY_CHOICES  # kept apart so --help needs no TensorFlow

    assert STRATEGY_CHOICES == STRATEGIES


def test_free_ports_are_distinct_local_ports():
    ports = free_ports(4)
    assert len(set(ports)) == 4 and all(1024 <= p < 65536 for p in ports)


def test_replica_slices_are_the_global_batches():
    """Each replica reads only its slice, yet the slices of a step put together are the one-process
    batch bit for bit: the same images, labels, weights and augmentation draws."""
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 255, (40, 24, 24)).astype(np.uint8)
    labels = np.arange(40) % 2
    kw = {"labels": labels, "batch_size": 8, "augment": AugmentConfig(), "seed": 7, "shuffle": True,
          "sample_weights": (0.3, 0.7), "drop_remainder": True, "passes": 2}
    whole = list(deep.make_dataset(imgs, np.arange(40), **kw))
    for slices, local in ((2, 1), (4, 2)):  # 2 workers x 1 replica; 2 workers x 2 replicas
        per_worker = [list(deep.make_dataset(imgs, np.arange(40), part=(w * local, local, slices), **kw))
                      for w in range(slices // local)]
        for step, batch in enumerate(whole):
            parts = [per_worker[w][step * local + j] for w in range(slices // local) for j in range(local)]
            for k in range(3):
                np.testing.assert_array_equal(np.concatenate([p[k] for p in parts]), batch[k])
    with pytest.raises(DeepError, match="divisible by 3"):
        deep.make_dataset(imgs, np.arange(40), part=(0, 1, 3), **kw)


def test_strategy_errors_are_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert main(["train", "cnn", "--run", str(tmp_path), "--local-workers", "0"]) == 2
    assert main(["train", "cnn", "--run", str(tmp_path), "--strategy", "multi-worker"]) == 2
    assert main(["train", "cnn", "--run", str(tmp_path), "--local-workers", "2", "--strategy", "mirrored"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all(line.startswith("murakit: error: ") for line in err)
    assert "needs TF_CONFIG" in err[1] and "multi-worker" in err[2]


def test_the_launcher_stops_the_job_when_a_worker_fails(tmp_path):
    """Workers that fail at once (a bad option): the launcher prints their line with its prefix,
    says which worker failed, and returns that worker's exit code."""
    import io

    from murakit.pipeline.launch import run_local_workers

    out = io.StringIO()
    assert run_local_workers(2, ["train", "cnn", "--run", str(tmp_path), "--epochs", "0"], out=out) == 2
    text = out.getvalue()
    assert "[worker 0] murakit: error: --epochs must be" in text and "[worker 1] murakit: error:" in text
    assert "[launcher] worker" in text and "exited with code 2" in text


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:  # a zombie is gone for our purpose
        return f.read().split(")")[-1].split()[0] != "Z"


def test_ctrl_c_stops_every_local_worker(prepared):
    run = _fresh(prepared, "interrupted")
    cmd = [sys.executable, "-m", "murakit", "train", "cnn", "--run", str(run), "--epochs", "50",
           "--min-steps", "200", "--no-progress", "--local-workers", "2"]
    # Ctrl-C as a shell delivers it: the launcher starts with SIGINT at its default, whatever an
    # earlier in-process test left in this pytest process (an ignored signal stays ignored across exec)
    launcher = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)},
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # noqa: PLW1509
    try:
        first = next(line for line in launcher.stdout if "(PIDs " in line)  # the launcher's own line
        pids = [int(p) for p in first.split("(PIDs ")[1].split(")")[0].split(", ")]
        for line in launcher.stdout:  # both workers are training
            if "[worker 1] training" in line:
                break
        launcher.send_signal(signal.SIGINT)
        rest = launcher.communicate(timeout=120)[0]  # SIGTERM, 10 s grace, SIGKILL: slow on a loaded machine
    finally:
        if launcher.poll() is None:
            launcher.kill()
    assert launcher.returncode == 130 and "[launcher] interrupted" in rest
    deadline = time.monotonic() + 10
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_alive(p) for p in pids)


# ------------------------------------------------------------------ integration ----

@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """A tiny prepared run (32 px) whose images carry no signal: val AUROC is far from 1, so a
    difference in any prediction's rank shows."""
    from _murafix import make_mura

    root = tmp_path_factory.mktemp("dist")
    make_mura(root / "data", parts=("ELBOW", "HAND", "WRIST"), patients_per_part=(8, 8, 8), views=2)
    run = root / "template"
    assert main(["prepare", str(root / "data"), "--run", str(run), "--size", "32", "--workers", "1",
                 "--no-progress", "--val-fraction", "0.3"]) == 0
    return root, run


def _fresh(prepared, name):
    root, template = prepared
    run = root / name
    shutil.copytree(template / "prepared", run / "prepared")
    return run


@pytest.fixture(scope="module")
def one_and_two(prepared):
    """The same command in one process and as 2 local workers (global batch 8 = 2 x 4)."""
    one, two = _fresh(prepared, "one"), _fresh(prepared, "two")
    assert main(["train", "cnn", "--run", str(one), *COMMON]) == 0
    assert main(["train", "cnn", "--run", str(two), *COMMON, "--local-workers", "2"]) == 0
    return one, two


def test_two_local_workers_train_what_one_process_trains(one_and_two):
    one, two = one_and_two
    a, b = _history(one), _history(two)
    assert len(a) == 2 and max(r["val_auroc"] for r in a) < 0.99  # not saturated: ranks can differ
    assert all("val_part_accuracy" in r for r in a)  # three body parts: trained with the part head
    _same_curves(a, b)
    for name in ("best.keras", "card.json", "metrics.json", "predictions_test.csv"):
        assert (two / "cnn" / name).is_file()
    assert not [f.name for f in (two / "cnn").iterdir() if f.name.startswith(".")]  # no pending/temp files
    m1, m2 = (json.loads((r / "cnn" / "metrics.json").read_text()) for r in (one, two))
    assert m2["study"]["auroc"] == m1["study"]["auroc"]


def test_the_two_worker_model_exports_and_passes_edge_verify(one_and_two):
    from edge.cli import verify_main

    _, two = one_and_two
    assert main(["export", "--run", str(two), "--no-int8", "--golden", "6"]) == 0
    assert verify_main([str(two / "export" / "cnn.onnx")]) == 0


def _worker(run, ports, i):
    # a 5 s heartbeat timeout (default 30): the survivor notices the killed worker sooner
    env = {**os.environ, "TF_CONFIG": tf_config(ports, i), "PYTHONPATH": str(ROOT), "MURAKIT_HEARTBEAT_TIMEOUT": "5"}
    return subprocess.Popen([sys.executable, "-m", "murakit", "train", "cnn", "--run", str(run), *COMMON],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)


def test_a_killed_worker_stops_the_job_and_a_rerun_resumes(prepared, one_and_two, capsys):
    """Worker 1 is killed during epoch 2: worker 0 stops with one line; the same command on
    both workers resumes from the chief's last checkpoint and ends where the uninterrupted run did."""
    _, two = one_and_two
    run = _fresh(prepared, "killed")
    ports = free_ports(2)
    chief, other = _worker(run, ports, 0), _worker(run, ports, 1)
    try:
        state = run / "cnn" / "state.json"
        deadline = time.monotonic() + 240
        while not (state.is_file() and json.loads(state.read_text())["epoch"] >= 1):
            assert time.monotonic() < deadline and chief.poll() is None, "epoch 1 never finished"
            time.sleep(0.05)
        os.killpg(other.pid, signal.SIGKILL)
        killed = time.monotonic()
        _, err = chief.communicate(timeout=180)
        waited = time.monotonic() - killed
    finally:
        for p in (chief, other):
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
    mine = [line for line in err.decode().splitlines() if line.startswith("murakit")]
    assert chief.returncode == 2 and "Traceback" not in err.decode()
    assert len(mine) == 1 and mine[0].startswith("murakit: error: lost contact with another worker"), err
    assert "rerun the same command on every worker" in mine[0] and waited < 120
    assert json.loads(state.read_text())["epoch"] < 2
    capsys.readouterr()
    assert main(["train", "cnn", "--run", str(run), *COMMON, "--local-workers", "2"]) == 0
    out = capsys.readouterr().out
    assert "[worker 0] resuming from epoch" in out and "[worker 1] resuming from epoch" in out
    _same_curves(_history(run), _history(two))


MIRRORED = r"""
import json, sys
import numpy as np
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import deep
from deep import ModelConfig, TrainConfig, distribute
rng = np.random.default_rng(1)
imgs = rng.integers(0, 120, (96, 32, 32)).astype(np.uint8)
labels = np.arange(96) % 2
imgs[labels == 1, 10:18, 10:18] //= 2  # a faint cue: val AUROC between chance and 1
parts = np.array(["HAND", "WRIST"])[np.arange(96) // 2 % 2]  # the joint loss of the part head too
imgs[parts == "HAND", :2] = 200
cfg = ModelConfig(size=32, width=8, parts=("HAND", "WRIST"))
tcfg = TrainConfig(max_epochs=2, batch_size=16, seed=3, min_steps=4, warmup_epochs=0)
out = {}
for name in ("none", "mirrored"):
    rep = distribute.resolve(name)
    res = deep.train(imgs, np.arange(64), labels[:64], np.arange(64, 96), labels[64:], cfg,
                     sys.argv[1] + "/" + name, tcfg, verbose=False, replicas=rep,
                     train_parts=parts[:64], val_parts=parts[64:])
    out[name] = {"replicas": rep.replicas, "history": res.history}
print(json.dumps(out))
"""


def test_mirrored_on_two_logical_cpus_trains_what_one_replica_trains(tmp_path):
    proc = subprocess.run([sys.executable, "-c", MIRRORED, str(tmp_path)], capture_output=True, text=True,
                          check=False, timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    assert (res["none"]["replicas"], res["mirrored"]["replicas"]) == (1, 2)
    assert any(r["val_auroc"] < 0.99 for r in res["none"]["history"])
    _same_curves(res["none"]["history"], res["mirrored"]["history"])
