"""Evaluation of the deterministic pi_0 (``tanh(mean)``) on its own env, one episode at a time."""

from __future__ import annotations

import torch
from tensordict.nn import TensorDictModule


@torch.no_grad()
def run_episodes(env, policy: TensorDictModule, episodes: int,
                 max_steps: int) -> tuple[list[float], list[int]]:
    """Returns and lengths of ``episodes`` full episodes (each ends at termination or the env's
    time limit)."""
    returns, lengths = [], []
    for _ in range(episodes):
        rollout = env.rollout(max_steps, policy, break_when_any_done=True)
        returns.append(rollout["next", "reward"].sum().item())
        lengths.append(rollout.shape[-1])
    return returns, lengths


def evaluate(env, policy: TensorDictModule, episodes: int, max_steps: int,
             seed: int | None = None) -> dict[str, float]:
    """``eval/return`` (mean undiscounted return), ``eval/return_std`` and
    ``eval/episode_length`` (mean) over ``episodes`` episodes. With ``seed`` the env is
    re-seeded first, so every evaluation starts from the same initial states (and
    ``python -m mpdp_pl.evaluate`` reproduces it from a checkpoint)."""
    if seed is not None:
        env.set_seed(seed)
    returns, lengths = run_episodes(env, policy, episodes, max_steps)
    r = torch.tensor(returns, dtype=torch.float64)
    return {
        "eval/return": r.mean().item(),
        "eval/return_std": r.std(unbiased=False).item(),
        "eval/episode_length": sum(lengths) / len(lengths),
    }
