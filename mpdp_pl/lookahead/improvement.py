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

    # One step's part of J, in either form of the cut: (its term per stepped sample, the value
    # that ended a sample there, where r_t counted, where the entropy term counted)
    def cut_with_one_step_q(st, reward_term):
        """A cut ends the sample with SAC's objective at s_t; a predicted terminal ends the sum
        with no bootstrap, or with Q like a cut (``terminal_critic``)."""
        cut, counted = st.cut, st.valid
        if terminal_critic:
            cut = cut | (counted & st.model.terminated)
            counted = st.alive_next
        q = unroll.masked(cut, q_min, st.obs, st.action)
        one_step = q - alpha * st.log_prob                                # SAC's objective at s_t
        discount = gamma ** st.t
        term = discount * torch.where(cut, one_step, torch.where(counted, reward_term, 0.0))
        return term, torch.where(cut, discount * q, 0.0), counted, st.alive

    def cut_as_printed(st, reward_term):
        """Algorithm 1 lines 6-8: a cut or a predicted terminal ends the sample with
        gamma^{t+1} V_old(s_{t+1}), without r_t."""
        ended = st.alive & (st.cut | st.model.terminated)
        counted = st.alive & ~ended
        value = unroll.masked(ended, end_value(gamma ** (st.t + 1)), st.model.next_obs,
                              unroll.pick(tail_eps, st))
        term = torch.where(ended, value, torch.where(counted, gamma ** st.t * reward_term, 0.0))
        return term, torch.where(ended, value, 0.0), counted, counted

    step_terms = cut_as_printed if paper_literal_cut else cut_with_one_step_q
    for st in unroll:
        t, step, alive = st.t, st.model, st.alive
        u = step.u.detach()
        if t == 0:
            log_prob0, u_first = st.log_prob, u
        u_sum = u_sum + torch.where(alive, u, 0.0).sum()
        alive_steps = alive_steps + alive.sum()
        cut_counts.append(st.cut.float().sum())
        reward_term = step.reward - alpha * st.log_prob - beta * step.u   # Eq. (10)
        term, ended_value, counted, entropy_counted = step_terms(st, reward_term)
        ret = unroll.add(ret, term, st)
        discount = gamma ** t
        cut_sum = cut_sum + ended_value.detach().sum()
        r_sum = r_sum + torch.where(counted, discount * step.reward, 0.0).detach().sum()
        ent_sum = ent_sum + torch.where(entropy_counted, -discount * alpha * st.log_prob,
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
