"""The Ray engine: the same job on Ray Data, on this machine or a cluster (``scale`` extra).

Pipeline::

    job rows (path, study, part)
      -> map_batches(Scorer, ActorPoolStrategy)  per actor: decode + the model's preprocessing
                                                 (preprocess_batch), then onnxruntime, one
                                                 session per actor, batches of B
      -> rows streamed back to the driver, committed as parts exactly like the local engine

The per-image work is :mod:`murakit.scoring.work`, the code the local engine runs, so both
engines give the same probabilities. The model travels through Ray's object store (no shared
model path needed); the images are read by path, so every node must see the same paths (a shared
mount). Each actor decodes, preprocesses and scores its blocks, so no image moves between
processes. (Preprocessing was once a stage of Ray tasks that Ray Data fused into the actors;
one stage is the same work, and lets the actors carry their own restart bound, which a task
stage cannot: see :func:`_bound_actor_starts`.)

Connection: ``RAY_ADDRESS`` when set (an existing cluster), otherwise a local Ray started for
this run, bound to 127.0.0.1, without dashboard and with usage statistics off.
"""

from __future__ import annotations

import logging
import os
import re
import warnings

import numpy as np

from edge.errors import EdgeError, first_line
from murakit.errors import MurakitError

# Set before ray is imported: no usage report, nothing leaves the machine.
RAY_ENVIRONMENT = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_USAGE_STATS_PROMPT_ENABLED": "0"}
# A local Ray otherwise resolves 127.0.0.1 to the machine's routable address and listens there;
# in single-machine mode it keeps every server on the loopback interface.
LOCAL_ONLY = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}


def _connect(workers: int):
    """Attach to ``RAY_ADDRESS`` or start a private local Ray on 127.0.0.1; returns the ray module.

    Raises
    ------
    MurakitError
        The local Ray listens on another address than 127.0.0.1 (it is shut down at once).
    """
    address = os.environ.get("RAY_ADDRESS")
    for name, value in {**RAY_ENVIRONMENT, **({} if address else LOCAL_ONLY)}.items():
        os.environ.setdefault(name, value)
    import ray

    from edge.cpu import usable_cores

    if ray.is_initialized():
        return ray
    quiet = {"log_to_driver": False, "logging_level": logging.ERROR}
    if address:
        ray.init(address=address, **quiet)
        return ray
    ray.init(address="local", num_cpus=max(usable_cores(), workers), include_dashboard=False,
             _node_ip_address="127.0.0.1", **quiet)
    where = {n["NodeManagerAddress"] for n in ray.nodes()}
    if where != {"127.0.0.1"}:
        ray.shutdown()
        raise MurakitError(f"the local Ray listens on {', '.join(sorted(where))}, not only 127.0.0.1; "
                           "start it yourself (ray start --head --node-ip-address 127.0.0.1) and set RAY_ADDRESS")
    return ray


def _quiet_ray_data(ray) -> None:
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False  # murakit prints its own progress line
    ctx.print_on_execution_start = False
    ctx.enable_auto_log_stats = False
    for name in ("ray", "ray.data"):  # failures reach the user as one murakit line instead
        logging.getLogger(name).setLevel(logging.CRITICAL)


def _bound_actor_starts(ray) -> dict:
    """Actors that cannot start end the run after a bounded number of attempts (as the local
    engine's workers, :mod:`murakit.pools`); returns the actors' extra remote arguments.

    Ray Data creates its actors with ``max_restarts=-1``: an actor whose process dies in its
    constructor (a crash, out of memory) was restarted without end (measured: a constructor
    calling ``os._exit`` still looped after 200 s). Here each actor is restarted at most
    ``START_ATTEMPTS - 1`` times (so a constructor that crashes runs ``START_ATTEMPTS`` times),
    an exception in the constructor is never retried in place, and the first actor that is dead
    for good ends the run (Ray Data's ``max_consecutive_actor_init_deaths`` = 0, its default,
    set in case that changes). The same bound covers actors that die while working (a node
    lost, out of memory): restarted twice, their tasks retried twice, then the run stops
    (rerunning it resumes).
    The restart bound travels as ``map_batches``' ``**ray_remote_args`` (deprecated in Ray 2.60,
    with no named replacement yet): passed only while ``map_batches`` takes them.
    """
    import inspect

    from murakit.pools import START_ATTEMPTS

    ctx = ray.data.DataContext.get_current()
    ctx.actor_init_retry_on_errors = False
    ctx.max_consecutive_actor_init_deaths = 0
    takes = any(p.kind is p.VAR_KEYWORD for p in inspect.signature(ray.data.Dataset.map_batches).parameters.values())
    return {"max_restarts": START_ATTEMPTS - 1, "max_task_retries": START_ATTEMPTS - 1} if takes else {}


def preprocess_batch(batch: dict, config: dict) -> dict:
    """Actor side (:class:`Scorer`): decode + preprocess a batch of job rows.

    Returns columns ``path``, ``study``, ``part``, ``error`` ("" when decoded) and ``image``
    uint8 (N, S, S) (zeros where ``error`` is set).
    """
    from edge.preprocess import PreprocessConfig
    from murakit.scoring.inputs import Job
    from murakit.scoring.work import preprocess_jobs

    cfg = PreprocessConfig.from_dict(config)
    jobs = [Job(str(p), str(s), str(t)) for p, s, t in zip(batch["path"], batch["study"], batch["part"])]
    kept, images, failures = preprocess_jobs(jobs, cfg)
    blank = np.zeros((len(failures), cfg.size, cfg.size), np.uint8)
    return {"path": np.array([j.path for j in kept] + [f["path"] for f in failures], dtype=object),
            "study": np.array([j.study for j in kept] + [f["study"] for f in failures], dtype=object),
            "part": np.array([j.part for j in kept] + [f["part"] for f in failures], dtype=object),
            "error": np.array([""] * len(kept) + [f["error"] for f in failures], dtype=object),
            "image": np.concatenate([images, blank])}


class Scorer:
    """Ray actor: one onnxruntime session for its lifetime; batches of job rows in, each decoded
    and preprocessed (:func:`preprocess_batch`) then scored, result rows out.

    Parameters
    ----------
    model : bytes
        The ONNX file's bytes, shipped with the actor's constructor (no shared model path).
    config : dict
        The model card's preprocessing (``PreprocessConfig.to_dict()``).
    threads : int
        onnxruntime intra-op threads of this actor.
    """

    def __init__(self, model: bytes, config: dict, threads: int = 1, gate: str = "refuse",
                 operating_point: str | None = None):
        import tempfile

        from edge.predictor import Predictor

        with tempfile.TemporaryDirectory() as tmp:  # Predictor checks the file as a whole
            path = os.path.join(tmp, "model.onnx")
            with open(path, "wb") as f:
                f.write(model)
            self.predictor = Predictor(path, threads=threads, gate=gate, operating_point=operating_point)
        self.config = config

    def __call__(self, batch: dict) -> dict:
        from murakit.scoring.inputs import Job
        from murakit.scoring.work import failure_row, score_images

        batch = preprocess_batch(batch, self.config)
        ok = batch["error"] == ""
        jobs = [Job(str(p), str(s), str(t)) for p, s, t in zip(batch["path"], batch["study"], batch["part"])]
        scored = score_images(self.predictor, [j for j, good in zip(jobs, ok) if good], batch["image"][ok])
        failed = [failure_row(j, str(e)) for j, e, good in zip(jobs, batch["error"], ok) if not good]
        return _columns(scored + failed)


FLOATS = ("probability", "threshold", "score", "gate_score")


def _columns(rows: list) -> dict:
    """Actor side: result rows as a Ray Data batch (NaN for the floats of a failure)."""
    out = {c: np.array([r[c] for r in rows], dtype=object) for c in ("path", "study", "part", "label", "error", "reason")}
    for c in FLOATS:
        out[c] = np.array([np.nan if r[c] is None else r[c] for r in rows], dtype=np.float64)
    return out


def _rows(batch: dict) -> list:
    """Driver side: a result batch back to row dicts (NaN -> None for failures)."""
    rows = []
    for i in range(len(batch["path"])):
        failed = bool(batch["error"][i])
        row = {c: str(batch[c][i]) for c in ("path", "study", "part", "label", "error", "reason")}
        for c in FLOATS:
            v = float(batch[c][i])
            row[c] = None if np.isnan(v) or (failed and c != "gate_score") else v
        rows.append(row)
    return rows


def run_ray(batches: list, model_path, workers: int, emit) -> None:
    """Score ``batches`` on Ray Data; ``emit(rows)`` in the driver as results stream in.

    Parameters
    ----------
    batches : list of list of Job
        Their concatenation is the work; Ray Data re-batches it (``len(batches[0])`` rows per
        onnxruntime call).
    model_path : murakit.scoring.work.ModelSpec
    workers : int
        Scorer actors (each decodes, preprocesses and scores; one CPU each).
    emit : callable
    """
    if not batches:
        return
    from edge.predictor import read_model_bytes

    ray = _connect(workers)
    _quiet_ray_data(ray)
    spec = model_path
    config = spec.load(threads=1).config.to_dict()
    size = len(batches[0])
    items = [{"path": j.path, "study": j.study, "part": j.part} for b in batches for j in b]
    ds = ray.data.from_items(items, override_num_blocks=max(1, min(len(items) // size, 8 * workers)))
    kwargs = {"model": read_model_bytes(spec.path), "config": config, "gate": spec.gate,
              "operating_point": spec.operating_point}
    with warnings.catch_warnings():  # the deprecation of **ray_remote_args (see _bound_actor_starts)
        warnings.simplefilter("ignore", DeprecationWarning)
        ds = ds.map_batches(Scorer, batch_size=size, fn_constructor_kwargs=kwargs,
                            compute=ray.data.ActorPoolStrategy(size=workers), num_cpus=1, **_bound_actor_starts(ray))
    try:
        for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
            emit(_rows(batch))
    except (MurakitError, EdgeError, OSError):
        raise
    except Exception as e:  # noqa: BLE001  Ray's own errors carry multi-line remote tracebacks
        raise MurakitError(f"the Ray engine failed ({type(e).__name__}: {_reason(e)}); finished batches "
                           "are saved: rerun to continue") from None


def _reason(error: Exception) -> str:
    """One line for a Ray error: its first line without terminal colours; for an actor whose
    constructor raised, that exception's own line (the last of the remote traceback)."""
    lines = [ln.strip() for ln in re.sub(r"\x1b\[[0-9;]*m", "", str(error)).splitlines() if ln.strip()]
    if not lines:
        return type(error).__name__
    if "error raised in its creation task" in lines[0] and len(lines) > 1:
        return f"an actor could not start: {first_line(Exception(lines[-1]))}"
    return first_line(Exception(lines[0]))
