"""Export pi_0 as a self-contained TorchScript file: ``torch.jit.load(path)`` needs only torch.

The exported module maps raw gymnasium observations ``[B, obs_dim]`` (any float dtype) to the
actions ``[B, action_dim]`` the env receives: the training-time observation handling (the task's
truncation, float32) and the deterministic action ``tanh(mean)`` of pi_0, rescaled from
[-1, 1] to the env's bounds exactly as TorchRL's ``ActionScaling`` does
(``a_env = a * (high - low) / 2 + (high + low) / 2``). The actor takes raw observations; with
``networks.obs_norm`` its standardization is a layer of the actor and is traced with it.

    import torch, gymnasium as gym
    policy = torch.jit.load("hopper_pi0.pt")
    env = gym.make("Hopper-v4")
    obs, _ = env.reset(seed=0)
    action = policy(torch.as_tensor(obs)[None])[0].numpy()
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from torch import nn


class ExportedPolicy(nn.Module):
    def __init__(self, actor: nn.Module, obs_truncate: int | None, low, high):
        super().__init__()
        self.actor = actor
        self.obs_truncate = obs_truncate
        low, high = torch.as_tensor(low, dtype=torch.float32), torch.as_tensor(high, dtype=torch.float32)
        self.register_buffer("loc", (high + low) / 2)
        self.register_buffer("scale", (high - low) / 2)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        x = obs.to(torch.float32)
        if self.obs_truncate:
            x = x[..., : self.obs_truncate]
        return self.actor.deterministic(x) * self.scale + self.loc


@torch.no_grad()
def export_policy(cfg: dict, module, path: Path) -> Path:
    """Trace pi_0 of ``module`` (any algorithm) into ``path``."""
    spec = module.spec
    actor = copy.deepcopy(module.actor).requires_grad_(False)  # plain tensors out, no autograd
    policy = ExportedPolicy(actor, cfg["task"].get("obs_truncate"), spec.action_low, spec.action_high).eval()
    raw_dim = spec.obs_dim if not cfg["task"].get("obs_truncate") else _raw_obs_dim(cfg)
    example = torch.zeros(2, raw_dim)
    traced = torch.jit.trace(policy, example, check_trace=False)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    traced.save(str(path))
    return path


def _raw_obs_dim(cfg: dict) -> int:
    import gymnasium as gym

    env = gym.make(cfg["env"])
    try:
        return env.observation_space.shape[-1]
    finally:
        env.close()


if __name__ == "__main__":  # the command is evaluate's --export (it loads the run's checkpoint)
    import sys

    print("error: export a run with python -m mpdp_pl.evaluate RUN_DIR --export FILE.pt", file=sys.stderr)
    sys.exit(2)
