"""``murakit score`` as a library call: inputs -> jobs -> an engine -> committed parts -> final files."""

from __future__ import annotations

import time

from murakit.errors import MurakitError
from murakit.scoring.inputs import collect_jobs
from murakit.scoring.progress import Progress
from murakit.scoring.store import PartWriter, ResultStore, Summary, job_key
from murakit.scoring.tables import FORMATS, require_format

ENGINES = ("local", "ray")
DEFAULT_BATCH = 32


def batches_todo(jobs: list, done: set, size: int) -> list:
    """The batches of ``size`` jobs (fixed by the job list) that still hold undone jobs.

    Batches are cut from the whole job list, not from what is left, so a resumed run feeds the
    model exactly the batches an uninterrupted run does.
    """
    out = []
    for i in range(0, len(jobs), size):
        left = [j for j in jobs[i:i + size] if j.path not in done]
        if left:
            out.append(left)
    return out


def require_engine(engine: str) -> None:
    """Fail now (ModuleNotFoundError naming ray) rather than after the output folder exists.

    Only looked up, not imported: the Ray engine sets Ray's environment before importing it.
    """
    import importlib.util

    if engine == "ray" and importlib.util.find_spec("ray") is None:
        raise ModuleNotFoundError("No module named 'ray'", name="ray")


def _check(fmt: str, engine: str, workers: int, batch_size: int, part_rows: int) -> None:
    if fmt not in FORMATS:
        raise MurakitError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if engine not in ENGINES:
        raise MurakitError(f"--engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    if workers < 1:
        raise MurakitError(f"--workers must be at least 1, got {workers}")
    if not 1 <= batch_size <= 4096:
        raise MurakitError(f"--batch-size must be in [1, 4096], got {batch_size}")
    if part_rows < 1:
        raise MurakitError(f"--part-rows must be at least 1, got {part_rows}")


def score(inputs, model, out, fmt: str = "csv", engine: str = "local", workers: int | None = None,
          batch_size: int = DEFAULT_BATCH, progress: bool = True, part_rows: int = 4096, gate: str = "refuse",
          operating_point: str | None = None) -> Summary:
    """Score every image of ``inputs`` with ``model`` into the folder ``out`` (resumable).

    Parameters
    ----------
    inputs : list of str
        Image files, folders, CSV lists of paths (see :mod:`murakit.scoring.inputs`).
    model : str or Path
        Exported ``.onnx`` model; its card gives the preprocessing and the threshold.
    out : str or Path
        Output folder (see :mod:`murakit.scoring.store`).
    fmt : {"csv", "jsonl", "parquet"}
    engine : {"local", "ray"}
    workers : int, optional
        Decode/preprocess parallelism: processes (local) or Ray actors; default all usable cores.
    batch_size : int
        Images per onnxruntime call.
    progress : bool
        Show the progress line on stderr.
    part_rows : int
        Rows per committed part (at most ~10 s of work is redone after a kill).
    gate : {"refuse", "warn", "off"}
        The input gate: a refused image is a failure row with reason ``gate``.
    operating_point : str, optional
        One of the card's operating points (default ``youden``).

    Raises
    ------
    MurakitError, EdgeError
        Bad arguments, unusable model, unreadable inputs, an output folder of another job.
    """
    from edge.cpu import usable_cores
    from murakit.pools import refuse_in_worker_start
    from murakit.scoring.work import ModelSpec

    refuse_in_worker_start()  # a worker re-running an unguarded script: no second writer of OUT
    workers = usable_cores() if workers is None else workers
    _check(fmt, engine, workers, batch_size, part_rows)
    require_format(fmt)
    require_engine(engine)
    spec = ModelSpec(str(model), gate, operating_point)
    predictor = spec.load(threads=1)  # a bad model fails here, before any worker starts
    jobs = collect_jobs(inputs)
    store = ResultStore(out, fmt)
    answer = {k: v for k, v in (("gate", gate), ("operating_point", predictor.operating_point))
              if v not in ("refuse", "youden")}
    store.open(job_key(inputs, predictor.card, fmt, answer))
    done = {r["path"] for r in store.read_parts()}
    todo = batches_todo(jobs, done, batch_size)
    t0 = time.perf_counter()
    bar = Progress(len(jobs), sum(j.path in done for j in jobs), enabled=progress)

    def emit(rows):
        writer.add(rows)
        bar.update(len(rows), sum(1 for r in rows if r["error"]))

    with PartWriter(store, rows=part_rows) as writer:
        try:
            _engine(engine)(todo, spec, workers, emit)
        finally:
            bar.close()
    n_now = sum(len(b) for b in todo)
    return store.assemble(jobs, predictor, n_now, time.perf_counter() - t0)


def _engine(name: str):
    if name == "ray":
        from murakit.scoring.ray_engine import run_ray

        return run_ray
    from murakit.scoring.local import run_local

    return run_local
