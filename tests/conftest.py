"""Fixtures shared by several test modules.

``quick_demo``: one ``murakit demo --quick --run runs/default`` for the whole session (~1-2 min on
2 cores), shared by tests/test_demo.py and tests/test_readme.py instead of each paying for it.
"""

from __future__ import annotations

import pytest
from _demofix import QuickDemo, run_murakit


@pytest.fixture(scope="session")
def quick_demo(tmp_path_factory) -> QuickDemo:
    """``murakit demo --quick --run runs/default`` run once in a fresh folder, as a user types it.

    Tests must not modify its run folder: test_demo checks that a rerun changes nothing, and
    test_readme works on a copy.
    """
    root = tmp_path_factory.mktemp("quick_demo")
    proc = run_murakit(root, "demo", "--quick", "--run", "runs/default")
    assert proc.returncode == 0, f"murakit demo --quick failed ({proc.returncode}):\n{proc.stderr[-3000:]}"
    return QuickDemo(root, proc.stdout, proc.stderr)
