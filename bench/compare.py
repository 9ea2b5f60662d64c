"""Benchmark (issue 4): algorithms side by side on one task, same seeds, same overrides.

Runs ``train.py`` for every (algorithm, seed) as subprocesses (one torch thread each, ``--workers``
at a time), then writes ``curves.csv`` (all evaluations), ``curves.png`` (mean and min-max over
seeds against env steps) and prints per-run and per-algorithm figures: the first env step whose
evaluation reached ``--threshold``, the final return, and wall time per 1k env steps.

    python bench/compare.py --env InvertedPendulum-v4 --algos mpdp sac --seeds 0 1 2 --steps 5000 \\
        --threshold 950 critic_updates_per_step=5
"""

from __future__ import annotations

import argparse
import csv
import statistics
import time
from pathlib import Path

from common import ROOT, finished, first_step_reaching, read_metrics, run_parallel


def plot(curves: dict, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for algo, runs in curves.items():
        steps = sorted(set.intersection(*(set(r) for r in runs.values())))
        if not steps:
            continue
        vals = [[runs[s][x] for s in runs] for x in steps]
        mean = [statistics.mean(v) for v in vals]
        ax.plot(steps, mean, label=f"{algo} ({len(runs)} seeds)")
        ax.fill_between(steps, [min(v) for v in vals], [max(v) for v in vals], alpha=0.2)
    ax.set_xlabel("env steps")
    ax.set_ylabel("eval return")
    import textwrap

    ax.set_title(textwrap.fill(title, 70), fontsize=8)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--env", default="InvertedPendulum-v4")
    p.add_argument("--algos", nargs="+", default=["mpdp", "sac"])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--steps", type=int, default=5000)
    p.add_argument("--threshold", type=float, default=950)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--out", default=None)
    p.add_argument("overrides", nargs="*")
    a = p.parse_args()
    out = Path(a.out or ROOT / "bench_runs" / "compare" / f"{a.env}-{time.strftime('%Y%m%d-%H%M%S')}")
    out.mkdir(parents=True, exist_ok=True)
    jobs, keys = [], []
    for algo in a.algos:
        for s in a.seeds:
            run_dir = out / f"{algo}-seed{s}"
            args = ["--env", a.env, "--algo", algo, "--seed", str(s), "--steps", str(a.steps),
                    "--out", str(run_dir), "--logger", "none", *a.overrides]
            jobs.append((args, out / f"{algo}-seed{s}.log"))
            keys.append((algo, s, run_dir))
    print(f"config: train.py --env {a.env} --algo A --seed S --steps {a.steps} --logger none "
          f"{' '.join(a.overrides)} trainer.num_threads=1; algos {a.algos}; seeds {a.seeds}; "
          f"{a.workers} runs side by side; output {out}")
    # a finished run in --out is reused, so an interrupted grid resumes where it stopped
    todo = [i for i, (_, _, run_dir) in enumerate(keys) if not finished(run_dir, a.steps)]
    done = run_parallel([jobs[i] for i in todo], a.workers)
    results = [(0, float("nan"))] * len(keys)
    for i, r in zip(todo, done):
        results[i] = r
    curves: dict = {}
    summary: dict = {}
    with open(out / "curves.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["algo", "seed", "env_steps", "eval/return", "time/elapsed"])
        for (algo, s, run_dir), (rc, wall) in zip(keys, results):
            if rc != 0:
                print(f"{algo} seed {s}: FAILED (exit {rc}); see {run_dir}.log")
                continue
            rows = read_metrics(run_dir)
            for r in rows:
                w.writerow([algo, s, int(r["env_steps"]), r["eval/return"], r["time/elapsed"]])
            curves.setdefault(algo, {})[s] = {int(r["env_steps"]): r["eval/return"] for r in rows}
            first = first_step_reaching(rows, a.threshold)
            per_1k = rows[-1]["time/elapsed"] / (rows[-1]["env_steps"] / 1000)
            summary.setdefault(algo, []).append((first, rows[-1]["eval/return"], per_1k))
            print(f"{algo} seed {s}: first >= {a.threshold:g} at {first} env steps; final "
                  f"{rows[-1]['eval/return']:.1f} at {int(rows[-1]['env_steps'])}; "
                  f"{per_1k:.0f} s per 1k env steps")
    for algo, items in summary.items():
        firsts = [f for f, _, _ in items]
        reached = [f for f in firsts if f is not None]
        print(f"{algo}: reached {a.threshold:g} in {len(reached)}/{len(items)} seeds "
              f"(steps {firsts}); mean final return {statistics.mean(x for _, x, _ in items):.1f}; "
              f"mean wall {statistics.mean(t for _, _, t in items):.0f} s per 1k env steps")
    plot(curves, out / "curves.png", f"{a.env} ({' '.join(a.overrides)})")
    print(f"wrote {out / 'curves.csv'} and {out / 'curves.png'}")


if __name__ == "__main__":
    main()
