"""Branched model rollouts (MBPO, Janner et al. 2019, Sec. 4.2 and Algorithm 2): k-step rollouts
of the current policy through the dynamics ensemble from real states, and MBPO's linear
rollout-length schedule."""

from __future__ import annotations

from typing import Callable

import torch
from tensordict import TensorDict

from .models.dynamics import DynamicsModel


def rollout_length(env_steps: int, schedule: list, epoch_length: int) -> int:
    """MBPO's schedule ``[epoch_start, epoch_end, len_min, len_max]`` (official configs): the
    length grows linearly from ``len_min`` at ``epoch_start`` to ``len_max`` at ``epoch_end``,
    with epoch = env_steps // epoch_length, and is truncated to an int."""
    start, end, len_min, len_max = schedule
    epoch = env_steps // epoch_length
    if epoch <= start:
        return int(len_min)
    frac = min((epoch - start) / max(end - start, 1), 1.0)
    return int(frac * (len_max - len_min) + len_min)


@torch.no_grad()
def branched_rollout(dynamics: DynamicsModel, act: Callable[[torch.Tensor], torch.Tensor],
                     start_obs: torch.Tensor, length: int) -> TensorDict:
    """``length`` model steps of ``act`` from ``start_obs`` ``[N, obs_dim]``; each step of each
    sample is served by a random elite, the only one evaluated (``sample_step``). Samples that reach a predicted terminal stop there.
    Returns the transitions as a flat TensorDict with the replay buffer's keys. (Dropping the
    terminated samples syncs with the host once per step: this runs once per model training,
    not in the update loop.)"""
    steps = []
    obs = start_obs
    for _ in range(length):
        if obs.shape[0] == 0:
            break
        action = act(obs)
        step = dynamics.sample_step(obs, action)
        term = step.terminated
        steps.append(TensorDict({
            "observation": obs, "action": action,
            "next": {"observation": step.next_obs, "reward": step.reward.unsqueeze(-1),
                     "terminated": term.unsqueeze(-1), "truncated": torch.zeros_like(term).unsqueeze(-1),
                     "done": term.unsqueeze(-1)},
        }, batch_size=[obs.shape[0]]))
        obs = step.next_obs[~term]
    return torch.cat(steps) if steps else TensorDict({}, batch_size=[0])
