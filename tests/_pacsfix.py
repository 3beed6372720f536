"""PACS test helpers: dciodvfy (dicom3tools) on written objects, and a real Orthanc on loopback.

A missing tool skips the tests that need it, except in CI: ``.ci/run`` installs ``orthanc``,
``orthanc-dicomweb`` and ``dicom3tools`` and sets ``MURAKIT_REQUIRE_PACS=1``, so there a missing
tool fails the tests instead of skipping them.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

ORTHANC = os.environ.get("MURAKIT_ORTHANC", "/usr/sbin/Orthanc")
DICOMWEB_PLUGIN = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"
REQUIRED = os.environ.get("MURAKIT_REQUIRE_PACS") == "1"


def need(what: str, missing: bool) -> None:
    """Skip (or, with MURAKIT_REQUIRE_PACS=1, fail) when ``what`` is missing."""
    if not missing:
        return
    msg = f"{what} is missing (apt-get install orthanc orthanc-dicomweb dicom3tools; .ci/run installs them)"
    if REQUIRED:
        pytest.fail(msg)
    pytest.skip(msg)


def dciodvfy(path) -> list:
    """The ``Error`` lines dciodvfy prints for a DICOM file (empty: a valid object)."""
    need("dciodvfy", shutil.which("dciodvfy") is None)
    out = subprocess.run(["dciodvfy", str(path)], check=False, capture_output=True, text=True, timeout=60)
    return [line for line in (out.stdout + out.stderr).splitlines() if line.startswith("Error")]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def orthanc_config(storage: Path, http_port: int, dicom_port: int, modalities: dict, dicomweb: bool = True) -> dict:
    """The Orthanc configuration the tests (and README's "Connecting to a PACS") use: loopback
    only, no authentication, temporary storage, murakit's node as a known modality."""
    cfg = {
        "Name": "MURAKIT-TEST", "StorageDirectory": str(storage / "db"), "IndexDirectory": str(storage / "db"),
        "HttpPort": http_port, "DicomPort": dicom_port, "DicomAet": "ORTHANC",
        "RemoteAccessAllowed": False, "AuthenticationEnabled": False, "HttpServerEnabled": True,
        "DicomServerEnabled": True, "DicomModalities": modalities, "DicomAlwaysAllowStore": False,
        "DicomCheckCalledAet": True, "DicomScuTimeout": 10, "StableAge": 1, "HttpTimeout": 20,
        "Plugins": [DICOMWEB_PLUGIN] if dicomweb else [], "ConcurrentJobs": 2, "SaveJobs": False,
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": True, "Ssl": False},
    }
    return cfg


class Orthanc:
    """A real Orthanc process on 127.0.0.1 with a generated configuration (free ports, temp storage).

    ``modalities`` maps a name to ``[AET, host, port]`` (Orthanc's DicomModalities format).
    """

    def __init__(self, root: Path, modalities: dict):
        need("Orthanc", not Path(ORTHANC).exists())
        need("Orthanc's DICOMweb plugin", not Path(DICOMWEB_PLUGIN).exists())
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.http_port, self.dicom_port = free_port(), free_port()
        self.modalities = modalities
        self.proc = None
        self.url = f"http://127.0.0.1:{self.http_port}"

    def start(self, timeout: float = 30.0) -> Orthanc:
        cfg = orthanc_config(self.root, self.http_port, self.dicom_port, self.modalities)
        (self.root / "orthanc.json").write_text(json.dumps(cfg, indent=2))
        self.log = open(self.root / "orthanc.log", "ab")  # noqa: SIM115  closed in stop()
        self.proc = subprocess.Popen([ORTHANC, str(self.root / "orthanc.json")], stdout=self.log,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"Orthanc exited ({self.proc.returncode}); see {self.root / 'orthanc.log'}")
            try:
                self.get("/system")
                return self
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"Orthanc did not answer within {timeout:.0f} s")

    def stop(self, kill: bool = False) -> None:
        """SIGTERM and wait (Orthanc takes ~3 s to stop its HTTP server); ``kill``: SIGKILL at
        once, for a final teardown whose storage is thrown away."""
        if self.proc is not None and self.proc.poll() is None:
            (self.proc.kill if kill else self.proc.terminate)()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        if getattr(self, "log", None):
            self.log.close()
            self.log = None

    def request(self, method: str, path: str, body: bytes | None = None, ctype: str = "application/json"):
        req = urllib.request.Request(self.url + path, data=body, method=method,
                                     headers={"Content-Type": ctype} if body is not None else {})
        with urllib.request.urlopen(req, timeout=60) as r:
            data = r.read()
        return json.loads(data) if data[:1] in (b"{", b"[") else data

    def get(self, path: str):
        return self.request("GET", path)

    def post(self, path: str, payload) -> dict:
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        ctype = "application/dicom" if isinstance(payload, bytes) else "application/json"
        return self.request("POST", path, body, ctype)

    def upload(self, paths) -> list:
        """Upload DICOM files by REST; returns Orthanc's instance ids."""
        return [self.post("/instances", Path(p).read_bytes())["ID"] for p in paths]

    def study_instances(self, study_uid: str) -> list:
        """[(instance id, tags dict)] of every instance Orthanc holds in the study."""
        found = self.post("/tools/find", {"Level": "Study", "Query": {"StudyInstanceUID": study_uid}})
        out = []
        for study in found:
            for inst in self.get(f"/studies/{study}/instances"):
                out.append((inst["ID"], inst["MainDicomTags"]))
        return out

    def instance_file(self, instance_id: str) -> bytes:
        return self.request("GET", f"/instances/{instance_id}/file")


def wait_for(predicate, timeout: float, what: str, step: float = 0.1):
    """Poll ``predicate`` until it returns a truthy value (returned) or fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(step)
