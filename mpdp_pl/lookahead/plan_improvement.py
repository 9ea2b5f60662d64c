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
is MPPVE's objective exactly. u is computed (every elite evaluated) only where it can act (L > 0
with a finite u_T or beta > 0); otherwise each step is served by one random elite
(:meth:`~mpdp_pl.models.dynamics.DynamicsModel.sample_step`, as in
:func:`~mpdp_pl.lookahead.plan_value.make_plan`), drawing the same random numbers as MPPVE's plan.

The critic, the model, alpha and the unrolled states' frozen parts get no gradient: the model
and critic parameters are detached; the states carry the actor's gradient unless
``grad_through_model`` is false (then each state is detached, the official MPPVE code's choice).
One static form: every step runs the whole batch and the L + 1 candidate plans are valued in
one critic call, so shapes are fixed and nothing syncs with the host.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from ..models.actor import MultiHeadActor
from ..models.critic import TwinQ
from ..models.dynamics import DynamicsModel
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
    steps = list(Unroll(dynamics, obs, lambda t, s, pick: actor.sample(s, min(t, last)), horizon,
                        with_u=with_u, detach_params=True, freeze=False,
                        detach_states=not grad_through_model))
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
    counted = stop.cumsum(0) == 0                                  # [L, B]
    end = counted.sum(0)                                           # [B]: T
    discount = gamma ** torch.arange(horizon, device=obs.device, dtype=obs.dtype).unsqueeze(-1)
    d = discount[:reward_steps]
    r_term = torch.where(counted, d * reward[:reward_steps], 0.0)
    ent_term = torch.where(counted, -d * alpha * log_prob[:reward_steps], 0.0)
    pen_term = torch.where(counted, -d * beta * u, 0.0)

    # the L + 1 candidate plans, zeroed after a predicted terminal inside them; T picks one
    plans, plan_log_prob = [], []
    for start in range(reward_steps + 1):
        term = terminal[start:start + k]
        alive = ((term.cumsum(0) - term.long()) == 0).to(actions.dtype)   # [k, B]
        plans.append(torch.cat(list(actions[start:start + k] * alive.unsqueeze(-1)), -1))
        plan_log_prob.append((log_prob[start:start + k] * alive).sum(0))
    plans, plan_log_prob = torch.stack(plans), torch.stack(plan_log_prob)  # [L+1, B, kA], [L+1, B]
    n = reward_steps + 1
    q = critic(states[:n].flatten(0, 1), plans.flatten(0, 1), detach_params=True)
    q = q.min(0).values.view(n, -1)                                        # [L+1, B]
    chosen = torch.arange(n, device=obs.device).unsqueeze(-1) == end       # [L+1, B]
    value = torch.where(chosen, discount[:n] * (q - alpha * plan_log_prob), 0.0)

    ret = r_term.sum(0) + ent_term.sum(0) + pen_term.sum(0) + value.sum(0)
    steps_counted = counted.sum().clamp_min(1)
    diagnostics = {
        "J": ret.mean().detach(),
        "J_reward": r_term.sum(0).mean().detach(),
        "J_entropy": (ent_term.sum(0) - torch.where(chosen, discount[:n] * alpha * plan_log_prob,
                                                     0.0).sum(0)).mean().detach(),
        "J_penalty": pen_term.sum(0).mean().detach(),
        "J_plan_value": torch.where(chosen, discount[:n] * q, 0.0).sum(0).mean().detach(),
        "realized_horizon": end.to(obs.dtype).mean(),
        "u_mean": torch.where(counted, u.detach(), 0.0).sum() / steps_counted,
    }
    return PlanImprovement(-ret.mean(), plan_log_prob[0], diagnostics)
