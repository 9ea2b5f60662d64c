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
(``improvement.single_policy=true``) pi_0 acts at every step, as in SVG and DHMBPO.

A cut sample ends with SAC's one-step objective at s_t (so a fully untrusted model degenerates to
SAC); a predicted terminal ends the sum with no bootstrap. V_old uses pi_0 with detached
parameters (a' is still a function of s_H), the online critics with detached parameters, and a
detached alpha; the model is read with detached parameters too: only the actor receives
gradients. loss = -mean_B J.

``improvement.terminal_critic=True`` ends a sample whose next state is a predicted terminal like a cut one,
with min_j Q_j(s_t, a_t) - alpha log pi_t instead of r_t - alpha log pi_t - beta u_t: a hard
terminal mask carries no gradient about avoiding the terminal, while the critic (which learned
Q = r at real terminals) does. MPDP's default (in single-seed InvertedPendulum probes of an early
script that no longer exists, the hard mask let the policy drift towards terminals; not yet
re-measured on Hopper).

``improvement.paper_literal_cut=True`` implements Algorithm 1 lines 6-7 as printed instead: at a cut or a
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
    u_first: torch.Tensor         # [B] detached u(s_0, a_0) at the start states (logged as train/u_first)


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
    ``form``: ``static`` or ``live`` (same loss and gradients).

    Written once for both forms: each step's terms are computed for the samples the unroll
    stepped (static: all B, with masks; live: the alive ``rows``) and added into J at their
    batch indices (:meth:`Unroll.add`); the critic's and V_old's values are computed where a
    mask asks for them (:meth:`Unroll.masked`: every row in the static form, those rows only in
    the live one)."""
    if form not in FORMS:
        raise ValueError(f"form={form!r}: must be one of {FORMS}")
    batch = obs.shape[0]
    if noise is None:
        noise = sample_noise(dynamics, horizon, batch, actor.action_dim, obs.device)
    alpha = alpha.detach()
    zero = obs.new_zeros(())
    ret = obs.new_zeros(batch)
    r_sum, ent_sum, pen_sum, cut_sum, u_sum = zero, zero, zero, zero, zero
    realized, alive_steps = zero, zero
    cut_counts = []
    # gathered once for the H steps: the elites' frozen weights, and pi_0..pi_{H-1} as views
    # (one gradient buffer per actor layer instead of one per head and step)
    heads = actor.head_params()

    def act(t, s, pick):
        return actor.sample(s, min(t, actor.num_heads - 1), pick(noise.actor[t]), params=heads)

    def end_value(scale):  # scale * V_old(s) with the tail's noise, for the rows given
        return lambda s, eps: scale * v_old(actor, critic, s, alpha, eps)

    def q_min(s, a):
        return critic(s, a, detach_params=True).min(0).values

    unroll = Unroll(dynamics, obs, act, horizon, u_T=u_T, member=noise.member, noise=noise.model,
                    params=dynamics.elite_params(detach=True), live=form == "live",
                    detach_dead=True)
    tail_eps = noise.actor[horizon]
    for st in unroll:
        t, s, action, log_prob, step = st.t, st.obs, st.action, st.log_prob, st.model
        alive, cut = st.alive, st.cut
        discount = gamma ** t
        u = step.u.detach()
        if t == 0:
            log_prob0, u_first = log_prob, u
        u_sum = u_sum + torch.where(alive, u, 0.0).sum()
        alive_steps = alive_steps + alive.sum()
        cut_counts.append(cut.float().sum())
        reward_term = step.reward - alpha * log_prob - beta * step.u      # Eq. (10)
        if paper_literal_cut:  # Alg. 1 l.6-8: end with gamma^{t+1} V(s_{t+1}), no r_t
            ended = alive & (cut | step.terminated)
            counted = alive & ~ended
            value = unroll.masked(ended, end_value(gamma ** (t + 1)), step.next_obs,
                                  unroll.pick(tail_eps, st))
            term = torch.where(ended, value, torch.where(counted, discount * reward_term, 0.0))
            cut_sum = cut_sum + torch.where(ended, value, 0.0).detach().sum()
            entropy_counted = counted
        else:
            counted = st.valid
            if terminal_critic:  # a predicted terminal ends the sample with Q, like a cut
                cut = cut | (counted & step.terminated)
                counted = st.alive_next
            q = unroll.masked(cut, q_min, s, action)
            one_step = q - alpha * log_prob                               # SAC's objective at s_t
            term = discount * torch.where(cut, one_step, torch.where(counted, reward_term, 0.0))
            cut_sum = cut_sum + torch.where(cut, discount * q, 0.0).detach().sum()
            entropy_counted = alive
        ret = unroll.add(ret, term, st)
        r_sum = r_sum + torch.where(counted, discount * step.reward, 0.0).detach().sum()
        ent_sum = ent_sum + torch.where(entropy_counted, -discount * alpha * log_prob,
                                        0.0).detach().sum()
        pen_sum = pen_sum + torch.where(counted, -discount * beta * step.u, 0.0).detach().sum()
        realized = realized + counted.sum()
    cut_counts.extend([zero] * (horizon - unroll.steps_run))  # live: steps after nobody was left
    tail_sum = zero
    if not paper_literal_cut:
        tail = unroll.masked(unroll.alive, end_value(gamma ** horizon), unroll.obs,
                             unroll.pick(tail_eps))
        ret = unroll.add(ret, tail)
        tail_sum = tail.detach().sum()
    diagnostics = {
        "J": ret.mean().detach(),
        "J_reward": r_sum / batch,
        "J_entropy": ent_sum / batch,
        "J_penalty": pen_sum / batch,
        "J_cut_value": cut_sum / batch,
        "J_tail": tail_sum / batch,
        "realized_horizon": realized / batch,
        "u_mean": u_sum / alive_steps.clamp_min(1),
        "cut_frac": torch.stack(cut_counts) / batch,
        "live_rows": alive_steps / (batch * horizon),
    }
    return Improvement(-ret.mean(), log_prob0, diagnostics, u_first)
