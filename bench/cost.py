"""Benchmark (issue 15): where each algorithm's time goes, per 1k env steps, as the data grows.

For every algorithm and every buffer size n (``--at``), a real run (Lightning Trainer, TorchRL
collector and buffer, MuJoCo) starts with its replay buffer holding the first n transitions of
a recorded run (``RUN_DIR``, for example a SAC run on Hopper-v4 to 31k env steps: real collected
data), trains its model once (not timed: it starts from scratch), and then runs ``--window`` env
steps at the algorithm's default config, in which every part is timed:

- env and collector: the rest of the window's wall time (collection, buffer writes, Lightning,
  and MPDP's u_T calibration after each model training);
- critic updates (MPPVE's include its target plans through the model);
- actor updates (MPDP: the farsighted improvement; with the temperature step);
- model training (``train_model``: the buffer copy, the split, ``model/error``, normalizers and
  the trainings of the window);
- model rollouts (``model_rollouts`` after each training: MBPO's and MPPVE's; MPDP's u_T
  calibration, one u over the holdout, is left in the rest);
- evaluation: timed once per window, and quoted for the setting "10 episodes of the
  deterministic pi_0 every 1000 env steps" at the worst case of full 1000-step episodes
  (the measured seconds per eval env step x 10,000), since a young policy's short episodes
  would understate it.

Seconds per 1k env steps = the window's seconds x 1000 / window, plus evaluation. Memory: the
process's peak resident set after each point (CPU; a high-water mark over everything this
process has run, so give one algorithm per process to read one algorithm's), or torch's peak
allocation during the point (CUDA). On a GPU
(``trainer.accelerator=gpu``) the parts are host times: asynchronous device work is counted in
whichever part waits for it, so only the total (and env steps per second) is exact. A window of
250 env steps holds exactly one model training at ``model.train_freq`` = 250. For MPDP the
share of the farsighted unroll's sample-steps that were alive (``train/live_rows``: the share
of the static form's work spent on live samples) and the realized horizon are printed too.
Last, each point's total at the task's own evaluation setting (``eval.episodes`` full episodes
every ``eval.every`` env steps) and the hours of one run per 100k env steps at that rate: the
estimate of a full-budget run's CPU time (the rate measured at one buffer size).

    python bench/cost.py RUN_DIR [--algos mpdp sac mbpo mppve] [--at 1000 10000 30000]
                         [--window 250] [key=value ...]
"""

from __future__ import annotations

import argparse
import csv
import math
import resource
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mpdp_pl.runtime.callbacks.periodic_eval import PeriodicEvaluation  # noqa: E402
from mpdp_pl.config import load_config, parse_overrides  # noqa: E402
from mpdp_pl.errors import ConfigError  # noqa: E402
from mpdp_pl.run import ALGOS, train_module  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from model_training import load_transitions  # noqa: E402

PARTS = {"critic_step": "critic", "actor_step": "actor", "train_model": "model training",
         "model_rollouts": "model rollouts", "evaluate": "evaluation",
         # DHMBPO: the H-step rollout a critic and an actor update share (counted with the actor,
         # whose gradient runs through it) and the distribution rollouts that fill its FIFO
         "rollout": "actor", "refill_start_states": "model rollouts",
         # POPLIN: its policy's update from the plans, after each model training
         "policy_from_plans": "model rollouts"}
EVAL_STEPS_PER_1K = 10 * 1000  # 10 episodes of at most 1000 steps, every 1000 env steps


def _timed_evaluate(self, trainer, module):
    """callbacks.PeriodicEvaluation.evaluate, timed into the module's ``timing_log``."""
    t0 = time.perf_counter()
    _EVALUATE(self, trainer, module)
    log = getattr(module, "timing_log", None)
    if log is not None:
        log["calls"].append(("evaluation", module.env_steps, time.perf_counter() - t0, "evaluate"))
        if module.last_eval:  # mean episode length x episodes: the eval env steps it took
            log["eval_steps"] = module.last_eval["eval/episode_length"] * module.cfg["eval"]["episodes"]


_EVALUATE = PeriodicEvaluation.evaluate
PeriodicEvaluation.evaluate = _timed_evaluate


def timed(cls, data, n: int, log: dict):
    """``cls`` starting from the first n recorded transitions, with every part timed."""

    class Timed(cls):
        def on_fit_start(self):
            super().on_fit_start()
            self.store(data[:n].to(self._buffer_device()))
            self.env_steps = n
            self.last_checkpoint_step = n

        def training_step(self, batch, batch_idx):
            before = self.env_steps
            out = super().training_step(batch, batch_idx)
            if self.env_steps != before:  # not Lightning's prefetched round past the budget
                log["ticks"].append((self.env_steps, time.perf_counter()))
            return out

        timing_log = log  # read by the timed evaluation callback below

    for method, part in PARTS.items():
        if method == "evaluate":
            continue

        def wrap(self, *args, _m=method, _p=part, **kwargs):
            keys = ("train/live_rows", "train/realized_horizon")
            before = [self.recorder.interval_sums.get(k, (0.0, 0))[0] for k in keys]
            t0 = time.perf_counter()
            out = getattr(super(Timed, self), _m)(*args, **kwargs)
            log["calls"].append((_p, self.env_steps, time.perf_counter() - t0, _m))
            if _m == "actor_step" and keys[1] in self.recorder.interval_sums:
                # this update's values: what it added to the interval's sums (mpdp_pv logs no
                # live rows: its unroll has no live form)
                after = [self.recorder.interval_sums.get(k, (float("nan"), 0))[0] for k in keys]
                log["live"].append((self.env_steps, *(float(a - b) for a, b in zip(after, before))))
            return out

        if hasattr(cls, method):
            setattr(Timed, method, wrap)
    return Timed


def measure(algo: str, data, n: int, window: int, overrides: dict, env_id: str) -> dict:
    log = {"ticks": [], "calls": [], "live": [], "eval_steps": 0}
    warmup = 1
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config(env_id, algo, {
            "data.init_random_steps": 0, "steps": n + warmup + window, "eval.every": 10**9,
            "eval.episodes": 2, "durability.checkpoint_every": 0, "logger": "none", "out": f"{tmp}/run",
            "trainer.num_threads": 1, **overrides})
        train_module(timed(ALGOS[algo], data, n, log), cfg)
    start, t_start = log["ticks"][0]  # after the first round (and its untimed model training)
    t_end = log["ticks"][-1][1]
    steps = log["ticks"][-1][0] - start
    if steps == 0:
        raise SystemExit(f"error: {algo} at n={n} stopped before its {window}-step window began")
    parts = defaultdict(float)
    for part, step, secs, method in log["calls"]:
        if part != "evaluation" and step > start:
            parts[part] += secs
    wall = t_end - t_start
    per_1k = {p: parts[p] * 1000 / steps for p in PARTS.values() if p != "evaluation"}
    per_1k["env and collector"] = (wall - sum(parts.values())) * 1000 / steps
    eval_calls = [secs for part, _, secs, _ in log["calls"] if part == "evaluation"]
    per_1k["evaluation"] = (eval_calls[-1] / max(log["eval_steps"], 1) * EVAL_STEPS_PER_1K
                            if eval_calls else 0.0)
    # the task's own evaluation (eval_episodes every eval_every env steps, full episodes) in
    # place of the quoted one: what a run at the task's config costs, the estimate's basis
    task = load_config(env_id, algo, overrides)
    own_eval = per_1k["evaluation"] / EVAL_STEPS_PER_1K * task["eval"]["episodes"] * 1000 * 1000 / task["eval"]["every"]
    own = sum(per_1k.values()) - per_1k["evaluation"] + own_eval
    live = [(lr, h) for step, lr, h in log["live"] if step > start]
    peak = ((cuda and torch.cuda.max_memory_allocated())  # 0: the run stayed on the CPU
            or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024) / 2**20
    return {"algo": algo, "n": n, "steps": steps, "total": sum(per_1k.values()), **per_1k,
            "peak_mib": peak, "own_eval_total": own, "hours_per_100k": own * 100 / 3600,
            "live_rows": sum(x for x, _ in live) / len(live) if live else float("nan"),
            "realized_horizon": sum(h for _, h in live) / len(live) if live else float("nan"),
            "critic_per_step": cfg["updates"]["critic_per_step"],
            "actor_per_step": cfg["updates"]["actor_per_step"]}


COLUMNS = ["env and collector", "critic", "actor", "model training", "model rollouts", "evaluation"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run_dir", type=Path)
    p.add_argument("--algos", nargs="+", default=["mpdp", "sac", "mbpo", "mppve"])
    p.add_argument("--at", type=int, nargs="+", default=[1000, 10000, 30000])
    p.add_argument("--window", type=int, default=250)
    p.add_argument("--csv", type=Path, default=None, help="also write the table here")
    p.add_argument("overrides", nargs="*")
    a = p.parse_intermixed_args()
    run_cfg, data = load_transitions(a.run_dir)
    if data.shape[0] < max(a.at):
        raise SystemExit(f"error: {a.run_dir} holds {data.shape[0]} transitions, fewer than {max(a.at)}")
    overrides = parse_overrides(a.overrides)
    env_id = run_cfg["env"]
    for algo in a.algos:  # every algorithm's config checked before the first is measured
        try:
            load_config(env_id, algo, overrides)
        except ConfigError as e:
            raise SystemExit(f"error: --algos {algo}: {e}") from None
    print(f"{env_id}: buffers prefilled from {a.run_dir} ({run_cfg['algo']} seed {run_cfg['seed']}); "
          f"a {a.window}-step window per point after one untimed model training; default config "
          f"of each algorithm{' with ' + ' '.join(a.overrides) if a.overrides else ''}; 1 torch "
          f"thread; evaluation quoted for 10 episodes x 1000 steps every 1k env steps", flush=True)
    rows = []
    for algo in a.algos:
        for n in a.at:
            r = measure(algo, data, n, a.window, overrides, env_id)
            rows.append(r)
            print(f"  {algo:>6} n={n:6d}: {r['total']:7.1f} s per 1k env steps = "
                  + ", ".join(f"{c} {r[c]:.1f}" for c in COLUMNS) + f"; peak {r['peak_mib']:.0f} MiB"
                  + (f"; live rows {r['live_rows']:.3f}, realized horizon {r['realized_horizon']:.2f}"
                     if not math.isnan(r["realized_horizon"]) else ""), flush=True)
    print("\n| algo | updates/step (critic, actor) | buffered | total s per 1k | "
          + " | ".join(COLUMNS) + " | live rows | realized H | peak MiB |")
    print("|---|---|---|---|" + "---|" * (len(COLUMNS) + 3))
    for r in rows:
        print(f"| {r['algo']} | {r['critic_per_step']:g}, {r['actor_per_step']:g} | {r['n']} | "
              f"{r['total']:.0f} | " + " | ".join(f"{r[c]:.1f}" for c in COLUMNS)
              + f" | {r['live_rows']:.3f} | {r['realized_horizon']:.2f} | {r['peak_mib']:.0f} |")
    print("\nAt the task's own evaluation (its eval_episodes of full episodes every eval_every env "
          "steps), the estimate of a run's CPU time at this rate:")
    for r in rows:
        print(f"  {r['algo']:>8} ({r['n']} buffered): {r['own_eval_total']:.0f} s per 1k env steps, "
              f"{r['hours_per_100k']:.1f} h per 100k env steps")
    if a.csv:
        with open(a.csv, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)


if __name__ == "__main__":
    main()
