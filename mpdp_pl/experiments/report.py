"""The one report of runs: ``python -m mpdp_pl.report PATH... [--out DIR] [--anchors CSV]
[--at [ENV=]STEP ...] [--metric M] [--final LABEL ...] [--threshold R] [--bootstrap-reps N]``.

    python -m mpdp_pl.report runs/grid
    python -m mpdp_pl.report docs/grid_hopper.csv runs/new --out runs/both --anchors docs/anchors_hopper.csv

Each PATH is a grid (``train.py -m``'s ``--out``), a single run, any folder holding runs, or a
``results.csv`` of an earlier report (:mod:`.results`). The report goes to ``--out`` (default:
the only PATH, when it is a folder): ``results.csv`` (every evaluation of every run),
``curves.png`` (mean and min-max over seeds per task, published anchors dashed), ``table.md``
(mean ± std at each task's half budget and budget, or at ``--at``, every seed's value at those
steps, then rliable's statistics of the returns at the budget), ``stats.csv`` and
``profiles.png``. ``--metric`` reports another column of ``metrics.csv`` instead of the return
(the paper's Fig. 2 and 3: ``train/realized_horizon``, ``model/error``); rliable's statistics
are for returns only.
``--final`` draws the named runs as one dotted value per task, the mean of their last
evaluations (the paper's Fig. 1 draws PETS at the task's budget and SAC at 2M env steps so),
listed below the table; they set no task's budget, and runs of theirs that went past the budget
stay out of the statistics.
``train.py -m`` writes this report of its grid when its jobs are done. A grid of
``train.py -m experiment=NAME`` reported alone takes the experiment's report settings for the
options not given (``at``, ``anchors``, ``final``, ``metric``; ``conf/experiment/NAME.yaml``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

from ..config import CONF_DIR
from ..errors import ConfigError
from . import aggregate
from .results import (Results, finals_table, grid_experiment, plot, read_anchors, read_runs,
                      report_settings, seeds_table, table, write_results)


def steps_at(budgets: dict[str, int], items: list[str]) -> dict[str, list[int]]:
    """Each task's table columns: half its budget and its budget, or the ``--at`` items
    (``STEP`` for every task, ``ENV=STEP`` for one)."""
    if not items:
        return {env: sorted({n // 2, n}) for env, n in budgets.items()}
    at: dict[str, list[int]] = {}
    for item in items:
        env, _, step = item.rpartition("=")
        if not step.isdigit() or (env and env not in budgets):
            raise ConfigError(f"--at {item}: expected STEP or ENV=STEP with a task of the report "
                              f"({', '.join(budgets)})")
        for e in [env] if env else budgets:
            at[e] = sorted({*at.get(e, []), int(step)})
    return at


def write_report(out: Path, results: Results, at: dict[str, list[int]], title: str,
                 threshold: float | None = None, anchors=None, reps: int = 2000,
                 metric: str = "eval/return", finals=()) -> None:
    """A report in ``out``: ``results.csv``, ``curves.png``, ``table.md`` (``metric`` at the
    ``at`` steps, then, for the return, rliable's statistics of the final returns),
    ``stats.csv`` and ``profiles.png``; the table is printed too. Written by
    ``python -m mpdp_pl.report`` and at the end of ``train.py -m``."""
    out.mkdir(parents=True, exist_ok=True)
    write_results(results, out / "results.csv", metric)
    plot(results, out / "curves.png", title, anchors, metric, finals)
    md = (table(results, at, threshold, anchors, metric) + seeds_table(results, at, metric)
          + finals_table(results, finals))
    # a --final label whose runs went past the task's budget (SAC at 2M) is a reference, not a
    # score at the budget
    beyond = {(e, a) for (e, a, _), v in results.items()
              if a in finals and v and v[-1]["env_steps"] > max(at.get(e, [0]))}
    scores = aggregate.final_scores({k: v for k, v in results.items() if k[:2] not in beyond}, at) \
        if metric == "eval/return" else {}
    if scores:
        stats = aggregate.summarize(scores, reps=reps)
        md += aggregate.markdown(stats, scores, at, reps)
        aggregate.write_csv(stats, out / "stats.csv")
        aggregate.plot_profiles(scores, out / "profiles.png", reps)
    (out / "table.md").write_text(md)
    print(md, end="")
    print(f"wrote {out / 'results.csv'}, {out / 'curves.png'}, {out / 'table.md'}"
          + (f", {out / 'stats.csv'}, {out / 'profiles.png'}" if scores else ""))


def report(paths: list[Path], out: Path, at_items: list[str] = (), metric: str = "eval/return",
           anchors: Path | None = None, threshold: float | None = None, reps: int = 2000,
           title: str | None = None, finals=()) -> Results:
    """Read every run under ``paths`` and write their report into ``out``; bad input is a
    :class:`ConfigError` raised before anything is written."""
    if reps < 1:
        raise ConfigError(f"--bootstrap-reps {reps}: must be >= 1")
    results, budgets = read_runs(paths, metric, finals)
    at = steps_at(budgets, list(at_items))
    published = read_anchors(anchors) if anchors else None
    write_report(out, results, at, title or " ".join(str(p) for p in paths), threshold,
                 published, reps, metric, finals)
    return results


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m mpdp_pl.report", description=__doc__.split("\n")[0])
    p.add_argument("paths", nargs="+", type=Path, metavar="PATH",
                   help="grids, runs, folders of runs, or results.csv files of earlier reports")
    p.add_argument("--out", type=Path, help="where the report goes (default: the only PATH)")
    p.add_argument("--anchors", type=Path, metavar="CSV",
                   help="published curves beside the runs (e.g. docs/anchors_hopper.csv)")
    p.add_argument("--at", nargs="+", default=[], metavar="[ENV=]STEP",
                   help="table columns (default: half of each task's budget and the budget)")
    p.add_argument("--metric",
                   help="the metrics.csv column reported (default eval/return)")
    p.add_argument("--threshold", type=float,
                   help="add a column: the first env step whose evaluation reached this return")
    p.add_argument("--final", nargs="+", default=[], metavar="LABEL",
                   help="draw these runs as one dotted value, their mean last evaluation (the "
                        "paper's PETS in Fig. 1)")
    p.add_argument("--bootstrap-reps", type=int, default=2000, metavar="N",
                   help="stratified-bootstrap resamples of the rliable statistics (default 2000)")
    return p.parse_args(argv)


def experiment_defaults(a: argparse.Namespace) -> None:
    """A grid of ``train.py -m experiment=NAME`` reported alone: the options not given take the
    experiment's report settings, those of the report ``train.py -m`` writes at its end."""
    name = grid_experiment(a.paths[0]) if len(a.paths) == 1 and a.paths[0].is_dir() else None
    try:
        settings = report_settings(CONF_DIR / "experiment" / f"{name}.yaml") if name else {}
    except (ConfigError, OSError, yaml.YAMLError, AttributeError) as e:  # edited since the grid ran
        print(f"experiment={name}'s report settings not used: {str(e).splitlines()[0]}")
        settings = {}
    if a.metric and a.metric != settings.get("metric", "eval/return"):
        settings.pop("anchors", None)  # published returns, not another metric's curves
    taken = []
    for key, given in (("at", a.at), ("final", a.final), ("metric", a.metric),
                       ("anchors", a.anchors)):
        if not given and key in settings:
            value = settings[key]
            setattr(a, key, CONF_DIR.parent / value if key == "anchors"
                    else [str(v) for v in value] if isinstance(value, list) else value)
            taken.append(f"{key}={value}")
    if taken:
        print(f"experiment={name}'s report settings: {', '.join(taken)}")
    a.metric = a.metric or "eval/return"


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    out = a.out or (a.paths[0] if len(a.paths) == 1 and a.paths[0].is_dir() else None)
    try:
        for path in a.paths:
            if not path.exists():
                raise ConfigError(f"{path}: no such run, grid or results.csv")
        if out is None:
            raise ConfigError("--out DIR is needed with several paths or a results.csv")
        experiment_defaults(a)
        report(a.paths, out, a.at, a.metric, a.anchors, a.threshold, a.bootstrap_reps,
               finals=a.final)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0
