"""Cost of a model step for MBPO's and MPPVE's rollouts: every elite evaluated at every sample
(``DynamicsModel.step``, which MPDP needs for its OvR error) against only the elite serving each
sample (``DynamicsModel.sample_step``), alone and inside MPPVE's k-step target plan.

    python bench/model_step.py [--env Hopper-v4] [--batch 256] [--threads 1]

Uses the task's MPPVE config (network sizes, plan length) with random weights; prints
milliseconds per call (median of repeats) and the ratio.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from mpdp_pl.algos.mppve import MPPVE
from mpdp_pl.config import load_config
from mpdp_pl.environment.envs import env_spec, make_env
from mpdp_pl.lookahead.plan_value import make_plan


def timed(fn, repeats: int) -> float:
    """Median milliseconds of ``fn()`` over ``repeats`` calls, after 3 warm-up calls."""
    for _ in range(3):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--env", default="Hopper-v4")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=50)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    cfg = load_config(a.env, "mppve")
    env = make_env(cfg)
    module = MPPVE(cfg, env_spec(env))
    env.close()
    dyn, actor, k = module.dynamics, module.actor, module.k
    obs = torch.randn(a.batch, dyn.obs_dim)
    act = torch.rand(a.batch, dyn.action_dim) * 2 - 1
    print(f"{a.env}: batch {a.batch}, {a.threads} thread(s), ensemble {dyn.members} members / "
          f"{len(dyn.elites)} elites x {cfg['model']['hidden']} hidden, plan length k = {k}")
    with torch.no_grad():
        every = timed(lambda: dyn.step(obs, act), a.repeats)
        serving = timed(lambda: dyn.sample_step(obs, act), a.repeats)
        print(f"model step, every elite (step):         {every:7.2f} ms")
        print(f"model step, serving elite (sample_step): {serving:7.2f} ms  ({every / serving:.1f}x)")
        plan = timed(lambda: make_plan(obs, actor, dyn, k), a.repeats)
        print(f"MPPVE target plan (k = {k}, sample_step):    {plan:7.2f} ms; with step it would "
              f"be about {plan + k * (every - serving):.2f} ms")


if __name__ == "__main__":
    main()
