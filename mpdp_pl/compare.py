"""Comparison runner: algorithms x tasks x seeds, as in the MPDP paper's Fig. 1.

    python -m mpdp_pl.compare --envs InvertedPendulum-v4=5000 Hopper-v4=10000 \\
        --algos mpdp sac mbpo mppve --seeds 0 1 --max-seeds mbpo=1 mppve=1 --out runs/grid \\
        init_random_steps=1000

Every run is ``train.py`` with ``env=E algo=A seed=S steps=N out=OUT/E/A-seedS OVERRIDES`` in a
subprocess with one torch thread, launched by a Hydra launcher plugin (``mpdp_pl.multirun``):
by default ``mpdp_pool``, ``--workers`` runs (default: the number of cores) side by side;
``hydra/launcher=submitit_slurm hydra.launcher.partition=...`` among the overrides sends the
runs to SLURM instead. A run whose ``metrics.csv`` already reaches its budget is reused, so an interrupted grid
resumes where it stopped. A partly done run continues from its latest checkpoint (runs write one
every ``--checkpoint-every`` env steps) with ``train.py --resume``; this also extends a finished
grid to a larger budget. A partly written run without a usable checkpoint is moved aside (never
deleted) and started again. The grid's overrides are stored in ``OUT/grid.json`` and a resume
with other overrides is refused, as is a second runner on a grid in use. Outputs, all in OUT:

- ``results.csv``: every evaluation of every run (algo, env, seed, env_steps, return, elapsed s);
- ``curves.png``: one panel per task, mean and min-max over seeds against env steps;
- ``table.md``: return at fixed env-step counts (mean +- std over seeds) and wall time per 1k env
  steps, one row per (task, algorithm), then the rliable statistics of the final returns
  (:mod:`mpdp_pl.aggregate`: IQM and mean with 95% stratified-bootstrap intervals per task,
  normalized aggregates across tasks, the probability that MPDP improves on each other row);
- ``stats.csv``: those statistics; ``profiles.png``: their performance profiles.

``--variant NAME ALGO KEY=VALUE ...`` (repeatable) adds a named configuration of an algorithm
(an ablation, another update ratio) whose runs are ``NAME-seedS`` and whose rows are ``NAME``;
its definition is stored in ``grid.json`` too, and a resume that changes it is refused.

``--merge CSV`` (repeatable) adds the evaluations of earlier grids (their ``results.csv``) to
all three, so that runs made at different times (e.g. ``docs/grid_hopper.csv``) share one table
and figure.
"""

from __future__ import annotations

import argparse
import csv
import fcntl
import json
import os
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path

from . import aggregate

@dataclass(frozen=True)
class Run:
    env: str
    algo: str
    seed: int
    steps: int
    out: Path
    label: str = ""                   # the run's name in its task folder (default algo)
    overrides: tuple[str, ...] = ()   # this run's own; the grid's (user's) overrides come after

    @property
    def name(self) -> str:
        return f"{self.label or self.algo}-seed{self.seed}"

    @property
    def dir(self) -> Path:
        return self.out / self.env / self.name

    @property
    def log(self) -> Path:
        return self.out / self.env / f"{self.name}.log"


def read_evals(run_dir: Path, metric: str = "eval/return") -> list[dict]:
    """The rows of a run's metrics.csv that have ``metric``, as (env_steps, return (the
    metric's value), elapsed) dicts."""
    path = run_dir / "metrics.csv"
    if not path.exists():
        return []
    with open(path) as f:
        rows = list(csv.DictReader(f))
    return [{"env_steps": int(r["env_steps"]), "return": float(r[metric]),
             "elapsed": float(r["time/elapsed"])} for r in rows if r.get(metric)]


Results = dict[tuple[str, str, int], list[dict]]  # (env, algo, seed) -> its evaluations


def read_results(path: Path) -> Results:
    """The evaluations in a ``results.csv`` written by this runner; a one-line error otherwise."""
    results: Results = {}
    try:
        with open(path) as f:
            for row in csv.DictReader(f):
                results.setdefault((row["env"], row["algo"], int(row["seed"])), []).append(
                    {"env_steps": int(row["env_steps"]), "return": float(row["eval/return"]),
                     "elapsed": float(row["time/elapsed"]),
                     **({"failed": True} if row.get("failed") == "1" else {})})
    except (OSError, KeyError, ValueError, TypeError) as e:
        raise SystemExit(f"error: --merge {path}: not a results.csv of this runner "
                         f"({type(e).__name__}: {e})") from None
    return {k: sorted(v, key=lambda e: e["env_steps"]) for k, v in results.items()}


def collect(runs: list[Run], earlier: Results | None = None) -> Results:
    """Every run's evaluations, keyed (env, algo or variant name, seed), then the ``earlier``
    ones (from :func:`read_results`) for the keys this grid has no evaluation of."""
    results = {(r.env, r.label or r.algo, r.seed): read_evals(r.dir) for r in runs}
    for r in runs:  # a run that stopped at nonfinite_limit: every evaluation says so
        if stopped_by_fault(r):
            for e in results[(r.env, r.label or r.algo, r.seed)]:
                e["failed"] = True
    for key, evals in (earlier or {}).items():
        if not results.get(key):
            results[key] = evals
    return results


def run_all(runs: list[Run], overrides: list[str], workers: int,
            checkpoint_every: int = 1000) -> list[Run]:
    """Run the unfinished runs through Hydra's launcher plugins (``mpdp_pl.multirun``;
    ``hydra/...`` items of ``overrides`` choose and set the launcher, default mpdp_pool with
    ``workers`` processes); returns the ones that failed. A finished run is reused, a partial
    one continues from its checkpoint or, without one, is moved aside and started afresh."""
    from .multirun import launch_jobs

    hydra_args = [o for o in overrides if is_hydra(o)]
    pool = all(o.split("=", 1)[1] == "mpdp_pool" for o in hydra_args if o.startswith("hydra/launcher="))
    if pool and not any(o.startswith("hydra.launcher.workers=") for o in hydra_args):
        hydra_args.append(f"hydra.launcher.workers={workers}")
    overrides = [o for o in overrides if o not in hydra_args]
    todo = [r for r in runs if not finished(r)]
    if not todo:
        return []
    codes = launch_jobs(todo[0].out.resolve(), [job(r, overrides, checkpoint_every) for r in todo],
                        hydra_args)
    failed = []
    for r, rc in zip(todo, codes):
        if rc == 0:
            continue
        if not isinstance(rc, int):  # the job raised before its train.py started: keep why
            r.log.parent.mkdir(parents=True, exist_ok=True)
            with open(r.log, "a") as f:
                f.write(f"the launcher's job failed before train.py started: {rc!r}\n")
        print(f"{r.env} {r.name}: failed, see {r.log}")
        failed.append(r)
    return failed


def is_hydra(override: str) -> bool:
    """``hydra/launcher=...`` and ``hydra.launcher.x=...``: settings of the launcher, not of a run."""
    return override.startswith(("hydra/", "hydra."))


def job(run: Run, overrides: list[str], checkpoint_every: int = 1000) -> list[str]:
    """The run as a job of :func:`mpdp_pl.multirun.run_job`: its own ``out`` (this runner's
    layout), no logger, a checkpoint every ``checkpoint_every`` env steps to resume from."""
    return [f"env={run.env}", f"algo={run.algo}", f"seed={run.seed}", f"steps={run.steps}",
            f"out={run.dir.resolve()}", "logger=none", f"checkpoint_every={checkpoint_every}",
            *run.overrides, *overrides]


def stopped_by_fault(run: Run) -> bool:
    """The run stopped at ``nonfinite_limit`` (its ``failed.txt``): a result, never rerun."""
    return (run.dir / "failed.txt").exists()  # guard.FAILED_MARKER


def finished(run: Run) -> bool:
    from .multirun import finished

    return finished(run.dir, run.steps)


def value_at(evals: list[dict], step: int) -> float | None:
    """The return of the last evaluation at or before ``step``; None if there is none or the
    run has not reached ``step`` (a partial run must not stand in for a later point). A failed
    run (stopped at ``nonfinite_limit``) keeps its last evaluation at every later point: it stays
    in the table, marked."""
    before = [e for e in evals if e["env_steps"] <= step]
    if not before or (evals[-1]["env_steps"] < step and not evals[-1].get("failed")):
        return None
    return before[-1]["return"]


def _fmt(values: list[float]) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.0f}"
    return f"{statistics.mean(values):.0f} ± {statistics.stdev(values):.0f}"


def first_reaching(evals: list[dict], threshold: float) -> int | None:
    return next((e["env_steps"] for e in evals if e["return"] >= threshold), None)


def table(results: Results, at: dict[str, list[int]], threshold: float | None = None,
          anchors: dict[tuple[str, str], list[tuple]] | None = None) -> str:
    """Markdown: per (task, algorithm), return at the fixed step counts (mean ± std over seeds),
    optionally the first env step whose evaluation reached ``threshold`` (per seed, "-" if
    never), and wall seconds per 1k env steps (mean over seeds, whole loop incl. evaluation).
    Published ``anchors`` follow each task's rows, "(published)", at the same step counts
    (mean ± std as published, "-" where they report no such step; seeds: theirs)."""
    from .config import task_name

    width = max(len(v) for v in at.values())
    head = ["task", "algo", "seeds", *[f"return ({chr(97 + i)})" for i in range(width)],
            *([f"first ≥ {threshold:g}"] if threshold is not None else []), "wall s / 1k steps"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for env in dict.fromkeys(env for env, _, _ in results):
        for algo in dict.fromkeys(a for e, a, _ in results if e == env):
            evals = [v for (e, a, _), v in results.items() if e == env and a == algo and v]
            cells = []
            for step in at.get(env, []):
                vals = [v for v in (value_at(e, step) for e in evals) if v is not None]
                cells.append(f"{_fmt(vals)} @ {step:,}")
            cells += ["-"] * (width - len(cells))
            if threshold is not None:
                cells.append(" / ".join(str(first_reaching(e, threshold) or "-") for e in evals))
            wall = [e[-1]["elapsed"] / (e[-1]["env_steps"] / 1000) for e in evals]
            stopped = [f"{seed} at {v[-1]['env_steps']:,}" for (e, a, seed), v in results.items()
                       if e == env and a == algo and v and v[-1].get("failed")]
            seeds = str(len(evals)) + (f" (failed, non-finite: seed {', '.join(stopped)}; its last "
                                       f"evaluation counts after it)" if stopped else "")
            lines.append("| " + " | ".join([env, algo, seeds, *cells,
                                             f"{statistics.mean(wall):.0f}" if wall else "-"]) + " |")
        for (task, method), points in (anchors or {}).items():
            if task != task_name(env):
                continue
            by_step = {p[0]: p for p in points}
            cells = [f"{by_step[s][1]:.0f} ± {by_step[s][2]:.0f} @ {s:,}" if s in by_step else "-"
                     for s in at.get(env, [])]
            cells += ["-"] * (width - len(cells)) + (["-"] if threshold is not None else [])
            lines.append("| " + " | ".join([env, f"{method} (published)", "-", *cells, "-"]) + " |")
    return "\n".join(lines) + "\n"


def write_results(results: Results, path: Path) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["algo", "env", "seed", "env_steps", "eval/return", "time/elapsed", "failed"])
        for (env, algo, seed), evals in results.items():
            for e in evals:
                w.writerow([algo, env, seed, e["env_steps"], e["return"], e["elapsed"],
                            int(e.get("failed", False))])


ANCHOR_METHODS = ("DHMBPO", "MACURA", "MBPO", "SAC")


def read_anchors(path: Path, methods=ANCHOR_METHODS) -> dict[tuple[str, str], list[tuple]]:
    """Published curves (``docs/anchors_hopper.csv``: method, env, env_steps, mean_return,
    std_return, ...) as {(task, method): [(env_steps, mean, std), ...]}; a one-line error if
    the file is not such a table."""
    out: dict[tuple[str, str], list[tuple]] = {}
    try:
        with open(path) as f:
            for row in csv.DictReader(f):
                if row["method"] in methods:
                    out.setdefault((row["env"], row["method"]), []).append(
                        (int(row["env_steps"]), float(row["mean_return"]), float(row["std_return"])))
    except (OSError, KeyError, ValueError, TypeError) as e:
        raise SystemExit(f"error: --anchors {path}: not an anchors table ({type(e).__name__}: {e})") from None
    return {k: sorted(v) for k, v in out.items()}


def plot(results: Results, path: Path, title: str,
         anchors: dict[tuple[str, str], list[tuple]] | None = None) -> None:
    """Fig. 1 style: one panel per task, mean return over seeds with the min-max band; published
    ``anchors`` (dashed, mean +- std over their seeds) up to the panel's largest env step."""
    from .config import task_name
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    envs = list(dict.fromkeys(env for env, _, _ in results))
    fig, axes = plt.subplots(1, len(envs), figsize=(5 * len(envs), 3.8), squeeze=False)
    for ax, env in zip(axes[0], envs):
        for algo in dict.fromkeys(a for e, a, _ in results if e == env):
            curves = [{e["env_steps"]: e["return"] for e in v}
                      for (e_, a, _), v in results.items() if e_ == env and a == algo]
            curves = [c for c in curves if c]
            if not curves:
                continue
            steps = sorted(set.intersection(*(set(c) for c in curves)))
            vals = [[c[s] for c in curves] for s in steps]
            ax.plot(steps, [statistics.mean(v) for v in vals], label=f"{algo} ({len(curves)})")
            ax.fill_between(steps, [min(v) for v in vals], [max(v) for v in vals], alpha=0.2)
        last = max((e["env_steps"] for (e_, _, _), v in results.items() if e_ == env for e in v),
                   default=0)
        for (task, method), points in (anchors or {}).items():
            points = [p for p in points if task == task_name(env) and p[0] <= last]
            if points:
                x, m, sd = zip(*points)
                ax.plot(x, m, "--", lw=1, label=f"{method} (published)")
                ax.fill_between(x, [a - b for a, b in zip(m, sd)], [a + b for a, b in zip(m, sd)],
                                alpha=0.07)
        ax.set_title(env)
        ax.set_xlabel("env steps")
        ax.set_ylabel("eval return")
        ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(out: Path, results: Results, at: dict[str, list[int]], title: str,
                 threshold: float | None = None, anchors=None, reps: int = 2000) -> None:
    """A grid's report in ``out``: ``results.csv``, ``curves.png``, ``table.md`` (returns at the
    ``at`` steps, then rliable's statistics of the final returns), ``stats.csv`` and
    ``profiles.png``; the table is printed too. Used by this runner and by ``train.py -m``."""
    write_results(results, out / "results.csv")
    plot(results, out / "curves.png", title, anchors)
    md = table(results, at, threshold, anchors)
    scores = aggregate.final_scores(results, at)
    if scores:
        stats = aggregate.summarize(scores, reps=reps)
        md += aggregate.markdown(stats, scores, at, reps)
        aggregate.write_csv(stats, out / "stats.csv")
        aggregate.plot_profiles(scores, out / "profiles.png", reps)
    (out / "table.md").write_text(md)
    print(md, end="")
    print(f"wrote {out / 'results.csv'}, {out / 'curves.png'}, {out / 'table.md'}"
          + (f", {out / 'stats.csv'}, {out / 'profiles.png'}" if scores else ""))


def _pairs(items: list[str], what: str) -> dict[str, int]:
    out = {}
    for item in items:
        key, sep, val = item.partition("=")
        if not sep or not val.isdigit():
            raise SystemExit(f"error: {what} expects NAME=INT, got {item!r}")
        out[key] = int(val)
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m mpdp_pl.compare", description=__doc__.split("\n")[0])
    p.add_argument("--envs", nargs="+", required=True, metavar="ENV=STEPS",
                   help="tasks with their env-step budgets, e.g. Hopper-v4=10000")
    p.add_argument("--algos", nargs="+", default=["mpdp", "sac"])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--variant", nargs="+", action="append", default=[],
                   metavar=("NAME ALGO", "KEY=VALUE"),
                   help="a named configuration run beside --algos (repeatable): NAME ALGO "
                        "[KEY=VALUE ...], e.g. --variant mpdp-td mpdp critic_target=td; its runs "
                        "are NAME-seedS and --max-seeds NAME=N applies")
    p.add_argument("--max-seeds", nargs="*", default=[], metavar="ALGO=N",
                   help="run only the first N seeds of ALGO or variant NAME (e.g. mbpo=1)")
    p.add_argument("--at", nargs="*", default=[], metavar="ENV=STEP",
                   help="extra table columns; by default half the budget and the budget")
    p.add_argument("--threshold", type=float, default=None,
                   help="add a column: first env step whose evaluation reached this return")
    p.add_argument("--merge", action="append", type=Path, default=[], metavar="CSV",
                   help="an earlier grid's results.csv to add to the outputs (repeatable; runs "
                        "of this grid take precedence)")
    p.add_argument("--anchors", type=Path, default=None, metavar="CSV",
                   help="published curves to draw beside the runs (e.g. docs/anchors_hopper.csv)")
    p.add_argument("--report-only", action="store_true",
                   help="run nothing; write the CSV, PNG and table from the runs that exist")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    p.add_argument("--checkpoint-every", type=int, default=1000, metavar="N",
                   help="env steps between a run's checkpoints, from which an interrupted grid "
                        "continues (0: only at the end of a run)")
    p.add_argument("--bootstrap-reps", type=int, default=2000, metavar="N",
                   help="stratified-bootstrap resamples of the rliable statistics (default 2000)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("overrides", nargs="*", help="key=value overrides for every run")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    from .algos import ALGOS

    if a.bootstrap_reps < 1:
        raise SystemExit(f"error: --bootstrap-reps {a.bootstrap_reps}: must be >= 1")
    budgets = _pairs(a.envs, "--envs")
    max_seeds = _pairs(a.max_seeds, "--max-seeds")
    variants = {}  # name -> (algo, overrides)
    for v in a.variant:
        if len(v) < 2 or any("=" not in kv for kv in v[2:]):
            raise SystemExit(f"error: --variant expects NAME ALGO [KEY=VALUE ...], got {' '.join(v)!r}")
        if v[0] in ALGOS or v[0] in variants or "/" in v[0]:
            raise SystemExit(f"error: --variant name {v[0]!r} is taken or not a plain name")
        variants[v[0]] = (v[1], tuple(v[2:]))
    grid_file = a.out / "grid.json"
    stored = json.loads(grid_file.read_text()) if grid_file.exists() else {}
    for algo in [*a.algos, *(algo for algo, _ in variants.values()),
                 *(m for m in max_seeds if m not in variants and m not in stored.get("variants", {}))]:
        if algo not in ALGOS:
            raise SystemExit(f"error: unknown algorithm {algo!r}; choose from {sorted(ALGOS)}")
    at = {env: sorted({n // 2, n}) for env, n in budgets.items()}
    for item in a.at:  # several points per task allowed, so not through a dict
        env, step = next(iter(_pairs([item], "--at").items()))
        at[env] = sorted({*at.get(env, []), step})
    earlier: Results = {}
    for path in a.merge:  # read before any run starts: a bad file must not cost a grid
        earlier.update(read_results(path))
    anchors = read_anchors(a.anchors) if a.anchors else None
    if stored and stored["overrides"] != a.overrides:
        raise SystemExit(f"error: {a.out} holds a grid run with overrides "
                         f"{stored['overrides']}; use another --out")
    known = {k: (algo, tuple(o)) for k, (algo, o) in stored.get("variants", {}).items()}
    for name, definition in variants.items():  # a resumed run keeps the config it started with
        if name in known and known[name] != definition:
            raise SystemExit(f"error: {a.out} ran variant {name!r} as {' '.join([known[name][0], *known[name][1]])}; "
                             f"use another name or --out")
    known.update(variants)
    for name, (_, own) in known.items():  # the grid's overrides come last: they would win silently
        clash = {kv.split("=", 1)[0] for kv in own} & {kv.split("=", 1)[0] for kv in a.overrides}
        if clash:
            raise SystemExit(f"error: variant {name!r} sets {', '.join(sorted(clash))}, which the "
                             f"grid's overrides set too")
    runs = [Run(env, algo, s, steps, a.out) for env, steps in budgets.items() for algo in a.algos
            for s in a.seeds[: max_seeds.get(algo, len(a.seeds))]]
    runs += [Run(env, algo, s, steps, a.out, name, overrides)
             for env, steps in budgets.items() for name, (algo, overrides) in known.items()
             for s in a.seeds[: max_seeds.get(name, len(a.seeds))]]
    from .config import ConfigError, load_config, parse_overrides
    for r in runs:  # every run's config, before any run starts: a typo must not cost a grid
        try:
            load_config(r.env, r.algo, parse_overrides(
                [*r.overrides, *(o for o in a.overrides if not is_hydra(o))]))
        except ConfigError as e:
            raise SystemExit(f"error: {r.env} {r.name}: {e}") from None
    a.out.mkdir(parents=True, exist_ok=True)
    if not a.report_only:  # two runners on one grid would run the same runs into the same dirs
        lock = open(a.out / ".grid.lock", "w")  # noqa: SIM115 - held until the process exits
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise SystemExit(f"error: another runner is working on {a.out}; wait for it to "
                             f"finish or use another --out") from None
    if not a.report_only:
        grid_file.write_text(json.dumps({"overrides": a.overrides,
                                         "variants": {k: [algo, list(o)] for k, (algo, o) in known.items()}}))
    print(f"{len(runs)} runs ({sum(finished(r) for r in runs)} already done), {a.workers} side by side, "
          f"overrides {a.overrides} trainer.num_threads=1; output {a.out}", flush=True)
    failed = [] if a.report_only else run_all(runs, a.overrides, a.workers, a.checkpoint_every)
    results = collect(runs, earlier)
    write_report(a.out, results, at, f"overrides: {' '.join(a.overrides) or 'none'}",
                 a.threshold, anchors, a.bootstrap_reps)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
