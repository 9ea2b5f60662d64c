"""Evaluation of the deterministic pi_0 (``tanh(mean)``) on its own env, one episode at a time."""

from __future__ import annotations

from typing import Callable, NamedTuple

import torch
from tensordict.nn import TensorDictModule


class EvaluationStopped(Exception):
    """A stop signal arrived during an evaluation: it is dropped, nothing of it is written."""


class Episodes(NamedTuple):
    returns: list[float]        # undiscounted
    lengths: list[int]
    starts: torch.Tensor        # [episodes, obs_dim]: each episode's initial observation
    discounted: list[float]     # sum_t gamma^t r_t


@torch.no_grad()
def run_episodes(env, policy: TensorDictModule, episodes: int, max_steps: int,
                 gamma: float = 1.0, should_stop: Callable[[], bool] | None = None) -> Episodes:
    """``episodes`` full episodes (each ends at termination or the env's time limit).
    ``should_stop`` is read before every step (a planner's step can take seconds): true raises
    :class:`EvaluationStopped`."""
    if should_stop is not None:
        inner = policy

        def policy(td):
            if should_stop():
                raise EvaluationStopped
            return inner(td)
    returns, lengths, starts, discounted = [], [], [], []
    for _ in range(episodes):
        rollout = env.rollout(max_steps, policy, break_when_any_done=True)
        reward = rollout["next", "reward"].reshape(-1).double()
        returns.append(reward.sum().item())
        lengths.append(rollout.shape[-1])
        starts.append(rollout["observation"].reshape(-1, rollout["observation"].shape[-1])[0])
        discounted.append((reward * gamma ** torch.arange(len(reward), dtype=torch.float64)).sum().item())
    return Episodes(returns, lengths, torch.stack(starts), discounted)


def evaluate(env, policy: TensorDictModule, episodes: int, max_steps: int,
             seed: int | None = None, gamma: float = 1.0,
             q_value: Callable[[torch.Tensor], torch.Tensor] | None = None,
             should_stop: Callable[[], bool] | None = None) -> dict[str, float] | None:
    """``eval/return`` (mean undiscounted return), ``eval/return_std`` and
    ``eval/episode_length`` (mean) over ``episodes`` episodes. With ``seed`` the env is
    re-seeded first, so every evaluation starts from the same initial states (and
    ``python -m mpdp_pl.evaluate`` reproduces it from a checkpoint).

    With ``q_value`` (the critic's Q(s, pi_0(s)) at a batch of states, or None where the critic
    cannot say), also ``eval/q_bias``:
    the mean over episodes of Q(s_0, pi_0(s_0)) at the start state minus the episode's
    discounted real return. A soft critic's Q includes the entropy bonus of the stochastic
    policy, which the deterministic evaluation does not collect, and a time-limited episode
    stops where Q does not: the bias of a sound critic is small and positive, and one that grows
    without bound means the critic is exploited or exploding.

    None if ``should_stop`` turned true during the episodes (a stop signal)."""
    if seed is not None:
        env.set_seed(seed)
    try:
        ep = run_episodes(env, policy, episodes, max_steps, gamma, should_stop)
    except EvaluationStopped:
        return None
    r = torch.tensor(ep.returns, dtype=torch.float64)
    out = {
        "eval/return": r.mean().item(),
        "eval/return_std": r.std(unbiased=False).item(),
        "eval/episode_length": sum(ep.lengths) / len(ep.lengths),
    }
    q = q_value(ep.starts) if q_value is not None else None
    if q is not None:
        q = q.double().cpu()
        out["eval/q_bias"] = (q - torch.tensor(ep.discounted, dtype=torch.float64)).mean().item()
    return out
