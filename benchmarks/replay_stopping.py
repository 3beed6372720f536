"""Replay the training recipe's stopping rule on recorded curves or training histories.

    python benchmarks/replay_stopping.py [DIR/curves.jsonl ...] [--history RUN/cnn/history.csv ...] \
        [--patience 10] [--smooth 3] [--auroc-tolerance 0.005] [--min-loss-delta 0.001] \
        [--warmup-epochs 15] [--cap 100] [--against KEY=VALUE,...] [--markdown [--by-name] [--lr-path]]

Feeds each curve's validation AUROC and loss, epoch by epoch, to ``deep.schedule_step`` (the
code training runs) with the current ``deep.TrainConfig`` defaults (the flags override them)
and prints where training would stop, the epoch it would keep, that epoch's test study AUROC
(what the recipe reports) and the best test AUROC of the whole curve (an oracle). Curves are
the JSON lines of ``tune_training.py`` (one curve per name and seed, with test AUROCs);
``--history`` reads a run's ``history.csv`` (no test AUROC). ``--against`` replays a second
rule beside the first, given as TrainConfig overrides: ``smooth=1,auroc_tolerance=0`` is the
raw rule, ``warmup_epochs=0`` the recipe without warm-up. ``--markdown`` prints one table (one
row per curve; with ``--by-name`` one row per curve name, the seeds side by side).

The learning rate is the rule's own: it starts at ``lr`` and drops where the rule says. A
curve was trained with the learning rates it records, and an epoch is a function of the
seed, the epoch number and the learning-rate path, so the replay is exact up to the first
epoch where the rule's learning rate departs from the recorded one. Column "exact to" is
the last epoch before that; a stop or kept epoch beyond it is read off a curve trained with
other learning-rate drops (an estimate, not what the rule would train). A curve that ends
before the rule stops it is marked "cut": its recorded budget ended first.
"""
from __future__ import annotations

import argparse
import collections
import csv
import dataclasses
import itertools
import json
import math
import re
from pathlib import Path


def replay(curve: list[dict], tcfg) -> dict:
    """Replay ``deep.schedule_step`` on one curve.

    Parameters
    ----------
    curve : list of dict
        Epoch rows sorted by ``epoch`` (1, 2, ...), each with float ``val_auroc``,
        ``val_loss``, ``lr`` (the rate the epoch was trained with) and, for curves of
        ``tune_training.py``, ``test_study_auroc``.
    tcfg : deep.TrainConfig
        The rule.

    Returns
    -------
    dict
        ``stop_epoch``, ``best_epoch`` (kept), ``val`` (its monitored mean val AUROC),
        ``test`` / ``oracle`` (kept epoch's and best test AUROC; None without test AUROCs),
        ``reason`` ("early", "cap" or "cut"), ``lrs`` (the rule's rate per replayed epoch),
        ``exact_to`` (last epoch whose recorded rate, and all before, equal the rule's) and
        ``seconds`` (training time up to the stop).
    """
    from deep.training import schedule_step

    state = {"epoch": 0, "best_auroc": -1.0, "best_epoch": 0, "wait": 0, "lr_wait": 0,
             "stopped_early": False, "stop_reason": "", "history": []}
    lr, lrs = tcfg.lr, []
    for r in curve[:tcfg.max_epochs]:
        lrs.append(lr)
        _, new_lr = schedule_step(state, tcfg, {"epoch": r["epoch"], "val_auroc": r["val_auroc"],
                                                "val_loss": r["val_loss"], "lr": lr})
        lr = lr if new_lr is None else new_lr
        if state["stop_reason"]:
            break
    end, best = state["epoch"], state["best_epoch"]
    # recorded rates are rounded to 6 significant digits
    exact_to = next((r["epoch"] - 1 for r, x in zip(curve, lrs) if not math.isclose(r["lr"], x, rel_tol=1e-4)),
                    end)
    tests = {r["epoch"]: r.get("test_study_auroc") for r in curve}
    has_test = None not in tests.values()
    return {"stop_epoch": end, "best_epoch": best, "val": state["best_auroc"],
            "test": tests[best] if has_test else None,
            "oracle": max(tests.values()) if has_test else None,
            "reason": {"early_stop": "early", "max_epochs": "cap"}.get(state["stop_reason"], "cut"),
            "lrs": lrs, "exact_to": exact_to, "seconds": sum(r.get("seconds", 0.0) for r in curve[:end])}


def lr_path(lrs: list[float]) -> str:
    """The rates of a replay as 'RATE, RATE from EPOCH, ...', e.g. '1e-3, 3e-4 from 19'."""
    def fmt(x):
        m, e = f"{x:.1e}".split("e")
        return f"{m.rstrip('0').rstrip('.')}e{int(e)}"

    parts = [fmt(lrs[0])] if lrs else []
    parts += [f"{fmt(b)} from {i + 2}" for i, (a, b) in enumerate(itertools.pairwise(lrs)) if b != a]
    return ", ".join(parts)


NEEDED = ("epoch", "val_auroc", "val_loss", "lr")


def _checked(rows: list[dict], source: str) -> list[dict]:
    """``rows`` sorted by epoch; ValueError unless they have NEEDED and epochs 1, 2, ..., n."""
    for r in rows:
        missing = [k for k in NEEDED if k not in r]
        if missing:
            raise ValueError(f"{source}: an epoch row lacks {', '.join(missing)}")
    rows = sorted(rows, key=lambda r: r["epoch"])
    if [r["epoch"] for r in rows] != list(range(1, len(rows) + 1)):
        raise ValueError(f"{source}: epochs are not 1..{len(rows)} without gaps or repeats")
    return rows


def load_curves(paths: list[str]) -> dict:
    """JSON lines of ``tune_training.py`` -> {(name, seed): rows sorted by epoch}."""
    curves = collections.defaultdict(list)
    for path in paths:
        with open(path) as f:
            for line in f:
                r = json.loads(line)
                curves[(str(r["name"]), str(r["seed"]))].append(r)
    return {k: _checked(v, f"curve {k[0]} seed {k[1]}") for k, v in curves.items()}


def load_history(path: str) -> tuple[tuple[str, str], list[dict]]:
    """A run's ``history.csv`` -> ((run name, "-"), rows); RUN/cnn/history.csv is named RUN."""
    p = Path(path)
    name = p.parent.parent.name if p.name == "history.csv" and p.parent.name == "cnn" else p.stem
    with open(p, newline="") as f:
        rows = [{k: (int(v) if k == "epoch" else float(v)) for k, v in r.items()} for r in csv.DictReader(f)]
    return (name, "-"), _checked(rows, str(p))


def overrides(base, text: str):
    """``TrainConfig`` ``base`` with 'key=value,key=value' applied (int or float, as the field)."""
    names = {f.name for f in dataclasses.fields(base)} - {"augment"}
    changes = {}
    for item in filter(None, text.split(",")):
        key, _, value = (t.strip() for t in item.partition("="))
        if key not in names:
            raise ValueError(f"--against: expected KEY=VALUE with KEY one of {', '.join(sorted(names))}, "
                             f"got {item!r}")
        try:
            changes[key] = float(value) if isinstance(getattr(base, key), float) else int(value)
        except ValueError:
            raise ValueError(f"--against: {key} needs a number, got {value!r}") from None
    return dataclasses.replace(base, **changes)


def describe(tcfg, base) -> str:
    """The fields where ``tcfg`` differs from ``base``, e.g. 'smooth=1, auroc_tolerance=0'."""
    diff = [f"{f.name}={getattr(tcfg, f.name):g}" for f in dataclasses.fields(tcfg)
            if f.name != "augment" and getattr(tcfg, f.name) != getattr(base, f.name)]
    return ", ".join(diff) or "recipe"


def _natural(key: tuple[str, str]) -> tuple:
    """Sort key of (name, seed): numbers in them compare as numbers (ms1, ms50, ms100)."""
    return tuple([int(t) if t.isdigit() else t for t in re.split(r"(\d+)", part)] for part in key)


def _cell(x, fmt="{:.3f}"):
    return "-" if x is None else fmt.format(x)


def print_text(curves: dict, rules: list, show_lr: bool) -> None:
    for label, tcfg in rules:
        print(f"rule: {label}")
        print("curve          seed stop kept  val    test   oracle reason exact_to minutes")
        per_name = collections.defaultdict(list)
        for (name, seed), curve in curves.items():
            r = replay(curve, tcfg)
            per_name[name].append(r)
            print(f"{name:14s} {seed:>4s} {r['stop_epoch']:4d} {r['best_epoch']:4d}  {r['val']:.3f}  "
                  f"{_cell(r['test']):5s}  {_cell(r['oracle']):5s}  {r['reason']:6s} {r['exact_to']:8d} "
                  f"{r['seconds'] / 60:5.1f}" + (f"  lr {lr_path(r['lrs'])}" if show_lr else ""))
        tested = {n: rs for n, rs in per_name.items() if rs[0]["test"] is not None}
        if tested:
            print("\ncurve          n  mean test  min test  mean stop")
            for name, rs in sorted(tested.items()):
                t = [r["test"] for r in rs]
                print(f"{name:14s} {len(rs)}  {sum(t) / len(t):.3f}      {min(t):.3f}     "
                      f"{sum(r['stop_epoch'] for r in rs) / len(rs):.1f}")
        print()


def _markdown_row(cells: list) -> str:
    return "| " + " | ".join(cells) + " |"


def print_markdown(curves: dict, rules: list, show_lr: bool) -> None:
    """One row per curve: per rule the stop epoch (with "cut" / "cap"), kept epoch, its test
    AUROC, the last exact epoch (and the learning-rate path); then the curve's oracle. With two
    rules the columns of the first are marked A, of the second B."""
    has_test = any(c[0].get("test_study_auroc") is not None for c in curves.values())
    has_seed = any(seed != "-" for _, seed in curves)
    if len(rules) > 1:
        print("; ".join(f"{tag}: {label}" for tag, (label, _) in zip("AB", rules)) + "\n")
    head = ["curve"] + (["seed"] if has_seed else [])
    for tag, _ in zip("AB", rules):
        pre = f"{tag} " if len(rules) > 1 else ""
        head += [f"{pre}stop", f"{pre}kept"] + ([f"{pre}test AUROC"] if has_test else [])
        head += [f"{pre}exact to"] + ([f"{pre}learning rate"] if show_lr else [])
    head += ["oracle"] if has_test else []
    print(_markdown_row(head))
    print("|" + "---|" * len(head))
    for (name, seed), curve in curves.items():
        cells, oracle = [name] + ([seed] if has_seed else []), None
        for _, tcfg in rules:
            r = replay(curve, tcfg)
            oracle = r["oracle"]
            stop = str(r["stop_epoch"]) + ("" if r["reason"] == "early" else f" ({r['reason']})")
            cells += [stop, str(r["best_epoch"])] + ([_cell(r["test"])] if has_test else [])
            cells += [str(r["exact_to"])] + ([lr_path(r["lrs"])] if show_lr else [])
        print(_markdown_row(cells + ([_cell(oracle)] if has_test else [])))


def print_by_name(curves: dict, tcfg) -> None:
    """One row per curve name: per seed the test AUROC of the kept epoch and the oracle, the
    mean of the kept epochs' test AUROCs, and the seeds whose replay is cut (curves only)."""
    by_name = collections.defaultdict(dict)
    for (name, seed), curve in curves.items():
        by_name[name][seed] = replay(curve, tcfg)
    seeds = sorted({s for rs in by_name.values() for s in rs})
    head = ["curve"] + [f"seed {s}: test AUROC (oracle)" for s in seeds] + ["mean test AUROC", "cut"]
    print(_markdown_row(head))
    print("|" + "---|" * len(head))
    for name, rs in by_name.items():
        tests = [r["test"] for r in rs.values()]
        cells = [name] + [f"{_cell(rs[s]['test'])} ({_cell(rs[s]['oracle'])})" if s in rs else "-" for s in seeds]
        cells += [_cell(sum(tests) / len(tests)),
                  ", ".join(f"seed {s}" for s, r in rs.items() if r["reason"] == "cut") or "-"]
        print(_markdown_row(cells))


def parse(argv=None):
    from deep.config import TrainConfig

    t = TrainConfig()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("curves", nargs="*", help="curves.jsonl files of tune_training.py")
    p.add_argument("--history", nargs="+", default=[], metavar="CSV", help="history.csv files of runs")
    p.add_argument("--patience", type=int, default=t.patience)
    p.add_argument("--smooth", type=int, default=t.smooth)
    p.add_argument("--auroc-tolerance", type=float, default=t.auroc_tolerance)
    p.add_argument("--min-loss-delta", type=float, default=t.min_loss_delta)
    p.add_argument("--warmup-epochs", type=int, default=t.warmup_epochs)
    p.add_argument("--cap", type=int, default=t.max_epochs)
    p.add_argument("--against", metavar="KEY=VALUE,...", help="a second rule: TrainConfig overrides of the first")
    p.add_argument("--markdown", action="store_true", help="one markdown table")
    p.add_argument("--by-name", action="store_true", help="with --markdown: one row per curve name")
    p.add_argument("--lr-path", action="store_true", help="show the rule's learning-rate path")
    args = p.parse_args(argv)
    if not args.curves and not args.history:
        p.error("give curves.jsonl files and/or --history CSV files")
    if args.by_name and (args.against or args.history or not args.markdown):
        p.error("--by-name needs --markdown and curves.jsonl files, without --against or --history")
    return p, args


def main(argv=None) -> int:
    from deep.config import TrainConfig
    from deep.errors import DeepError

    p, args = parse(argv)
    try:
        tcfg = dataclasses.replace(TrainConfig(), patience=args.patience, smooth=args.smooth,
                                   auroc_tolerance=args.auroc_tolerance, min_loss_delta=args.min_loss_delta,
                                   warmup_epochs=args.warmup_epochs, max_epochs=args.cap)
        rules = [(describe(tcfg, TrainConfig()), tcfg)]
        if args.against:
            other = overrides(tcfg, args.against)
            rules.append((describe(other, TrainConfig()), other))
    except (ValueError, DeepError) as e:
        p.error(str(e))
    try:
        curves = load_curves(args.curves)
        curves.update(load_history(h) for h in args.history)
    except (OSError, ValueError, KeyError, TypeError) as e:
        p.error(f"cannot read the curves: {e}")
    curves = dict(sorted(curves.items(), key=lambda kv: _natural(kv[0])))
    if args.by_name:
        print_by_name(curves, tcfg)
    else:
        (print_markdown if args.markdown else print_text)(curves, rules, args.lr_path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
