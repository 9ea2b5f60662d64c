"""Model-predictive control by the cross-entropy method (PETS: Chua et al. 2018; the facts from
kchua/handful-of-trials and mbrl-lib's ``CEMOptimizer``, ``TrajectoryOptimizerAgent`` and
``ModelEnv.evaluate_action_sequences``).

- :func:`cem`: ``iterations`` rounds of ``population`` action sequences ``[H, A]`` per state,
  drawn from a normal truncated at 2 standard deviations whose variance is also capped so that
  2 sigma stays inside the action box; the ``elites`` best refit the mean and variance, blended
  with the old ones by ``momentum`` (``mu <- m mu + (1 - m) mu_elites``). The initial variance is
  ``(ub - lb)^2 / 16``; the mean and the last iteration's elites are returned. No early stop on
  the variance: fixed shapes and no host sync inside the loop, so that a GPU runs it as one
  stream of kernels. Unbounded ``lb``/``ub`` (POPLIN's noise) leave the variance uncapped.
- :func:`particle_returns`: TS-infinity propagation. Each candidate is evaluated by ``particles``
  particles, each bound to one elite for the whole horizon (``particles / E`` per elite); every
  candidate, particle and member of a planning step is one batched forward
  (:meth:`~mpdp_pl.models.dynamics.DynamicsModel.grouped_step`). Rewards are summed undiscounted
  and stop at a predicted terminal; the candidate's value is the mean over its particles.
- :func:`expected_returns`: the ``E`` propagation of POPLIN (one deterministic trajectory per
  candidate through the elites' mean prediction), for actions that may depend on the state.
- :class:`CEMPlanner`: the policy. Each plan starts from the previous one shifted by a step (its
  last step at the box's centre); the first action is taken. The previous plan is kept per batch
  size of states, so a plan after an episode boundary or an evaluation starts from a stale
  sequence, which costs CEM only its head start.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from ..models.dynamics import DynamicsModel


@dataclass(frozen=True)
class CEMSettings:
    """The config's ``pets`` group (meanings and defaults: :class:`mpdp_pl.config.schema.Pets`)."""

    horizon: int
    population: int
    elites: int
    iterations: int
    momentum: float
    particles: int

    @classmethod
    def from_config(cls, cfg: dict) -> "CEMSettings":
        return cls(**cfg["pets"])


def cem(objective: Callable[[torch.Tensor], torch.Tensor], mean: torch.Tensor, var: torch.Tensor,
        lb: torch.Tensor, ub: torch.Tensor, s: CEMSettings) -> tuple[torch.Tensor, torch.Tensor]:
    """Maximize ``objective`` (``[N, P, H, A] -> [N, P]``) from ``mean``, ``var`` ``[N, H, A]``
    within ``[lb, ub]`` ``[A]``; returns the final mean ``[N, H, A]`` and the last iteration's
    elites ``[N, elites, H, A]``. A NaN value (a diverged model trajectory) ranks last, as in
    mbrl-lib's ``CEMOptimizer``: ``topk`` would rank it first."""
    n, h, a = mean.shape
    for _ in range(s.iterations):
        cap = torch.minimum((mean - lb).div(2).pow(2), (ub - mean).div(2).pow(2))
        std = torch.minimum(cap, var).sqrt()
        z = torch.nn.init.trunc_normal_(torch.empty(n, s.population, h, a, device=mean.device),
                                        0.0, 1.0, -2.0, 2.0)
        samples = mean.unsqueeze(1) + z * std.unsqueeze(1)
        values = objective(samples)
        values = torch.where(values.isnan(), -torch.inf, values)
        best = values.topk(s.elites, dim=1).indices                                # [N, elites]
        elite = samples.gather(1, best[:, :, None, None].expand(-1, -1, h, a))
        mean = s.momentum * mean + (1 - s.momentum) * elite.mean(1)
        var = s.momentum * var + (1 - s.momentum) * elite.var(1, unbiased=False)
    return mean, elite


def particle_returns(dynamics: DynamicsModel, obs: torch.Tensor, plans: torch.Tensor,
                     particles: int) -> torch.Tensor:
    """TS-infinity value of each plan: ``obs`` ``[N, D]``, ``plans`` ``[N, P, H, A]`` -> ``[N, P]``,
    the mean over ``particles`` (a multiple of the elites) of the undiscounted model return."""
    n, p, h, a = plans.shape
    e = len(dynamics.elites)
    k = particles // e
    rows = n * p * k
    state = obs[None, :, None, None, :].expand(e, n, p, k, obs.shape[-1]).reshape(e, rows, -1)
    total = torch.zeros(e, rows, device=obs.device)
    alive = torch.ones(e, rows, dtype=torch.bool, device=obs.device)
    for t in range(h):
        action = plans[None, :, :, None, t].expand(e, n, p, k, a).reshape(e, rows, a)
        st = dynamics.grouped_step(state, action)
        total = total + torch.where(alive, st.reward, 0.0)
        alive = alive & ~st.terminated
        state = st.next_obs
    return total.view(e, n, p, k).mean(dim=(0, 3))


def expected_returns(dynamics: DynamicsModel, obs: torch.Tensor, candidates: int, horizon: int,
                     act: Callable[[int, torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """Undiscounted model return of ``candidates`` per state along the elites' mean prediction
    (POPLIN's ``E`` propagation, :meth:`~mpdp_pl.models.dynamics.DynamicsModel.mean_step`),
    stopped at a predicted terminal: ``obs`` ``[N, D]`` -> ``[N, candidates]``. ``act(t, states)``
    gives the actions ``[N * candidates, A]`` at step t (rows candidate-major within a state)."""
    n = obs.shape[0]
    state = obs.repeat_interleave(candidates, dim=0)
    total = torch.zeros(state.shape[0], device=obs.device)
    alive = torch.ones(state.shape[0], dtype=torch.bool, device=obs.device)
    for t in range(horizon):
        st = dynamics.mean_step(state, act(t, state))
        total = total + torch.where(alive, st.reward, 0.0)
        alive = alive & ~st.terminated
        state = st.next_obs
    return total.view(n, candidates)


class CEMPlanner(nn.Module):
    """PETS's policy: CEM over action sequences in [-1, 1]^A through ``dynamics``; acts with the
    first action of the plan (no exploration noise, as PETS)."""

    def __init__(self, dynamics: DynamicsModel, action_dim: int, settings: CEMSettings):
        super().__init__()
        self._model = (dynamics,)  # not a submodule: the algorithm owns and saves the ensemble
        self.action_dim, self.settings = action_dim, settings
        self.warm_start: dict[int, torch.Tensor] = {}  # batch size -> the last plan, shifted

    @torch.no_grad()
    def plan(self, obs: torch.Tensor) -> torch.Tensor:
        s, (dynamics,) = self.settings, self._model
        n = obs.shape[0]
        lb = torch.full((self.action_dim,), -1.0, device=obs.device)
        ub = torch.full((self.action_dim,), 1.0, device=obs.device)
        mean = self.warm_start.get(n)
        if mean is None or mean.device != obs.device:
            mean = torch.zeros(n, s.horizon, self.action_dim, device=obs.device)
        var = ((ub - lb) ** 2 / 16).expand(n, s.horizon, self.action_dim)
        mean, _ = cem(lambda plans: particle_returns(dynamics, obs, plans, s.particles),
                      mean, var, lb, ub, s)
        self.warm_start[n] = torch.cat([mean[:, 1:], torch.zeros_like(mean[:, :1])], dim=1)
        return mean[:, 0]

    def deterministic(self, obs: torch.Tensor, head: int = 0) -> torch.Tensor:
        return self.plan(obs)

    def sample(self, obs: torch.Tensor, head: int = 0):
        return self.plan(obs), None
