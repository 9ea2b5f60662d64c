"""Benchmark (issue 3): dynamics-ensemble training cost and open-loop prediction error.

For each task: record real transitions under uniform random actions, train the ensemble with
the task's default model config (K, elites, hidden, layers, early stopping, epoch cap), and
report training seconds per 1k transitions and the open-loop k-step error (k = 1, 5, 10) of
model rollouts against separately recorded real trajectories under the same actions: the
model starts from a real state s_t, is fed the recorded a_t..a_{t+k-1}, and its elites' mean
prediction of s_{t+k} is compared with the real s_{t+k} (mean L2 norm, env units). For scale,
the error of the "nothing moves" guess s_{t+k} = s_t is printed next to it.

    python bench/model_quality.py [--tasks Hopper-v4 Humanoid-v4] [--transitions 20000] [key=value ...]
"""

from __future__ import annotations

import argparse
import time

import gymnasium as gym
import numpy as np
import torch

from mpdp_pl.config import load_config, parse_overrides
from mpdp_pl.models.dynamics import DynamicsModel
from mpdp_pl.models.fitting import TrainSettings, param_groups, train_dynamics
from mpdp_pl.environment.termination import TERMINATION_FNS

KS = (1, 5, 10)


def record(env_id: str, n: int, obs_dim: int | None, seed: int):
    """n transitions as episodes: lists of (obs [T+1, D], actions [T, A], rewards, terminated)."""
    env = gym.make(env_id)
    env.action_space.seed(seed)
    episodes, total = [], 0
    obs, _ = env.reset(seed=seed)
    o, a, r, d = [obs], [], [], []
    while total < n:
        act = env.action_space.sample()
        nxt, rew, term, trunc, _ = env.step(act)
        o.append(nxt), a.append(act), r.append(rew), d.append(term)
        total += 1
        if term or trunc or total == n:
            cut = (lambda x: x[:, :obs_dim]) if obs_dim else (lambda x: x)
            episodes.append((cut(np.array(o, dtype=np.float32)), np.array(a, dtype=np.float32),
                             np.array(r, dtype=np.float32), np.array(d)))
            obs, _ = env.reset()
            o, a, r, d = [obs], [], [], []
    env.close()
    return episodes


def normalized_actions(env_id: str, actions: np.ndarray) -> np.ndarray:
    space = gym.make(env_id).action_space
    return (2 * (actions - space.low) / (space.high - space.low) - 1).astype(np.float32)


def flatten(episodes, env_id):
    obs = np.concatenate([e[0][:-1] for e in episodes])
    nxt = np.concatenate([e[0][1:] for e in episodes])
    act = normalized_actions(env_id, np.concatenate([e[1] for e in episodes]))
    rew = np.concatenate([e[2] for e in episodes])
    term = np.concatenate([e[3] for e in episodes])
    t = torch.as_tensor
    return t(obs), t(act), t(nxt), t(rew), t(term)


@torch.no_grad()
def open_loop_errors(model: DynamicsModel, episodes, env_id: str):
    out = {}
    for k in KS:
        starts, acts, targets = [], [], []
        for obs, a, _, _ in episodes:
            a = normalized_actions(env_id, a)
            for t in range(0, len(a) - k + 1):
                starts.append(obs[t]), acts.append(a[t:t + k]), targets.append(obs[t + k])
        if not starts:
            continue
        s = torch.as_tensor(np.array(starts))
        acts_t, target = torch.as_tensor(np.array(acts)), torch.as_tensor(np.array(targets))
        s0 = s.clone()
        for i in range(k):
            s, _ = model.mean_prediction(s, acts_t[:, i])
        out[k] = ((s - target).norm(dim=-1).mean().item(),
                  (s0 - target).norm(dim=-1).mean().item(), len(starts))
    return out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--tasks", nargs="+", default=["Hopper-v4", "Humanoid-v4"])
    p.add_argument("--transitions", type=int, default=20_000)
    p.add_argument("--eval-transitions", type=int, default=5_000)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("overrides", nargs="*")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    for env_id in a.tasks:
        # MBPO's config: the model group's defaults, and an algorithm that reads the model keys
        cfg = load_config(env_id, "mbpo", parse_overrides(a.overrides))
        settings = TrainSettings.from_config(cfg)
        train_eps = record(env_id, a.transitions, cfg["task"]["obs_truncate"], seed=0)
        test_eps = record(env_id, a.eval_transitions, cfg["task"]["obs_truncate"], seed=1)
        obs, act, nxt, rew, term = flatten(train_eps, env_id)
        term_fn = None if cfg["model"]["termination"] == "learned" else TERMINATION_FNS[cfg["model"]["termination"]]
        model = DynamicsModel(obs.shape[1], act.shape[1], cfg["model"]["ensemble_size"], cfg["model"]["elites"],
                              cfg["model"]["hidden"], cfg["model"]["layers"], term_fn)
        opt = torch.optim.Adam(param_groups(model, cfg["model"]["lr"], cfg["model"]["weight_decay"]))
        t0 = time.perf_counter()
        m = train_dynamics(model, obs, act, nxt, rew, term, opt, settings)
        secs = time.perf_counter() - t0
        print(f"{env_id}: {len(obs)} random-action transitions, obs {obs.shape[1]} dims; model "
              f"K={cfg['model']['ensemble_size']} elites={cfg['model']['elites']} hidden={cfg['model']['hidden']}x"
              f"{cfg['model']['layers']} batch={settings.batch_size} max_epochs={settings.max_epochs} "
              f"patience={settings.patience}; {a.threads} torch threads")
        print(f"  training: {m['model/epochs']:.0f} epochs, {secs:.1f} s = "
              f"{secs / (len(obs) / 1000):.2f} s per 1k transitions "
              f"({secs / m['model/epochs'] / (len(obs) / 1000):.3f} s per epoch per 1k); "
              f"holdout MSE {m['model/holdout_mse']:.4f}, NLL {m['model/holdout_nll']:.3f} "
              f"(normalized units)")
        for k, (err, still, n) in open_loop_errors(model, test_eps, env_id).items():
            print(f"  open-loop {k:2d}-step error: {err:.4f} (env units; 'nothing moves' guess "
                  f"{still:.4f}) over {n} windows of {a.eval_transitions} held-out transitions")


if __name__ == "__main__":
    main()
