"""Termination functions agree with the real env's ``terminated`` on real transitions, including
states pushed next to the health boundaries (set through MuJoCo, then stepped by the real env)."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

from mpdp_pl.config import load_config
from mpdp_pl.environment.termination import TERMINATION_FNS

# task -> [(qpos index, boundary values)] to perturb around
BOUNDARIES = {
    "InvertedPendulum": [(1, (-0.2, 0.2))],
    "Hopper": [(1, (0.7,)), (2, (-0.2, 0.2))],
    "Walker2d": [(1, (0.8, 2.0)), (2, (-1.0, 1.0))],
    "Ant": [(2, (0.2, 1.0))],
    "Humanoid": [(2, (1.0, 2.0))],
    "HalfCheetah": [(1, (-0.5, 0.5))],  # never terminates, whatever the state
}
TRANSITIONS = 10_000


def collect(env_id: str, task: str, n: int, seed: int = 0):
    """n real transitions under random actions; before 1 step in 10, the watched coordinate of
    the current state is set within +-0.05 of a health boundary."""
    env = gym.make(env_id)
    rng = np.random.default_rng(seed)
    obs_dim = load_config(env_id)["task"]["obs_truncate"]
    next_obs, terminated = [], []
    env.reset(seed=seed)
    while len(terminated) < n:
        if rng.random() < 0.1:
            data = env.unwrapped.data
            qpos, qvel = data.qpos.copy(), data.qvel.copy()
            idx, values = BOUNDARIES[task][rng.integers(len(BOUNDARIES[task]))]
            qpos[idx] = rng.choice(values) + rng.uniform(-0.05, 0.05)
            env.unwrapped.set_state(qpos, qvel)
        o, _, term, trunc, _ = env.step(env.action_space.sample())
        next_obs.append(o[:obs_dim] if obs_dim else o)
        terminated.append(term)
        if term or trunc:
            env.reset()
    env.close()
    return torch.as_tensor(np.array(next_obs), dtype=torch.float32), torch.as_tensor(terminated)


@pytest.mark.parametrize("version", ["v4", "v5"])
@pytest.mark.parametrize("task", list(BOUNDARIES))
def test_termination_fn_matches_real_env(task, version):
    env_id = f"{task}-{version}"
    fn = TERMINATION_FNS[load_config(env_id)["model"]["termination"]]
    next_obs, terminated = collect(env_id, task, TRANSITIONS)
    predicted = fn(next_obs)
    mismatches = (predicted != terminated).sum().item()
    assert mismatches == 0, f"{mismatches} of {TRANSITIONS} transitions disagree"
    if task == "HalfCheetah":
        assert not terminated.any()
    else:  # both outcomes were exercised
        assert 100 < terminated.sum() < TRANSITIONS - 100, terminated.sum()
