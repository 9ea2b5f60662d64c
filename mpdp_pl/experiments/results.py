"""The runs of grids, read back and reported: every evaluation of every run, the table of returns
at fixed env steps, the curves beside published anchors, and (:mod:`.aggregate`) rliable's
statistics. :mod:`.report` writes them (``python -m mpdp_pl.report``, and ``train.py -m`` at the end of a grid).

A run is a directory with ``config.yaml`` and ``metrics.csv``. Its name in the report (its
*label*) is the directory above ``seed<S>`` in a grid's layout ``<out>/<env>/<label>/seed<S>``
(the variant or algorithm, with the keys a sweep varied: ``mpdp,improvement.beta=0.2``), the part before
``-seed<S>`` in the layout of the retired comparison runner (``<env>/<label>-seed<S>``), and its
``variant`` or ``algo`` otherwise. A ``results.csv`` written by an earlier report stands for its
runs (the committed grids in ``docs/``). A grid's experiment (``grid.yaml``) and that
experiment's report settings (``conf/experiment/<name>.yaml``) are read here too.
"""

from __future__ import annotations

import csv
import re
import statistics
from pathlib import Path

import yaml

from ..config import CONF_DIR
from ..errors import FAILED_MARKER, ConfigError  # the marker: a run stopped at nonfinite_limit


def read_evals(run_dir: Path, metric: str = "eval/return") -> list[dict]:
    """The rows of a run's metrics.csv that have ``metric``, as (env_steps, return (the
    metric's value), elapsed) dicts."""
    path = run_dir / "metrics.csv"
    if not path.exists():
        return []
    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
        return [{"env_steps": int(r["env_steps"]), "return": float(r[metric]),
                 "elapsed": float(r["time/elapsed"])} for r in rows if r.get(metric)]
    except (OSError, UnicodeDecodeError, csv.Error, KeyError, ValueError, TypeError) as e:
        raise ConfigError(f"{path}: not a metrics.csv of this app ({type(e).__name__}: {e})") from None


def evaluation_owed(run_dir: Path, env_steps: int) -> bool:
    """The run's ``metrics.csv`` has no evaluation at ``env_steps``, where its last checkpoint
    is: a stop signal dropped the evaluation of the round the checkpoint ends (the budget's
    included), and a resume takes it."""
    evals = read_evals(run_dir)
    return not evals or evals[-1]["env_steps"] < env_steps


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
        raise ConfigError(f"{path}: not a results.csv of this report "
                         f"({type(e).__name__}: {e})") from None
    return {k: sorted(v, key=lambda e: e["env_steps"]) for k, v in results.items()}




def run_label(run_dir: Path, cfg: dict) -> str:
    """The run's name in a report (module docstring)."""
    if re.fullmatch(r"seed\d+", run_dir.name):
        return run_dir.parent.name
    legacy = re.fullmatch(r"(.+)-seed\d+", run_dir.name)
    if legacy:
        return legacy.group(1)
    return cfg.get("variant") or cfg["algo"]


def find_runs(root: Path) -> list[Path]:
    """The run directories at or under ``root`` (those with config.yaml and metrics.csv), in
    path order; runs moved aside (``*.incomplete-*``) are not runs of the grid."""
    found = [p.parent for p in sorted(root.rglob("metrics.csv"))
             if (p.parent / "config.yaml").exists() and ".incomplete-" not in str(p.parent)]
    return found


# keys that say where and how a run is written or watched, not what it trains
PLACEMENT_KEYS = ("out", "logger", "logging.every", "durability.checkpoint_every", "eval.video_every")
PLACEMENT_PREFIXES = ("wandb.", "trainer.", "run.")  # run.: provenance (command, commit)


def _config_keys(cfg: dict) -> dict:
    """The keys that tell runs apart: not where they ran, nor a switch this version removed
    (runs from before and after the removal name it differently)."""
    from ..config import REMOVED_KEYS, flatten

    return {k: v for k, v in flatten(cfg).items()
            if k not in PLACEMENT_KEYS and k not in REMOVED_KEYS
            and not k.startswith(PLACEMENT_PREFIXES)}


def _distinct_labels(group: list[tuple[Path, dict, tuple]]) -> list[tuple]:
    """Runs that share (task, label, seed): each label gains the keys whose values differ within
    the group (``mppve,mppve.plan_length=1``, as a grid's sweep names them); two runs of the same
    configuration are a one-line error that names both directories."""
    if len(group) == 1:
        return [group[0][2]]
    flat = [_config_keys(cfg) for _, cfg, _ in group]
    differing = sorted(k for k in set().union(*flat) if len({repr(f.get(k)) for f in flat}) > 1)
    keys = []
    for (run, _, (env, label, seed)), f in zip(group, flat):
        name = ",".join([label, *(f"{k}={f.get(k)}" for k in differing)])
        keys.append((env, name.replace(" ", ""), seed))
    for i, a in enumerate(keys):
        if a in keys[:i]:
            raise ConfigError(f"{group[keys.index(a)][0]} and {group[i][0]} are the same run "
                              f"configuration ({a[1]}, seed {a[2]}, {a[0]}): report one of them")
    return keys


def read_runs(paths: list[Path], metric: str = "eval/return",
              finals=()) -> tuple[Results, dict[str, int]]:
    """Every run under ``paths`` (run or grid directories, or ``results.csv`` files), keyed (env,
    label, seed), and each task's largest budget (``steps``) among them; the labels in ``finals``
    (drawn as one value, such as SAC at 2M env steps) set a task's budget only where no other
    run does. A run stopped by ``durability.nonfinite_limit`` marks its evaluations failed. No run is
    dropped: runs sharing a key get labels naming the keys in which their configs differ
    (:func:`_distinct_labels`), runs of the same configuration and a key found in two places
    are a one-line error. With another ``metric`` than the return, an algorithm none of whose
    runs logs it is left out."""
    results: Results = {}
    sources: dict[tuple, Path] = {}
    budgets: dict[str, int] = {}
    final_budgets: dict[str, int] = {}

    def add(key, evals, steps, source):
        if key in results:
            raise ConfigError(f"{key[1]}, seed {key[2]} on {key[0]} is in both {sources[key]} "
                              f"and {source}: report one of them")
        results[key], sources[key] = evals, source
        b = final_budgets if key[1] in finals else budgets
        b[key[0]] = max(b.get(key[0], 0), steps)

    groups: dict[tuple, list] = {}
    for path in paths:
        if path.is_file():
            if metric != "eval/return":
                raise ConfigError(f"{path}: a results.csv holds eval/return only, not {metric}")
            for key, evals in read_results(path).items():
                add(key, evals, evals[-1]["env_steps"] if evals else 0, path)
            continue
        if not path.is_dir():
            raise ConfigError(f"{path}: no such run, grid or results.csv")
        runs = find_runs(path)
        if not runs:
            raise ConfigError(f"{path}: no runs (directories with config.yaml and metrics.csv)")
        for run in runs:
            try:
                cfg = yaml.safe_load((run / "config.yaml").read_text())
                key = (cfg["env"], run_label(run, cfg), int(cfg["seed"]))
                int(cfg["steps"])
            except (OSError, yaml.YAMLError, KeyError, TypeError, ValueError) as e:
                raise ConfigError(f"{run}/config.yaml: not a run's config ({type(e).__name__}: {e})") from None
            groups.setdefault(key, []).append((run, cfg, key))
    for group in groups.values():  # runs of every path given: the same seed may be in two
        for (run, cfg, _), key in zip(group, _distinct_labels(group)):
            evals = read_evals(run, metric)
            if (run / FAILED_MARKER).exists():
                for e in evals:
                    e["failed"] = True
            add(key, evals, int(cfg["steps"]), run)
    if results and not any(results.values()):
        raise ConfigError(f"no run has a value of {metric}"
                          + ("" if metric == "eval/return" else " (--metric: a column of metrics.csv)"))
    if metric != "eval/return":  # leave out an algorithm that never logs it (SAC's horizon)
        logged = {(env, label) for (env, label, _), evals in results.items() if evals}
        results = {k: v for k, v in results.items() if k[:2] in logged}
    return results, {**final_budgets, **budgets}


def anchor_at(points: list[tuple], step: int) -> tuple[float, float, bool] | None:
    """A published curve's (mean, std) at ``step``: the stored point, or a linear interpolation
    between the two stored steps around it (then the flag is True); None outside them."""
    for a, b in zip(points, points[1:]):
        if a[0] < step < b[0]:
            w = (step - a[0]) / (b[0] - a[0])
            return a[1] + w * (b[1] - a[1]), a[2] + w * (b[2] - a[2]), True
    exact = [p for p in points if p[0] == step]
    return (exact[0][1], exact[0][2], False) if exact else None


def value_at(evals: list[dict], step: int) -> float | None:
    """The return of the last evaluation at or before ``step``; None if there is none or the
    run has not reached ``step`` (a partial run must not stand in for a later point). A failed
    run (stopped at ``durability.nonfinite_limit``) keeps its last evaluation at every later point: it stays
    in the table, marked."""
    before = [e for e in evals if e["env_steps"] <= step]
    if not before or (evals[-1]["env_steps"] < step and not evals[-1].get("failed")):
        return None
    return before[-1]["return"]


def _fmt(values: list[float], digits: int = 0) -> str:
    """Mean ± std over seeds (one seed: its value), ``digits`` after the point."""
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def first_reaching(evals: list[dict], threshold: float) -> int | None:
    return next((e["env_steps"] for e in evals if e["return"] >= threshold), None)


def table(results: Results, at: dict[str, list[int]], threshold: float | None = None,
          anchors: dict[tuple[str, str], list[tuple]] | None = None,
          metric: str = "eval/return") -> str:
    """Markdown: per (task, algorithm), ``metric`` (the return) at the fixed step counts (mean ±
    std over the seeds that reached the step, "(n of m seeds)" while some have not), optionally
    the first env step whose evaluation reached ``threshold`` (per seed, "-" if never), and wall
    seconds per 1k env steps (mean over seeds, whole loop incl. evaluation).
    Published ``anchors`` follow each task's rows, "(published)", at the same step counts
    (mean ± std as published, interpolated between the stored steps around a column and marked
    ≈, "-" outside them; seeds: theirs)."""
    from ..config import task_name

    width = max(len(v) for v in at.values())
    head = ["task", "algo", "seeds", *[f"{'return' if metric == 'eval/return' else metric} ({chr(97 + i)})" for i in range(width)],
            *([f"first ≥ {threshold:g}"] if threshold is not None else []), "wall s / 1k steps"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    interpolated = False
    for env in dict.fromkeys(env for env, _, _ in results):
        for algo in dict.fromkeys(a for e, a, _ in results if e == env):
            evals = [v for (e, a, _), v in results.items() if e == env and a == algo and v]
            cells = []
            for step in at.get(env, []):
                vals = [v for v in (value_at(e, step) for e in evals) if v is not None]
                # returns in whole units; other metrics (a horizon of 0.8-5 steps) in hundredths
                part = f" ({len(vals)} of {len(evals)} seeds)" if 0 < len(vals) < len(evals) else ""
                cells.append(f"{_fmt(vals, 0 if metric == 'eval/return' else 2)} @ {step:,}{part}")
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
            cells = []
            for s in at.get(env, []):
                a = anchor_at(points, s)
                cells.append("-" if a is None else f"{'≈' if a[2] else ''}{a[0]:.0f} ± {a[1]:.0f} @ {s:,}")
                interpolated = interpolated or (a is not None and a[2])
            cells += ["-"] * (width - len(cells)) + (["-"] if threshold is not None else [])
            lines.append("| " + " | ".join([env, f"{method} (published)", "-", *cells, "-"]) + " |")
    if interpolated:
        lines += ["", "≈: a published curve interpolated linearly between its two stored steps "
                      "around the column's."]
    return "\n".join(lines) + "\n"


def seeds_table(results: Results, at: dict[str, list[int]], metric: str = "eval/return") -> str:
    """Markdown: every run's ``metric`` at the table's steps, one row per seed (the values behind
    each mean ± std of :func:`table`; "-" where the run has not reached the step)."""
    width = max((len(v) for v in at.values()), default=0)
    digits = 0 if metric == "eval/return" else 2
    order = {k: i for i, k in enumerate(dict.fromkeys(k[:2] for k in results))}  # table()'s rows
    lines = []
    for (env, algo, seed), evals in sorted(results.items(), key=lambda kv: (order[kv[0][:2]],
                                                                             kv[0][2])):
        if evals:
            cells = ["-" if v is None else f"{v:.{digits}f} @ {step:,}"
                     for step, v in ((s, value_at(evals, s)) for s in at.get(env, []))]
            lines.append("| " + " | ".join([env, algo, str(seed), *cells,
                                             *["-"] * (width - len(cells))]) + " |")
    if not lines:
        return ""
    head = ["task", "algo", "seed", *[f"({chr(97 + i)})" for i in range(width)]]
    return ("\nEvery seed:\n\n| " + " | ".join(head) + " |\n|" + "---|" * len(head) + "\n"
            + "\n".join(lines) + "\n")


def finals_table(results: Results, finals) -> str:
    """Markdown: the value each label in ``finals`` is drawn at, per task: mean ± std over seeds
    of the runs' last evaluations, and the env steps of those evaluations."""
    lines = []
    for env in dict.fromkeys(env for env, _, _ in results):
        for algo in (a for a in dict.fromkeys(a for e, a, _ in results if e == env) if a in finals):
            last = [v[-1] for (e, a, _), v in results.items() if e == env and a == algo and v]
            if last:
                steps = "/".join(f"{s:,}" for s in sorted({x["env_steps"] for x in last}))
                lines.append(f"| {env} | {algo} | {len(last)} | {_fmt([x['return'] for x in last])} "
                             f"@ {steps} |")
    if not lines:
        return ""
    return ("\nDrawn as one horizontal line per task (`--final`): the mean of the runs' last "
            "evaluations.\n\n| task | algo | seeds | last evaluation |\n|---|---|---|---|\n"
            + "\n".join(lines) + "\n")


def write_results(results: Results, path: Path, metric: str = "eval/return") -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["algo", "env", "seed", "env_steps", metric, "time/elapsed", "failed"])
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
        raise ConfigError(f"--anchors {path}: not an anchors table ({type(e).__name__}: {e})") from None
    return {k: sorted(v) for k, v in out.items()}


FINAL_STYLES = [(":", "k"), ("-.", "k"), (":", "0.5"), ("-.", "0.5")]  # one per --final label


def plot(results: Results, path: Path, title: str,
         anchors: dict[tuple[str, str], list[tuple]] | None = None,
         metric: str = "eval/return", finals=()) -> dict[tuple[str, str], float]:
    """Fig. 1 style: one panel per task, mean ``metric`` (the return) over seeds with the min-max
    band; published ``anchors`` (dashed, mean +- std over their seeds) up to the panel's largest
    env step. The labels in ``finals`` are drawn as one dotted value each, the mean over seeds of
    their last evaluation (the paper's PETS); returns those values by (task, label)."""
    from ..config import task_name
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import ticker

    envs = list(dict.fromkeys(env for env, _, _ in results))
    drawn: dict[tuple[str, str], float] = {}
    fig, axes = plt.subplots(1, len(envs), figsize=(5 * len(envs), 3.8), squeeze=False)
    for ax, env in zip(axes[0], envs):
        for algo in dict.fromkeys(a for e, a, _ in results if e == env):
            curves = [{e["env_steps"]: e["return"] for e in v}
                      for (e_, a, _), v in results.items() if e_ == env and a == algo]
            curves = [c for c in curves if c]
            if not curves:
                continue
            if algo in finals:
                drawn[(env, algo)] = statistics.mean(c[max(c)] for c in curves)
                ls, color = FINAL_STYLES[list(finals).index(algo) % len(FINAL_STYLES)]
                ax.axhline(drawn[(env, algo)], ls=ls, lw=1.5, color=color,
                           label=f"{algo} final ({len(curves)})")
                continue
            steps = sorted(set.intersection(*(set(c) for c in curves)))
            vals = [[c[s] for c in curves] for s in steps]
            ax.plot(steps, [statistics.mean(v) for v in vals], label=f"{algo} ({len(curves)})")
            ax.fill_between(steps, [min(v) for v in vals], [max(v) for v in vals], alpha=0.2)
        last = max((e["env_steps"] for (e_, a, _), v in results.items()
                    if e_ == env and a not in finals for e in v), default=0)
        for (task, method), points in (anchors or {}).items():
            points = [p for p in points if task == task_name(env) and p[0] <= last]
            if points:
                x, m, sd = zip(*points)
                ax.plot(x, m, "--", lw=1, label=f"{method} (published)")
                ax.fill_between(x, [a - b for a, b in zip(m, sd)], [a + b for a, b in zip(m, sd)],
                                alpha=0.07)
        ax.set_title(env)
        ax.set_xlabel("env steps")
        ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda x, _: f"{x / 1000:g}k" if x else "0"))
        ax.set_ylabel("eval return" if metric == "eval/return" else metric)
        ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return drawn


def report_settings(path: Path, spec: dict | None = None) -> dict:
    """The ``report:`` settings of the experiment file ``path`` (``metric``, ``at``, ``final``,
    ``anchors``: the report that ``train.py -m`` writes of its grid, and that
    ``python -m mpdp_pl.report GRID`` writes by default), checked."""
    spec = (yaml.safe_load(path.read_text()) or {}) if spec is None else spec
    settings = dict(spec.get("report") or {})
    unknown = sorted(set(settings) - {"metric", "at", "final", "anchors"})
    if unknown:
        raise ConfigError(f"{path}: unknown report setting(s) {', '.join(unknown)} "
                          "(known: metric, at, final, anchors)")
    if "anchors" in settings and not (CONF_DIR.parent / settings["anchors"]).is_file():
        raise ConfigError(f"{path}: report anchors {settings['anchors']} is not a file of the project")
    return settings


def grid_experiment(grid: Path) -> str | None:
    """The experiment whose jobs the grid ``grid`` holds (its ``grid.yaml``), if every command
    that wrote it named the same one and its file still exists; else None."""
    try:
        entries = yaml.safe_load((grid / "grid.yaml").read_text()) or []
        names = {e.get("experiment") for e in entries}
    except (OSError, yaml.YAMLError, AttributeError, TypeError):
        return None
    name = names.pop() if len(names) == 1 else None
    if name and not (CONF_DIR / "experiment" / f"{name}.yaml").is_file():
        print(f"grid.yaml names experiment={name}, which conf/experiment no longer has: the report "
              f"takes the defaults")
        return None
    return name
