"""The DICOM node's spool: the only place it writes, bounded, and what survives a restart.

Layout (``SPOOL`` is ``edge-serve --spool``)::

    SPOOL/incoming/<StudyInstanceUID>/<SOPInstanceUID>.dcm   received, waiting for the study to be quiet
    SPOOL/work/<StudyInstanceUID>.<n>/...                    a study being scored (moved out of incoming)
    SPOOL/out/<destination>/<SOPInstanceUID>.dcm             a result to send to one destination
    SPOOL/out/<destination>/<SOPInstanceUID>.json            its failed attempts and next retry time

Every file is written to a temporary name and renamed into place, so a crash leaves either
the whole file or none. A result is deleted only after its destination confirmed it (C-STORE
status success / STOW-RS 200): a failed send stays and is retried with backoff, across
restarts, until it is delivered. The SR's and SC's SOP Instance UIDs are derived from the
result, so if the process dies between the peer's confirmation and the deletion, the one
resend carries the same UID and the PACS keeps one copy.

UIDs come from the network; they become file names only after :func:`safe_uid` checked them
(digits and dots, at most 64 characters), so no peer can write outside the spool.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import threading
import time
from pathlib import Path

from edge.errors import EdgeError

_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")


def safe_uid(value) -> str | None:
    """``value`` as a UID usable as a file name, else None."""
    s = str(value or "").strip()
    return s if len(s) <= 64 and _UID.match(s) else None


class Spool:
    """The spool folder with a byte budget.

    Parameters
    ----------
    root : str or Path
    max_bytes : int
        Received instances are refused (C-STORE status A700, out of resources) once the spool
        holds this many bytes. Results are always written: they replace the larger instances
        they were computed from, so the spool shrinks with every study scored.
    """

    def __init__(self, root, max_bytes: int):
        self.root = Path(root)
        self.max_bytes = int(max_bytes)
        self.lock = threading.Lock()
        for sub in ("incoming", "work", "out"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        self._drop_temps()
        self.used = sum(f.stat().st_size for f in self.root.rglob("*") if f.is_file())

    def _drop_temps(self) -> None:
        for f in self.root.rglob(".tmp-*"):
            f.unlink(missing_ok=True)

    # ------------------------------------------------------------ writing
    def _write(self, path: Path, data: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.parent / f".tmp-{path.name}-{threading.get_ident()}"
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)

    def has_room(self, n_bytes: int) -> bool:
        return self.used + n_bytes <= self.max_bytes

    def add_instance(self, study_uid: str, sop_uid: str, data: bytes) -> bool:
        """Store a received instance; False when the spool has no room for it."""
        with self.lock:
            if not self.has_room(len(data)):
                return False
            path = self.root / "incoming" / study_uid / f"{sop_uid}.dcm"
            old = path.stat().st_size if path.exists() else 0
            self._write(path, data)
            self.used += len(data) - old
            return True

    def add_result(self, destinations: list, sop_uid: str, data: bytes) -> None:
        """Queue a result object for every destination (one copy each)."""
        with self.lock:
            for dest in destinations:
                path = self.root / "out" / dest / f"{sop_uid}.dcm"
                old = path.stat().st_size if path.exists() else 0
                self._write(path, data)
                self.used += len(data) - old

    # ------------------------------------------------------------ studies
    def incoming_studies(self) -> list:
        return sorted(p.name for p in (self.root / "incoming").iterdir() if p.is_dir())

    def claim(self, study_uid: str) -> Path | None:
        """Move a study out of incoming (later arrivals start a new batch); its work folder."""
        with self.lock:
            src = self.root / "incoming" / study_uid
            if not src.is_dir():
                return None
            n = 0
            while (dst := self.root / "work" / f"{study_uid}.{n}").exists():
                n += 1
            os.replace(src, dst)
            return dst

    def recover_work(self) -> None:
        """After a restart: studies that were being scored go back to incoming."""
        for d in sorted((self.root / "work").iterdir()):
            uid = d.name.rsplit(".", 1)[0]
            target = self.root / "incoming" / uid
            target.mkdir(parents=True, exist_ok=True)
            for f in d.iterdir():
                os.replace(f, target / f.name)
            d.rmdir()

    def release(self, folder: Path) -> None:
        """Delete a scored (or unscorable) study's received instances."""
        with self.lock:
            size = sum(f.stat().st_size for f in folder.iterdir() if f.is_file())
            shutil.rmtree(folder, ignore_errors=True)
            self.used -= size

    # ------------------------------------------------------------ results
    def pending(self, dest: str) -> list:
        """Result files waiting for ``dest``, oldest first."""
        folder = self.root / "out" / dest
        if not folder.is_dir():
            return []
        return sorted(folder.glob("*.dcm"), key=lambda p: (p.stat().st_mtime_ns, p.name))

    def n_pending(self) -> int:
        return sum(1 for _ in (self.root / "out").glob("*/*.dcm"))

    @staticmethod
    def state(path: Path) -> dict:
        """{"attempts", "next"} of a result (0 attempts, due now, when it never failed)."""
        try:
            return json.loads(path.with_suffix(".json").read_text())
        except (OSError, ValueError):
            return {"attempts": 0, "next": 0.0}

    def failed(self, path: Path, backoff_s: float, error: str) -> int:
        """Record a failed attempt; returns the attempt count. ``next`` is wall-clock time, so
        the schedule survives a restart."""
        st = self.state(path)
        st = {"attempts": int(st.get("attempts", 0)) + 1, "next": time.time() + backoff_s, "error": error[:200]}
        with self.lock:
            self._write(path.with_suffix(".json"), json.dumps(st).encode())
        return st["attempts"]

    def delivered(self, path: Path) -> None:
        with self.lock:
            size = path.stat().st_size if path.exists() else 0
            path.unlink(missing_ok=True)
            path.with_suffix(".json").unlink(missing_ok=True)
            self.used -= size


def spool_error(root) -> None:
    """Refuse a spool folder that cannot be used (one EdgeError line)."""
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise EdgeError(f"--spool {root}: exists and is not a folder")
    try:
        root.mkdir(parents=True, exist_ok=True)
        probe = root / f".tmp-probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise EdgeError(f"--spool {root}: not writable ({e.strerror or e})") from None
