"""The fast slice of the fuzz campaign (the full one: benchmarks/fuzz_campaign.py).

Seeded hostile models, golden sets, CLI values, damaged data trees and two concurrency cases,
each run as a user would run it (a subprocess of this checkout) and judged by tests/_fuzz.py:
a result, or exactly one line on stderr with the documented exit code; no traceback, no hang,
peak memory under the budget.
"""

from pathlib import Path

import pytest
from _fuzz import Result, Runner, Step, failures, judge, run_case, table
from _fuzzcases import Fixtures, all_cases

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def fuzz(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz")
    runner = Runner(ROOT)
    return runner, Fixtures(runner, root / "fixtures", seed=0), root


@pytest.mark.parametrize("cls", ["models", "golden", "cli", "data", "concurrency", "dicom"])
def test_fast_fuzz_slice(fuzz, cls):
    runner, fx, root = fuzz
    cases = [c for c in all_cases(fx, 0, [cls]) if c.fast]
    assert cases
    verdicts = [run_case(runner, c, root / "cases" / cls / c.name) for c in cases]
    assert all(v.outcome == "clean" for v in verdicts), table(verdicts) + "\n" + failures(verdicts)


def _result(code, err="", out="", peak=50.0, timed_out=False, argv=("murakit", "prepare")):
    return Result(list(argv), code, out, err, 0.1, peak, timed_out)


@pytest.mark.parametrize("result,expect,outcome", [
    (_result(2, "murakit: error: --seed must be an integer in [0, 4294967295], got -1\n"), (2,), "clean"),
    (_result(0, out="ok\n"), (0,), "clean"),
    (_result(2, "usage: murakit prepare [-h]\nmurakit prepare: error: argument --size: invalid int\n"), (2,), "clean"),
    (_result(2, "Traceback (most recent call last):\n  File x\nValueError: y\n"), (2,), "traceback"),
    (_result(2, "murakit: error: unexpected failure (ValueError: y); rerun with --verbose\n"), (2,), "traceback"),
    (_result(-8), (2,), "traceback"),  # SIGFPE nobody sent
    (_result(None, timed_out=True), (2,), "hang"),
    (_result(2, "murakit: error: x\n", peak=5000.0), (2,), "memory"),
    (_result(0), (2,), "wrong"),  # nonsense accepted
    (_result(1, "murakit: error: x\n"), (2,), "wrong"),
    (_result(2, "libpng error: bad\nmurakit: error: x\n"), (2,), "wrong"),  # two lines
    (_result(2, ""), (2,), "wrong"),  # the error went to stdout
])
def test_the_judge_tells_each_outcome(result, expect, outcome):
    assert judge([Step(result, expect, 1, 1024)], None)[0] == outcome


def test_a_failed_result_check_is_wrong():
    assert judge([Step(_result(0, out="x\n"), (0,))], "index holds an outside image") == \
        ("wrong", "index holds an outside image")
