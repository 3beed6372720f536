"""A soak of a running edge-serve: many requests mixing valid, malformed, stalled and oversized
uploads at a given concurrency from 127.0.0.1 (tests/test_serve_soak.py: 500; ``make soak``:
benchmarks/soak_serve.py, 10,000).

Each request's kind is drawn from a seeded generator; each worker thread keeps one httpx
connection for the HTTP kinds and opens a raw socket for a stalled upload (headers and part of
the body, then silence: the server must answer 408 and close). Reported: statuses per kind,
anything outside :data:`DOCUMENTED` (or a transport error), valid answers that differ from
``edge-predict``'s, latency percentiles, and the server's RSS after warm-up and at the end.
"""

from __future__ import annotations

import http.client
import json
import random
import socket
import threading
import time
from collections import Counter

import numpy as np

# the statuses edge-serve documents for POST /v1/predict (README, docs/serving.md)
DOCUMENTED = {200, 400, 408, 413, 415, 422, 503}
KINDS = (("valid_image", 40), ("valid_study", 10), ("malformed", 25), ("stalled", 10), ("oversized", 10),
         ("no_file_field", 5))
TOL = 1e-6


def multipart(parts, boundary="soak0boundary"):
    """(body, content type) of [(field, filename, bytes)]."""
    body = b"".join(f"--{boundary}\r\nContent-Disposition: form-data; name=\"{f}\"; filename=\"{n}\"\r\n"
                    f"Content-Type: application/octet-stream\r\n\r\n".encode() + d + b"\r\n" for f, n, d in parts)
    return body + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


class Soak:
    """The request mix against ``url``.

    Parameters
    ----------
    url : str
        ``http://127.0.0.1:PORT``.
    images : list of (name, bytes)
        Valid PNG uploads; ``expected[name]`` is edge-predict's probability for each, and
        ``expected["study"]`` the study of all of them.
    malformed : list of (kind, bytes)
        Malformed uploads (tests/_servefix.malformed_uploads).
    max_body : int
        The server's body limit (an oversized upload is 1.5 times it).
    """

    def __init__(self, url: str, images: list, expected: dict, malformed: list, max_body: int, seed: int = 0):
        self.url, self.images, self.expected, self.malformed = url, images, expected, malformed
        self.port = int(url.rsplit(":", 1)[1])
        self.max_body = max_body
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.statuses: Counter = Counter()
        self.undocumented: list = []
        self.mismatches: list = []
        self.latency: dict = {}

    def plan(self, n: int) -> list:
        kinds = [k for k, w in KINDS for _ in range(w)]
        return [self.rng.choice(kinds) for _ in range(n)]

    def run(self, plan: list, concurrency: int) -> float:
        """Send ``plan`` with ``concurrency`` threads; returns the seconds it took."""
        import httpx

        it, t0 = iter(list(enumerate(plan))), time.monotonic()
        take = threading.Lock()

        def worker():
            with httpx.Client(timeout=60) as client:
                while True:
                    with take:
                        item = next(it, None)
                    if item is None:
                        return
                    self.one(client, *item)

        threads = [threading.Thread(target=worker) for _ in range(concurrency)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return time.monotonic() - t0

    def one(self, client, i: int, kind: str) -> None:
        t0 = time.perf_counter()
        try:
            status, body = getattr(self, "_" + kind)(client, i)
        except Exception as e:  # noqa: BLE001  a transport error is a finding, not a crash of the soak
            status, body = f"transport error {type(e).__name__}", None
        seconds = time.perf_counter() - t0
        with self.lock:
            self.statuses[(kind, status)] += 1
            self.latency.setdefault(kind, []).append(seconds)
            if status not in DOCUMENTED:
                self.undocumented.append((kind, status))
            elif kind.startswith("valid") and status == 200:
                want = self.expected["study" if kind == "valid_study" else body.get("path")]
                if abs(body["probability"] - want) > TOL:
                    self.mismatches.append((kind, body.get("path"), body["probability"], want))

    def _post(self, client, parts):
        files = [(f, (n, d, "application/octet-stream")) for f, n, d in parts]
        r = client.post(self.url + "/v1/predict", files=files)
        body = r.json()  # every answer is JSON
        return r.status_code, body

    def _valid_image(self, client, i):
        name, data = self.images[i % len(self.images)]
        return self._post(client, [("file", name, data)])

    def _valid_study(self, client, i):
        return self._post(client, [("file", n, d) for n, d in self.images])

    def _malformed(self, client, i):
        kind, data = self.malformed[i % len(self.malformed)]
        status, body = self._post(client, [("file", f"{kind}.png", data)])
        if status == 200 and not kind.endswith("flipped"):  # a flipped byte can leave a valid image
            return f"200 for malformed {kind}", body
        return (400 if status == 200 else status), body  # counted as the refusal it almost was

    def _oversized(self, client, i):
        data = bytes(int(self.max_body * 1.5))
        return self._post(client, [("file", "big.png", data)])

    def _no_file_field(self, client, i):
        return self._post(client, [("other", "a.png", self.images[0][1])])

    def _stalled(self, client, i):
        body, ctype = multipart([("file", "s.png", self.images[0][1])])
        head = (f"POST /v1/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {ctype}\r\n"
                f"Content-Length: {len(body)}\r\n\r\n").encode()
        with socket.create_connection(("127.0.0.1", self.port), timeout=60) as s:
            s.sendall(head + body[:len(body) // 3])
            resp = http.client.HTTPResponse(s)
            resp.begin()
            return resp.status, json.loads(resp.read())

    def report(self) -> dict:
        lat = {k: {"n": len(v), "p50_ms": round(1e3 * float(np.percentile(v, 50)), 1),
                   "p99_ms": round(1e3 * float(np.percentile(v, 99)), 1)} for k, v in sorted(self.latency.items())}
        return {"statuses": {f"{k} {s}": n for (k, s), n in sorted(self.statuses.items(), key=str)},
                "undocumented": self.undocumented[:20], "mismatches": self.mismatches[:20], "latency": lat}
