"""Environments: a gymnasium task wrapped by TorchRL, as every algorithm and the evaluator see it.

The agent lives in a normalized action box [-1, 1]^d; ``ActionScaling`` maps its actions to the
env's own bounds (Humanoid +-0.4, Pendulum +-2, InvertedPendulum +-3) on the way in, so the
replay buffer, the critics and the dynamics model all see normalized actions. Observations are
cast to float32 and, where the task config asks for it, truncated to their first
``task.obs_truncate`` dims (Humanoid: qpos[2:] and qvel, as in MBPO).
"""

from __future__ import annotations

import difflib
import functools
import warnings
from dataclasses import dataclass

import gymnasium as gym
import torch
from torchrl.envs import (ActionScaling, Compose, DoubleToFloat, GymEnv, ParallelEnv, SerialEnv,
                          Transform, TransformedEnv)
from torchrl.data import Bounded

from ..errors import ConfigError

# v4 MuJoCo ids warn that v5 exists; that is the paper's version, so the warning is noise.
warnings.filterwarnings("ignore", message=r".*The environment .* is out of date.*")
warnings.filterwarnings("ignore", message=r".*is out of date. You should consider upgrading.*")


class TruncateObservation(Transform):
    """Keep the first ``dims`` entries of ``observation`` (applied to reset and step outputs)."""

    def __init__(self, dims: int):
        super().__init__(in_keys=["observation"], out_keys=["observation"])
        self.dims = dims

    def _apply_transform(self, obs: torch.Tensor) -> torch.Tensor:
        return obs[..., : self.dims]

    def _reset(self, tensordict, tensordict_reset):
        return self._call(tensordict_reset)

    def transform_observation_spec(self, observation_spec):
        spec = observation_spec["observation"]
        shape = (*spec.shape[:-1], self.dims)
        observation_spec["observation"] = spec.__class__(
            shape=shape, dtype=spec.dtype, device=spec.device
        ) if not isinstance(spec, Bounded) else Bounded(
            low=spec.space.low[..., : self.dims], high=spec.space.high[..., : self.dims],
            shape=shape, dtype=spec.dtype, device=spec.device,
        )
        return observation_spec


@dataclass(frozen=True)
class EnvSpec:
    """What the networks need to know about a task."""

    obs_dim: int
    action_dim: int
    action_low: tuple[float, ...]
    action_high: tuple[float, ...]
    max_episode_steps: int | None


def check_env_id(env_id: str) -> None:
    """Fail with one clear line for ids gymnasium does not know (:func:`make_env` refuses those
    whose actions are not continuous)."""
    registry = gym.envs.registry
    if env_id not in registry:
        close = difflib.get_close_matches(env_id, list(registry), n=3, cutoff=0.5)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise ConfigError(f"unknown env id '{env_id}'{hint}")


def make_env(cfg: dict, seed: int | None = None, render: bool = False, num_envs: int = 1):
    """The TorchRL env of ``cfg['env']`` with the transforms described in the module docstring;
    ``render``: the gymnasium env renders RGB frames (``env.base_env._env.render()``).

    ``num_envs > 1``: that many copies stepped as one batched env (batch size ``[num_envs]``),
    TorchRL's ``SerialEnv`` or, with ``data.env_batching=parallel``, ``ParallelEnv`` (one process
    per env); each copy gets its own seed derived from ``seed``."""
    if num_envs > 1:
        batched = ParallelEnv if cfg["data"]["env_batching"] == "parallel" else SerialEnv
        env = batched(num_envs, functools.partial(make_env, cfg, render=render))
        if seed is not None:
            env.set_seed(seed)
        return env
    env_id = cfg["env"]
    check_env_id(env_id)
    kwargs = {"render_mode": "rgb_array"} if render else {}
    if cfg["task"].get("max_episode_steps"):
        kwargs["max_episode_steps"] = cfg["task"]["max_episode_steps"]
    try:
        base = GymEnv(env_id, **kwargs)
    except (ImportError, gym.error.DependencyNotInstalled) as e:  # Hopper-v3: gymnasium-robotics
        raise ConfigError(f"env '{env_id}' cannot be built here: {str(e).splitlines()[0]}") from None
    if not isinstance(base.action_spec, Bounded) or base.action_spec.dtype not in (
        torch.float32, torch.float64
    ):
        base.close()
        raise ConfigError(f"env '{env_id}' has no continuous (Box) action space; mpdp_pl needs one")
    transforms = [DoubleToFloat()]
    if cfg["task"].get("obs_truncate"):
        dims = base.observation_spec["observation"].shape[-1]
        if cfg["task"]["obs_truncate"] > dims:
            base.close()
            raise ConfigError(f"task.obs_truncate={cfg['task']['obs_truncate']}: {env_id} has only "
                              f"{dims} observation dims")
        transforms.append(TruncateObservation(cfg["task"]["obs_truncate"]))
    transforms.append(ActionScaling())
    env = TransformedEnv(base, Compose(*transforms))
    if seed is not None:
        env.set_seed(seed)
    return env


def env_spec(env: TransformedEnv) -> EnvSpec:
    base_action = env.base_env.action_spec
    return EnvSpec(
        obs_dim=env.observation_spec["observation"].shape[-1],
        action_dim=base_action.shape[-1],
        action_low=tuple(base_action.space.low.tolist()),
        action_high=tuple(base_action.space.high.tolist()),
        max_episode_steps=env.base_env._env.spec.max_episode_steps,
    )
