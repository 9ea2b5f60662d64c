"""Branched model rollouts (MBPO, Janner et al. 2019, Sec. 4.2 and Algorithm 2): k-step rollouts
of the current policy through the dynamics ensemble from real states, and MBPO's linear
rollout-length schedule."""

from __future__ import annotations

from typing import Callable

import torch
from tensordict import TensorDict

from ..models.dynamics import DynamicsModel
from .unroll import Unroll


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
    sample is served by a random elite, the only one evaluated (``sample_step``); samples that
    reach a predicted terminal stop there (the live form of :class:`~mpdp_pl.lookahead.unroll.Unroll`).
    Returns the transitions as a flat TensorDict with the replay buffer's keys. (Dropping the
    terminated samples syncs with the host once per step: this runs once per model training,
    not in the update loop.)"""
    steps = []
    for st in Unroll(dynamics, start_obs, lambda t, obs, pick: (act(obs), None), length,
                     with_u=False, live=True):
        term = st.model.terminated
        steps.append(TensorDict({
            "observation": st.obs, "action": st.action,
            "next": {"observation": st.model.next_obs, "reward": st.model.reward.unsqueeze(-1),
                     "terminated": term.unsqueeze(-1),
                     "truncated": torch.zeros_like(term).unsqueeze(-1), "done": term.unsqueeze(-1)},
        }, batch_size=[st.obs.shape[0]]))
    return torch.cat(steps) if steps else TensorDict({}, batch_size=[0])
