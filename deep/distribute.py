"""Training on several replicas: the tf.distribute strategy, data sharding, and what workers share.

``resolve(name)`` picks the strategy once per process (TensorFlow allows one multi-worker
strategy, created before any other TensorFlow op):

=================  ==========================================  =======================
name               when ``auto`` picks it                      strategy
=================  ==========================================  =======================
``multi-worker``   ``TF_CONFIG`` is set                        MultiWorkerMirroredStrategy
``mirrored``       more than one GPU is visible                MirroredStrategy
``none``           otherwise                                   TensorFlow's default (one process)
=================  ==========================================  =======================

What makes a run on R replicas the same optimisation as one process (``Replicas``):

- The batch size is the **global** batch; each replica computes ``batch / R`` images of it.
  Every step's global batch, its order and each image's augmentation are those of the
  one-process run (``deep.make_dataset(part=...)``: the draws are a function of the seed, the
  epoch, the global batch and the image's place in it, so they do not depend on the number of
  workers). Keras divides each replica's mean loss by R and the strategy sums the gradients,
  so the update is the mean gradient of the global batch: **the learning rate is not scaled**
  for the same global batch. (Raising the global batch k-fold to keep each replica busy is a
  different optimisation; the usual start is k times the learning rate with a warm-up.)
- BatchNormalization uses the statistics of the whole global batch (``synchronized``), and
  Dropout keeps this replica's rows of the global batch's mask (``prepare_model``). What is
  left is float32 rounding (the synchronized variance is E[x^2] - E[x]^2; gradients are summed
  in another order): on the tests' 32 px model 2 replicas matched one process to 6 decimals
  (tests/test_distribute.py); at 128 px the loss after 24 steps differed by 3e-5 (docs/training.md).
- The training loop with several replicas is a ``strategy.run`` loop (``Replicas.fit``), not
  Keras' ``fit``, which fails under MultiWorkerMirroredStrategy in Keras 3.15.
- Validation: each worker predicts its share of the validation images with a plain copy of
  the weights; the shares are summed across workers (an all-reduce of vectors that are zero
  outside each share, so exact), and every worker computes the same AUROC from the same
  numbers: warm-up, plateau and early-stopping decisions cannot differ between workers.
- Only the chief (task 0, or the ``chief`` task) writes to the output folder; the others save
  into a temporary folder each epoch (saving may take part in collectives, as TensorFlow's
  multi-worker guide notes) and delete it at the end.

Faults: a worker that dies is reported to the others by the coordination service once its
heartbeats stop for ``MURAKIT_HEARTBEAT_TIMEOUT`` seconds (default 30); their pending
collectives fail and they stop with one ``WorkerLost`` line. Rerunning the same command on
every worker resumes from the chief's last committed epoch. (No collective timeout by
default: see ``DEFAULT_HEARTBEAT_TIMEOUT``.)
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from deep.errors import DeepError

STRATEGIES = ("auto", "none", "mirrored", "multi-worker")
# A dead worker is found by the coordination service's heartbeats, not by collective timeouts:
# in TensorFlow 2.21 a collective with CommunicationOptions(timeout_seconds=T) leaves a thread
# sleeping T seconds behind it; at ~80 collectives a step (synchronized BatchNorm) a worker had
# 14,000 threads after two epochs and aborted ("std::system_error: Resource temporarily
# unavailable"). MURAKIT_COLLECTIVE_TIMEOUT still sets one, for short jobs.
DEFAULT_HEARTBEAT_TIMEOUT = 30.0

_resolved: dict = {}  # one strategy per process


class WorkerLost(DeepError):
    """A collective operation failed: another worker died, or the network between them did."""


def read_tf_config(env=None) -> dict | None:
    """The parsed ``TF_CONFIG`` (None when unset or empty); DeepError when it is malformed."""
    text = (os.environ if env is None else env).get("TF_CONFIG", "").strip()
    if not text:
        return None
    try:
        cfg = json.loads(text)
        cluster, task = cfg["cluster"], cfg["task"]
        kind, index = str(task["type"]), int(task["index"])
        hosts = cluster[kind]
        if not isinstance(hosts, list) or not 0 <= index < len(hosts):
            raise ValueError(f"task index {index} is not in cluster[{kind!r}]")
    except (ValueError, KeyError, TypeError) as e:
        raise DeepError(f"TF_CONFIG is not a tf.distribute cluster spec ({e}); expected "
                        '{"cluster": {"worker": ["host:port", ...]}, "task": {"type": "worker", "index": i}}') \
            from None
    if kind not in ("chief", "worker"):
        raise DeepError(f"TF_CONFIG task type {kind!r}: murakit trains with chief and worker tasks only")
    return cfg


def worker_rank(cfg: dict) -> tuple[int, int]:
    """(rank, number of workers) of this task: the chief (or worker 0 without one) is rank 0."""
    cluster, task = cfg["cluster"], cfg["task"]
    chiefs = len(cluster.get("chief", []))
    n = chiefs + len(cluster.get("worker", []))
    rank = int(task["index"]) if task["type"] == "chief" else chiefs + int(task["index"])
    return rank, n


@dataclass
class Replicas:
    """A strategy and this process's place in it (see the module docstring).

    Attributes
    ----------
    strategy : tf.distribute.Strategy
    kind : {"none", "mirrored", "multi-worker"}
    rank, workers : int
        This worker's rank (0 = chief) and the number of workers (1 unless multi-worker).
    replicas : int
        Replicas in sync over all workers (``strategy.num_replicas_in_sync``).
    """

    strategy: object
    kind: str
    rank: int = 0
    workers: int = 1
    replicas: int = 1
    _scratch: Path | None = field(default=None, repr=False)

    @property
    def is_chief(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """More than one replica: data is sharded and BatchNorm synchronised."""
        return self.replicas > 1

    def describe(self) -> str:
        if self.kind == "none":
            return "one process (no tf.distribute strategy)"
        who = f"worker {self.rank} of {self.workers}{' (chief)' if self.is_chief else ''}, " \
            if self.kind == "multi-worker" else ""
        return f"{self.kind} strategy: {who}{self.replicas} replicas in sync"

    def check_batch(self, batch_size: int) -> None:
        """DeepError unless the global batch splits evenly over the replicas."""
        if batch_size % self.replicas:
            raise DeepError(f"the global batch of {batch_size} does not split into {self.replicas} equal "
                            f"replica batches; use a --batch-size divisible by {self.replicas}")

    def write_dir(self, out: Path) -> Path:
        """Where this worker saves checkpoints: ``out`` on the chief, a private temp dir elsewhere."""
        if self.is_chief:
            return Path(out)
        if self._scratch is None:  # one per (run folder, rank): a killed worker's is replaced, not piled up
            key = hashlib.sha1(str(Path(out).resolve()).encode()).hexdigest()[:12]
            self._scratch = Path(tempfile.gettempdir()) / f"murakit-worker{self.rank}-{key}"
            shutil.rmtree(self._scratch, ignore_errors=True)
            self._scratch.mkdir(parents=True)
        return self._scratch

    def drop_scratch(self) -> None:
        if self._scratch is not None:
            shutil.rmtree(self._scratch, ignore_errors=True)
            self._scratch = None

    # ------------------------------------------------------------ data
    def dataset(self, make):
        """``make(part=None)`` for one replica, else a distributed dataset of replica slices.

        ``make(part)`` builds the epoch's dataset (``deep.make_dataset``'s ``part``); each input
        pipeline (a worker) gets the slices of its local replicas.
        """
        if not self.distributed:
            return make(part=None)

        def per_pipeline(ctx):
            local = ctx.num_replicas_in_sync // ctx.num_input_pipelines
            return make(part=(ctx.input_pipeline_id * local, local, ctx.num_replicas_in_sync))

        return self.strategy.distribute_datasets_from_function(per_pipeline)

    def fit(self, model, dataset, callbacks=()) -> float:
        """Train one pass over ``dataset`` (from ``self.dataset``); returns the mean loss of its steps.

        One replica: ``model.fit``, as ever. Several: a loop of ``strategy.run`` steps, each
        Keras' own forward pass, compiled loss (divided by the number of replicas) and optimizer
        (which sums the replicas' gradients). Why not ``fit`` there: Keras 3.15's ``fit`` cannot
        run under MultiWorkerMirroredStrategy (its first-batch build and its per-step metric
        reduction call the strategy's ``reduce`` on values it does not accept: "Attempt to
        convert a value (PerReplica...)", "Invalid reduction dimension 0 for input with 0
        dimensions"). ``callbacks`` get ``on_train_batch_end(step, {"loss": ...})``.
        """
        if not self.distributed:
            hist = model.fit(dataset, epochs=1, verbose=0, callbacks=list(callbacks), shuffle=False)
            return float(hist.history["loss"][-1])
        step = self._train_step(model)
        total, n = 0.0, 0
        for batch in dataset:
            total += float(step(batch))
            n += 1
            for cb in callbacks:
                cb.on_train_batch_end(n - 1, {"loss": total / n})
        return total / max(n, 1)

    def _train_step(self, model):
        """The compiled step of ``model`` (built once per model): global-batch mean loss."""
        import tensorflow as tf

        if getattr(self, "_step", (None, None))[0] is model:
            return self._step[1]
        strategy = self.strategy
        with strategy.scope():
            model.optimizer.build(model.trainable_variables)
            _build_loss(model)

        def replica_step(x, y, w):
            with tf.GradientTape() as tape:
                y_pred = model(x, training=True)
                loss = model.compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=w, training=True)
            grads = tape.gradient(loss, model.trainable_variables)
            model.optimizer.apply_gradients(zip(grads, model.trainable_variables))
            return loss  # this replica's share: its mean loss / replicas

        @tf.function
        def step(batch):
            per_replica = strategy.run(replica_step, args=batch)
            return strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)

        self._step = (model, step)
        return step

    def share(self, n: int) -> slice:
        """This worker's contiguous share of ``n`` items (validation rows)."""
        bounds = np.linspace(0, n, self.workers + 1).round().astype(int)
        return slice(int(bounds[self.rank]), int(bounds[self.rank + 1]))

    def predict(self, model, predict_fn, images, rows, width=None) -> np.ndarray:
        """``predict_fn(model, images, rows)`` for all ``rows``, every worker getting the same numbers.

        With one replica this is ``predict_fn`` itself. Otherwise each worker predicts its
        ``share`` with a plain (not distributed) copy of the weights, the shares are summed
        across workers (zeros elsewhere, so the sum is exact), and every worker returns the
        same array: (M,), or (M, ``width``) when ``predict_fn`` gives ``width`` values per row.
        """
        if not self.distributed:
            return predict_fn(model, images, rows)
        plain = self._plain_copy(model)
        rows = np.asarray(rows)
        mine = self.share(len(rows))
        out = np.zeros(len(rows) if width is None else (len(rows), width), np.float32)
        if mine.stop > mine.start:
            out[mine] = predict_fn(plain, images, rows[mine])
        return self.all_sum(out)

    def _plain_copy(self, model):
        import keras

        if getattr(self, "_plain", (None, None))[0] is not model:
            self._plain = (model, keras.models.clone_model(model))  # outside the strategy's scope
        plain = self._plain[1]
        plain.set_weights(model.get_weights())
        return plain

    # ------------------------------------------------------------ collectives
    def all_sum(self, values) -> np.ndarray:
        """Element-wise sum over workers of a float32 vector (identity with one worker)."""
        values = np.asarray(values, np.float32)
        if self.workers == 1:
            return values
        import tensorflow as tf

        t = tf.constant(values)
        local = self.replicas // self.workers

        def value(ctx):  # one contribution per worker: its first local replica's
            return t if ctx.replica_id_in_sync_group % local == 0 else tf.zeros_like(t)

        per_replica = self.strategy.experimental_distribute_values_from_function(value)
        try:
            return self.strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None).numpy()
        except tf.errors.OpError as e:
            raise lost(e) from None

    def barrier(self) -> None:
        """Wait until every worker gets here (e.g. the chief has recovered the checkpoint folder)."""
        self.all_sum(np.zeros(1, np.float32))


def _build_loss(model) -> None:
    """Create the compiled loss's variables before the step is traced.

    A model with a part head (two outputs) has a Keras loss that keeps one mean per output, made
    on its first call; made inside a strategy's traced step they become lifted initialisers that
    fail ("You must feed a value for placeholder tensor"). One eager call on a zero batch of the
    model's structure makes them here (they only feed Keras' per-output loss logs).
    """
    if len(model.outputs) == 1:
        return
    y_pred = [np.zeros((1, *o.shape[1:]), np.float32) for o in model.outputs]
    y = (np.zeros((1, 1), np.float32), np.zeros(1, np.int32))
    model.compute_loss(x=None, y=y, y_pred=y_pred, sample_weight=(np.ones(1, np.float32),) * 2, training=False)


@contextlib.contextmanager
def collectives(rep: Replicas):
    """Run training steps: a failed collective becomes one ``WorkerLost``; temp folders go at the end."""
    import tensorflow as tf

    failed = (tf.errors.UnavailableError, tf.errors.DeadlineExceededError, tf.errors.AbortedError,
              tf.errors.CancelledError, tf.errors.InternalError)
    try:
        yield
    except failed as e:
        if rep.workers == 1:
            raise
        raise lost(e) from None
    finally:
        rep.drop_scratch()


def lost(e) -> WorkerLost:
    """The one line a surviving worker prints when a collective fails (TensorFlow's own message
    is a page of graph and RPC detail; ``--verbose`` shows it)."""
    return WorkerLost(f"lost contact with another worker (tf.errors.{type(e).__name__} in a collective "
                      "operation); the job stopped: rerun the same command on every worker to resume "
                      "from the chief's last checkpoint")


def _seconds(name: str, default: float | None) -> float | None:
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise DeepError(f"{name} must be a number of seconds > 0, got {text!r}")
    return value


def _multi_worker(cfg: dict):
    """MultiWorkerMirroredStrategy with a heartbeat timeout (and a collective timeout if asked for)."""
    import tensorflow as tf
    from tensorflow.compiler.xla.tsl.protobuf import coordination_config_pb2
    from tensorflow.python.distribute import multi_worker_util
    from tensorflow.python.eager import context

    timeout = _seconds("MURAKIT_COLLECTIVE_TIMEOUT", None)
    heartbeat = _seconds("MURAKIT_HEARTBEAT_TIMEOUT", DEFAULT_HEARTBEAT_TIMEOUT)
    spec = tf.train.ClusterSpec(cfg["cluster"])
    # What the strategy would configure itself, plus the heartbeat timeout (not a public option):
    # a task whose heartbeats stop for this long is reported to every other task as failed.
    jobs = [coordination_config_pb2.CoordinatedJob(name=j, num_tasks=spec.num_tasks(j))
            for j in ("chief", "worker") if j in spec.jobs]
    context.context().configure_coordination_service(
        service_type="standalone", service_leader=multi_worker_util.coordination_leader(spec),
        heartbeat_timeout_in_ms=int(heartbeat * 1000), coordinated_jobs=jobs)
    options = tf.distribute.experimental.CommunicationOptions(timeout_seconds=timeout)  # None: no timeout
    return tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)


def _local_devices(kind: str) -> list:
    import tensorflow as tf

    return [d.name for d in tf.config.list_logical_devices(kind)]


def resolve(name: str = "auto") -> Replicas:
    """The strategy for ``name`` (one of ``STRATEGIES``), created once per process.

    ``auto``: TF_CONFIG set -> multi-worker; more than one GPU -> mirrored; else none.
    ``mirrored`` without GPUs mirrors over the logical CPU devices (tests configure two).
    """
    if name not in STRATEGIES:
        raise DeepError(f"unknown strategy {name!r}; choose one of {', '.join(STRATEGIES)}")
    cfg = read_tf_config()
    if name == "auto":
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")  # does not start TensorFlow's runtime
        name = "multi-worker" if cfg else "mirrored" if len(gpus) > 1 else "none"
    if name in _resolved:
        return _resolved[name]
    import tensorflow as tf

    if name == "multi-worker":
        if cfg is None:
            raise DeepError("the multi-worker strategy needs TF_CONFIG (the cluster and this task); "
                            "murakit train cnn --local-workers N sets it on one machine")
        rank, workers = worker_rank(cfg)
        strategy = _multi_worker(cfg)
        rep = Replicas(strategy, name, rank, workers, strategy.num_replicas_in_sync)
    elif name == "mirrored":
        devices = _local_devices("GPU") or _local_devices("CPU")
        strategy = tf.distribute.MirroredStrategy(devices=devices)
        rep = Replicas(strategy, name, replicas=strategy.num_replicas_in_sync)
    else:
        rep = Replicas(tf.distribute.get_strategy(), "none")
    _resolved[name] = rep
    return rep


def prepare_model(model, replicas: int) -> None:
    """Make each replica compute its slice of the global batch as one process would.

    BatchNorm takes the statistics of the whole global batch (``synchronized``), and Dropout
    draws the mask of the whole global batch (with the seed one process would use) and keeps
    its replica's rows. Set before the first step is traced.
    """
    import keras

    for layer in _all_layers(model):
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.synchronized = True
        elif isinstance(layer, keras.layers.Dropout) and layer.noise_shape is None:
            layer.call = _global_batch_dropout(layer, replicas)


def _global_batch_dropout(layer, replicas: int):
    """``Dropout.call`` whose mask is this replica's rows of the global batch's mask.

    The same arithmetic as Keras' TensorFlow backend (``tf.nn.experimental.stateless_dropout``
    with the seed generator's next seed): scale by 1 / (1 - rate), keep where a stateless
    uniform draw >= rate; only the draw is made for ``replicas`` times the replica batch.
    """
    import tensorflow as tf

    plain = layer.call

    def call(inputs, training=False):
        if not training or not layer.rate > 0:
            return plain(inputs, training=training)
        seed = layer.seed_generator.next()
        seed = tf.cast(tf.math.floormod(seed, tf.int32.max - 1), tf.int32)  # as keras' _cast_seed
        b = tf.shape(inputs)[0]
        r = tf.distribute.get_replica_context().replica_id_in_sync_group
        shape = tf.concat([[b * replicas], tf.shape(inputs)[1:]], 0)
        draw = tf.random.stateless_uniform(shape, seed, dtype=inputs.dtype, alg=None)[r * b:(r + 1) * b]
        scaled = inputs * tf.constant(1 / (1 - layer.rate), inputs.dtype)
        return tf.where(draw >= layer.rate, scaled, tf.zeros_like(scaled))

    return call


def _all_layers(model):
    for layer in model.layers:
        yield layer
        if hasattr(layer, "layers"):  # nested backbones (keras.applications)
            yield from _all_layers(layer)
