"""DHMBPO's H-step soft return through the model (Kubo et al. 2025; 4kubo/erl_lib
``agent/svg.py`` ``rollout``, ``eval_rollout`` and ``_actor_loss``): one differentiable rollout
of the policy serves both the critics' target and the actor's objective.

From states s_0 (the start-state FIFO's model states), with m_0 = 1:

    a_t ~ pi(.|s_t) reparameterized,  (s_{t+1}, r_t) ~ one model member,  t = 0..H-1
    m_{t+1} = m_t & ~terminal(s_{t+1})                      (a hard terminal mask)
    a_H ~ pi(.|s_H)

    G(s_0, a_0) = sum_{t<H} gamma^t m_t [r_t - alpha log pi(a_t|s_t) [t > 0]]
                  + gamma^H m_H [Q(s_H, a_H) - alpha log pi(a_H|s_H)]

- the critics' target (``first_entropy=False``): Q(s_H, a_H) is the min of a random pair of the
  target critics (:func:`~mpdp_pl.models.critic.redq_min`), computed without gradient; the
  critics regress Q_j(s_0, a_0) on it (erl_lib trains only this first row: ``mve_horizon: 1``);
- the actor's objective (``first_entropy=True``): the same sum with -alpha log pi(a_0|s_0), and
  Q the mean of the online critics, read with detached parameters; the gradient reaches the
  policy through every a_t, the model's states and a_H (the tail action keeps the gradient).

No cut and no model-error penalty: the horizon is fixed at H.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import torch

from ..models.dynamics import DynamicsModel
from .unroll import Unroll


class SVGRollout(NamedTuple):
    obs: list[torch.Tensor]      # s_0..s_{H-1}, each [B, obs_dim]
    action: list[torch.Tensor]   # a_0..a_{H-1}, each [B, A]
    reward: torch.Tensor         # [H, B] r_t
    log_prob: torch.Tensor       # [H + 1, B] log pi(a_t|s_t), t = 0..H
    mask: torch.Tensor           # [H + 1, B] m_t (float): alive before step t; m_H after the last
    last_obs: torch.Tensor       # s_H
    last_action: torch.Tensor    # a_H


def svg_rollout(dynamics: DynamicsModel, policy: Callable, obs: torch.Tensor,
                horizon: int) -> SVGRollout:
    """The H-step rollout of ``policy`` (``s -> (a, log pi(a|s))``, reparameterized) from ``obs``
    through ``dynamics`` (one random member per sample and step, parameters detached: gradients
    reach states and actions, never the model). A sample past a predicted terminal keeps its last
    state, detached; its terms are masked."""
    unroll = Unroll(dynamics, obs, lambda t, s, pick: policy(s), horizon, with_u=False,
                    detach_params=True, detach_dead=True)
    obs_t, actions, rewards, log_probs, masks = [], [], [], [], []
    for st in unroll:
        obs_t.append(st.obs), actions.append(st.action), rewards.append(st.model.reward)
        log_probs.append(st.log_prob), masks.append(st.alive)
    last_action, last_log_prob = policy(unroll.obs)
    masks.append(unroll.alive)
    return SVGRollout(obs_t, actions, torch.stack(rewards), torch.stack([*log_probs, last_log_prob]),
                      torch.stack(masks).to(obs.dtype), unroll.obs, last_action)


def soft_rewards(rollout: SVGRollout, alpha: torch.Tensor | float) -> torch.Tensor:
    """``[H, B]``: r_t - alpha log pi(a_t|s_t), unmasked (the critics' scale bounds follow their
    quantiles: erl_lib ``svg.py`` ``mb_policy_evaluation``)."""
    return rollout.reward - alpha * rollout.log_prob[:-1]


def soft_return(rollout: SVGRollout, tail_q: torch.Tensor, alpha: torch.Tensor | float,
                gamma: float, first_entropy: bool) -> torch.Tensor:
    """G(s_0, a_0) of the module docstring, ``[B]``; ``tail_q``: Q(s_H, a_H) ``[B]``."""
    horizon = rollout.reward.shape[0]
    terms = torch.cat([soft_rewards(rollout, alpha),
                       (tail_q - alpha * rollout.log_prob[-1]).unsqueeze(0)])
    if not first_entropy:
        terms = torch.cat([rollout.reward[:1], terms[1:]])
    discount = gamma ** torch.arange(horizon + 1, device=terms.device, dtype=terms.dtype)
    return (discount.unsqueeze(-1) * rollout.mask * terms).sum(0)
