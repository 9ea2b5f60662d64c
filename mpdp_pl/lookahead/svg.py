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

No cut and no model-error penalty: the horizon is fixed at H. MPDP's parts on this base
(``--algo mpdp_dh``, :mod:`mpdp_pl.algos.mpdp_dh`) add them to the actor's objective only:
:func:`farsighted_return`.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import torch

from ..models.dynamics import DynamicsModel
from .masks import none_through
from .unroll import Unroll


class SVGRollout(NamedTuple):
    obs: list[torch.Tensor]      # s_0..s_{H-1}, each [B, obs_dim]
    action: list[torch.Tensor]   # a_0..a_{H-1}, each [B, A]
    reward: torch.Tensor         # [H, B] r_t
    log_prob: torch.Tensor       # [H + 1, B] log pi(a_t|s_t), t = 0..H
    mask: torch.Tensor           # [H + 1, B] m_t (float): alive before step t; m_H after the last
    last_obs: torch.Tensor       # s_H
    last_action: torch.Tensor    # a_H
    u: torch.Tensor | None       # [H, B] u(s_t, a_t) over the elites (Eq. 8), with ``with_u``


def svg_rollout(dynamics: DynamicsModel, policy: Callable, obs: torch.Tensor,
                horizon: int, with_u: bool = False) -> SVGRollout:
    """The H-step rollout of ``policy`` (``(t, s) -> (a, log pi(a|s))``, reparameterized; t = H
    is the tail action's step) from ``obs`` through ``dynamics`` (one random member per sample
    and step, parameters detached: gradients reach states and actions, never the model). A
    sample past a predicted terminal keeps its last state, detached; its terms are masked.
    ``with_u``: every elite is evaluated at each step, for u (the serving member is still one
    random elite per sample)."""
    unroll = Unroll(dynamics, obs, lambda t, s, pick: policy(t, s), horizon, with_u=with_u,
                    params=dynamics.elite_params(detach=True) if with_u else None,
                    detach_params=True, detach_dead=True)
    obs_t, actions, rewards, log_probs, masks, u = [], [], [], [], [], []
    for st in unroll:
        obs_t.append(st.obs), actions.append(st.action), rewards.append(st.model.reward)
        log_probs.append(st.log_prob), masks.append(st.alive), u.append(st.model.u)
    last_action, last_log_prob = policy(horizon, unroll.obs)
    masks.append(unroll.alive)
    return SVGRollout(obs_t, actions, torch.stack(rewards), torch.stack([*log_probs, last_log_prob]),
                      torch.stack(masks).to(obs.dtype), unroll.obs, last_action,
                      torch.stack(u) if with_u else None)


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


def farsighted_return(rollout: SVGRollout, q: torch.Tensor, alpha: torch.Tensor | float,
                      gamma: float, beta: torch.Tensor | float = 0.0,
                      u_T: torch.Tensor | float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The actor's objective of :func:`soft_return` (``first_entropy=True``) with MPDP's cut and
    penalty (Algorithm 1, Eq. 9-10): a sample's sum stops at its first step T with
    u(s_T, a_T) >= u_T (else T = H) and ends there with the critic's value of (s_T, a_T), and
    beta * u_t is subtracted from every reward it counts:

        J(s_0) = sum_{t<T} gamma^t m_t [r_t - alpha log pi(a_t|s_t) - beta u_t]
               + gamma^T m_T [Q(s_T, a_T) - alpha log pi(a_T|s_T)]

    ``q``: ``[H + 1, B]``, Q(s_t, a_t) for t = 0..H (a_H: the tail action); only the rows where
    a sample can end are read (without a cut, the last). ``u_T=None``: no cut. Returns J ``[B]``
    and the counted reward steps ``[H, B]`` (float). With no cut and beta = 0 it is
    :func:`soft_return` to the bit."""
    horizon = rollout.reward.shape[0]
    soft = soft_rewards(rollout, alpha)
    if rollout.u is not None and (torch.is_tensor(beta) or beta != 0):
        soft = soft - beta * rollout.u
    end_value = q - alpha * rollout.log_prob
    if u_T is None:
        terms = torch.cat([soft, end_value[-1:]])
        kept = torch.ones_like(soft, dtype=torch.bool)
    else:
        cut = rollout.u.detach() >= u_T
        kept = none_through(cut)                                      # no cut at steps <= t
        reached = torch.cat([torch.ones_like(kept[:1]), kept])        # no cut before step t
        ends = reached & torch.cat([cut, torch.ones_like(cut[:1])])  # T = t
        counted = torch.cat([kept, torch.zeros_like(kept[:1])])
        terms = torch.where(ends, end_value, torch.where(counted, torch.cat([soft, soft[:1]]), 0.0))
    discount = gamma ** torch.arange(horizon + 1, device=terms.device, dtype=terms.dtype)
    return ((discount.unsqueeze(-1) * rollout.mask * terms).sum(0),
            (kept & rollout.mask[:-1].bool()).to(terms.dtype))
