"""Evaluation of the deterministic pi_0 (``tanh(mean)``) on its own env, one episode at a time."""

from __future__ import annotations

import torch
from tensordict.nn import TensorDictModule


@torch.no_grad()
def evaluate(env, policy: TensorDictModule, episodes: int, max_steps: int) -> dict[str, float]:
    """Run ``episodes`` full episodes (each ends at termination or the env's time limit).

    Returns ``eval/return`` (mean undiscounted return), ``eval/return_std`` and
    ``eval/episode_length`` (mean).
    """
    returns, lengths = [], []
    for _ in range(episodes):
        rollout = env.rollout(max_steps, policy, break_when_any_done=True)
        returns.append(rollout["next", "reward"].sum().item())
        lengths.append(rollout.shape[-1])
    r = torch.tensor(returns, dtype=torch.float64)
    return {
        "eval/return": r.mean().item(),
        "eval/return_std": r.std(unbiased=False).item(),
        "eval/episode_length": sum(lengths) / len(lengths),
    }
