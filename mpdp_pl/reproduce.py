"""The MPDP paper's experiments as commands: ``python -m mpdp_pl.reproduce FIG [--quick]
[--out DIR] [--workers N] [--seeds S ...] [--steps N] [key=value ...]``.

- ``fig1``: return against env steps, the algorithms of this app (MPDP, SAC, MBPO, MPPVE) on the
  six MuJoCo tasks at the paper's budgets, 4 seeds (the paper's PETS, POPLIN, M2AC and DDPG
  curves are not reproduced: those algorithms are not part of this app).
- ``fig2``: MPDP's realized horizon (``train/realized_horizon``) over training on Hopper for
  several thresholds u_T (the paper gives no values: here the u_T quantiles 0.25, 0.5, 0.75).
- ``fig3``: the model error (``model/error``) over training on Hopper for beta in {0.2, 0.5, 0.7}.
- ``fig4``: final return against beta in {0.2, 0.5, 0.7} on Hopper, with MBPO, 4 seeds.

``--quick`` runs the same experiment on InvertedPendulum-v4 at a budget this 2-core CPU
finishes (docs/baselines.md). ``--steps`` and ``key=value`` items override every run (tests use
them to shrink the budget further). Each experiment writes ``FIG.csv`` and ``FIG.png`` into
``--out`` (default ``runs/reproduce/FIG[-quick]``) and resumes a partly done set like the
comparison runner.
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path

from .compare import Run, collect, read_evals, run_all, write_results
from .compare import plot as plot_curves

PAPER_TASKS = {"InvertedPendulum-v4": 15_000, "Hopper-v4": 100_000, "Walker2d-v4": 200_000,
               "HalfCheetah-v4": 200_000, "Ant-v4": 200_000, "Humanoid-v4": 200_000}
QUICK_ENV, QUICK_STEPS = "InvertedPendulum-v4", 2000
QUICK_OVERRIDES = ["eval_every=250", "model_train_freq=250"]
BETAS = (0.2, 0.5, 0.7)
U_T_QUANTILES = (0.25, 0.5, 0.75)


@dataclass(frozen=True)
class Variant:
    label: str
    algo: str
    overrides: tuple[str, ...] = ()


def variants(fig: str) -> list[Variant]:
    if fig == "fig1":
        return [Variant(a, a) for a in ("mpdp", "sac", "mbpo", "mppve")]
    if fig == "fig2":
        return [Variant(f"uT_q{q}", "mpdp", (f"u_T_quantile={q}",)) for q in U_T_QUANTILES]
    if fig == "fig3":
        return [Variant(f"beta{b}", "mpdp", (f"beta={b}",)) for b in BETAS]
    if fig == "fig4":
        return [*(Variant(f"beta{b}", "mpdp", (f"beta={b}",)) for b in BETAS), Variant("mbpo", "mbpo")]
    raise SystemExit(f"error: unknown experiment {fig!r}; choose from fig1 fig2 fig3 fig4")


# what each figure plots: the metrics.csv column and whether it is a curve or a final value
METRIC = {"fig1": "eval/return", "fig2": "train/realized_horizon", "fig3": "model/error",
          "fig4": "eval/return"}


def build_runs(fig: str, quick: bool, seeds: list[int], steps: int | None, out: Path) -> list[Run]:
    tasks = {QUICK_ENV: QUICK_STEPS} if quick else (
        PAPER_TASKS if fig == "fig1" else {"Hopper-v4": PAPER_TASKS["Hopper-v4"]})
    return [Run(env, v.algo, s, steps or budget, out, v.label,
                (*v.overrides, *(QUICK_OVERRIDES if quick else ())))
            for env, budget in tasks.items() for v in variants(fig) for s in seeds]


def write_metric_csv(runs: list[Run], metric: str, path: Path) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["env", "variant", "seed", "env_steps", metric])
        for r in runs:
            for e in read_evals(r.dir, metric):
                w.writerow([r.env, r.label, r.seed, e["env_steps"], e["return"]])


def plot_metric(runs: list[Run], metric: str, path: Path, title: str) -> None:
    """Mean over seeds of ``metric`` against env steps, one line per variant."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for label in dict.fromkeys(r.label for r in runs):
        curves = [{e["env_steps"]: e["return"] for e in read_evals(r.dir, metric)}
                  for r in runs if r.label == label]
        curves = [c for c in curves if c]
        if not curves:
            continue
        steps = sorted(set.intersection(*(set(c) for c in curves)))
        ax.plot(steps, [statistics.mean(c[s] for c in curves) for s in steps],
                label=f"{label} ({len(curves)})")
    ax.set_xlabel("env steps")
    ax.set_ylabel(metric)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_final(runs: list[Run], path: Path, title: str) -> list[tuple[str, float, float]]:
    """Fig. 4: final return (mean and std over seeds) per variant."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = []
    for label in dict.fromkeys(r.label for r in runs):
        finals = [e[-1]["return"] for e in (read_evals(r.dir) for r in runs if r.label == label) if e]
        if finals:
            rows.append((label, statistics.mean(finals),
                         statistics.stdev(finals) if len(finals) > 1 else 0.0))
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.bar([r[0] for r in rows], [r[1] for r in rows], yerr=[r[2] for r in rows], capsize=4)
    ax.set_ylabel("final eval return")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m mpdp_pl.reproduce", description=__doc__.split("\n")[0])
    p.add_argument("fig", choices=["fig1", "fig2", "fig3", "fig4"])
    p.add_argument("--quick", action="store_true", help="InvertedPendulum-v4 at a CPU budget")
    p.add_argument("--out", type=Path)
    p.add_argument("--seeds", type=int, nargs="+")
    p.add_argument("--steps", type=int, help="override every run's env-step budget")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    p.add_argument("overrides", nargs="*")
    a = p.parse_intermixed_args(argv)
    seeds = a.seeds or ([0] if a.quick else [0, 1, 2, 3])
    out = a.out or Path("runs") / "reproduce" / (a.fig + ("-quick" if a.quick else ""))
    out.mkdir(parents=True, exist_ok=True)
    runs = build_runs(a.fig, a.quick, seeds, a.steps, out)
    print(f"{a.fig}: {len(runs)} runs, {a.workers} side by side, output {out}", flush=True)
    failed = run_all(runs, a.overrides, a.workers)
    metric = METRIC[a.fig]
    title = f"{a.fig}{' (quick)' if a.quick else ''}: {metric}"
    write_metric_csv(runs, metric, out / f"{a.fig}.csv")
    if a.fig == "fig4":
        for label, mean, std in plot_final(runs, out / "fig4.png", title):
            print(f"{label}: final return {mean:.1f} ± {std:.1f}")
    elif a.fig == "fig1":
        write_results(collect(runs), out / "fig1_results.csv")
        plot_curves(collect(runs), out / "fig1.png", title)
    else:
        plot_metric(runs, metric, out / f"{a.fig}.png", title)
        for label in dict.fromkeys(r.label for r in runs):
            vals = [read_evals(r.dir, metric) for r in runs if r.label == label]
            print(f"{label}: {metric} " + " / ".join(
                " ".join(f"{e['return']:.2f}@{e['env_steps']}" for e in v) for v in vals))
    print(f"wrote {out / (a.fig + '.csv')} and {out / (a.fig + '.png')}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
