"""Side-by-side probes of several grids (``python train.py -m`` output folders, or those of the
retired comparison runner), one row per run: its eval return at chosen env steps, realized
horizon, wall time, and the overrides that set its grid apart (from the grid's ``grid.yaml``,
or the older ``grid.json`` / ``multirun.yaml``). ``python -m mpdp_pl.report`` gives the
per-configuration means, the curves and the statistics.

    python bench/grids_report.py GRID_DIR [GRID_DIR ...] [--at 6000 10000 15000] [--csv OUT]

A figure comes from the runs' own ``metrics.csv`` rows at exactly that env step ("-" where a
run has not reached it); nothing is smoothed.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import yaml

from mpdp_pl.experiments.results import find_runs, run_label


def runs_of(grid: Path):
    """(run name, evaluation rows by env step) of every run under ``grid``: ``<label>-seedS``,
    the label as the report names it (mpdp_pl/experiments/results.py)."""
    for run in find_runs(grid):
        cfg = yaml.safe_load((run / "config.yaml").read_text())
        with open(run / "metrics.csv") as f:
            rows = {int(r["env_steps"]): r for r in csv.DictReader(f) if r.get("eval/return")}
        yield f"{run_label(run, cfg)}-seed{cfg['seed']}", rows


def grid_overrides(grid: Path) -> list[str]:
    """The overrides every job of the grid shares (seed, env and out aside): from ``grid.yaml``
    (train.py -m), or the retired runner's ``grid.json`` or Hydra's ``multirun.yaml``."""
    if (grid / "grid.yaml").exists():
        jobs = [job for entry in yaml.safe_load((grid / "grid.yaml").read_text()) for job in entry["jobs"]]
        shared = set.intersection(*(set(j) for j in jobs))
        return [o for o in jobs[0] if o in shared and not o.startswith(("seed=", "env=", "out="))]
    if (grid / "grid.json").exists():
        return json.loads((grid / "grid.json").read_text())["overrides"]
    if (grid / "multirun.yaml").exists():
        task = yaml.safe_load((grid / "multirun.yaml").read_text())["hydra"]["overrides"]["task"]
        return [o for o in task if not o.startswith(("seed=", "env="))]
    raise SystemExit(f"error: {grid} is not a grid (no grid.yaml, grid.json or multirun.yaml)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("grids", nargs="+", type=Path)
    p.add_argument("--at", type=int, nargs="+", default=[6000, 10000, 15000])
    p.add_argument("--csv", type=Path, default=None)
    a = p.parse_args()
    overrides = {}
    for g in a.grids:
        overrides[g] = grid_overrides(g)
    common = set.intersection(*(set(o) for o in overrides.values()))
    print(f"common overrides: {' '.join(sorted(common)) or 'none'}\n")
    head = ["grid", "run", "own overrides", *(f"return @{s // 1000}k" for s in a.at),
            *(f"horizon @{s // 1000}k" for s in a.at), "last step", "wall s / 1k (whole run)"]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    table = []
    for g in a.grids:
        own = " ".join(o for o in overrides[g] if o not in common) or "-"
        for name, rows in runs_of(g):
            last = max(rows) if rows else 0
            cell = lambda s, k: (f"{float(rows[s][k]):.0f}" if k == "eval/return" else  # noqa: E731
                                 f"{float(rows[s][k]):.2f}") if s in rows and rows[s].get(k) else "-"
            wall = float(rows[last]["time/elapsed"]) / (last / 1000) if last else float("nan")
            line = [g.name, name, own, *(cell(s, "eval/return") for s in a.at),
                    *(cell(s, "train/realized_horizon") for s in a.at), str(last), f"{wall:.0f}"]
            table.append(dict(zip(head, line)))
            print("| " + " | ".join(line) + " |")
    if a.csv:
        with open(a.csv, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=head)
            w.writeheader()
            w.writerows(table)


if __name__ == "__main__":
    main()
