"""``make soak``: 10,000 requests against a real edge-serve, mixing valid images and studies,
malformed uploads, stalled uploads, oversized bodies and a missing field, at concurrency 32
from 127.0.0.1, with the audit log on (tests/_soak.py; ``make test`` runs 500 of them in
tests/test_serve_soak.py).

    python benchmarks/soak_serve.py [--requests 10000] [--concurrency 32] [--seed 0] [--json out.json]

Checks, and exits 1 when one fails: no status outside the documented ones (200, 400, 408, 413,
415, 422, 503) and no transport error; every valid answer equal to edge-predict's (1e-6); the
server's RSS at the end within 5% of its RSS after a warm-up of 500 requests of the same mix.
Uses the tests' tiny CNN unless ``--model`` is given.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from _edgefix import cnn_model, write_images
from test_serve_soak import make_soak, soak_server

WARM_UP = 500


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--requests", type=int, default=10_000)
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, help="write the report here")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="murakit-soak-") as tmp:
        root = Path(tmp)
        cnn_model(root / "cnn.onnx")
        write_images(root / "study", 3)
        audit = root / "audit.jsonl"
        with soak_server(root / "cnn.onnx", audit, "--audit-max-mb", "64") as srv:
            soak = make_soak(root, srv.url, args.seed)
            soak.run(soak.plan(WARM_UP), args.concurrency)
            rss0 = srv.rss_kb()
            t0 = time.monotonic()
            soak.run(soak.plan(args.requests), args.concurrency)
            seconds = time.monotonic() - t0
            rss1 = srv.rss_kb()
        audit_lines = len(audit.read_text().splitlines())
    report = soak.report()
    growth = (rss1 - rss0) / rss0
    report.update(requests=args.requests, concurrency=args.concurrency, seconds=round(seconds, 1),
                  rps=round(args.requests / seconds, 1), rss_after_warm_up_mib=round(rss0 / 1024, 1),
                  rss_end_mib=round(rss1 / 1024, 1), rss_growth_pct=round(100 * growth, 2), audit_lines=audit_lines)
    print(json.dumps(report, indent=1))
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    ok = not soak.undocumented and not soak.mismatches and growth < 0.05
    print(f"soak: {args.requests} requests in {seconds:.0f} s ({report['rps']} req/s), RSS {rss0 / 1024:.1f} -> "
          f"{rss1 / 1024:.1f} MiB ({100 * growth:+.2f}%), undocumented statuses {len(soak.undocumented)}, "
          f"answers unlike edge-predict's {len(soak.mismatches)}: {'PASS' if ok else 'FAIL'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
