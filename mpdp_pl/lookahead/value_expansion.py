"""Model-based value expansion (MVE; Feinberg et al. 2018) targets for the critics of MPDP.

Algorithm 2 line 6 trains the critics on real transitions only (``critic_target=td``: SAC's
Eq. 2-3). With ``critic_target=mve`` each real transition (s, a, r, s', d) is extended by a
gradient-free K-step rollout of pi_0 through the ensemble from s' (x_0 = s'):

    b_k ~ pi_0(.|x_k),  (x_{k+1}, rho_k) ~ one elite member,  u_k = u(x_k, b_k)   (Eq. 8)
    valid_k = alive_k & ~(u_k >= u_T),   alive_0 = ~d,   alive_{k+1} = valid_k & ~term(x_{k+1})

The soft value along the rollout is expanded backwards from the target critics'
V'(x) = min_j Q'_j(x, b) - alpha log pi_0(b|x):

    G_K = V'(x_K)
    G_k = rho_k - alpha log pi_0(b_k|x_k) + gamma (1 - term_k) G_{k+1}   where valid_k
    G_k = V'(x_k)                                                         otherwise (a cut
          ends the expansion with the critic's value at the state the model no longer trusts)

and the critics regress, with equal weight per transition, on

    y(s, a)     = r + gamma (1 - d) G_0                       (the real transition)
    y(x_k, b_k) = rho_k + gamma (1 - term_k) G_{k+1}          (each valid imagined transition)

So K = 0 is SAC's Eq. (2)-(3) exactly. With ``critic_states=model`` the critics instead train
at model states with no real transition behind them, the start-state FIFO's
(:mod:`mpdp_pl.lookahead.start_states`; DHMBPO's critic data): x_0 is such a state, alive_0 is true, and
only the imagined rows y(x_k, b_k) are trained (:func:`state_expansion_targets`).

The target evaluates pi_0 at every step (the policy that acts, and the one V_old of Algorithm 1
uses), not the heads pi_1..pi_{H-1} of the farsighted unroll: Q stays Q^{pi_0}. The model-error penalty beta * u does not enter the critic's reward:
Q estimates the real return (``eval/q_bias`` checks that), and the penalty shapes the actor's
objective only. ``bounded=True`` clips every target to [min(0, m), max(0, M)] / (1 - gamma),
where m and M are the smallest and largest per-step soft reward (rho_k - alpha log pi_0, and the
real r) in the batch: the range of any discounted sum of them, terminals included (bounded
targets, as DHMBPO's), a guard against values that explode through imagined rewards. The
entropy term of the bootstrap states' values is not in that range (with K = 0 none is): the
bound is a guard, loose by about alpha * |log pi| / (1 - gamma), not a tight interval.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from .improvement import RolloutNoise, sample_noise
from ..models.actor import MultiHeadActor
from ..models.critic import TwinQ
from ..models.dynamics import DynamicsModel
from .unroll import Unroll


class ExpansionTargets(NamedTuple):
    # rows: (K + 1) B from a real batch (the real s, then x_0..x_{K-1}); K B from model states
    obs: torch.Tensor       # [rows, obs_dim]
    action: torch.Tensor    # [rows, A]: the real a, then b_0..b_{K-1}
    target: torch.Tensor    # [rows]
    weight: torch.Tensor    # [rows]: 1 for the real rows and the valid imagined ones, else 0
    imagined_frac: torch.Tensor  # valid imagined transitions / (K B)


def soft_value(actor: MultiHeadActor, critic_target: TwinQ, x: torch.Tensor, eps: torch.Tensor,
               alpha: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(V'(x), b, log pi_0(b|x))`` with b = pi_0(x, eps)."""
    b, log_prob = actor.sample(x, 0, eps)
    return critic_target(x, b).min(0).values - alpha * log_prob, b, log_prob


class _Expansion(NamedTuple):
    xs: list            # x_0..x_{K-1}
    bs: list            # b_0..b_{K-1}
    targets: list       # y(x_k, b_k) for k = 0..K-1
    valids: list        # valid_k
    soft: list          # rho_k - alpha log pi_0(b_k|x_k): the per-step soft rewards
    g0: torch.Tensor    # G_0, the soft value of x_0 expanded over the rollout


def _expand(x: torch.Tensor, alive: torch.Tensor, actor: MultiHeadActor, critic_target: TwinQ,
            dynamics: DynamicsModel, alpha: torch.Tensor, gamma: float, horizon: int,
            u_T, noise: RolloutNoise) -> _Expansion:
    """The K-step rollout of pi_0 from x_0 = ``x`` (samples with ``alive`` false are not
    expanded) and the backward recursion of the module docstring."""
    xs, bs, rhos, ents, terms, valids, values = [], [], [], [], [], [], []

    def act(k, x, pick):
        v, b, log_prob = soft_value(actor, critic_target, x, noise.actor[k], alpha)
        values.append(v)
        return b, log_prob

    # a state past a cut or a terminal is never used: it keeps its last (finite) value
    unroll = Unroll(dynamics, x, act, horizon, alive=alive, u_T=u_T, member=noise.member,
                    noise=noise.model)
    for st in unroll:
        xs.append(st.obs), bs.append(st.action), valids.append(st.valid)
        rhos.append(st.model.reward), ents.append(-alpha * st.log_prob)
        terms.append(st.model.terminated)
    x = unroll.obs
    g = soft_value(actor, critic_target, x, noise.actor[horizon], alpha)[0]
    targets = []
    for k in reversed(range(horizon)):
        continued = (~terms[k]).to(g.dtype)
        y_k = rhos[k] + gamma * continued * g             # target of Q(x_k, b_k)
        targets.append(y_k)
        g = torch.where(valids[k], ents[k] + y_k, values[k])
    targets.reverse()
    return _Expansion(xs, bs, targets, valids, [r + e for r, e in zip(rhos, ents)], g)


def _bound(target: torch.Tensor, weight: torch.Tensor, soft: torch.Tensor,
           gamma: float) -> torch.Tensor:
    """Clip ``target`` to [min(0, m), max(0, M)] / (1 - gamma), m and M the smallest and largest
    soft reward of the counted rows (``bounded=True`` of the module docstring)."""
    counted = weight > 0
    low = torch.where(counted, soft, torch.inf).min().clamp(max=0.0) / (1 - gamma)
    high = torch.where(counted, soft, -torch.inf).max().clamp(min=0.0) / (1 - gamma)
    return torch.minimum(torch.maximum(target, low), high)


@torch.no_grad()
def expansion_targets(batch, actor: MultiHeadActor, critic_target: TwinQ,
                      dynamics: DynamicsModel, alpha: torch.Tensor, gamma: float, horizon: int,
                      u_T: float | torch.Tensor = float("inf"),
                      bounded: bool = False,
                      noise: RolloutNoise | None = None) -> ExpansionTargets:
    """The MVE targets of the module docstring for a real ``batch`` (replay-buffer keys)."""
    obs, action = batch["observation"], batch["action"]
    nxt = batch["next"]
    reward, done = nxt["reward"].squeeze(-1), nxt["terminated"].squeeze(-1)
    if noise is None:
        noise = sample_noise(dynamics, horizon, obs.shape[0], actor.action_dim, obs.device)
    e = _expand(nxt["observation"], ~done, actor, critic_target, dynamics, alpha.detach(), gamma,
                horizon, u_T, noise)
    y_real = reward + gamma * (~done).to(e.g0.dtype) * e.g0
    target = torch.cat([y_real, *e.targets])
    weight = torch.cat([torch.ones_like(y_real), *(v.to(y_real.dtype) for v in e.valids)])
    if bounded:
        target = _bound(target, weight, torch.cat([reward, *e.soft]), gamma)
    imagined = torch.stack(e.valids).float().mean() if horizon else obs.new_zeros(())
    return ExpansionTargets(torch.cat([obs, *e.xs]), torch.cat([action, *e.bs]), target, weight,
                            imagined)


@torch.no_grad()
def state_expansion_targets(obs: torch.Tensor, actor: MultiHeadActor, critic_target: TwinQ,
                            dynamics: DynamicsModel, alpha: torch.Tensor, gamma: float,
                            horizon: int, u_T: float | torch.Tensor = float("inf"),
                            bounded: bool = False,
                            noise: RolloutNoise | None = None) -> ExpansionTargets:
    """``critic_states=model``: MVE targets at states ``obs`` ``[B, obs_dim]`` with no real
    transition behind them (the start-state FIFO's model states, as DHMBPO's critic): the rollout
    starts at x_0 = obs, and only its valid imagined rows y(x_k, b_k), k = 0..K-1, are trained
    (``horizon`` >= 1). ``imagined_frac`` is then the share of valid rows."""
    if horizon < 1:
        raise ValueError("state_expansion_targets needs horizon >= 1: a state alone has no target")
    if noise is None:
        noise = sample_noise(dynamics, horizon, obs.shape[0], actor.action_dim, obs.device)
    alive = torch.ones(obs.shape[0], dtype=torch.bool, device=obs.device)
    e = _expand(obs, alive, actor, critic_target, dynamics, alpha.detach(), gamma, horizon,
                u_T, noise)
    target = torch.cat(e.targets)
    weight = torch.cat([v.to(target.dtype) for v in e.valids])
    if bounded:
        target = _bound(target, weight, torch.cat(e.soft), gamma)
    return ExpansionTargets(torch.cat(e.xs), torch.cat(e.bs), target, weight,
                            weight.mean())


def expansion_loss(critic: TwinQ, targets: ExpansionTargets) -> tuple[torch.Tensor, torch.Tensor]:
    """sum_j of the weighted mean of (Q_j - y)^2 over the counted rows (real and valid imagined
    transitions); returns ``(loss, Q [2, rows])``. Only the critic's parameters get gradients."""
    q = critic(targets.obs, targets.action)
    w = targets.weight
    loss = ((q - targets.target).pow(2) * w).sum(-1).sum(0) / w.sum().clamp_min(1.0)
    return loss, q
