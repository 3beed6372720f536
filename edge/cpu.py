"""What this CPU offers for inference: its model name, core count and SIMD features.

Whether an INT8 model is faster than float depends on the CPU: onnxruntime's integer kernels
pay off with integer dot-product instructions (x86 AVX-512 VNNI, AVX-VNNI, AMX-INT8; Arm
DOTPROD, I8MM) and often lose to float without them. Export records these facts beside its
INT8 decision, and the benchmark report shows them, so a figure can be traced to its machine.

Read from ``/proc/cpuinfo`` (Linux: x86 ``flags``, Arm ``Features``); elsewhere the features
are unknown: an empty list and ``int8_dot`` None.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

# The features worth recording (others are dropped: a flags line has ~150 entries).
KNOWN = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni",
         "avx_vnni", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_int8", "amx_bf16",
         "asimd", "asimddp", "i8mm", "sve", "sve2", "bf16")
# Integer dot-product instructions: 8-bit multiplies accumulated into 32 bits in one step.
DOT_PRODUCT = ("avx512_vnni", "avx_vnni", "amx_int8", "asimddp", "i8mm")
CPUINFO = Path("/proc/cpuinfo")


def parse_cpuinfo(text: str) -> dict:
    """The CPU facts in the text of a ``/proc/cpuinfo`` file.

    Parameters
    ----------
    text : str
        ``key : value`` lines, one block per logical CPU (x86 or Arm layout).

    Returns
    -------
    dict
        ``model`` (str or None), ``logical_cpus`` (int, blocks with a ``processor`` line),
        ``features`` (sorted list of :data:`KNOWN` names present on the first CPU that lists any),
        ``int8_dot`` (list of :data:`DOT_PRODUCT` names present; empty: none).
    """
    model, flags, cpus = None, None, 0
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            continue
        key, value = key.strip().lower(), value.strip()
        if key == "processor":
            cpus += 1
        elif key in ("model name", "cpu model", "hardware") and model is None and value:
            model = value
        elif key in ("flags", "features") and flags is None:
            flags = set(value.lower().split())
    flags = flags or set()
    return {"model": model, "logical_cpus": cpus, "features": sorted(flags & set(KNOWN)),
            "int8_dot": [f for f in DOT_PRODUCT if f in flags]}


def cpu_info(path=CPUINFO) -> dict:
    """This machine's CPU facts: :func:`parse_cpuinfo` plus ``machine`` and ``os_cpus``.

    ``os_cpus`` is the number of CPUs this process may use (affinity), which can be fewer
    than ``logical_cpus``. Without a readable cpuinfo file ``features`` is empty and
    ``int8_dot`` is None (unknown, not "absent").
    """
    try:
        info = parse_cpuinfo(Path(path).read_text(encoding="utf-8", errors="replace"))
    except OSError:
        info = {"model": platform.processor() or None, "logical_cpus": os.cpu_count() or 0, "features": [],
                "int8_dot": None}
    return {**info, "machine": platform.machine(), "os_cpus": usable_cores()}


def usable_cores() -> int:
    """The CPU cores this process may run on: its affinity mask, else the CPU count (at least 1).

    The one home of this count: every default "all cores" (workers, threads) and every bound
    derived from it reads this, so a container or ``taskset`` limit is honoured everywhere.
    """
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


def describe(info: dict) -> str:
    """One line for people: ``Intel Xeon, x86_64, 2 CPUs, int8 dot product: avx512_vnni, amx_int8``."""
    dot = info.get("int8_dot")
    dots = "unknown" if dot is None else (", ".join(dot) or "none")
    return (f"{info.get('model') or 'unknown CPU'}, {info.get('machine') or '?'}, {info.get('os_cpus')} CPUs, "
            f"int8 dot product: {dots}")
