"""docs/walkthrough.ipynb: executed top to bottom in a clean kernel of this venv (nbclient), and
committed with the outputs that execution gives, so it reads on a code host without running.

The run takes ~1-2 minutes on 2 CPU cores (the CNN's epochs are most of it). Any cell that
raises fails the test with the cell and its traceback.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "docs" / "walkthrough.ipynb"


def _runner():
    spec = importlib.util.spec_from_file_location("run_notebook", ROOT / "docs" / "run_notebook.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _code_cells(nb) -> list:
    return [c for c in nb["cells"] if c["cell_type"] == "code"]


def _kinds(cell) -> list:
    """What a cell shows, without the values: output types, stream names, MIME types."""
    return [(o["output_type"], o.get("name"), sorted(o.get("data", {}))) for o in cell["outputs"]]


def _problems(cell) -> list:
    """Error outputs, and anything written to stderr (warnings, framework log lines)."""
    return [o for o in cell["outputs"] if o["output_type"] == "error"
            or (o["output_type"] == "stream" and o["name"] == "stderr")]


def test_committed_notebook_has_the_outputs_of_one_clean_run():
    nb = json.loads(NOTEBOOK.read_text(encoding="utf-8"))
    code = _code_cells(nb)
    assert [c["execution_count"] for c in code] == list(range(1, len(code) + 1)), \
        "outputs are not from one top-to-bottom run: regenerate them with `make notebook`"
    assert not [p for c in code for p in _problems(c)]
    shown = [m for c in code for _, _, mimes in _kinds(c) for m in mimes]
    assert shown.count("image/png") >= 6 and shown.count("text/html") >= 8  # figures and tables
    # every displayed result is a table, a picture or text: no bare "<Figure size ...>" repr
    assert all(set(mimes) - {"text/plain"} for c in code for kind, _, mimes in _kinds(c)
               if kind in ("execute_result", "display_data"))
    assert nb["metadata"]["kernelspec"]["name"] == "python3"
    assert all("execution" not in c["metadata"] for c in code)  # no per-run timestamps committed


def test_runner_fails_on_an_error_cell(tmp_path):
    import nbformat
    from nbclient.exceptions import CellExecutionError

    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("import sys\nprint(sys.executable)"),
                                         nbformat.v4.new_code_cell("1 / 0"),
                                         nbformat.v4.new_code_cell("print('never')")])
    path = tmp_path / "bad.ipynb"
    nbformat.write(nb, str(path))
    with pytest.raises(CellExecutionError, match="ZeroDivisionError"):
        _runner().execute(path)
    nb.cells = nb.cells[:1]
    nbformat.write(nb, str(path))
    ran, _, _ = _runner().execute(path)
    assert ran.cells[0].outputs[0]["text"].strip() == sys.executable  # the kernel is this venv's Python


@pytest.mark.slow
def test_walkthrough_executes_in_a_clean_kernel_like_the_committed_copy():
    executed, _, _ = _runner().execute(NOTEBOOK)
    ran = _code_cells(executed)
    committed = _code_cells(json.loads(NOTEBOOK.read_text(encoding="utf-8")))
    assert [c["source"] for c in ran] == ["".join(c["source"]) for c in committed]
    assert not [p for c in ran for p in _problems(c)]
    # the same kinds of outputs in every cell as committed: a notebook edited without
    # `make notebook` (a cell added, a table turned into text, a new warning) fails here
    assert [_kinds(c) for c in ran] == [_kinds(c) for c in committed]
    probe = "".join(o.get("text", "") for o in ran[-1]["outputs"])
    assert "heavy frameworks loaded: none" in probe  # the edge runtime never imported TensorFlow
