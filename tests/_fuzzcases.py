"""The fuzz cases: hostile models, golden sets, CLI values, data, interruptions, concurrency.

Every case says what a user must see (:mod:`_fuzz`): a result, or one line on stderr with the
documented exit code (2 bad usage / data / model, 1 some inputs failed or drift, 130
interrupted). Cases are seeded (``random.Random(seed)``: kill times, flipped bytes) and built
against fixtures that :class:`Fixtures` makes once per campaign with the tree under test's
own commands, so the same list runs against an older checkout for the "before" table.

``fast=True`` marks the slice ``make test`` runs (tests/test_fuzz.py); everything else runs in
``benchmarks/fuzz_campaign.py``.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import signal
import time
from pathlib import Path

from _fuzz import EDGE_BUDGET_MB, MURAKIT_BUDGET_MB, TF_BUDGET_MB, Case, Step
from _fuzzfix import GOLDEN_RECIPES, MODEL_RECIPES

HERE = Path(__file__).resolve().parent
TF_TIMEOUT = 600.0
TIMING_KEYS = ("seconds", "created", "train_seconds", "features_seconds")


# ================================================================ fixtures
class Fixtures:
    """Inputs shared by many cases, built once (lazily) with the tree under test.

    Parameters
    ----------
    runner : _fuzz.Runner
    root : Path
        Where the fixtures live.
    seed : int
    """

    def __init__(self, runner, root, seed: int = 0):
        self.runner, self.root, self.seed = runner, Path(root), seed
        self.root.mkdir(parents=True, exist_ok=True)
        self.seconds = {}  # how long each template stage took uninterrupted (kill times scale with it)
        runner.fixtures = self  # scenarios reach the fixtures through their runner

    def _once(self, name: str, build) -> Path:
        path = self.root / name
        if not (self.root / f".{name}.done").exists():
            if path.exists():
                shutil.rmtree(path) if path.is_dir() else path.unlink()
            t0 = time.monotonic()
            build(path)
            self.seconds[name] = time.monotonic() - t0
            (self.root / f".{name}.done").write_text(str(self.seconds[name]))
        else:
            self.seconds[name] = float((self.root / f".{name}.done").read_text())
        return path

    def models(self) -> Path:
        """``models/*.onnx`` (good and damaged), ``images/``, ``study/``, ``golden/<variant>/``."""
        def build(path):
            r = self.runner.run(["python", "-P", str(HERE / "_fuzzfix.py"), str(path), str(self.seed)],
                                self.root, timeout=300)
            if r.returncode != 0:
                raise RuntimeError(f"building model fixtures failed: {r.stderr[-2000:]}")
        return self._once("models", build)

    def data(self) -> Path:
        """A tiny MURA-v1.1 tree (3 parts, 84 images) with its four CSVs and annotations."""
        from _murafix import make_mura

        return self._once("data", lambda p: make_mura(p, parts=("ELBOW", "HAND", "WRIST"),
                                                      patients_per_part=(12, 12, 12), annotations=True))

    def big_data(self) -> Path:
        """A larger tree (~600 images) so that an interrupted prepare has work in flight."""
        from _murafix import make_mura

        return self._once("big_data", lambda p: make_mura(p, parts=("ELBOW", "HAND", "WRIST", "FINGER"),
                                                          patients_per_part=(50, 50, 50, 50), views=3))

    def _stage(self, name: str, base: str | None, argv_of, timeout: float) -> Path:
        def build(path):
            if base:
                shutil.copytree(self.run(base), path, symlinks=True)
            r = self.runner.run(argv_of(path), self.root, timeout=timeout)
            if r.returncode != 0:
                raise RuntimeError(f"fixture stage {name} failed ({r.returncode}): {r.stderr[-1500:]}")
        return self._once(name, build)

    def run(self, name: str) -> Path:
        """A run folder after a stage: ``prep``, ``base``, ``cnn``, ``export``; ``bigprep`` (big data)."""
        argv = STAGES[name]
        base = {"prep": None, "base": "prep", "cnn": "base", "export": "cnn", "bigprep": None}[name]
        data = self.big_data() if name == "bigprep" else self.data()
        return self._stage(name, base, lambda p: [a.format(run=p, data=data) for a in argv],
                           TF_TIMEOUT if name in ("cnn", "export") else 300)


# the uninterrupted commands of each stage (templates and interruption cases use the same)
STAGES = {
    "prep": ["murakit", "prepare", "{data}", "--run", "{run}", "--size", "32", "--workers", "1", "--no-progress"],
    "bigprep": ["murakit", "prepare", "{data}", "--run", "{run}", "--size", "64", "--workers", "2", "--no-progress"],
    "base": ["murakit", "train", "baseline", "--run", "{run}", "--workers", "1", "--no-progress"],
    "cnn": ["murakit", "train", "cnn", "--run", "{run}", "--epochs", "3", "--width", "4", "--batch-size", "16",
            "--no-progress"],
    # INT8 shipped whenever it passes the accuracy gate: the speed half of the decision is a
    # timing on a shared machine, and the damage cases below need an INT8 model to damage
    "export": ["murakit", "export", "--run", "{run}", "--golden", "4", "--calibration", "16",
               "--max-int8-latency-ratio", "1000"],
}


def copy_run(fx: Fixtures, template: str, dest: str = "run"):
    """setup(): copy a template run folder into the case folder."""
    def setup(folder):
        shutil.copytree(fx.run(template), Path(folder) / dest, symlinks=True)
    return setup


def copy_data(fx: Fixtures, edit=None, big: bool = False):
    """setup(): copy the tiny (or big) data tree into ``folder/data`` and edit it."""
    def setup(folder):
        src = fx.big_data() if big else fx.data()
        shutil.copytree(src, Path(folder) / "data", symlinks=True)
        if edit:
            edit(Path(folder))
    return setup


def chain(*setups):
    def setup(folder):
        for s in setups:
            if s:
                s(folder)
    return setup


# ================================================================ models and golden sets
def _expect_model(name: str) -> tuple:
    # a model whose outputs are not probabilities may be refused at load (2) or per input (1)
    return (1, 2) if name in ("graph_nan_output", "graph_out_of_range") else (2,)


def model_cases(fx: Fixtures, seed: int) -> list:
    """edge-predict with every damaged model (must never print a label), plus the good ones."""
    m = fx.root / "models"
    cases = []
    for name in MODEL_RECIPES:
        for flag in ([], ["--json"]) if name.startswith(("threshold", "graph_nan")) else ([],):
            cases.append(Case("models", name + ("+json" if flag else ""), setup=lambda f: fx.models(),
                              argv=["edge-predict", str(m / "images" / "image1.png"), "--model",
                                    str(m / "models" / f"{name}.onnx"), *flag],
                              expect=_expect_model(name), timeout=60, budget_mb=EDGE_BUDGET_MB))
    for good in ("good_cnn", "good_baseline"):
        cases.append(Case("models", good, setup=lambda f: fx.models(), expect=(0,), check=_check_result,
                          argv=["edge-predict", str(m / "images" / "image1.png"), str(m / "study" / "study1_positive"),
                                "--model", str(m / "models" / f"{good}.onnx"), "--json"]))
    rng = random.Random(seed)
    fast = {"threshold_nan", "labels_5", "preprocess_clahe_grid_0", "graph_fixed_batch7", "graph_nan_output",
            "good_cnn", rng.choice(sorted(MODEL_RECIPES))}
    for c in cases:
        c.fast = c.name in fast
    return cases


def _check_result(folder, r) -> str | None:
    """Every stdout line of --json is a JSON object with a probability in [0, 1]."""
    lines = [ln for ln in r.stdout.splitlines() if ln.strip()]
    if not lines:
        return "no result printed"
    for ln in lines:
        try:
            d = json.loads(ln, parse_constant=lambda c: float("nan"))
        except ValueError:
            return f"not JSON: {ln[:80]}"
        p = d.get("probability")
        if not isinstance(p, float) or not 0.0 <= p <= 1.0:
            return f"probability {p!r} is not in [0, 1]"
    return None


def golden_cases(fx: Fixtures, seed: int) -> list:
    """edge-verify against every damaged golden folder of the good CNN."""
    m = fx.root / "models"
    good = str(m / "models" / "good_cnn.onnx")
    cases = [Case("golden", name, setup=lambda f: fx.models(), argv=["edge-verify", good, str(m / "golden" / name)],
                  expect=(code,), err_lines=None if code != 2 else 1, timeout=60)
             for name, (_, code) in GOLDEN_RECIPES.items()]
    cases.append(Case("golden", "another_model", setup=lambda f: fx.models(), expect=(2,),
                      argv=["edge-verify", str(m / "models" / "other_cnn.onnx"), str(m / "golden" / "intact")]))
    cases.append(Case("golden", "no_golden_dir", setup=lambda f: fx.models(), expect=(2,),
                      argv=["edge-verify", good, str(m / "golden" / "does-not-exist")]))
    rng = random.Random(seed + 1)
    fast = {"intact", "manifest_null", "tolerance_loosened", "case_without_dir", "source_deleted",
            rng.choice(sorted(GOLDEN_RECIPES))}
    for c in cases:
        c.fast = c.name in fast
    return cases


# ================================================================ CLI values
def _unwritable(folder):
    d = Path(folder) / "ro"
    d.mkdir()
    os.chmod(d, 0o555)


def _without_root_powers():
    """preexec_fn: drop CAP_DAC_OVERRIDE / CAP_DAC_READ_SEARCH from the bounding set, so that
    file permissions apply to the command even when the suite runs as root."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (1, 2):  # PR_CAPBSET_DROP = 24; fails harmlessly without the capability
        libc.prctl(24, cap, 0, 0, 0)


def cli_cases(fx: Fixtures, seed: int) -> list:
    """murakit (and edge) command-line values that must be refused with one line, exit 2."""
    c = []

    def add(name, argv, setup=None, expect=(2,), tf=False, fast=False, check=None, err_lines=1, budget_mb=None):
        budget = budget_mb or (TF_BUDGET_MB if tf else MURAKIT_BUDGET_MB)
        c.append(Case("cli", name, argv=argv, setup=setup, expect=expect, err_lines=err_lines, check=check,
                      timeout=TF_TIMEOUT if tf else 120, budget_mb=budget, fast=fast))

    data = copy_data(fx)
    prep = copy_run(fx, "prep")
    base = copy_run(fx, "base")
    afile = lambda f: (Path(f) / "afile").write_text("a file\n")
    P = ["murakit", "prepare", "data", "--no-progress"]
    for name, extra in [("seed_-1", ["--seed", "-1"]), ("seed_2e32", ["--seed", str(2**32)]),
                        ("workers_0", ["--workers", "0"]),
                        ("workers_-1", ["--workers", "-1"]), ("workers_100000", ["--workers", "100000"]),
                        ("size_0", ["--size", "0"]), ("size_100000", ["--size", "100000"]),
                        ("val_fraction_nan", ["--val-fraction", "nan"]), ("val_fraction_-1", ["--val-fraction", "-1"]),
                        ("test_fraction_inf", ["--test-fraction", "inf"])]:
        add(f"prepare_{name}", P + ["--run", "run"] + extra, data, fast=name == "seed_-1")
    add("prepare_run_is_file", P + ["--run", "afile"], chain(data, afile), fast=True)
    add("prepare_run_proc", P + ["--run", "/proc"], data, fast=True)
    add("prepare_run_proc_sub", P + ["--run", "/proc/self/murakit"], data)
    add("prepare_run_dev_null", P + ["--run", "/dev/null"], data)
    c.append(Case("cli", "prepare_run_unwritable", setup=chain(data, _unwritable), timeout=120,
                  budget_mb=MURAKIT_BUDGET_MB, scenario=_as_nobody_scenario(P + ["--run", "ro/run"])))
    add("prepare_data_missing", ["murakit", "prepare", "nope", "--run", "run"])
    add("prepare_data_is_file", ["murakit", "prepare", "afile", "--run", "run"], afile)
    add("prepare_data_proc", ["murakit", "prepare", "/proc/self/fdinfo", "--run", "run"])
    TB = ["murakit", "train", "baseline", "--no-progress"]
    for name, extra in [("seed_-1", ["--seed", "-1"]), ("workers_0", ["--workers", "0"]),
                        ("hog_cell_0", ["--hog-cell", "0"]), ("hog_cell_1000", ["--hog-cell", "1000"])]:
        add(f"train_baseline_{name}", TB + ["--run", "run"] + extra, prep, fast=name == "seed_-1")
    add("train_baseline_run_is_file", TB + ["--run", "afile"], afile)
    add("train_baseline_run_proc", TB + ["--run", "/proc"])
    add("train_baseline_index_garbage", TB + ["--run", "run"],
        chain(prep, lambda f: (Path(f) / "run/prepared/index.csv").write_bytes(b"\xff\xfe\x00garbage\n" * 50)))
    add("train_baseline_config_garbage", TB + ["--run", "run"],
        chain(prep, lambda f: (Path(f) / "run/prepared/config.json").write_text('{"complete": true, "preprocess": 5}')))
    add("train_baseline_images_truncated", TB + ["--run", "run"],
        chain(prep, lambda f: _truncate(Path(f) / "run/prepared/images.npy", 0.5)))
    TC = ["murakit", "train", "cnn", "--no-progress", "--run", "run"]
    for name, extra in [("seed_-1", ["--seed", "-1"]), ("seed_2e32", ["--seed", str(2**32)]),
                        ("width_100000", ["--width", "100000"]),
                        ("width_0", ["--width", "0"]), ("epochs_0", ["--epochs", "0"]),
                        ("batch_0", ["--batch-size", "0"]), ("batch_1e9", ["--batch-size", "1000000000"]),
                        ("rotation_nan", ["--max-rotation", "nan"]), ("rotation_inf", ["--max-rotation", "inf"]),
                        ("size_0", ["--size", "0"])]:
        add(f"train_cnn_{name}", TC + extra, prep, tf=True, fast=name == "width_100000")
    add("train_cnn_weights_missing", TC + ["--weights", "nope.h5", "--epochs", "1"], prep, tf=True)
    add("train_cnn_weights_passwd", TC + ["--weights", "/etc/passwd", "--epochs", "1"], prep, tf=True)
    add("demo_seed_-1", ["murakit", "demo", "--quick", "--run", "run", "--seed", "-1"], fast=True, tf=True)
    add("demo_run_is_file", ["murakit", "demo", "--quick", "--run", "afile"], afile, tf=True)
    E = ["murakit", "export", "--run", "run"]
    for name, extra in [("golden_0", ["--golden", "0"]), ("golden_-1", ["--golden", "-1"]),
                        ("golden_100000", ["--golden", "100000"]), ("calibration_0", ["--calibration", "0"]),
                        ("calibration_-5", ["--calibration", "-5"]), ("int8_drop_nan", ["--max-int8-drop", "nan"]),
                        ("int8_drop_-1", ["--max-int8-drop", "-1"]), ("int8_drop_inf", ["--max-int8-drop", "inf"])]:
        add(f"export_{name}", E + extra, prep, fast=name in ("golden_0", "int8_drop_nan"))
    add("export_nothing_trained", E, prep)
    add("export_run_is_file", ["murakit", "export", "--run", "afile"], afile)
    add("export_card_garbage", E, chain(base, lambda f: (Path(f) / "run/baseline/card.json").write_text("[" * 10000)))
    add("export_card_threshold_nan", E, chain(base, lambda f: _edit_card(Path(f) / "run/baseline/card.json",
                                                                         "threshold", "NaN")))
    V = ["murakit", "verify", "--run", "run", "--no-keras"]
    add("verify_nothing_exported", V, base)
    for name, extra in [("threads_0", ["--threads", "0"]), ("threads_-1", ["--threads", "-1"]),
                        ("threads_100000", ["--threads", "100000"])]:
        add(f"verify_{name}", V + extra, copy_run(fx, "export"))
    B = ["murakit", "bench", "--run", "run"]
    for name, extra in [("threads_0", ["--threads", "0"]), ("threads_5000", ["--threads", "5000"]),
                        ("latency_runs_0", ["--latency-runs", "0"]), ("latency_runs_1e12", ["--latency-runs", "1000000000000"])]:
        add(f"bench_{name}", B + extra, base)
    X = ["murakit", "explore", "data", "--run", "run"]
    for name, extra in [("max_samples_0", ["--max-samples", "0"]), ("workers_-1", ["--workers", "-1"]),
                        ("seed_-1", ["--seed", "-1"])]:
        add(f"explore_{name}", X + extra, data)
    S = ["murakit", "synth", "--no-progress"]
    add("synth_onto_file", S + ["afile", "--studies", "2"], afile, fast=True)
    add("synth_studies_1e9", S + ["out", "--studies", "1000000000"], fast=True)
    for name, extra in [("studies_0", ["--studies", "0"]), ("studies_-1", ["--studies", "-1"]),
                        ("workers_0", ["--workers", "0"]), ("workers_-1", ["--workers", "-1"]),
                        ("workers_100000", ["--workers", "100000"]), ("seed_-1", ["--seed", "-1"])]:
        add(f"synth_{name}", S + ["out", "--studies", "2"] + extra, fast=name == "workers_0")
    add("synth_out_proc", S + ["/proc/murakit", "--studies", "2"])
    m = fx.root / "models"
    img, good = str(m / "images" / "image1.png"), str(m / "models" / "good_cnn.onnx")
    for t in ("0", "-1", "5000"):
        add(f"edge_predict_threads_{t}", ["edge-predict", img, "--model", good, "--threads", t],
            lambda f: fx.models(), fast=t == "5000", budget_mb=EDGE_BUDGET_MB)
        add(f"edge_verify_threads_{t}", ["edge-verify", good, str(m / "golden" / "intact"), "--threads", t],
            lambda f: fx.models())
    cnn = copy_run(fx, "cnn")
    add("explain_etc_passwd", ["murakit", "explain", "/etc/passwd", "--run", "run"], cnn, expect=(1,), tf=True)
    add("explain_missing_file", ["murakit", "explain", "nope.png", "--run", "run"], cnn, expect=(1,), tf=True)
    add("explain_no_cnn", ["murakit", "explain", "/etc/passwd", "--run", "run"], base, tf=True)
    add("explain_out_is_file", ["murakit", "explain", img, "--run", "run", "--out", "afile"], chain(cnn, afile),
        tf=True)
    return c


def _as_nobody_scenario(argv):
    """Run ``argv`` without root's permission override, so that a read-only folder is read-only."""
    def scenario(runner, folder):
        r = runner.run(argv, folder, 120, preexec=_without_root_powers)
        return [Step(r, (2,), 1, MURAKIT_BUDGET_MB)], None
    return scenario


def _truncate(path: Path, fraction: float) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * fraction)])


def _edit_card(path: Path, key: str, raw: str) -> None:
    text = path.read_text()
    d = json.loads(text)
    d[key] = "__RAW__"
    path.write_text(json.dumps(d).replace('"__RAW__"', raw))


# ================================================================ data
def _csv(folder, split="train", kind="image_paths") -> Path:
    return Path(folder) / "data" / "MURA-v1.1" / f"{split}_{kind}.csv"


def _append(path: Path, data: bytes) -> None:
    with open(path, "ab") as f:
        f.write(data)


def _outside_image(folder) -> str:
    """An image outside the data root, labelled positive (what a traversal would ingest)."""
    import shutil as sh

    out = Path(folder) / "outside" / "secret.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    sh.copyfile(next((Path(folder) / "data" / "MURA-v1.1" / "train").rglob("image1.png")), out)
    return str(out)


def _traversal(kind: str):
    """Edit the CSVs so that one listed image (and its study) lies outside the data root."""
    def edit(folder):
        outside = _outside_image(folder)
        if kind == "dotdot":  # the study folder exists, so the OS resolves the ../ segments
            (Path(folder) / "data/MURA-v1.1/train/XR_ELBOW/patient99999/study1_positive").mkdir(parents=True)
            rel = "MURA-v1.1/train/XR_ELBOW/patient99999/study1_positive/../../../../../outside/secret.png"
            _append(_csv(folder), (rel + "\n").encode())
            _append(_csv(folder, kind="labeled_studies"),
                    b"MURA-v1.1/train/XR_ELBOW/patient99999/study1_positive/,1\n")
        elif kind == "absolute":
            _append(_csv(folder), f"/{outside.lstrip('/')}\n".encode())
        elif kind == "symlink_file":
            study = Path(folder) / "data/MURA-v1.1/train/XR_ELBOW/patient99998/study1_positive"
            study.mkdir(parents=True)
            (study / "image1.png").symlink_to(outside)
            _append(_csv(folder), b"MURA-v1.1/train/XR_ELBOW/patient99998/study1_positive/image1.png\n")
            _append(_csv(folder, kind="labeled_studies"),
                    b"MURA-v1.1/train/XR_ELBOW/patient99998/study1_positive/,1\n")
        elif kind == "symlink_dir":
            part = Path(folder) / "data/MURA-v1.1/train/XR_ELBOW/patient99997"
            part.mkdir(parents=True)
            (part / "study1_positive").symlink_to(Path(outside).parent, target_is_directory=True)
            (Path(outside).parent / "image1.png").write_bytes(Path(outside).read_bytes())
            _append(_csv(folder), b"MURA-v1.1/train/XR_ELBOW/patient99997/study1_positive/image1.png\n")
            _append(_csv(folder, kind="labeled_studies"),
                    b"MURA-v1.1/train/XR_ELBOW/patient99997/study1_positive/,1\n")
    return edit


def _no_outside_paths(folder, r, reported: bool = True) -> str | None:
    """The prepared index holds no image from outside the data root, and the problem was told."""
    index = Path(folder) / "run" / "prepared" / "index.csv"
    if not index.is_file():
        return "no prepared index written"
    text = index.read_text()
    if "patient9999" in text or ".." in text or "outside" in text:
        return "an image outside the data root was indexed and labelled"
    if reported and "outside the data root" not in r.stdout + r.stderr:
        return "the refused path was not reported as a data problem"
    return None


def _walk_layout(folder):
    for name in ("train_image_paths.csv", "valid_image_paths.csv", "train_labeled_studies.csv",
                 "valid_labeled_studies.csv"):
        (Path(folder) / "data/MURA-v1.1" / name).unlink()


def _classes_symlink(folder):
    """A class-folder tree whose abnormal/ holds a symlink to a file outside the root."""
    from _murafix import make_classes

    root = Path(folder) / "data"
    shutil.rmtree(root)
    make_classes(root)
    outside = Path(folder) / "outside" / "secret.png"
    outside.parent.mkdir()
    shutil.copyfile(root / "normal" / "img000.png", outside)
    (root / "abnormal" / "patient99999.png").symlink_to(outside)


def data_cases(fx: Fixtures, seed: int) -> list:
    """murakit prepare on damaged MURA trees: one clean line, or a result that counts the problem."""
    c = []

    def add(name, edit, expect=(2,), check=None, fast=False):
        c.append(Case("data", name, argv=["murakit", "prepare", "data", "--run", "run", "--no-progress",
                                          "--workers", "1", "--size", "32"],
                      setup=copy_data(fx, edit), expect=expect, check=check, timeout=120,
                      budget_mb=MURAKIT_BUDGET_MB, fast=fast))

    rng = random.Random(seed + 2)
    add("csv_latin1", lambda f: _append(_csv(f), "MURA-v1.1/train/XR_ELBOW/patientä/study1_positive/image1.png\n"
                                        .encode("latin-1")), fast=True)
    add("csv_binary", lambda f: _csv(f).write_bytes(bytes(rng.randrange(256) for _ in range(4096))))
    add("csv_nul", lambda f: _append(_csv(f), b"MURA-v1.1/train/\x00XR_ELBOW/x.png\n"), expect=(0, 2))
    add("csv_field_200k", lambda f: _append(_csv(f), b'"' + b"a" * 200_000 + b'"\n'), fast=True)
    add("labels_field_200k", lambda f: _append(_csv(f, kind="labeled_studies"), b"x" * 200_000 + b",1\n"))
    add("labels_utf16", lambda f: _csv(f, kind="labeled_studies").write_bytes(
        _csv(f, kind="labeled_studies").read_text().encode("utf-16")))
    add("csv_is_directory", lambda f: (_csv(f).unlink(), _csv(f).mkdir()))
    ann = lambda f: Path(f) / "data/MURA-v1.1/synth_annotations.csv"
    for name, cell in [("abc", b"abc"), ("inf", b"inf"), ("1e999", b"1e999"), ("huge", b"9" * 200_000)]:
        add(f"annotation_float_{name}", lambda f, cell=cell: ann(f).write_bytes(
            ann(f).read_bytes().replace(b",4,6,20,30", b"," + cell + b",6,20,30", 1)),
            expect=(0, 2), fast=name == "abc")
    add("annotation_binary", lambda f: ann(f).write_bytes(b"\xff\xfe\x00" * 999), expect=(0, 2))
    for kind in ("dotdot", "absolute", "symlink_file", "symlink_dir"):
        check = _no_outside_paths if kind != "absolute" else (lambda f, r: _no_outside_paths(f, r, reported=False))
        add(f"path_{kind}", _traversal(kind), expect=(0,), check=check, fast=kind == "dotdot")
    add("path_symlink_dir_no_csv", chain(_traversal("symlink_dir"), _walk_layout), expect=(0,),
        check=_no_outside_paths)
    add("classes_symlink_file", _classes_symlink, expect=(0,), check=_no_outside_paths)
    return c


# ================================================================ interruptions
def _sha(path: Path) -> str | None:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None


def _graph(path: Path) -> str | None:
    """The INT8 model's graph hash: its card records the export's timings, so the file's bytes
    differ between two uninterrupted exports while the graph does not."""
    from edge.protobuf import graph_sha256

    return graph_sha256(path.read_bytes()) if path.is_file() else None


def _drop_timing(value):
    if isinstance(value, dict):
        return {k: _drop_timing(v) for k, v in value.items() if k not in TIMING_KEYS}
    if isinstance(value, list):
        return [_drop_timing(v) for v in value]
    return value


def _json(path: Path):
    try:
        return _drop_timing(json.loads(path.read_text()))
    except (OSError, ValueError):
        return None


def _export_summary(path: Path):
    """export.json without the paths it records (they name where the run folder is, and the
    uninterrupted reference lives in another folder), and of the INT8 decision only what does
    not rest on timings: whether it shipped and its accuracy gate (which recipe was fastest, and
    by how much, varies from run to run on a shared machine)."""
    summary = _json(path)
    for entry in (summary or {}).values():
        if isinstance(entry, dict):
            entry.pop("path", None)
            entry.pop("golden", None)
    int8 = (summary or {}).get("cnn.int8")
    if isinstance(int8, dict):
        summary["cnn.int8"] = {"accepted": int8.get("accepted")}
    (summary or {}).pop("cpu", None)
    return summary


def _int8_recipe(run: Path):
    summary = _json(run / "export/export.json") or {}
    recipe = (summary.get("cnn.int8") or {}).get("recipe")
    return recipe.get("name") if isinstance(recipe, dict) else recipe


def _keras_card(path: Path):
    """card.json of the CNN without its weights hash: a hash of the .keras zip, which records
    its save time, so two uninterrupted trainings differ there too (their weights do not)."""
    card = _json(path)
    if isinstance(card, dict):
        card.pop("weights_sha256", None)
    return card


def _history(path: Path):
    if not path.is_file():
        return None
    rows = [ln.split(",") for ln in path.read_text().splitlines()]
    keep = [i for i, h in enumerate(rows[0]) if h != "seconds"] if rows else []
    return [[r[i] for i in keep] for r in rows]


def compare_stage(stage: str, got: Path, ref: Path) -> str | None:
    """None when ``got`` holds the same final artifacts of ``stage`` as the uninterrupted ``ref``."""
    files = {
        "prep": [("prepared/images.npy", _sha), ("prepared/index.csv", _sha), ("prepared/failed.csv", _sha),
                 ("prepared/config.json", _json)],
        "bigprep": [("prepared/images.npy", _sha), ("prepared/index.csv", _sha), ("prepared/config.json", _json)],
        "base": [(f"baseline/predictions_{s}.csv", _sha) for s in ("val", "test")]
        + [("baseline/metrics.json", _json), ("baseline/card.json", _json)],
        "cnn": [(f"cnn/predictions_{s}.csv", _sha) for s in ("val", "test")]
        + [("cnn/metrics.json", _json), ("cnn/card.json", _keras_card), ("cnn/history.csv", _history)],
        "export": [(f"export/{m}", _sha) for m in ("cnn.onnx", "baseline.onnx")] + [("export/cnn.int8.onnx", _graph)]
        + [("export/export.json", _export_summary)],
    }[stage]
    if stage == "export" and _int8_recipe(got) != _int8_recipe(ref):  # another fastest recipe: other bytes
        files = [f for f in files if f[0] != "export/cnn.int8.onnx"]
    for rel, read in files:
        a, b = read(got / rel), read(ref / rel)
        if a != b:
            return f"{rel} differs from the uninterrupted run" + (" (missing)" if a is None else "")
    if stage == "export":
        return _golden_pairs(got)
    return None


def _golden_pairs(run: Path) -> str | None:
    """Every exported model's golden manifest names that very file."""
    for model in sorted((run / "export").glob("*.onnx")):
        manifest = run / "export" / "golden" / model.stem / "manifest.json"
        try:
            recorded = json.loads(manifest.read_text()).get("model_sha256")
        except (OSError, ValueError):
            return f"{model.name} has no readable golden manifest"
        if recorded != _sha(model):
            return f"{model.name} and its golden set do not belong together"
    return None


BEFORE_STAGE = {"prep": None, "bigprep": None, "base": "prep", "cnn": "base", "export": "cnn"}


def interrupt_case(fx: Fixtures, stage: str, sig: int, fraction: float, name: str, fast: bool = False) -> Case:
    """Run ``stage``'s command, send ``sig`` after ``fraction`` of its uninterrupted time, rerun it;
    the rerun must finish and leave what an uninterrupted run leaves."""
    tf = stage in ("cnn", "export")
    budget = TF_BUDGET_MB if tf else MURAKIT_BUDGET_MB

    def scenario(runner, folder):
        ref = fx.run(stage)
        before = BEFORE_STAGE[stage]
        if before:
            shutil.copytree(fx.run(before), folder / "run", symlinks=True)
        data = fx.big_data() if stage == "bigprep" else fx.data()
        argv = [a.format(run="run", data=data) for a in STAGES[stage]]
        h = runner.start(argv, folder)
        time.sleep(fraction * fx.seconds[stage])
        if sig == signal.SIGINT:  # Ctrl-C reaches the whole foreground process group
            h["killed"] = True
            try:
                os.killpg(h["p"].pid, signal.SIGINT)
            except ProcessLookupError:
                pass
        else:
            runner.signal(h, sig)
        first = runner.finish(h, TF_TIMEOUT if tf else 300)
        second = runner.run(argv, folder, TF_TIMEOUT if tf else 300)
        steps = [Step(first, (0, 130) if sig == signal.SIGINT else (0,), 1, budget), Step(second, (0,), 1, budget)]
        if second.returncode != 0:
            return steps, None
        return steps, compare_stage(stage, folder / "run", ref)

    return Case("interrupt", name, scenario=scenario, timeout=2 * TF_TIMEOUT, budget_mb=budget, fast=fast)


def _damage_export(edit):
    """A finished export, damaged as an interrupted one could leave it, then a plain rerun."""
    def scenario(runner, folder):
        ref = runner.fixtures.run("export")
        shutil.copytree(ref, folder / "run", symlinks=True)
        edit(folder / "run" / "export")
        argv = [a.format(run="run") for a in STAGES["export"]]
        r = runner.run(argv, folder, TF_TIMEOUT)
        return [Step(r, (0,), 1, TF_BUDGET_MB)], compare_stage("export", folder / "run", ref)
    return scenario


def _swap_int8_model(export: Path):
    """New INT8 model beside the old golden set: the window of an export killed mid-publish."""
    shutil.copyfile(export / "cnn.onnx", export / "cnn.int8.onnx")


def _stale_cnn_golden(export: Path):
    shutil.rmtree(export / "golden" / "cnn")
    shutil.copytree(export / "golden" / "baseline", export / "golden" / "cnn")


def _half_written_tmp(export: Path):
    (export / ".cnn.onnx.new-99999").write_bytes(b"\x08\x07half")
    _truncate(export / "cnn.int8.onnx", 0.3)


def _interrupted_epoch(runner, folder):
    """The window between last.keras and state.json at an epoch end: a newer last.keras than
    state.json records. The rerun must finish like an uninterrupted run (never "use --force")."""
    fx = runner.fixtures
    shutil.copytree(fx.run("base"), folder / "run", symlinks=True)
    two = [a.format(run="run") for a in STAGES["cnn"]]
    two[two.index("--epochs") + 1] = "2"
    r1 = runner.run(two, folder, TF_TIMEOUT)
    state = json.loads((folder / "run/cnn/state.json").read_text())
    (folder / "run/cnn/metrics.json").unlink(missing_ok=True)
    three = [a.format(run="run") for a in STAGES["cnn"]]
    # epoch 3 has finished but its state.json was never written: the 3-epoch last.keras
    # beside the 2-epoch state
    shutil.copyfile(fx.run("cnn") / "cnn/last.keras", folder / "run/cnn/last.keras")
    (folder / "run/cnn/state.json").write_text(json.dumps(state, indent=1))
    r2 = runner.run(three, folder, TF_TIMEOUT)
    steps = [Step(r1, (0,), 1, TF_BUDGET_MB), Step(r2, (0,), 1, TF_BUDGET_MB)]
    return steps, (compare_stage("cnn", folder / "run", fx.run("cnn")) if r2.returncode == 0 else None)


def interrupt_cases(fx: Fixtures, seed: int, per_stage: int = 4) -> list:
    """Seeded kill -9 / Ctrl-C at random points of prepare, train baseline, train cnn, export."""
    rng = random.Random(seed + 3)
    cases = []
    for stage in ("bigprep", "base", "cnn", "export"):
        for k in range(per_stage):
            sig = signal.SIGKILL if k % 2 == 0 else signal.SIGINT
            frac = round(rng.uniform(0.05, 0.95), 3)
            label = {"bigprep": "prepare", "base": "train_baseline", "cnn": "train_cnn", "export": "export"}[stage]
            cases.append(interrupt_case(fx, stage, sig, frac, f"{label}_{sig.name}_{frac}"))
    for name, edit in [("export_new_int8_old_golden", _swap_int8_model), ("export_stale_golden", _stale_cnn_golden),
                       ("export_half_written", _half_written_tmp),
                       ("export_model_missing", lambda e: (e / "cnn.onnx").unlink()),
                       ("export_int8_golden_missing", lambda e: shutil.rmtree(e / "golden" / "cnn.int8")),
                       ("export_summary_missing", lambda e: (e / "export.json").unlink())]:
        cases.append(Case("interrupt", name, scenario=_damage_export(edit), timeout=TF_TIMEOUT,
                          budget_mb=TF_BUDGET_MB))
    cases.append(Case("interrupt", "train_cnn_epoch_end_window", scenario=_interrupted_epoch, timeout=TF_TIMEOUT,
                      budget_mb=TF_BUDGET_MB))
    return cases


# ================================================================ concurrency
def _two_at_once(stage: str):
    """Start the same stage twice on one run folder at once: one finishes, the other finishes
    too or says the run folder is in use (exit 2); the result equals an uninterrupted run."""
    def scenario(runner, folder):
        fx = runner.fixtures
        before = BEFORE_STAGE[stage]
        if before:
            shutil.copytree(fx.run(before), folder / "run", symlinks=True)
        data = fx.big_data() if stage == "bigprep" else fx.data()
        argv = [a.format(run="run", data=data) for a in STAGES[stage]]
        timeout = TF_TIMEOUT if stage in ("cnn", "export") else 300
        hs = [runner.start(argv, folder), runner.start(argv, folder)]
        rs = [runner.finish(h, timeout) for h in hs]
        budget = TF_BUDGET_MB if stage in ("cnn", "export") else MURAKIT_BUDGET_MB
        steps = [Step(r, (0, 2), 1, budget) for r in rs]
        if not any(r.returncode == 0 for r in rs):
            return steps, "neither process finished"
        for r in rs:
            if r.returncode == 2 and "in use" not in r.stderr:
                return steps, f"the refused process did not say the run is in use: {r.stderr.strip()[:120]}"
        return steps, compare_stage(stage, folder / "run", fx.run(stage))
    return scenario


def _two_cam_runs(runner, folder):
    """Two edge-predict --cam into one folder: every reported overlay holds that run's picture."""
    fx = runner.fixtures
    m = fx.models()
    model = str(m / "models" / "good_cnn.onnx")
    inputs = {"a": [str(p) for p in sorted((m / "images").glob("*.png"))],
              "b": [str(p) for p in sorted((m / "study" / "study1_positive").glob("*.png"))]}
    solo = {k: runner.run(["edge-predict", *v, "--model", model, "--json", "--cam", f"solo_{k}"], folder, 60)
            for k, v in inputs.items()}
    hs = {k: runner.start(["edge-predict", *v, "--model", model, "--json", "--cam", "shared"], folder)
          for k, v in inputs.items()}
    rs = {k: runner.finish(h, 60) for k, h in hs.items()}
    steps = [Step(r) for r in [*solo.values(), *rs.values()]]
    seen = set()
    for k, r in rs.items():
        got = _cam_paths(r.stdout)
        want = _cam_paths(solo[k].stdout)
        if len(got) != len(want):
            return steps, f"run {k} reported {len(got)} overlays, {len(want)} alone"
        for g, w in zip(got, want):
            if g in seen:
                return steps, f"both runs reported {g}"
            seen.add(g)
            if _sha(folder / g) != _sha(folder / w):
                return steps, f"{g} does not hold run {k}'s overlay"
    return steps, None


def _cam_paths(stdout: str) -> list:
    out = []
    for ln in stdout.splitlines():
        try:
            d = json.loads(ln)
        except ValueError:
            continue
        cam = d.get("cam")
        out += cam if isinstance(cam, list) else [cam] if cam else []
    return out


def concurrency_cases(fx: Fixtures, seed: int) -> list:
    cases = [Case("concurrency", f"two_{label}", scenario=_two_at_once(stage), timeout=2 * TF_TIMEOUT,
                  fast=stage == "prep")
             for stage, label in [("prep", "prepares"), ("bigprep", "prepares_big"), ("base", "train_baselines"),
                                  ("cnn", "train_cnns"), ("export", "exports")]]
    cases.append(Case("concurrency", "two_edge_predict_cam", scenario=_two_cam_runs))
    return cases


def _dicom_cases(fx: Fixtures, seed: int) -> list:
    from _fuzzdicom import dicom_cases  # pydicom and numpy, imported only for this class

    return dicom_cases(fx, seed)


def all_cases(fx: Fixtures, seed: int, classes=None, interrupts_per_stage: int = 4) -> list:
    """Every case of the requested classes (default all), in a stable order."""
    makers = {"models": model_cases, "golden": golden_cases, "cli": cli_cases, "data": data_cases,
              "interrupt": lambda f, s: interrupt_cases(f, s, interrupts_per_stage),
              "concurrency": concurrency_cases, "dicom": _dicom_cases}
    out = []
    for name, make in makers.items():
        if classes is None or name in classes:
            out += make(fx, seed)
    return out
