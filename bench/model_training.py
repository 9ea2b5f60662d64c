"""Benchmark (issue 15): the model-training rules, old and new, on the data of a real run.

Takes the replay buffer of a finished run (for example a SAC run on Hopper-v4 to 31k env steps)
and puts every rule through the same sequence of warm-started trainings, one every ``--every``
transitions, on the buffer's first n transitions (n = every, 2 every, ..., up to the largest
``--at``). At each ``--at`` point, each rule's model is tested on the next ``--test`` transitions
of the run, which neither rule has seen:

- one-step normalized MSE of the elite mean: ((mu_elites - y) / std)^2 averaged over the target
  dims (next-state delta and reward; the normalizer is refit on the same data by both rules);
- 5-step open-loop error: from a real state s_t, the elites' mean prediction is fed the recorded
  actions a_t..a_{t+4}, and its s_{t+5} is compared with the real one (mean L2 norm, env units),
  over every window of 5 consecutive transitions of one episode;
- seconds of each training at that point (one torch thread, same process, one after the other).

Rules (``--rules``):
- ``old``: MBPO's rule as the app had it: a fresh random 20% holdout (at most 5000) per
  training, whole-buffer epochs to ``model.max_epochs`` (50), patience 5;
- ``steps<N>``: the fixed holdout (each transition flagged once; the newest 5000 flagged never
  trained on) and at most N minibatch steps per training, a holdout evaluation every
  ``model.eval_every`` steps, patience 5 evaluations.

    python bench/model_training.py RUN_DIR [--every 1000] [--at 5000 15000 30000]
                                   [--rules old steps500 steps1000 steps2000] [key=value ...]

The table's last cost column is seconds per 1k transitions of this sequence (a training every
``--every``). A rule ``steps<N>`` at ``--every`` E spends N * 1000 / E model steps per 1k env
steps: ``steps2000`` at the default E = 1000 is the default ``model.max_steps=500`` at
``model.train_freq`` = 250. What a training costs inside the loop: ``bench/cost.py``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mpdp_pl.runtime import checkpoint  # noqa: E402
from mpdp_pl.config import load_config, parse_overrides, stored_config  # noqa: E402
from mpdp_pl.environment.data import chronological_order, load_buffer, make_replay_buffer  # noqa: E402
from mpdp_pl.models.dynamics import DynamicsModel  # noqa: E402
from mpdp_pl.models.fitting import (TrainSettings, fixed_split, holdout_flags,  # noqa: E402
                                     holdout_split, param_groups, train_dynamics)
from mpdp_pl.environment.termination import TERMINATION_FNS  # noqa: E402

OPEN_LOOP = 5


def load_transitions(run_dir: Path):
    """The run's real transitions in the order they were collected."""
    ckpt = checkpoint.latest(run_dir)
    if ckpt is None:
        raise SystemExit(f"error: {run_dir} holds no checkpoint")
    cfg = stored_config(checkpoint.read(ckpt)["config"], ckpt)  # an earlier version's keys migrated
    buf = make_replay_buffer(cfg["data"]["buffer_size"], "cpu")
    load_buffer(buf, ckpt / "replay_buffer")
    data = buf[:][chronological_order(buf)]
    return cfg, data


def columns(data):
    nxt = data["next"]
    return (data["observation"], data["action"], nxt["observation"], nxt["reward"].squeeze(-1),
            nxt["terminated"].squeeze(-1))


@torch.no_grad()
def test_errors(model: DynamicsModel, test) -> tuple[float, float, int]:
    obs, act, nxt, rew, _ = columns(test)
    mean, _, _ = model.forward_normalized(obs, act, members=model.elites)
    y = model.target_norm(DynamicsModel.targets(obs, nxt, rew))
    one_step = (mean.mean(0) - y).pow(2).mean().item()
    # windows of OPEN_LOOP transitions that follow each other within one episode
    linked = (nxt[:-1] == obs[1:]).all(-1)                                  # t -> t + 1
    n = obs.shape[0] - OPEN_LOOP + 1
    ok = torch.stack([linked[i: i + n] for i in range(OPEN_LOOP - 1)]).all(0)
    starts = ok.nonzero().squeeze(-1)
    s = obs[starts]
    for i in range(OPEN_LOOP):
        s, _ = model.mean_prediction(s, act[starts + i])
    err = (s - nxt[starts + OPEN_LOOP - 1]).norm(dim=-1).mean().item()
    return one_step, err, starts.numel()


def make_model(cfg):
    term = cfg["model"]["termination"]
    model = DynamicsModel(cfg["obs_dim"], cfg["action_dim"], cfg["model"]["ensemble_size"], cfg["model"]["elites"],
                          cfg["model"]["hidden"], cfg["model"]["layers"],
                          termination_fn=None if term == "learned" else TERMINATION_FNS[term])
    opt = torch.optim.Adam(param_groups(model, cfg["model"]["lr"], cfg["model"]["weight_decay"]))
    return model, opt


def run_rule(rule: str, cfg: dict, data, every: int, at: list[int], test_n: int, seed: int):
    torch.manual_seed(seed)
    model, opt = make_model(cfg)
    if rule == "old":
        settings = TrainSettings.from_config({**cfg, "model": {**cfg["model"], "max_steps": None}})
    else:
        settings = TrainSettings.from_config({**cfg, "model": {**cfg["model"], "max_steps": int(rule[len("steps"):])}})
    flags = holdout_flags(0, data.shape[0], cfg["model"]["holdout_ratio"])
    results = {}
    for n in range(every, max(at) + 1, every):
        part = data[:n]
        if rule == "old":
            split = holdout_split(n, settings, "cpu")
        else:
            split = fixed_split(flags[:n], torch.arange(n), settings)
        t0 = time.perf_counter()
        metrics = train_dynamics(model, *columns(part), opt, settings, split=split)
        secs = time.perf_counter() - t0
        if n in at:
            one, five, windows = test_errors(model, data[n: n + test_n])
            results[n] = dict(seconds=secs, one_step=one, open_loop=five, windows=windows,
                              rounds=metrics["model/epochs"], steps=metrics["model/steps"],
                              holdout_mse=metrics["model/holdout_mse"])
            print(f"  {rule:>9} n={n:6d}: {secs:7.1f} s/training ({metrics['model/epochs']:.0f} rounds, "
                  f"{metrics['model/steps']:.0f} steps), test 1-step nMSE {one:.4f}, "
                  f"{OPEN_LOOP}-step open-loop {five:.4f} ({windows} windows), "
                  f"holdout MSE {metrics['model/holdout_mse']:.4f}", flush=True)
    return results


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run_dir", type=Path)
    p.add_argument("--every", type=int, default=1000)
    p.add_argument("--at", type=int, nargs="+", default=[5000, 15000, 30000])
    p.add_argument("--test", type=int, default=1000)
    p.add_argument("--rules", nargs="+", default=["old", "steps500", "steps1000", "steps2000"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("overrides", nargs="*")
    a = p.parse_intermixed_args()
    torch.set_num_threads(1)
    run_cfg, data = load_transitions(a.run_dir)
    need = max(a.at) + a.test
    if data.shape[0] < need:
        raise SystemExit(f"error: {a.run_dir} holds {data.shape[0]} transitions; --at/--test need {need}")
    if any(x % a.every for x in a.at):
        raise SystemExit("error: every --at must be a multiple of --every")
    cfg = load_config(run_cfg["env"], "mpdp", parse_overrides(a.overrides))
    cfg.update(obs_dim=data["observation"].shape[-1], action_dim=data["action"].shape[-1])
    print(f"{run_cfg['env']}: transitions of {a.run_dir} ({run_cfg['algo']} seed {run_cfg['seed']}); "
          f"a training every {a.every} transitions up to {max(a.at)}, tested on the next {a.test}; "
          f"model K={cfg['model']['ensemble_size']} elites={cfg['model']['elites']} {cfg['model']['hidden']}x"
          f"{cfg['model']['layers']} batch {cfg['model']['batch_size']}, holdout {cfg['model']['holdout_ratio']} "
          f"(max {cfg['model']['max_holdout']}), patience {cfg['model']['patience']}, max_epochs "
          f"{cfg['model']['max_epochs']}, eval_every {cfg['model']['eval_every']}; 1 torch thread", flush=True)
    table = {rule: run_rule(rule, cfg, data, a.every, a.at, a.test, a.seed) for rule in a.rules}
    print(f"\n| rule | n | s/training | s per 1k transitions (a training every {a.every}) "
          f"| test 1-step nMSE | test {OPEN_LOOP}-step error |")
    print("|---|---|---|---|---|---|")
    for rule, res in table.items():
        for n, r in res.items():
            print(f"| {rule} | {n} | {r['seconds']:.1f} | {r['seconds'] * 1000 / a.every:.0f} "
                  f"| {r['one_step']:.4f} | {r['open_loop']:.4f} |")


if __name__ == "__main__":
    main()
