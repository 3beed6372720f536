"""The murakit CLI: parser, lazy imports, one-line errors."""

import subprocess
import sys

import pytest

from murakit.cli import build_parser, main

HEAVY = ("tensorflow", "keras", "sklearn", "skimage", "matplotlib", "tf2onnx", "onnx")


def test_every_subcommand_has_help():
    parser = build_parser()
    for argv in (["synth", "--help"], ["prepare", "--help"], ["train", "cnn", "--help"], ["bench", "--help"],
                 ["demo", "--help"], ["export", "--help"], ["verify", "--help"], ["explain", "--help"],
                 ["train", "baseline", "--help"], ["explore", "--help"], ["calibrate", "--help"]):
        with pytest.raises(SystemExit) as e:
            parser.parse_args(argv)
        assert e.value.code == 0


def test_every_stage_command_defaults_to_the_layouts_run_folder():
    """`--run` has one home (layout.DEFAULT_RUN): every stage command parses the same default."""
    from pathlib import Path

    from murakit.layout import DEFAULT_RUN

    parser = build_parser()
    stages = [["prepare", "data"], ["explore", "data"], ["train", "baseline"], ["train", "cnn"], ["export"],
              ["verify"], ["bench"], ["explain", "x.png"], ["demo"], ["calibrate"]]
    for argv in stages:
        assert Path(parser.parse_args(argv).run) == DEFAULT_RUN, argv
    assert not [f.name for f in (Path(__file__).parents[1] / "murakit" / "cli").glob("*.py")
                if '"runs/default"' in f.read_text()]


def test_parser_and_synth_help_load_no_heavy_framework():
    code = ("import sys\nfrom murakit.cli import build_parser\n"
            "try:\n    build_parser().parse_args(['synth', '--help'])\nexcept SystemExit:\n    pass\n"
            f"print('HEAVY:' + ','.join(m for m in {HEAVY!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "HEAVY:"


def test_no_command_is_an_error(capsys):
    assert main([]) == 2


def test_missing_cache_is_one_line_error(tmp_path, capsys):
    code = main(["train", "baseline", "--run", str(tmp_path / "nope")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("murakit: error:")


@pytest.mark.slow
def test_tensorflow_start_up_lines_do_not_reach_the_user():
    """TF/absl/oneDNN/CUDA start-up lines are filtered from fd 2; our own lines pass unchanged."""
    code = ("import sys\nfrom murakit.quiet import quiet_frameworks\n"
            "with quiet_frameworks():\n"
            "    import tensorflow as tf\n"
            "    tf.constant([1.0]) + 1\n"
            "    print('murakit: our line', file=sys.stderr)\n"
            "    sys.stderr.write('progress 50%\\r')\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False)
    assert out.returncode == 0, out.stderr
    lines = out.stderr.replace("\r", "\n").splitlines()
    assert "murakit: our line" in lines and "progress 50%" in lines
    noise = [x for x in lines if x not in ("murakit: our line", "progress 50%") and x.strip()]
    assert noise == [], noise


def test_the_version_has_one_home(capsys):
    """pyproject.toml reads the version from edge/__init__.py; `murakit --version` and model cards show it."""
    from pathlib import Path

    import tomllib

    import edge
    import murakit

    project = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    assert "version" not in project["project"] and project["project"]["dynamic"] == ["version"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "edge.__version__"}
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--version"])
    assert capsys.readouterr().out.strip() == f"murakit {edge.__version__}" and murakit.__version__ == edge.__version__


def test_every_user_facing_error_is_one_user_error(monkeypatch, capsys):
    """One base (edge.errors.UserError): the CLI catches it, so no stage re-wraps another package's error."""
    from pathlib import Path

    from baseline.errors import BaselineError
    from deep.errors import DeepError
    from edge.errors import ConfigError, EdgeError, ImageError, ModelError, UserError
    from edge.golden import GoldenError
    from edge.preprocess import PreprocessConfig
    from edge.serve.uploads import ApiError
    from export.errors import ExportError
    from murakit.errors import MurakitError
    from murakit.lock import RunInUse

    for cls in (EdgeError, ImageError, ModelError, ConfigError, GoldenError, ApiError, MurakitError, RunInUse,
                BaselineError, DeepError, ExportError):
        assert issubclass(cls, UserError), cls
    assert issubclass(ConfigError, ValueError) and issubclass(BaselineError, ValueError)  # generic callers too
    with pytest.raises(ConfigError, match="size must be"):
        PreprocessConfig(size=3)
    # another package's error raised inside a stage reaches the user as one line, exit 2
    from murakit.cli import bench

    def boom(*_a, **_k):
        raise DeepError("the model file is damaged: retrain")

    monkeypatch.setattr(bench, "run", boom)
    assert main(["bench"]) == 2
    assert capsys.readouterr().err.strip() == "murakit: error: the model file is damaged: retrain"
    root = Path(__file__).resolve().parents[1] / "murakit"
    rewraps = [str(f) for f in root.rglob("*.py") if "MurakitError(str(e)) from None" in f.read_text()
               or "sys.modules.get(\"deep" in f.read_text()]
    assert rewraps == []
