"""Execute a notebook top to bottom in a clean kernel of this interpreter (``make notebook``).

The kernel is this Python (the project's venv), whatever kernels Jupyter has installed
elsewhere: a private kernelspec points at ``sys.executable``. The notebook runs in a fresh
temporary folder, so the data and run folders it writes never land in the repository and the
paths it prints are the same on every machine. Any error cell stops the run (exit code 1).

    python docs/run_notebook.py docs/walkthrough.ipynb            # execute, check, discard
    python docs/run_notebook.py docs/walkthrough.ipynb --write    # ... and store the outputs
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

KERNEL_NAME = "murakit-venv"
CELL_TIMEOUT = 600  # seconds; the whole walkthrough takes ~1-2 minutes on 2 CPU cores


def _kernel_manager(kernels_dir: Path):
    """A KernelManager that starts ``sys.executable -m ipykernel_launcher`` and nothing else."""
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager

    spec = kernels_dir / KERNEL_NAME
    spec.mkdir(parents=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    (spec / "kernel.json").write_text(json.dumps({"argv": argv, "display_name": "murakit venv",
                                                  "language": "python"}))
    ksm = KernelSpecManager(kernel_dirs=[str(kernels_dir)], ensure_native_kernel=False)
    # IPC sockets in the private runtime folder: nothing listens on TCP, not even on 127.0.0.1
    return KernelManager(kernel_name=KERNEL_NAME, kernel_spec_manager=ksm, transport="ipc",
                         ip=str(kernels_dir / "ipc"))  # absolute: the kernel runs in another folder


def _seconds(cell) -> float:
    """How long a code cell ran, from the timing metadata nbclient records."""
    from datetime import datetime

    t = cell.metadata.get("execution", {})
    start, end = t.get("iopub.execute_input"), t.get("shell.execute_reply")
    if not (start and end):
        return 0.0
    parse = (lambda v: datetime.fromisoformat(v.replace("Z", "+00:00")))
    return (parse(end) - parse(start)).total_seconds()


def _strip(nb) -> list:
    """Drop what changes on every run without changing the story (timings, widget state);
    returns (seconds, first source line) of every code cell."""
    nb.metadata.pop("widgets", None)
    times = []
    for cell in nb.cells:
        if cell.cell_type == "code":
            times.append((_seconds(cell), (cell.source.splitlines() or [""])[0]))
        cell.metadata.pop("execution", None)
    return times


# Appended (and removed again) by --timings: CPU seconds do not depend on how loaded the machine is.
CPU_PROBE = """import resource
t = [resource.getrusage(w) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
print(f"CPU time of the kernel and its children: {sum(r.ru_utime + r.ru_stime for r in t):.0f} s")"""


def execute(path, workdir=None, timeout: int = CELL_TIMEOUT, cpu_report: bool = False):
    """Run every cell of the notebook at ``path``.

    Parameters
    ----------
    path : str or Path
        The ``.ipynb`` file.
    workdir : str or Path, optional
        Working folder of the kernel; default a new temporary folder, removed afterwards.
    timeout : int
        Seconds a single cell may take.

    Returns
    -------
    (nbformat.NotebookNode, list of (float, str), str)
        The executed notebook (no timing metadata), each code cell's seconds and first line,
        and the kernel's CPU time as a line of text when ``cpu_report`` (else "").

    Raises
    ------
    nbclient.exceptions.CellExecutionError
        A cell raised; the message holds the cell and its traceback.
    """
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(str(path), as_version=4)
    if cpu_report:
        nb.cells.append(nbformat.v4.new_code_cell(CPU_PROBE))
    with tempfile.TemporaryDirectory(prefix="murakit-nb-") as tmp:
        tmp = Path(tmp)
        cwd = Path(workdir) if workdir is not None else tmp / "work"
        cwd.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "PYTHONHASHSEED": "0"}  # stable set/dict order in printed outputs
        km = _kernel_manager(tmp / "kernels")
        client = NotebookClient(nb, km=km, timeout=timeout, kernel_name=KERNEL_NAME, record_timing=True,
                                resources={"metadata": {"path": str(cwd)}})
        try:
            client.execute(cwd=str(cwd), env=env)
        finally:  # nbclient stops only kernels it made itself
            if km.has_kernel:
                km.shutdown_kernel(now=True)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
    cpu = nb.cells.pop().outputs[0]["text"].strip() if cpu_report else ""
    return nb, _strip(nb), cpu


def main(argv=None) -> int:
    import nbformat
    from nbclient.exceptions import CellExecutionError

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("notebook", type=Path)
    p.add_argument("--write", action="store_true", help="store the executed outputs in the notebook")
    p.add_argument("--timings", action="store_true", help="print each code cell's seconds")
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    try:
        nb, times, cpu = execute(args.notebook, cpu_report=args.timings)
    except CellExecutionError as e:
        print(f"{args.notebook}: a cell failed:\n{e}", file=sys.stderr)
        return 1
    if args.timings:
        for seconds, line in times:
            print(f"{seconds:7.1f} s  {line[:70]}")
        print(cpu)
    if args.write:
        tmp = args.notebook.with_name(f".{args.notebook.name}.new")
        nbformat.write(nb, str(tmp))
        os.replace(tmp, args.notebook)
    print(f"{args.notebook}: {len(nb.cells)} cells executed in {time.perf_counter() - t0:.0f} s"
          + (" (outputs written)" if args.write else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
