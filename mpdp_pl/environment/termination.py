"""Termination functions ``done(next_obs) -> bool [B]`` of the MuJoCo tasks, as torch ops on the
observation the agent sees (so they also apply to model-predicted states).

Each reproduces gymnasium's ``terminated`` (v4 and v5 share these rules, with the default
``terminate_when_unhealthy=True`` and health ranges). Observations exclude the x (and y)
positions, so ``obs[0]`` is the torso height z in every locomotion task.
Known limit: Hopper also terminates when a joint velocity exceeds 100 in magnitude, but its
observation clips velocities to +-10, so that case cannot be seen from observations (it does
not occur in practice: velocities of 100 are far outside what the simulator produces here).
The choice per task is the ``model.termination`` key of its config.
"""

from __future__ import annotations

import torch


def inverted_pendulum(obs: torch.Tensor) -> torch.Tensor:
    """not (all finite and |angle| <= 0.2), angle = obs[1]."""
    return ~(torch.isfinite(obs).all(-1) & (obs[..., 1].abs() <= 0.2))


def hopper(obs: torch.Tensor) -> torch.Tensor:
    """Unhealthy unless 0.7 < z, -0.2 < angle < 0.2 and |state[2:]| < 100 (obs[1:])."""
    z, angle = obs[..., 0], obs[..., 1]
    healthy = (z > 0.7) & (angle > -0.2) & (angle < 0.2) & (obs[..., 1:].abs() < 100).all(-1)
    return ~healthy


def walker2d(obs: torch.Tensor) -> torch.Tensor:
    """Unhealthy unless 0.8 < z < 2.0 and -1 < angle < 1."""
    z, angle = obs[..., 0], obs[..., 1]
    return ~((z > 0.8) & (z < 2.0) & (angle > -1.0) & (angle < 1.0))


def ant(obs: torch.Tensor) -> torch.Tensor:
    """Unhealthy unless all finite and 0.2 <= z <= 1.0 (inclusive, unlike the others)."""
    z = obs[..., 0]
    return ~(torch.isfinite(obs).all(-1) & (z >= 0.2) & (z <= 1.0))


def humanoid(obs: torch.Tensor) -> torch.Tensor:
    """Unhealthy unless 1.0 < z < 2.0."""
    z = obs[..., 0]
    return ~((z > 1.0) & (z < 2.0))


def never(obs: torch.Tensor) -> torch.Tensor:
    """Tasks that only end by their time limit (HalfCheetah, Pendulum, Swimmer, ...)."""
    return torch.zeros(obs.shape[:-1], dtype=torch.bool, device=obs.device)


TERMINATION_FNS = {
    "inverted_pendulum": inverted_pendulum,
    "hopper": hopper,
    "walker2d": walker2d,
    "ant": ant,
    "humanoid": humanoid,
    "none": never,
}
# ``learned``: no known rule; the dynamics ensemble learns a termination head (see dynamics.py).
TERMINATION_CHOICES = (*TERMINATION_FNS, "learned")
