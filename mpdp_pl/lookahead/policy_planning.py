"""POPLIN's planners (Wang and Ba 2019, "Exploring Model-based Planning with Policy Networks";
facts from WilsonWangTHU/POPLIN ``dmbrl/controllers/MPC.py`` and ``dmbrl/misc/optimizers/``):
PETS's CEM (:func:`~mpdp_pl.lookahead.planning.cem`) searches around a policy network's
proposal instead of from scratch. Candidates are scored by
:func:`~mpdp_pl.lookahead.planning.expected_returns` (POPLIN's ``E`` propagation: one trajectory
per candidate through the elites' mean prediction).

- :class:`ActionNoisePlanner`, POPLIN-A with its default ``INIT`` proposal: the policy is rolled
  once through the model from the state, giving a plan ``p_0..p_{H-1}``; CEM searches additive
  noise ``d`` with candidates ``clip(p_t + d_t)``. The env gets ``clip(p_0 + mean_0)``.
- :class:`ParameterNoisePlanner`, POPLIN-P with ``SEP``: CEM searches one noise on the policy's
  weights per planning step, ``a_t = pi(s_t; W + d_t)`` along each candidate's own trajectory.
  The env gets ``pi(s; W + mean_0)``.

Both sample the noise from a normal truncated at 2 standard deviations (the noise is not
bounded, so its variance is not capped), start each plan's noise mean from the previous one
shifted by a step (POPLIN: zero at an episode's start; here a plan after an episode boundary
starts from the stale one, as PETS's planner does) and its variance at ``init_var`` (POPLIN
resets it every step). POPLIN's early stop when the variance falls below 0.001 is left out: no
host sync inside the loop. While acting (:meth:`_PolicyPlanner.sample`), each planner keeps what its
distillation needs in ``pending`` (the algorithm consumes it).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..models.actor import ProposalPolicy
from ..models.dynamics import DynamicsModel
from .planning import CEMSettings, cem, expected_returns


class _PolicyPlanner(nn.Module):
    def __init__(self, dynamics: DynamicsModel, policy: ProposalPolicy, settings: CEMSettings,
                 init_var: float):
        super().__init__()
        self._model = (dynamics,)  # not a submodule: the algorithm owns and saves the ensemble
        self.policy, self.settings, self.init_var = policy, settings, init_var
        self.warm_start: dict[int, torch.Tensor] = {}  # batch size -> the last noise mean, shifted
        self.pending: list[tuple[torch.Tensor, ...]] = []

    def _search(self, obs: torch.Tensor, dim: int, objective) -> tuple[torch.Tensor, torch.Tensor]:
        s, n = self.settings, obs.shape[0]
        mean = self.warm_start.get(n)
        if mean is None or mean.device != obs.device or mean.shape[-1] != dim:
            mean = torch.zeros(n, s.horizon, dim, device=obs.device)
        var = torch.full_like(mean, self.init_var)
        unbounded = torch.full((dim,), math.inf, device=obs.device)
        mean, elite = cem(objective, mean, var, -unbounded, unbounded, s)
        self.warm_start[n] = torch.cat([mean[:, 1:], torch.zeros_like(mean[:, :1])], dim=1)
        return mean, elite

    def reset(self) -> None:
        """Forget the previous plans (after the policy changed under them)."""
        self.warm_start.clear()

    def deterministic(self, obs: torch.Tensor, head: int = 0) -> torch.Tensor:
        return self.plan(obs, record=False)

    def sample(self, obs: torch.Tensor, head: int = 0):
        return self.plan(obs, record=True), None


class ActionNoisePlanner(_PolicyPlanner):
    """POPLIN-A (``INIT``): CEM over additive action noise around the policy's plan. ``pending``
    gets ``(obs [N, D], executed action [N, A], the elites' first actions [N, elites, A])`` per
    acting plan: the data of behaviour cloning on real and imagined elite actions (BC-AI)."""

    @torch.no_grad()
    def plan(self, obs: torch.Tensor, record: bool) -> torch.Tensor:
        (dynamics,), h = self._model, self.settings.horizon
        proposal, state = [], obs
        for _ in range(h):
            action = self.policy(state)
            proposal.append(action)
            state = dynamics.mean_step(state, action).next_obs
        proposal = torch.stack(proposal, dim=1)                                   # [N, H, A]

        def objective(noise: torch.Tensor) -> torch.Tensor:                       # [N, P, H, A]
            actions = (proposal.unsqueeze(1) + noise).clamp(-1.0, 1.0).flatten(0, 1)
            return expected_returns(dynamics, obs, noise.shape[1], h, lambda t, _: actions[:, t])

        mean, elite = self._search(obs, proposal.shape[-1], objective)
        action = (proposal[:, 0] + mean[:, 0]).clamp(-1.0, 1.0)
        if record:
            self.pending.append((obs, action, (proposal[:, None, 0] + elite[:, :, 0]).clamp(-1.0, 1.0)))
        return action


class ParameterNoisePlanner(_PolicyPlanner):
    """POPLIN-P (``SEP``): CEM over a noise on the policy's weights per planning step.
    ``pending`` gets the executed first-step noise mean ``[N, W]`` per acting plan (what ``AVG``
    averages into the weights)."""

    @torch.no_grad()
    def plan(self, obs: torch.Tensor, record: bool) -> torch.Tensor:
        (dynamics,), h = self._model, self.settings.horizon
        weights = self.policy.flat_weights()                                      # [W]

        def objective(noise: torch.Tensor) -> torch.Tensor:                       # [N, P, H, W]
            candidate = (weights + noise).flatten(0, 1)                           # [N * P, H, W]
            return expected_returns(dynamics, obs, noise.shape[1], h,
                                    lambda t, states: self.policy.with_weights(candidate[:, t], states))

        mean, _ = self._search(obs, weights.numel(), objective)
        if record:
            self.pending.append((mean[:, 0],))
        return self.policy.with_weights(weights + mean[:, 0], obs)
