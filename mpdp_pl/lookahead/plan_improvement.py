"""MPDP's farsighted improvement scored by a k-step plan value: MPDP's objective (Eq. 9-10) whose
tail is MPPVE's plan value Q(s, a_0..a_{k-1}) (:mod:`mpdp_pl.lookahead.plan_value`, Eq. 53)
instead of a one-step Q. ``docs/mpdp.md`` ("MPDP on a plan-value critic") writes it out.

For real states s_0, heads pi_0..pi_{H-1} (H = Hmax >= k) and L = H - k reward steps:

    unroll H model steps: a_t ~ pi_t(.|s_t) (reparameterized), (s_{t+1}, r_t, terminal_t, u_t)
    stop_t = terminal_t or u_t >= u_T                                     (t < L)
    T      = the first t < L with stop_t, else L                          (where the sum ends)
    J = sum_{t<T} gamma^t [r_t - alpha log pi_t(a_t|s_t) - beta u_t]                   (Eq. 10)
      + gamma^T [min_j Q_j(s_T, a_T..a_{T+k-1}) - alpha sum_{m<k} log pi_{T+m}(a_{T+m}|s_{T+m})]

Head t makes the action of step t: the plan valued at s_T is a_T..a_{T+k-1}, made by heads
T..T+k-1 at the model states the unroll reached. An actor with fewer heads uses its last one for
the remaining steps (one head: pi_0 everywhere). A cut or a predicted terminal at step t < L
ends the sum there with the plan value at s_t: the critic has learned terminal plans from real
segments, and a cut means the model is not trusted to extend the sum further. Inside a plan,
actions and log-probabilities after a predicted terminal are zeroed (the rule of
:func:`~mpdp_pl.lookahead.plan_value.make_plan`, the critic's padding of real segments).

Degenerate cases: H = k (L = 0) gives MPPVE's Eq. (53) for the heads' plan, and with one head it
is MPPVE's objective exactly. u is computed (every elite evaluated) only where it can act: at the
L reward steps, when u_T is finite or beta > 0. Every other step, the plans' k steps included, is
served by one random elite (:meth:`~mpdp_pl.models.dynamics.DynamicsModel.sample_step`, as in
:func:`~mpdp_pl.lookahead.plan_value.make_plan`), so that with L = 0 it draws the same random
numbers as MPPVE's plan.

The critic, the model, alpha and the unrolled states' frozen parts get no gradient: the model
and critic parameters are detached; the states carry the actor's gradient unless
``grad_through_model`` is false (then each state is detached, the official MPPVE code's choice).
One static form: every step runs the whole batch, and each sample's plan at its own s_T is
gathered and valued in one critic call on B rows, so shapes are fixed and nothing syncs with the
host.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from ..models.actor import MultiHeadActor
from ..models.critic import TwinQ
from ..models.dynamics import DynamicsModel
from .masks import none_before, none_through
from .unroll import Unroll


class PlanImprovement(NamedTuple):
    loss: torch.Tensor         # -mean J
    log_prob: torch.Tensor     # [B] sum of the k log-probs of the plan from s_0 (for alpha)
    diagnostics: dict          # detached: J and its parts, the realized horizon (mean T), mean u


def plan_improvement(obs: torch.Tensor, actor: MultiHeadActor, critic: TwinQ,
                     dynamics: DynamicsModel, alpha: torch.Tensor, beta: float | torch.Tensor,
                     gamma: float, u_T: float | torch.Tensor | None, horizon: int, k: int,
                     grad_through_model: bool = True) -> PlanImprovement:
    """The objective of the module docstring over a batch ``obs`` ``[B, obs_dim]``;
    ``improvement.u_T=None``: no cut (a fixed horizon)."""
    if horizon < k:
        raise ValueError(f"horizon={horizon} < k={k}: Hmax must hold a whole plan")
    alpha, reward_steps, last = alpha.detach(), horizon - k, actor.num_heads - 1
    with_u = reward_steps > 0 and (u_T is not None or torch.is_tensor(beta) or beta > 0)
    heads = actor.head_params()  # one gradient buffer per layer, not one per head

    def unroll(start, states, n, u):  # steps start..start+n-1, head t acting at step t
        return list(Unroll(dynamics, states,
                           lambda t, s, pick: actor.sample(s, min(start + t, last), params=heads),
                           n, with_u=u, detach_params=True, freeze=False,
                           params=dynamics.elite_params(detach=True) if u else None,
                           detach_states=not grad_through_model))
    # u only where it can act: the L reward steps (every elite); the plan's k steps are each
    # served by one random elite, as MPPVE's plans
    steps = unroll(0, obs, reward_steps, True) if with_u else []
    steps += unroll(len(steps), steps[-1].model.next_obs if steps else obs, horizon - len(steps), False)
    states = torch.stack([st.obs for st in steps])                 # [H, B, O]: s_0..s_{H-1}
    actions = torch.stack([st.action for st in steps])             # [H, B, A]
    log_prob = torch.stack([st.log_prob for st in steps])          # [H, B]
    reward = torch.stack([st.model.reward for st in steps])        # [H, B]
    terminal = torch.stack([st.model.terminated for st in steps])  # [H, B]

    # the sum's steps: t < T, i.e. no stop at or before t
    zeros = obs.new_zeros(reward_steps, obs.shape[0])
    u = torch.stack([st.model.u for st in steps[:reward_steps]]) if with_u else zeros
    stop = terminal[:reward_steps].clone()
    if u_T is not None and with_u:
        stop |= u.detach() >= u_T
    counted = none_through(stop)                                   # [L, B]
    end = counted.sum(0)                                           # [B]: T
    discount = gamma ** torch.arange(horizon, device=obs.device, dtype=obs.dtype).unsqueeze(-1)
    d = discount[:reward_steps]
    r_term = torch.where(counted, d * reward[:reward_steps], 0.0)
    ent_term = torch.where(counted, -d * alpha * log_prob[:reward_steps], 0.0)
    pen_term = torch.where(counted, -d * beta * u, 0.0)

    # the plan valued at s_T, per sample: a_T..a_{T+k-1}, one critic call on B rows
    plan, plan_lp = plan_from(end, actions, log_prob, terminal, k)
    s_end = states[end, torch.arange(obs.shape[0], device=obs.device)]        # [B, O]: s_T
    plan_value = critic(s_end, plan, detach_params=True).min(0).values        # [B]
    d_end = discount.squeeze(-1)[end]
    value = d_end * (plan_value - alpha * plan_lp)

    ret = r_term.sum(0) + ent_term.sum(0) + pen_term.sum(0) + value
    steps_counted = counted.sum().clamp_min(1)
    diagnostics = {
        "J": ret.mean().detach(),
        "J_reward": r_term.sum(0).mean().detach(),
        "J_entropy": (ent_term.sum(0) - d_end * alpha * plan_lp).mean().detach(),
        "J_penalty": pen_term.sum(0).mean().detach(),
        "J_plan_value": (d_end * plan_value).mean().detach(),
        "realized_horizon": end.to(obs.dtype).mean(),
        "u_mean": torch.where(counted, u.detach(), 0.0).sum() / steps_counted,
    }
    _, plan_lp_0 = plan_from(torch.zeros_like(end), actions, log_prob, terminal, k)
    return PlanImprovement(-ret.mean(), plan_lp_0, diagnostics)


def plan_from(start: torch.Tensor, actions: torch.Tensor, log_prob: torch.Tensor,
              terminal: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Each sample's k-step plan from its own step ``start`` [B] of the unroll (``actions``
    [H, B, A], ``log_prob`` and ``terminal`` [H, B]): the actions a_start..a_{start+k-1}
    concatenated [B, k*A] and the sum of their log-probabilities [B], both zeroed after a
    predicted terminal inside the plan (:func:`~mpdp_pl.lookahead.plan_value.make_plan`'s rule)."""
    idx = start + torch.arange(k, device=start.device).unsqueeze(-1)                 # [k, B]
    term = terminal.gather(0, idx)
    alive = none_before(term).to(actions.dtype)                                       # [k, B]
    acts = actions.gather(0, idx.unsqueeze(-1).expand(-1, -1, actions.shape[-1]))     # [k, B, A]
    return torch.cat(list(acts * alive.unsqueeze(-1)), -1), (log_prob.gather(0, idx) * alive).sum(0)
