"""edge-serve under load, over 127.0.0.1, with bounded loops (issue 14, "Under load").

Starts two real ``edge-serve`` processes on the same model, one with batching (default) and
one with ``--no-batching`` (each request its own onnxruntime call), and measures, interleaved
round by round so both see the same machine load:

* throughput (requests/s) and p50/p99 latency at concurrency 1, 8, 16, 32 (one single-image
  upload per request, keep-alive connections, a small asyncio socket client so the load
  generator costs little CPU); every answer is checked against the reference probability;
* RSS of the batching server over 10,000 requests (growth after warm-up);
* the fuzz classes of the hardening issue as uploads (hundreds of malformed files in a row),
  then a correct upload, which must still get the reference probability;
* the in-process floor: CPU per request of decoding, preprocessing and scoring the same upload
  bytes in one plain loop (no HTTP), beside the server's CPU per request (target <= 1.5x).

Usage::

    python benchmarks/bench_serve.py --model runs/default/export/cnn.onnx [--rounds 3] [--json out.json]

Prints tables and the target (batching at concurrency 16 >= 2x one-request-at-a-time).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import re
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from _edgefix import radiograph
from _servefix import Server, jpeg_bytes, malformed_uploads, png_bytes

BOUNDARY = "benchboundary"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=str(ROOT / "runs/default/export/cnn.onnx"))
    p.add_argument("--image", help="PNG to upload (default: a view of the run's first positive test study)")
    p.add_argument("--concurrency", default="1,8,16,32")
    p.add_argument("--requests", type=int, default=400, help="requests per measurement (c=1: a quarter)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds of every (mode, concurrency)")
    p.add_argument("--rss-requests", type=int, default=10_000, help="0 (or < 2000) skips the RSS run")
    p.add_argument("--fuzz", type=int, default=300, help="malformed uploads in a row (0 skips)")
    p.add_argument("--process-calls", type=int, default=10, help="edge-predict processes, one per image, for context")
    p.add_argument("--server-args", default="", help="extra edge-serve arguments for both servers")
    p.add_argument("--json", help="also write the figures to this JSON file")
    p.add_argument("--profile", action="store_true",
                   help="also sample the batching server with py-spy at c=1 and c=16 (bench-only tool)")
    return p.parse_args(argv)


def default_image(model: Path) -> Path | None:
    """image1.png of the first positive study in the run's MURA-v1.1/valid (synthetic demo data)."""
    data = model.resolve().parents[1] / "data"
    csv = data / "MURA-v1.1" / "valid_labeled_studies.csv"
    if not csv.exists():
        return None
    for line in csv.read_text().splitlines():
        study, label = line.rsplit(",", 1)
        if label.strip() == "1" and (data / study / "image1.png").exists():
            return data / study / "image1.png"
    return None


def request_bytes(name: str, data: bytes) -> bytes:
    body = (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\n"
            "Content-Type: application/octet-stream\r\n\r\n").encode() + data + f"\r\n--{BOUNDARY}--\r\n".encode()
    head = (f"POST /v1/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-data; "
            f"boundary={BOUNDARY}\r\nContent-Length: {len(body)}\r\n\r\n").encode()
    return head + body


async def read_response(reader) -> tuple:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))
    return status, await reader.readexactly(length)


async def _load(port: int, requests: list, concurrency: int, deadline_s: float) -> dict:
    """Send ``requests`` (bytes each) over ``concurrency`` keep-alive connections."""
    todo = collections.deque(enumerate(requests))
    latencies, answers = [], [None] * len(requests)
    deadline = time.monotonic() + deadline_s

    async def worker():
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while todo and time.monotonic() < deadline:
                i, req = todo.popleft()
                t0 = time.perf_counter()
                writer.write(req)
                await writer.drain()
                answers[i] = await read_response(reader)
                latencies.append(time.perf_counter() - t0)
        finally:
            writer.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall = time.perf_counter() - t0
    done = [a for a in answers if a is not None]
    return {"n": len(done), "wall_s": wall, "latencies": latencies, "answers": done}


def load(port, requests, concurrency, deadline_s=300.0) -> dict:
    return asyncio.run(_load(port, requests, concurrency, deadline_s))


def check_answers(answers: list, reference: float) -> float:
    """Max |p - reference| over answers; every answer must be a 200."""
    bad = [s for s, _ in answers if s != 200]
    if bad:
        raise SystemExit(f"bench_serve: {len(bad)} non-200 answers under load: {collections.Counter(bad)}")
    return max(abs(json.loads(b)["probability"] - reference) for _, b in answers)


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process, all its threads (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pct(values, q) -> float:
    return float(np.percentile(np.asarray(values) * 1e3, q))


def measure_load(servers: dict, req: bytes, reference: float, levels: list, n: int, rounds: int) -> dict:
    """{mode: {c: [per-round {"rps", "p50", "p99", "batch", "cpu_ms"}]}}, modes interleaved per round."""
    out = {mode: {c: [] for c in levels} for mode in servers}
    worst = 0.0
    for r in range(rounds):
        for c in levels:
            order = list(servers.items())
            for mode, srv in order[::-1] if (r + levels.index(c)) % 2 else order:  # alternate who goes first
                count = max(n // 4, 50) if c == 1 else n
                load(srv.port, [req] * min(count, 4 * c), c)  # warm the connections and this batch size
                before, cpu0 = _batch_totals(srv), cpu_seconds(srv.proc.pid)
                res = load(srv.port, [req] * count, c)
                cpu_ms = 1e3 * (cpu_seconds(srv.proc.pid) - cpu0) / res["n"]
                worst = max(worst, check_answers(res["answers"], reference))
                after = _batch_totals(srv)
                calls = after[1] - before[1]
                out[mode][c].append({"rps": res["n"] / res["wall_s"], "p50": pct(res["latencies"], 50),
                                     "p99": pct(res["latencies"], 99), "cpu_ms": cpu_ms,
                                     "batch": (after[0] - before[0]) / calls if calls else float("nan")})
                print(f"  round {r + 1} c={c:<3d} {mode:<11s} {out[mode][c][-1]['rps']:7.1f} req/s  "
                      f"p50 {out[mode][c][-1]['p50']:6.1f} ms  p99 {out[mode][c][-1]['p99']:6.1f} ms  "
                      f"mean batch {out[mode][c][-1]['batch']:.1f}  server CPU {cpu_ms:.1f} ms/req", flush=True)
    out["max_abs_diff_vs_reference"] = worst
    return out


def _batch_totals(server: Server) -> tuple:
    import httpx

    text = httpx.get(server.url + "/metrics").text
    get = lambda name: float(re.search(rf"^{name} (\S+)$", text, re.MULTILINE).group(1))
    return get("edge_serve_batch_images_sum"), get("edge_serve_batch_images_count")


def summarise(results: dict, levels: list) -> list:
    rows = []
    for mode in ("batching", "no-batching"):
        for c in levels:
            rs = results[mode][c]
            rps = [x["rps"] for x in rs]
            rows.append({"mode": mode, "c": c, "rps_median": statistics.median(rps), "rps_min": min(rps),
                         "rps_max": max(rps), "p50_ms": statistics.median(x["p50"] for x in rs),
                         "p99_ms": statistics.median(x["p99"] for x in rs),
                         "p99_ms_max": max(x["p99"] for x in rs),
                         "mean_batch": statistics.median(x["batch"] for x in rs),
                         "cpu_ms_per_req": statistics.median(x["cpu_ms"] for x in rs)})
    return rows


def ratios(results: dict, c: int, base_mode: str, base_c: int) -> list:
    """Per-round throughput ratio batching@c / base_mode@base_c (same round)."""
    return [a["rps"] / b["rps"] for a, b in zip(results["batching"][c], results[base_mode][base_c])]


def measure_rss(server: Server, req: bytes, reference: float, total: int, concurrency: int = 8) -> dict:
    """RSS (KiB) every 1,000 requests; growth from the first sample (after 1,000 = warm-up)."""
    samples, worst = [server.rss_kb()], 0.0
    step = 1000
    for _ in range(total // step):
        res = load(server.port, [req] * step, concurrency)
        worst = max(worst, check_answers(res["answers"], reference))
        samples.append(server.rss_kb())
    warm = samples[1]
    return {"rss_kib": samples, "requests": total, "growth_after_warmup_pct": 100.0 * (samples[-1] - warm) / warm,
            "max_abs_diff_vs_reference": worst}


def measure_fuzz(server: Server, png: bytes, req: bytes, reference: float, n: int) -> dict:
    """Malformed uploads one after another, then the correct one."""
    jpeg = jpeg_bytes(radiograph(300, 240, 5))
    per_kind = collections.defaultdict(lambda: {"statuses": collections.Counter(), "ms": []})
    rss_before = server.rss_kb()
    for kind, data in malformed_uploads(png, jpeg, n, seed=7):
        res = load(server.port, [request_bytes(f"{kind}.png", data)], 1)
        status, body = res["answers"][0]
        json.loads(body)  # every answer is JSON
        per_kind[kind]["statuses"][status] += 1
        per_kind[kind]["ms"].append(res["latencies"][0] * 1e3)
    after = load(server.port, [req], 1)["answers"][0]
    diff = check_answers([after], reference)
    return {"n": n, "rss_kib_before": rss_before, "rss_kib_after": server.rss_kb(), "correct_after": diff <= 1e-6,
            "abs_diff_after": diff, "alive": server.proc.poll() is None,
            "classes": {k: {"statuses": dict(v["statuses"]), "median_ms": statistics.median(v["ms"]),
                            "max_ms": max(v["ms"])} for k, v in per_kind.items()}}


def measure_process_per_call(model: Path, png: bytes, calls: int) -> dict:
    """Today's way in without a server: one ``edge-predict`` process per image, one after another."""
    import subprocess
    import tempfile

    script = Path(sys.executable).parent / "edge-predict"
    with tempfile.TemporaryDirectory() as tmp:
        image = Path(tmp) / "view.png"
        image.write_bytes(png)
        cmd = [str(script), str(image), "--model", str(model), "--json"]
        subprocess.run(cmd, check=True, capture_output=True)  # warm the file cache
        t0 = time.perf_counter()
        for _ in range(calls):
            subprocess.run(cmd, check=True, capture_output=True)
        wall = time.perf_counter() - t0
    return {"calls": calls, "per_s": calls / wall, "ms_per_call": 1e3 * wall / calls}


def measure_inference_ceiling(model: Path, size: int, max_batch: int = 32, rounds: int = 5) -> dict:
    """What batching can save at most: 32 batch-1 runs vs one batch-32 run, interleaved, in-process."""
    from edge.predictor import Predictor

    pred = Predictor(model, threads=1)
    x1 = pred.model_input(np.zeros((1, size, size), np.uint8))
    xb = pred.model_input(np.zeros((max_batch, size, size), np.uint8))
    one, batched = [], []
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(max_batch * 4):
            pred.run(x1)
        one.append((time.perf_counter() - t0) * 1e3 / (max_batch * 4))
        t0 = time.perf_counter()
        for _ in range(4):
            pred.run(xb)
        batched.append((time.perf_counter() - t0) * 1e3 / (max_batch * 4))
    return {"batch1_ms_per_image": statistics.median(one), f"batch{max_batch}_ms_per_image": statistics.median(batched),
            "speedup": [a / b for a, b in zip(one, batched)]}


def measure_floor(model: Path, png: bytes, calls: int = 200, rounds: int = 5) -> dict:
    """The in-process floor of one request: the same upload bytes decoded (``load_array``),
    preprocessed and scored at batch 1 by a Predictor with the server's defaults (1 thread),
    no HTTP, no threads, no JSON. CPU ms per request (process time), median of ``rounds``."""
    from edge.loader import load_array
    from edge.predictor import Predictor

    pred = Predictor(model, threads=1)
    per_call = []
    for r in range(rounds + 1):  # round 0 warms caches
        t0 = time.process_time()
        for _ in range(calls):
            arr, _ = load_array(png, pred.config.dicom_voi)
            pred.run(pred.model_input(pred.preprocess(arr)))
        if r:
            per_call.append((time.process_time() - t0) * 1e3 / calls)
    return {"cpu_ms_per_request": statistics.median(per_call), "rounds": per_call}


# py-spy frames that say where a request's CPU goes: a sample counts for the first group in this
# order whose frame is anywhere on its stack (the work itself before the machinery around it)
PROFILE_GROUPS = (
    ("onnxruntime run", ("Predictor.run", "Session.run")),
    ("PNG/JPEG decode", ("imdecode_captured", "decode (edge/image.py")),
    ("DICOM read", ("read_dicom",)),
    ("preprocess", ("preprocess_with_info", "model_input")),
    ("multipart parse", ("parse_uploads",)),
    ("body read", ("read_body",)),
    ("JSON answer", ("JSONResponse", "render", "to_dict", "_respond")),
    ("batcher", ("Batcher", "batcher.py")),
    ("HTTP (uvicorn, starlette)", ("httptools_impl", "h11_impl", "starlette", "fastapi", "Guard.__call__")),
    ("thread hand-off", ("run_in_executor", "_worker (concurrent/futures", "thread.py")),
    ("event loop", ("run_forever", "_run_once", "uvloop")),
)


def _group(stack: str) -> str:
    for name, keys in PROFILE_GROUPS:
        if any(k in stack for k in keys):
            return name
    return "other"


def profile_server(server: Server, req: bytes, concurrency: int, requests: int) -> dict | None:
    """py-spy (bench-only, when installed) on the server while it answers ``requests`` at
    ``concurrency``: {"groups": {group: share of samples}, "top": [(function, self share)]}."""
    import shutil
    import subprocess
    import tempfile

    spy = shutil.which("py-spy") or (str(Path(sys.executable).parent / "py-spy")
                                     if (Path(sys.executable).parent / "py-spy").exists() else None)
    if spy is None:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "raw.txt"
        proc = subprocess.Popen([spy, "record", "--pid", str(server.proc.pid), "--rate", "500", "--format", "raw",
                                 "--output", str(out), "--nonblocking"], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        time.sleep(1.0)  # py-spy attaches
        load(server.port, [req] * requests, concurrency)
        proc.send_signal(2)  # SIGINT: py-spy writes what it sampled and exits
        proc.wait(timeout=60)
        lines = out.read_text().splitlines() if out.exists() else []
    groups, leaves, total = collections.Counter(), collections.Counter(), 0
    for line in lines:
        stack, _, n = line.rpartition(" ")
        if not n.isdigit():
            continue
        n = int(n)
        total += n
        frames = stack.split(";")
        groups[_group(stack)] += n
        leaves[frames[-1]] += n
    if not total:
        return None
    return {"samples": total, "groups": {k: v / total for k, v in groups.most_common()},
            "top": [(k, v / total) for k, v in leaves.most_common(12)]}


def main(argv=None) -> int:
    args = parse_args(argv)
    model = Path(args.model)
    if not model.exists():
        print(f"bench_serve: {model} is missing: run `make demo` or pass --model", file=sys.stderr)
        return 2
    image = Path(args.image) if args.image else default_image(model)
    png = image.read_bytes() if image else png_bytes(radiograph(512, 400, 3))
    req = request_bytes("view.png", png)
    levels = [int(c) for c in args.concurrency.split(",")]
    extra = args.server_args.split()
    print(f"model {model}  image {image or 'generated 512x400'} ({len(png):,} bytes)  rounds {args.rounds}")

    process = measure_process_per_call(model, png, args.process_calls) if args.process_calls else None
    from edge.predictor import Predictor

    ceiling = measure_inference_ceiling(model, Predictor(model).config.size)
    floors = [measure_floor(model, png)["cpu_ms_per_request"]]
    with Server(model, *extra) as on, Server(model, "--no-batching", *extra) as off:
        reference = json.loads(load(on.port, [req], 1)["answers"][0][1])["probability"]
        results = measure_load({"batching": on, "no-batching": off}, req, reference, levels, args.requests,
                               args.rounds)
        floors.append(measure_floor(model, png)["cpu_ms_per_request"])  # before and after: the load moves
        profiles = {c: profile_server(on, req, c, max(200, args.requests)) for c in (1, 16)} if args.profile else {}
        rss = measure_rss(on, req, reference, args.rss_requests) if args.rss_requests >= 2000 else None
        fuzz = measure_fuzz(on, png, req, reference, args.fuzz) if args.fuzz else None

    rows = summarise(results, levels)
    print(f"\n{'mode':<12s} {'c':>3s} {'req/s (median [min, max])':>28s} {'p50 ms':>8s} {'p99 ms':>8s} "
          f"{'batch':>6s} {'CPU ms/req':>10s}")
    for r in rows:
        print(f"{r['mode']:<12s} {r['c']:>3d} {r['rps_median']:10.1f} [{r['rps_min']:6.1f}, {r['rps_max']:6.1f}] "
              f"{r['p50_ms']:8.1f} {r['p99_ms']:8.1f} {r['mean_batch']:6.1f} {r['cpu_ms_per_req']:10.2f}")
    floor = statistics.median(floors)
    figures = {"rows": rows, "max_abs_diff_vs_reference": results["max_abs_diff_vs_reference"], "rss": rss,
               "fuzz": fuzz, "image_bytes": len(png), "rounds": args.rounds, "process_per_call": process,
               "inference_ceiling": ceiling, "floor_cpu_ms": floors}
    print(f"\nin-process floor (decode + preprocess + batch-1 inference of the same bytes): {floor:.2f} ms CPU "
          f"per request (before / after the load: {floors[0]:.2f} / {floors[1]:.2f})")
    for r in rows:
        r["cpu_vs_floor"] = r["cpu_ms_per_req"] / floor
        print(f"  server CPU / floor, {r['mode']:<11s} c={r['c']:<3d} {r['cpu_vs_floor']:.2f}x "
              f"(target <= 1.5x at c=1 and 16)")
    if 16 in levels and 1 in levels:
        vs_c1 = ratios(results, 16, "no-batching", 1)
        vs_off = ratios(results, 16, "no-batching", 16)
        figures["c16_batching_vs_c1_one_at_a_time"] = vs_c1
        figures["c16_batching_vs_c16_no_batching"] = vs_off
        print(f"\nbatching c=16 / one request at a time (c=1): median {statistics.median(vs_c1):.2f}x "
              f"[{min(vs_c1):.2f}, {max(vs_c1):.2f}]  (target >= 2x)")
        print(f"batching c=16 / no batching c=16:            median {statistics.median(vs_off):.2f}x "
              f"[{min(vs_off):.2f}, {max(vs_off):.2f}]")
    sp = ceiling["speedup"]
    cpu16 = next(r["cpu_ms_per_req"] for r in rows if r["mode"] == "batching" and r["c"] == max(levels))
    print(f"inference alone: batch 1 {ceiling['batch1_ms_per_image']:.3f} ms/image, batch 32 "
          f"{ceiling['batch32_ms_per_image']:.3f} ms/image (batch-32 speed-up {statistics.median(sp):.2f}x "
          f"[{min(sp):.2f}, {max(sp):.2f}]); batch-1 inference is "
          f"{100 * ceiling['batch1_ms_per_image'] / cpu16:.0f}% of the server's {cpu16:.1f} ms CPU per request "
          f"at c={max(levels)}, the most batching could save")
    print(f"capacity if the machine's {os.cpu_count()} cores were free: ~{os.cpu_count() * 1e3 / cpu16:.0f} req/s "
          f"(cores / CPU per request; load-independent estimate)")
    if process:
        print(f"edge-predict, one process per image: {process['per_s']:.1f} images/s "
              f"({process['ms_per_call']:.0f} ms per call, {process['calls']} calls)")
    print(f"load average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores (other work on the machine)")
    print(f"answers under load vs reference: max |diff| {results['max_abs_diff_vs_reference']:.2e}")
    if rss:
        print(f"RSS over {rss['requests']:,} requests (KiB, every 1,000): {rss['rss_kib']}")
        print(f"RSS growth after warm-up: {rss['growth_after_warmup_pct']:+.1f}% (target < 10%)")
    if fuzz:
        print(f"fuzz: {fuzz['n']} malformed uploads in a row; alive {fuzz['alive']}; correct after "
              f"{fuzz['correct_after']}; RSS {fuzz['rss_kib_before']:,} -> {fuzz['rss_kib_after']:,} KiB")
        for kind, v in fuzz["classes"].items():
            print(f"  {kind:<22s} {v['statuses']}  median {v['median_ms']:.1f} ms  max {v['max_ms']:.1f} ms")
    for c, prof in profiles.items():
        if prof is None:
            print(f"\nprofile c={c}: py-spy not installed or not permitted (pip install py-spy)")
            continue
        figures[f"profile_c{c}"] = prof
        print(f"\nwhere the batching server's samples go at c={c} (py-spy, {prof['samples']} samples, first "
              f"group in priority order): " + ", ".join(f"{k} {100 * v:.0f}%" for k, v in prof["groups"].items()))
        for frame, share in prof["top"]:
            print(f"  {100 * share:5.1f}%  {frame}")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
