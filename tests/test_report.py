"""The bench report's writer (murakit.evaluation.report): files, plots, and a caller's matplotlib left alone.

The report and the data audit draw on ``matplotlib.figure.Figure`` objects of their own: a
notebook that has chosen a backend, or holds pyplot figures, finds both as it left them
(issue 26: the stages used to switch the process to Agg, and the API had to switch it back).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import cv2
import numpy as np
from _murafix import make_mura

from murakit.evaluation.metrics import evaluate
from murakit.evaluation.report import write_report

ROOT = Path(__file__).resolve().parents[1]
PLOTS = ("roc.png", "confusion.png", "kappa_by_part.png", "latency_vs_auroc.png")


def fake_bench(seed: int = 0) -> tuple:
    """(report, data) as ``benchmark`` returns them, for two models on 40 studies of two views."""
    rng = np.random.default_rng(seed)
    studies = np.repeat([f"s{i:02d}" for i in range(40)], 2)
    labels = np.repeat(np.arange(40) % 2, 2)
    parts = np.repeat(np.where(np.arange(40) < 20, "ELBOW", "HAND"), 2)
    probs = {"baseline": np.clip(0.5 * labels + rng.uniform(0, 0.6, len(labels)), 0, 1),
             "cnn_onnx": np.clip(0.7 * labels + rng.uniform(0, 0.4, len(labels)), 0, 1)}
    models = {}
    for name, p in probs.items():
        m = evaluate(labels, p, studies, parts, 0.5)
        auc, kappa = m["study"]["auroc"], m["study"]["kappa"]
        m["study"].update(auroc_ci=[auc - 0.1, min(1.0, auc + 0.05)], kappa_ci=[kappa - 0.2, kappa + 0.1])
        models[name] = {**m, "size_bytes": 4096, "latency_ms_p50": 0.4 if name == "baseline" else 1.3,
                        "latency_ms_p95": 2.0, "throughput_ips": 900.0, "train_seconds": 3.0}
    report = {"dataset": {"root": "data/x", "split": "test", "images": len(labels), "studies": 40,
                          "synthetic": True},
              "models": models,
              "comparisons": {"cnn_vs_baseline": {"auroc_diff": 0.1, "ci": [-0.05, 0.25],
                                                  "models": ["cnn_onnx", "baseline"]}}}
    return report, {"probs": probs, "labels": labels, "studies": studies}


def test_write_report_writes_json_markdown_and_every_plot(tmp_path):
    report, data = fake_bench()
    out = write_report(tmp_path / "run", report, data)
    assert json.loads((out / "report.json").read_text()) == json.loads(json.dumps(report))
    md = (out / "report.md").read_text()
    for name in PLOTS:
        img = cv2.imread(str(out / name), cv2.IMREAD_COLOR)
        assert img is not None and min(img.shape[:2]) > 200, name  # a real picture, not an empty canvas
        assert img.std() > 10, name  # something drawn on it
        assert f"![{name}]({name})" in md
    assert "cam_grid.png" not in md and "reliability.png" not in md  # no exported CNN, no calibrators
    assert not list(out.glob("*.tmp*"))  # written under a temporary name, renamed into place


def test_report_and_audit_leave_the_callers_matplotlib_alone(tmp_path):
    """A notebook's backend and pyplot figures survive `murakit bench`'s and `murakit explore`'s drawing.

    In a fresh interpreter whose backend is SVG (standing for a notebook's inline backend):
    the drawing never imports pyplot, keeps the backend, and with pyplot in use leaves its
    list of figures and its current figure as they were.
    """
    make_mura(tmp_path / "data")
    code = textwrap.dedent(f"""
        import json, sys
        sys.path[:0] = [{str(ROOT)!r}, {str(ROOT / "tests")!r}]
        import matplotlib
        matplotlib.use("svg")
        from test_report import fake_bench
        from murakit.evaluation.explore import explore
        from murakit.evaluation.report import write_report

        def draw(run):
            explore({str(tmp_path / "data")!r}, run, workers=1, log=lambda *_: None, force=True)
            write_report(run, *fake_bench())

        facts = {{}}
        draw({str(tmp_path / "run1")!r})
        facts["pyplot_imported"] = "matplotlib.pyplot" in sys.modules
        facts["backend_after_first"] = matplotlib.get_backend()
        import matplotlib.pyplot as plt
        mine = plt.figure()
        before = plt.get_fignums()
        draw({str(tmp_path / "run2")!r})
        facts["fignums"] = [before, plt.get_fignums()]
        facts["current_is_mine"] = plt.gcf() is mine
        facts["backend_after_second"] = matplotlib.get_backend()
        print(json.dumps(facts))
    """)
    done = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=300,
                          cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    facts = json.loads(done.stdout.strip().splitlines()[-1])
    assert facts["backend_after_first"] == "svg" and facts["backend_after_second"] == "svg"
    assert facts["pyplot_imported"] is False
    assert facts["fignums"][1] == facts["fignums"][0] and facts["current_is_mine"] is True
    for run in ("run1", "run2"):  # and the drawing did happen
        assert all((tmp_path / run / "report" / p).stat().st_size > 1000 for p in PLOTS)
        assert len(list((tmp_path / run / "explore").glob("*.png"))) == 4
