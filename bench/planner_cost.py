"""Benchmark (issue 27): seconds per env step of the planners (PETS, POPLIN-A, POPLIN-P), each
plan made by the app's own planner classes through the shared ensemble at its configured size
(7 members, 5 elites, 4 x 200 swish by default), on a task's observation and action sizes, at
the published CEM settings and at the reduced CPU setting of conf/algo_env/*_InvertedPendulum.yaml.
The ensemble is untrained (the cost of a plan does not depend on the weights); a predicted
terminal does not shorten the work (the static shapes evaluate every step). Each setting runs
in its own process; its peak memory is the resident set's growth over its plans (CPU), or
torch's peak allocation (CUDA).

    python bench/planner_cost.py [--env Hopper-v4] [--plans 3] [--threads 1] [--device cpu]
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mpdp_pl.config import CONF_DIR, load_config  # noqa: E402
from mpdp_pl.environment.envs import make_env, env_spec  # noqa: E402
from mpdp_pl.lookahead.planning import CEMPlanner, CEMSettings  # noqa: E402
from mpdp_pl.lookahead.policy_planning import ActionNoisePlanner, ParameterNoisePlanner  # noqa: E402
from mpdp_pl.models.actor import ProposalPolicy  # noqa: E402
from mpdp_pl.models.dynamics import DynamicsModel  # noqa: E402

REDUCED = "InvertedPendulum-v4"  # the env whose algo_env files hold the reduced CPU settings
# (the CEM settings are the task-independent ones here: --env sets only the sizes)


def planner(algo: str, cfg: dict, dynamics: DynamicsModel, obs_dim: int, action_dim: int):
    settings = CEMSettings.from_config(cfg)
    if algo == "pets":
        return CEMPlanner(dynamics, action_dim, settings)
    policy = ProposalPolicy(obs_dim, action_dim, cfg["poplin"]["hidden"])
    cls = ActionNoisePlanner if algo == "poplin_a" else ParameterNoisePlanner
    return cls(dynamics, policy, settings, cfg["poplin"]["init_var"])


def max_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--env", default="Hopper-v4")
    p.add_argument("--plans", type=int, default=3, help="timed plans per setting (one untimed first)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--only", help=argparse.SUPPRESS)  # ALGO:SETTING, one setting in this process
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    base = load_config(args.env, "pets")
    env = make_env(base, seed=0)
    spec = env_spec(env)
    obs = env.reset()["observation"].reshape(1, -1).float().to(device)
    env.close()
    dynamics = DynamicsModel(spec.obs_dim, spec.action_dim, base["model"]["ensemble_size"], base["model"]["elites"],
                             base["model"]["hidden"], base["model"]["layers"]).to(device)
    if args.only is None:
        print(f"{args.env}: obs {spec.obs_dim}, action {spec.action_dim}; ensemble {base['model']['ensemble_size']} x "
              f"{base['model']['layers']}x{base['model']['hidden']} ({base['model']['elites']} elites), learned "
              f"termination; {args.threads} torch thread(s), {device}; {args.plans} timed plans each")
    if args.only is None:
        print("| algo | setting | horizon | population | elites | iterations | particles | s per env step | peak MiB |")
        print("|---|---|---|---|---|---|---|---|---|", flush=True)
        for algo in ("pets", "poplin_a", "poplin_p"):
            for setting in ("published", "reduced"):
                subprocess.run([sys.executable, __file__, "--only", f"{algo}:{setting}",
                                *(argv if argv is not None else sys.argv[1:])], check=True)
        return
    algo, setting = args.only.split(":")
    cfg = load_config(REDUCED, algo)
    if setting == "published":  # the algorithm file's values, whatever the env's file says
        cfg.update(yaml.safe_load((CONF_DIR / "algo" / f"{algo}.yaml").read_text()))
    plan = planner(algo, cfg, dynamics, spec.obs_dim, spec.action_dim).to(device)
    rss0 = max_rss_mib()
    plan.sample(obs)  # untimed: allocations and first-call costs
    t0 = time.perf_counter()
    for _ in range(args.plans):
        plan.sample(obs)
    if device.type == "cuda":
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = max_rss_mib() - rss0
    sec = (time.perf_counter() - t0) / args.plans
    particles = cfg["pets"]["particles"] if algo == "pets" else "E (mean)"
    print(f"| {algo} | {setting} | {cfg['pets']['horizon']} | {cfg['pets']['population']} | "
          f"{cfg['pets']['elites']} | {cfg['pets']['iterations']} | {particles} | {sec:.3f} | {peak:.0f} |",
          flush=True)

if __name__ == "__main__":
    main()
