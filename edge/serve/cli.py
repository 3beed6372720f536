"""``edge-serve``: serve an exported murakit model over HTTP (the ``serve`` extra).

Exit codes: 0 after a clean shutdown (SIGTERM / Ctrl-C: requests in flight finish, new
connections are refused); 2 when the server cannot start (extra missing, bad model, unsafe
bind, port in use, bad limit). Errors are one line on stderr.
"""

from __future__ import annotations

import argparse
import importlib.util
import socket
import sys

from edge.cli import DEFAULT_MODEL, MODEL_ENV, default_model
from edge.errors import EdgeError
from edge.serve.limits import Limits, ServeError, check_bind, read_token

PROG = "edge-serve"
EXTRA_MODULES = {"fastapi": "fastapi", "uvicorn": "uvicorn", "python_multipart": "python-multipart",
                 "prometheus_client": "prometheus-client"}
MB = 1024 * 1024


def build_parser() -> argparse.ArgumentParser:
    d = Limits()
    p = argparse.ArgumentParser(
        prog=PROG, description="Serve an exported murakit model: POST /v1/predict, GET /v1/model, /healthz, "
                               "/readyz, /metrics and a page at /.",
        epilog=f"Model: --model, else ${MODEL_ENV}, else {DEFAULT_MODEL}. A --host other than loopback needs "
               "--token-file (or --insecure). Exit codes: 0 clean shutdown, 2 cannot start.")
    p.add_argument("--model", help="exported .onnx model (CNN float/INT8 or baseline)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="TCP port (default 8000; 0 = any free port)")
    p.add_argument("--token-file", help="file holding a bearer token that clients must send")
    p.add_argument("--insecure", action="store_true", help="allow a non-loopback --host without a token")
    p.add_argument("--threads", type=int, default=1,
                   help="onnxruntime intra-op threads (default 1: requests already run in parallel, and "
                        "onnxruntime's own pool spins between runs, taking CPU from decoding)")
    p.add_argument("--workers", type=int, default=d.workers, help="decode/preprocess threads (default %(default)s)")
    p.add_argument("--max-body-mb", type=float, default=d.max_body_bytes / MB, help="request body limit in MiB (default %(default)g)")
    p.add_argument("--max-files", type=int, default=d.max_files, help="files (views) per request (default %(default)s)")
    p.add_argument("--max-pixels", type=int, default=d.max_pixels, help="pixels per decoded image (default %(default)s)")
    p.add_argument("--max-inflight", type=int, default=d.max_inflight,
                   help="requests admitted at once; beyond: 503 + Retry-After (default %(default)s)")
    p.add_argument("--timeout", type=float, default=d.timeout_s, help="seconds per request, upload included (default %(default)g)")
    p.add_argument("--max-batch", type=int, default=d.max_batch, help="images per onnxruntime call (default %(default)s)")
    p.add_argument("--max-wait-ms", type=float, default=d.max_wait_ms, help="longest wait to fill a batch (default %(default)g)")
    p.add_argument("--no-batching", action="store_true", help="one onnxruntime call per request")
    p.add_argument("--access-log", action="store_true", help="log every request (stdout)")
    p.add_argument("--gate", choices=("refuse", "warn", "off"), default="refuse",
                   help="the input gate: answer 422 for an upload that does not look like an upper-extremity "
                        "radiograph (default), warn (score it; its gate verdict says passed: false), or off")
    p.add_argument("--operating-point", metavar="NAME",
                   help="one of the model card's operating points (default: youden)")
    return p


def missing_extra() -> list:
    """Distribution names of the serve extra that are not importable."""
    return [dist for mod, dist in EXTRA_MODULES.items() if importlib.util.find_spec(mod) is None]


def limits_from(args) -> Limits:
    return Limits(max_body_bytes=int(args.max_body_mb * MB), max_files=args.max_files, max_pixels=args.max_pixels,
                  max_inflight=args.max_inflight, timeout_s=args.timeout, max_batch=args.max_batch,
                  max_wait_ms=args.max_wait_ms, batching=not args.no_batching, workers=args.workers)


def listen(host: str, port: int) -> socket.socket:
    """A bound, listening TCP socket (so a busy port is one clear line, and port 0 works)."""
    if not 0 <= port <= 65535:
        raise ServeError(f"--port must be in [0, 65535], got {port}")
    try:
        family, kind, proto, _, addr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(addr)
        sock.listen(512)
    except OSError as e:
        raise ServeError(f"cannot listen on {host}:{port} ({e.strerror or e})") from None
    sock.set_inheritable(True)
    return sock


def prepare(args):
    """Check everything that can fail before serving; returns (predictor, limits, token, socket)."""
    from edge.predictor import Predictor

    limits = limits_from(args)
    check_bind(args.host, args.token_file, args.insecure)
    token = read_token(args.token_file) if args.token_file else None
    predictor = Predictor(args.model or default_model(), threads=args.threads, gate=args.gate,
                          operating_point=args.operating_point)
    warm_up(predictor, limits.max_batch)
    return predictor, limits, token, listen(args.host, args.port)


def warm_up(predictor, max_batch: int) -> None:
    """Run the model at batch 1 and at ``max_batch`` once: a model that cannot run fails here."""
    import numpy as np

    size = predictor.config.size
    for n in sorted({1, max_batch}):
        x = predictor.model_input(np.zeros((n, size, size), np.uint8))
        try:
            predictor.probabilities(predictor.run(x))
        except Exception as e:  # noqa: BLE001  onnxruntime raises private exception types
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise ServeError(f"{predictor.model_path}: the model does not run on a batch of {n} ({first[:160]})") \
                from None


def main(argv=None) -> int:
    """Entry point of ``edge-serve``; returns the exit code."""
    args = build_parser().parse_args(argv)
    missing = missing_extra()
    if missing:
        print(f"{PROG}: error: the HTTP service needs the serve extra ({', '.join(missing)} missing): "
              "pip install 'murakit[serve]'", file=sys.stderr)
        return 2
    try:
        predictor, limits, token, sock = prepare(args)
    except EdgeError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    from edge.serve.run import serve

    return serve(predictor, limits, token, sock, access_log=args.access_log)


if __name__ == "__main__":
    sys.exit(main())
