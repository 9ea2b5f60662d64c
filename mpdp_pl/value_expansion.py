"""Model-based value expansion (MVE; Feinberg et al. 2018) targets for the critics of MPDP.

Algorithm 2 line 6 trains the critics on real transitions only (``critic_target=td``: SAC's
Eq. 2-3). With ``critic_target=mve`` each real transition (s, a, r, s', d) is extended by a
gradient-free K-step rollout of pi_0 through the ensemble from s' (x_0 = s'):

    b_k ~ pi_0(.|x_k),  (x_{k+1}, rho_k) ~ one elite member,  u_k = u(x_k, b_k)   (Eq. 8)
    valid_k = alive_k & (u_k < u_T),   alive_0 = ~d,   alive_{k+1} = valid_k & ~term(x_{k+1})

The soft value along the rollout is expanded backwards from the target critics'
V'(x) = min_j Q'_j(x, b) - alpha log pi_0(b|x):

    G_K = V'(x_K)
    G_k = rho_k - alpha log pi_0(b_k|x_k) + gamma (1 - term_k) G_{k+1}   where valid_k
    G_k = V'(x_k)                                                         otherwise (a cut
          ends the expansion with the critic's value at the state the model no longer trusts)

and the critics regress, with equal weight per transition, on

    y(s, a)     = r + gamma (1 - d) G_0                       (the real transition)
    y(x_k, b_k) = rho_k + gamma (1 - term_k) G_{k+1}          (each valid imagined transition)

So K = 0 is SAC's Eq. (2)-(3) exactly. The target evaluates pi_0 at every step (the policy that
acts, and the one V_old of Algorithm 1 uses), not the heads pi_1..pi_{H-1} of the farsighted
unroll: Q stays Q^{pi_0}. The model-error penalty beta * u does not enter the critic's reward:
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
from .models.actor import MultiHeadActor
from .models.critic import TwinQ
from .models.dynamics import DynamicsModel


class ExpansionTargets(NamedTuple):
    obs: torch.Tensor       # [(K + 1) B, obs_dim]: the real s, then x_0..x_{K-1}
    action: torch.Tensor    # [(K + 1) B, A]: the real a, then b_0..b_{K-1}
    target: torch.Tensor    # [(K + 1) B]
    weight: torch.Tensor    # [(K + 1) B]: 1 for the real rows and the valid imagined ones, else 0
    imagined_frac: torch.Tensor  # valid imagined transitions / (K B)


def soft_value(actor: MultiHeadActor, critic_target: TwinQ, x: torch.Tensor, eps: torch.Tensor,
               alpha: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(V'(x), b, log pi_0(b|x))`` with b = pi_0(x, eps)."""
    b, log_prob = actor.sample(x, 0, eps)
    return critic_target(x, b).min(0).values - alpha * log_prob, b, log_prob


@torch.no_grad()
def expansion_targets(batch, actor: MultiHeadActor, critic_target: TwinQ,
                      dynamics: DynamicsModel, alpha: torch.Tensor, gamma: float, horizon: int,
                      u_threshold: float | torch.Tensor = float("inf"),
                      bounded: bool = False,
                      noise: RolloutNoise | None = None) -> ExpansionTargets:
    """The MVE targets of the module docstring for a real ``batch`` (replay-buffer keys)."""
    obs, action = batch["observation"], batch["action"]
    nxt = batch["next"]
    reward, done = nxt["reward"].squeeze(-1), nxt["terminated"].squeeze(-1)
    n = obs.shape[0]
    if noise is None:
        noise = sample_noise(dynamics, horizon, n, actor.action_dim, obs.device)
    alpha = alpha.detach()
    x, alive = nxt["observation"], ~done
    xs, bs, rhos, ents, terms, valids, values = [], [], [], [], [], [], []
    for k in range(horizon):
        v, b, log_prob = soft_value(actor, critic_target, x, noise.actor[k], alpha)
        step = dynamics.step(x, b, member=noise.member[k], noise=noise.model[k])
        valid = alive & (step.u < u_threshold)
        xs.append(x), bs.append(b), values.append(v), valids.append(valid)
        rhos.append(step.reward), ents.append(-alpha * log_prob), terms.append(step.terminated)
        alive = valid & ~step.terminated
        # a state past a cut or a terminal is never used: keep finite values there
        x = torch.where(valid.unsqueeze(-1), step.next_obs, x)
    g = soft_value(actor, critic_target, x, noise.actor[horizon], alpha)[0]
    imagined_targets = []
    for k in reversed(range(horizon)):
        continued = (~terms[k]).to(g.dtype)
        y_k = rhos[k] + gamma * continued * g             # target of Q(x_k, b_k)
        imagined_targets.append(y_k)
        g = torch.where(valids[k], ents[k] + y_k, values[k])
    imagined_targets.reverse()
    y_real = reward + gamma * (~done).to(g.dtype) * g
    target = torch.cat([y_real, *imagined_targets])
    weight = torch.cat([torch.ones_like(y_real), *(v.to(y_real.dtype) for v in valids)])
    if bounded:
        soft = torch.cat([reward, *(r + e for r, e in zip(rhos, ents))])
        counted = weight > 0
        low = torch.where(counted, soft, torch.inf).min().clamp(max=0.0) / (1 - gamma)
        high = torch.where(counted, soft, -torch.inf).max().clamp(min=0.0) / (1 - gamma)
        target = torch.minimum(torch.maximum(target, low), high)
    imagined = torch.stack(valids).float().mean() if horizon else obs.new_zeros(())
    return ExpansionTargets(torch.cat([obs, *xs]), torch.cat([action, *bs]), target, weight,
                            imagined)


def expansion_loss(critic: TwinQ, targets: ExpansionTargets) -> tuple[torch.Tensor, torch.Tensor]:
    """sum_j of the weighted mean of (Q_j - y)^2 over the real and valid imagined transitions;
    returns ``(loss, Q [2, (K + 1) B])``. Only the critic's parameters get gradients."""
    q = critic(targets.obs, targets.action)
    w = targets.weight
    loss = ((q - targets.target).pow(2) * w).sum(-1).sum(0) / w.sum().clamp_min(1.0)
    return loss, q
