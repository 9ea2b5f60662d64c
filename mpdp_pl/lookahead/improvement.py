"""The farsighted policy improvement of MPDP (Algorithm 1; Eq. 9-10), batched over states.

For real states s_0 and heads pi_0..pi_{H-1} (H = Hmax), with alive mask m_0 = 1:

    for t = 0..H-1:
        a_t ~ pi_t(.|s_t) (reparameterized);  (s_{t+1}, r_t) ~ one elite member; u_t = u(s_t, a_t)
        cut_t = m_t & (u_t >= u_T)
        J += gamma^t [min_j Q_j(s_t, a_t) - alpha log pi_t(a_t|s_t)]        where cut_t
        J += gamma^t [r_t - alpha log pi_t(a_t|s_t) - beta u_t]             where m_t & ~cut_t
        m_{t+1} = m_t & ~cut_t & ~terminal(s_{t+1})
    J += gamma^H V_old(s_H) where m_H,  V_old(s) = min_j Q_j(s, a') - alpha log pi_0(a'|s), a' ~ pi_0(s)

An actor with fewer heads than Hmax uses its last head for the remaining steps: with one head
(``single_policy=true``) pi_0 acts at every step, as in SVG and DHMBPO.

A cut sample ends with SAC's one-step objective at s_t (so a fully untrusted model degenerates to
SAC); a predicted terminal ends the sum with no bootstrap. V_old uses pi_0 with detached
parameters (a' is still a function of s_H), the online critics with detached parameters, and a
detached alpha; the model is read with detached parameters too: only the actor receives
gradients. loss = -mean_B J.

``terminal_critic=True`` ends a sample whose next state is a predicted terminal like a cut one,
with min_j Q_j(s_t, a_t) - alpha log pi_t instead of r_t - alpha log pi_t - beta u_t: a hard
terminal mask carries no gradient about avoiding the terminal, while the critic (which learned
Q = r at real terminals) does. MPDP's default (in single-seed InvertedPendulum probes of an early
script that no longer exists, the hard mask let the policy drift towards terminals; not yet
re-measured on Hopper).

``paper_literal_cut=True`` implements Algorithm 1 lines 6-7 as printed instead: at a cut or a
predicted terminal, J += gamma^{t+1} V_old(s_{t+1}) and stop, and no tail value after the loop
(docs/design.md says why this is not the default).

Two forms compute the same loss and gradients (``form``):

- ``static``: every step runs over the whole batch with masks (``torch.where``), all H steps.
  Fixed shapes and no host sync: what CUDA graphs and ``torch.compile`` need.
- ``live``: step t runs the actor, the ensemble and the OvR error on the samples still alive
  only (their rows are gathered, their terms scattered back with ``index_add``), the critic on
  the samples that end at t with a critic value only, and the unroll stops when none is alive.
  Its work is proportional to the realized horizon instead of to Hmax; selecting rows needs the
  number of alive samples on the host (one sync per step), so it suits CPUs.

Both iterate :class:`mpdp_pl.lookahead.unroll.Unroll` (its static and live forms), which owns the model
steps and the cut and terminal masks; this module keeps only the objective.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from ..models.actor import MultiHeadActor
from ..models.critic import TwinQ
from ..models.dynamics import DynamicsModel
from .unroll import Unroll


class RolloutNoise(NamedTuple):
    """Explicit randomness of one unroll (tests share it with a reference computation)."""

    actor: torch.Tensor    # [H + 1, B, A]: eps of pi_t at step t; the last row is the tail's a'
    model: torch.Tensor    # [H, B, obs_dim + 1]: the serving member's Gaussian noise
    member: torch.Tensor   # [H, B]: index of the serving member


class Improvement(NamedTuple):
    loss: torch.Tensor            # -mean J
    log_prob0: torch.Tensor       # [B] log pi_0(a_0|s_0) at the real states (for alpha's update)
    diagnostics: dict             # detached tensors: J and its parts, horizon, cut fractions, u,
                                  # and live_rows: alive sample-steps / (B * Hmax), the share of
                                  # the static form's work spent on live samples
    u_first: torch.Tensor         # [B] detached u(s_0, a_0) at the start states (u_T_rule=first_step)


FORMS = ("static", "live")


def v_old(actor: MultiHeadActor, critic: TwinQ, obs: torch.Tensor, alpha: torch.Tensor,
          eps: torch.Tensor | None) -> torch.Tensor:
    """V^{pi_old}(s) = min_j Q_j(s, a') - alpha log pi_0(a'|s), a' = pi_0(s, eps), with frozen
    parameters: the value flows back into ``obs`` only."""
    action, log_prob = actor.sample(obs, 0, eps, detach_params=True)
    return critic(obs, action, detach_params=True).min(0).values - alpha * log_prob


def sample_noise(dynamics: DynamicsModel, horizon: int, batch: int, action_dim: int,
                 device) -> RolloutNoise:
    elites = dynamics.elites
    pick = torch.randint(len(elites), (horizon, batch), device=device)
    return RolloutNoise(torch.randn(horizon + 1, batch, action_dim, device=device),
                        torch.randn(horizon, batch, dynamics.obs_dim + 1, device=device),
                        elites[pick])


def farsighted_improvement(obs: torch.Tensor, actor: MultiHeadActor, critic: TwinQ,
                           dynamics: DynamicsModel, alpha: torch.Tensor,
                           beta: float | torch.Tensor,
                           gamma: float, u_T: float | torch.Tensor, horizon: int,
                           paper_literal_cut: bool = False,
                           noise: RolloutNoise | None = None,
                           terminal_critic: bool = False, form: str = "static") -> Improvement:
    """Algorithm 1 over a batch ``obs`` ``[B, obs_dim]`` of real states (module docstring);
    ``form``: ``static`` or ``live`` (same loss and gradients)."""
    batch = obs.shape[0]
    if noise is None:
        noise = sample_noise(dynamics, horizon, batch, actor.action_dim, obs.device)
    if form == "live":
        return _live_unroll(obs, actor, critic, dynamics, alpha.detach(), beta, gamma,
                            u_T, horizon, paper_literal_cut, noise, terminal_critic)
    if form != "static":
        raise ValueError(f"form={form!r}: must be one of {FORMS}")
    alpha = alpha.detach()
    zeros = obs.new_zeros(batch)
    ret, r_part, ent_part, pen_part, cut_part = zeros, zeros, zeros, zeros, zeros
    realized = zeros
    cut_fracs, u_sum, u_count, alive_steps = [], zeros.sum(), zeros.sum(), zeros.sum()
    log_prob0 = None
    # gathered once for the H steps: the elites' frozen weights, and pi_0..pi_{H-1} as views
    # (one gradient buffer per actor layer instead of one per head and step)
    heads = actor.head_params()

    def act(t, s, pick):
        return actor.sample(s, min(t, actor.num_heads - 1), noise.actor[t], params=heads)

    unroll = Unroll(dynamics, obs, act, horizon, u_T=u_T, member=noise.member, noise=noise.model,
                    params=dynamics.elite_params(detach=True), detach_dead=True)
    for st in unroll:
        t, s, action, log_prob, step = st.t, st.obs, st.action, st.log_prob, st.model
        alive, cut = st.alive, st.cut
        discount = gamma ** t
        if t == 0:
            log_prob0, u_first = log_prob, step.u.detach()
        u_sum = u_sum + torch.where(alive, step.u.detach(), 0.0).sum()
        u_count = u_count + alive.sum()
        alive_steps = alive_steps + alive.sum()
        cut_fracs.append(cut.float().mean())
        reward_term = step.reward - alpha * log_prob - beta * step.u      # Eq. (10)
        if paper_literal_cut:  # Alg. 1 l.6-8: end with gamma^{t+1} V(s_{t+1}), no r_t
            ended = alive & (cut | step.terminated)
            counted = alive & ~ended
            end_value = gamma ** (t + 1) * v_old(actor, critic, step.next_obs, alpha,
                                                 noise.actor[horizon])
            ret = ret + torch.where(ended, end_value,
                                    torch.where(counted, discount * reward_term, 0.0))
            cut_part = cut_part + torch.where(ended, end_value, 0.0).detach()
            entropy_counted = counted
        else:
            q = critic(s, action, detach_params=True).min(0).values
            one_step = q - alpha * log_prob                               # SAC's objective at s_t
            counted = st.valid
            if terminal_critic:
                cut = cut | (counted & step.terminated)
                counted = st.alive_next
            ret = ret + discount * torch.where(cut, one_step,
                                               torch.where(counted, reward_term, 0.0))
            cut_part = cut_part + torch.where(cut, discount * q, 0.0).detach()
            entropy_counted = alive
        r_part = r_part + torch.where(counted, discount * step.reward, 0.0).detach()
        ent_part = ent_part + torch.where(entropy_counted, -discount * alpha * log_prob,
                                          0.0).detach()
        pen_part = pen_part + torch.where(counted, -discount * beta * step.u, 0.0).detach()
        realized = realized + counted.float()
    s, alive = unroll.obs, unroll.alive
    tail_part = zeros
    if not paper_literal_cut:
        tail = v_old(actor, critic, s, alpha, noise.actor[horizon])
        tail_part = torch.where(alive, gamma ** horizon * tail, 0.0)
        ret = ret + tail_part
    diagnostics = {
        "J": ret.mean().detach(),
        "J_reward": r_part.mean(),
        "J_entropy": ent_part.mean(),
        "J_penalty": pen_part.mean(),
        "J_cut_value": cut_part.mean(),
        "J_tail": tail_part.mean().detach(),
        "realized_horizon": realized.mean(),
        "u_mean": u_sum / u_count.clamp_min(1),
        "cut_frac": torch.stack(cut_fracs),
        "live_rows": alive_steps / (batch * horizon),
    }
    return Improvement(-ret.mean(), log_prob0, diagnostics, u_first)


def _live_unroll(obs, actor, critic, dynamics, alpha, beta, gamma, u_T, horizon,
                 paper_literal_cut, noise, terminal_critic) -> Improvement:
    """The ``live`` form: the static loop's Eq. (9)-(10) on the alive rows only.

    ``rows`` holds the batch index of every alive sample and ``s`` their states; each step's
    terms are computed for those rows and added into J at ``rows``. A sample leaves ``rows``
    where the static form's mask turns off it (a cut, a predicted terminal), so nothing it would
    compute later is computed at all.
    """
    batch = obs.shape[0]
    ret = obs.new_zeros(batch)
    zero = obs.new_zeros(())
    r_sum, ent_sum, pen_sum, cut_sum, u_sum = zero, zero, zero, zero, zero
    realized, u_count, rows_done = zero, zero, 0
    cut_counts = []
    log_prob0 = None
    heads = actor.head_params()

    def act(t, s, pick):
        return actor.sample(s, min(t, actor.num_heads - 1), pick(noise.actor[t]), params=heads)

    unroll = Unroll(dynamics, obs, act, horizon, u_T=u_T, member=noise.member, noise=noise.model,
                    params=dynamics.elite_params(detach=True), live=True)
    for st in unroll:
        t, s, action, log_prob, step = st.t, st.obs, st.action, st.log_prob, st.model
        cut, rows = st.cut, st.rows
        n = rows.numel()
        rows_done += n
        discount = gamma ** t
        u = step.u.detach()
        if t == 0:
            log_prob0, u_first = log_prob, u
        u_sum, u_count = u_sum + u.sum(), u_count + n
        cut_counts.append(cut.sum())
        reward_term = step.reward - alpha * log_prob - beta * step.u      # Eq. (10)
        if paper_literal_cut:
            ended = cut | step.terminated
            counted = ~ended
            end = ended.nonzero().squeeze(-1)
            end_value = gamma ** (t + 1) * v_old(actor, critic, step.next_obs[end], alpha,
                                                 noise.actor[horizon][rows[end]])
            term = torch.where(counted, discount * reward_term, 0.0).index_add(0, end, end_value)
            cut_sum = cut_sum + end_value.detach().sum()
            ent_sum = ent_sum + torch.where(counted, -discount * alpha * log_prob, 0.0).detach().sum()
        else:
            counted = st.valid
            valued = cut | (counted & step.terminated) if terminal_critic else cut
            if terminal_critic:
                counted = st.alive_next
            end = valued.nonzero().squeeze(-1)
            q = critic(s[end], action[end], detach_params=True).min(0).values
            one_step = q - alpha * log_prob[end]                          # SAC's objective at s_t
            term = (discount * torch.where(counted, reward_term, 0.0)).index_add(
                0, end, discount * one_step)
            cut_sum = cut_sum + discount * q.detach().sum()
            ent_sum = ent_sum - discount * alpha * log_prob.detach().sum()
        ret = ret.index_add(0, rows, term)
        r_sum = r_sum + torch.where(counted, discount * step.reward, 0.0).detach().sum()
        pen_sum = pen_sum + torch.where(counted, -discount * beta * step.u, 0.0).detach().sum()
        realized = realized + counted.sum()
    cut_counts.extend([zero] * (horizon - unroll.steps_run))  # steps after nobody was left
    rows, s = unroll.rows, unroll.obs
    tail_sum = zero
    if not paper_literal_cut and rows.numel():
        tail = gamma ** horizon * v_old(actor, critic, s, alpha, noise.actor[horizon][rows])
        ret = ret.index_add(0, rows, tail)
        tail_sum = tail.detach().sum()
    diagnostics = {
        "J": ret.mean().detach(),
        "J_reward": r_sum / batch,
        "J_entropy": ent_sum / batch,
        "J_penalty": pen_sum / batch,
        "J_cut_value": cut_sum / batch,
        "J_tail": tail_sum / batch,
        "realized_horizon": realized / batch,
        "u_mean": u_sum / u_count.clamp_min(1),
        "cut_frac": torch.stack(cut_counts) / batch,
        "live_rows": zero.new_tensor(rows_done / (batch * horizon)),
    }
    return Improvement(-ret.mean(), log_prob0, diagnostics, u_first)
