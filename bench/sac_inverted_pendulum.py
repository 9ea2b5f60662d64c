"""Benchmark (issue 2): SAC on InvertedPendulum-v4, 3 seeds x 15k env steps.

Goal: mean final eval return >= 900. Prints per-seed final return, the first env step whose
evaluation reached 900 and 1000, and env steps/s of the whole loop (collection, updates,
evaluation, logging), with the exact configuration.

    python bench/sac_inverted_pendulum.py [--seeds 0 1 2] [--steps 15000] [--workers 2] [key=value ...]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from common import ROOT, first_step_reaching, read_metrics, run_parallel


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--steps", type=int, default=15000)
    p.add_argument("--workers", type=int, default=2, help="runs side by side (1 torch thread each)")
    p.add_argument("--out", default=str(ROOT / "bench_runs" / "sac_inverted_pendulum"))
    p.add_argument("overrides", nargs="*")
    a = p.parse_args()
    out = Path(a.out) / time.strftime("%Y%m%d-%H%M%S")
    out.mkdir(parents=True)
    base = ["--env", "InvertedPendulum-v4", "--algo", "sac", "--steps", str(a.steps),
            "--logger", "none", *a.overrides]
    jobs = [([*base, "--seed", str(s), "--out", str(out / f"seed{s}")], out / f"seed{s}.log")
            for s in a.seeds]
    print(f"config: train.py {' '.join(base)} --seed S trainer.num_threads=1; seeds {a.seeds}; "
          f"{a.workers} runs side by side")
    results = run_parallel(jobs, a.workers)
    finals, rates = [], []
    for s, (rc, wall) in zip(a.seeds, results):
        if rc != 0:
            print(f"seed {s}: FAILED (exit {rc}), see {out / f'seed{s}.log'}")
            continue
        rows = read_metrics(out / f"seed{s}")
        last = rows[-1]
        rate = last["env_steps"] / last["time/elapsed"]
        finals.append(last["eval/return"])
        rates.append(rate)
        print(f"seed {s}: final eval/return {last['eval/return']:.1f} at {int(last['env_steps'])} "
              f"env steps; first >=900 at {first_step_reaching(rows, 900)}, first >=1000 at "
              f"{first_step_reaching(rows, 1000)}; {rate:.1f} env steps/s; wall {wall:.0f} s")
    if finals:
        print(f"mean final eval/return over {len(finals)} seeds: {statistics.mean(finals):.1f} "
              f"(goal >= 900); mean env steps/s {statistics.mean(rates):.1f}")


if __name__ == "__main__":
    main()
