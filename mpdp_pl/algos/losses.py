"""SAC's loss terms as pure functions (policy evaluation Eq. 2-3 and improvement Eq. 4 of the
MPDP paper; Haarnoja et al. 2018). Shared by every algorithm: MPDP, MBPO and MPPVE train their
critics and temperature with these; MPDP replaces only the actor's objective.
"""

from __future__ import annotations

import torch

from ..models.critic import redq_min


def soft_td_target(reward: torch.Tensor, terminated: torch.Tensor, next_q: torch.Tensor,
                   next_log_prob: torch.Tensor, alpha: torch.Tensor, gamma: float) -> torch.Tensor:
    """y = r + gamma (1 - terminated) [min_j Q'_j(s', a') - alpha log pi(a'|s')], a' ~ pi(s').

    Eq. (2)-(3); with more than 2 critics, the min of a random pair (REDQ). ``terminated`` (not ``done``): a time-limit truncation still bootstraps.
    ``next_q``: ``[n_critics, B]`` target-critic values; the rest ``[B]``.
    """
    next_v = redq_min(next_q) - alpha * next_log_prob
    return reward + gamma * (~terminated).to(reward.dtype) * next_v


def critic_loss(q: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """sum_j mean_B (Q_j(s, a) - y)^2 over the critics (``q``: ``[n_critics, B]``, ``y``: ``[B]``)."""
    return (q - target.detach()).pow(2).mean(dim=1).sum()


def actor_loss(q: torch.Tensor, log_prob: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """mean_B [alpha log pi(a|s) - min_j Q_j(s, a)], a ~ pi(s) reparameterized: minus Eq. (4)."""
    return (alpha.detach() * log_prob - q.min(dim=0).values).mean()


def alpha_loss(log_alpha: torch.Tensor, log_prob: torch.Tensor,
               target_entropy: float) -> torch.Tensor:
    """-mean_B log_alpha (log pi(a|s) + target_entropy): the temperature's dual objective
    (Haarnoja et al. 2018b, Eq. 18, in log space as in SB3 and TorchRL)."""
    return -(log_alpha * (log_prob.detach() + target_entropy)).mean()
