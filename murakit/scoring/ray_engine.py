"""The Ray engine: the same job on Ray Data, on this machine or a cluster (``scale`` extra).

Pipeline::

    job rows (path, study, part)
      -> map_batches(preprocess_batch)        decode + the model's preprocessing (Ray tasks)
      -> map_batches(Scorer, ActorPoolStrategy) onnxruntime, one session per actor, batches of B
      -> rows streamed back to the driver, committed as parts exactly like the local engine

The per-image work is :mod:`murakit.scoring.work`, the code the local engine runs, so both
engines give the same probabilities. The model travels through Ray's object store (no shared
model path needed); the images are read by path, so every node must see the same paths (a shared
mount). Ray Data fuses the two map stages into the actors when their resources allow, so each
actor decodes, preprocesses and scores its blocks without moving images between processes.

Connection: ``RAY_ADDRESS`` when set (an existing cluster), otherwise a local Ray started for
this run, bound to 127.0.0.1, without dashboard and with usage statistics off.
"""

from __future__ import annotations

import logging
import os

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

    from murakit.scoring.local import usable_cores

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


def preprocess_batch(batch: dict, config: dict) -> dict:
    """Ray task: decode + preprocess a batch of job rows.

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
    """Ray actor: one onnxruntime session for its lifetime, batches of preprocessed images in.

    Parameters
    ----------
    model : bytes
        The ONNX file's bytes, shipped with the actor's constructor (no shared model path).
    threads : int
        onnxruntime intra-op threads of this actor.
    """

    def __init__(self, model: bytes, threads: int = 1, gate: str = "refuse", operating_point: str | None = None):
        import tempfile

        from edge.predictor import Predictor

        with tempfile.TemporaryDirectory() as tmp:  # Predictor checks the file as a whole
            path = os.path.join(tmp, "model.onnx")
            with open(path, "wb") as f:
                f.write(model)
            self.predictor = Predictor(path, threads=threads, gate=gate, operating_point=operating_point)

    def __call__(self, batch: dict) -> dict:
        from murakit.scoring.inputs import Job
        from murakit.scoring.work import failure_row, score_images

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
    ds = ds.map_batches(preprocess_batch, batch_size=size, fn_kwargs={"config": config}, num_cpus=1)
    kwargs = {"model": read_model_bytes(spec.path), "gate": spec.gate, "operating_point": spec.operating_point}
    ds = ds.map_batches(Scorer, batch_size=size, fn_constructor_kwargs=kwargs,
                        compute=ray.data.ActorPoolStrategy(size=workers), num_cpus=1)
    try:
        for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
            emit(_rows(batch))
    except (MurakitError, EdgeError, OSError):
        raise
    except Exception as e:  # noqa: BLE001  Ray's own errors carry multi-line remote tracebacks
        raise MurakitError(f"the Ray engine failed ({type(e).__name__}: {first_line(e)}); finished batches "
                           "are saved: rerun to continue") from None
