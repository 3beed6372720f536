"""Side-by-side latency of ONNX models: interleaved calls, per-round medians, ratios with spread.

On a shared machine absolute times drift by 2x within a minute; only ratios measured side by
side mean anything. So the models take turns call by call (A B C A B C ...), each round gives
one median per model, and a ratio is reported as the median over rounds of the per-round ratio,
with its min and max.
"""

from __future__ import annotations

import time

import numpy as np


def ort_session(model, threads: int | None = None):
    """An onnxruntime CPU session of a model (proto, bytes or path), ``threads`` intra-op threads."""
    import onnxruntime as ort

    src = model.SerializeToString() if hasattr(model, "SerializeToString") else model
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if threads:
        opts.intra_op_num_threads, opts.inter_op_num_threads = int(threads), 1
    return ort.InferenceSession(src if isinstance(src, bytes) else str(src), sess_options=opts,
                                providers=["CPUExecutionProvider"])


def interleaved_ms(fns: dict, rounds: int = 5, calls: int = 10, warmup: int = 2, seed: int = 0) -> dict:
    """Per-round median wall time (ms) of each zero-argument callable, calls interleaved.

    Parameters
    ----------
    fns : dict
        ``{name: fn}``; ``fn()`` runs one inference.
    rounds, calls : int
        ``rounds`` rounds of ``calls`` turns; each turn calls every fn once, in a shuffled order
        (a fixed order biased the model that ran right after another runtime had evicted
        the caches: two identical ONNX files timed apart; docs/performance.md, "Design choices").
    warmup : int
        Untimed calls of each fn first (allocations, thread-pool start).
    seed : int
        Seeds the turn orders.

    Returns
    -------
    dict
        ``{name: list of float (rounds,)}``: the median of each round, in milliseconds.
    """
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    out = {k: [] for k in fns}
    names, rng = list(fns), np.random.default_rng(seed)
    for _ in range(rounds):
        times = {k: [] for k in fns}
        for _ in range(calls):
            for k in rng.permutation(names):
                t0 = time.perf_counter()
                fns[k]()
                times[k].append((time.perf_counter() - t0) * 1e3)
        for k, t in times.items():
            out[k].append(float(np.median(t)))
    return out


def ratio_summary(rounds_ms: dict, base: str) -> dict:
    """``{name: {"ms", "ratio", "ratio_min", "ratio_max"}}`` of per-round medians against ``base``.

    ``ms`` is the median over rounds; ``ratio`` the median of the per-round ratios
    ``name / base`` (< 1: faster than base), ``ratio_min`` / ``ratio_max`` their spread.
    """
    ref = np.asarray(rounds_ms[base], dtype=np.float64)
    out = {}
    for name, ms in rounds_ms.items():
        r = np.asarray(ms, dtype=np.float64) / ref
        out[name] = {"ms": float(np.median(ms)), "ratio": float(np.median(r)), "ratio_min": float(r.min()),
                     "ratio_max": float(r.max())}
    return out


def onnx_side_by_side(models: dict, inputs: dict, base: str, rounds: int = 5, calls: int | None = None,
                      threads: int | None = None, input_name: str = "image") -> dict:
    """Time ONNX models side by side at several batch sizes.

    Parameters
    ----------
    models : dict
        ``{name: proto, bytes or path}``; ``base`` is one of them (e.g. the float model).
    inputs : dict
        ``{batch size: float32 array (B, ...)}``.
    rounds : int
    calls : int or None
        Turns per round; None: about 64 images per round per model (at least 3 calls).
    threads : int or None
        onnxruntime intra-op threads (None: onnxruntime's default, as on a device).

    Returns
    -------
    dict
        ``{"batch_B": {name: {"ms", "ratio", "ratio_min", "ratio_max"}}}``.
    """
    sessions = {k: ort_session(m, threads) for k, m in models.items()}
    out = {}
    for batch, x in inputs.items():
        feed = {input_name: np.ascontiguousarray(x, dtype=np.float32)}
        fns = {k: (lambda s=s, feed=feed: s.run(None, feed)) for k, s in sessions.items()}
        n = calls or max(3, 64 // int(batch))
        out[f"batch_{batch}"] = ratio_summary(interleaved_ms(fns, rounds=rounds, calls=n), base)
    return out
