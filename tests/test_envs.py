"""The TorchRL env against the raw gymnasium env it wraps: action scaling, observation
truncation, termination vs. truncation in collected data, and clear errors for bad ids."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

from mpdp_pl.config import ConfigError, load_config
from mpdp_pl.environment.data import flat_transitions, make_collector
from mpdp_pl.environment.envs import env_spec, make_env
from tensordict.nn import TensorDictModule


def check_same_as_raw_gymnasium(env_id, overrides, normalized_action, raw_action, steps=5):
    """Step our env with a normalized action and gymnasium with the raw one, same seed."""
    env = make_env(load_config(env_id, "sac", overrides), seed=123)
    raw = gym.make(env_id)
    td = env.reset()
    raw.reset(seed=123)  # TorchRL's set_seed resets with the seed; its reset() then resets again
    raw_obs, _ = raw.reset()
    obs_dim = td["observation"].shape[-1]
    np.testing.assert_allclose(td["observation"].numpy(), raw_obs[:obs_dim], rtol=1e-5, atol=1e-5)
    for _ in range(steps):
        td["action"] = torch.as_tensor(normalized_action, dtype=torch.float32)
        td = env.step(td)
        raw_obs, raw_r, *_ = raw.step(np.asarray(raw_action, dtype=np.float64))
        np.testing.assert_allclose(td["next", "observation"].numpy(), raw_obs[:obs_dim],
                                   rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(td["next", "reward"].item(), raw_r, rtol=1e-4, atol=1e-4)
        td = td["next"].clone()
    env.close()
    raw.close()


def test_pendulum_actions_are_scaled_to_plus_minus_two():
    check_same_as_raw_gymnasium("Pendulum-v1", {}, [0.5], [1.0])
    check_same_as_raw_gymnasium("Pendulum-v1", {}, [-1.0], [-2.0])


def test_humanoid_actions_scaled_to_0_4_and_obs_truncated_to_45():
    a = np.linspace(-1, 1, 17)
    check_same_as_raw_gymnasium("Humanoid-v4", {}, a, 0.4 * a, steps=3)
    env = make_env(load_config("Humanoid-v4"))
    spec = env_spec(env)
    assert spec.obs_dim == 45 and spec.action_dim == 17
    assert spec.action_high == pytest.approx((0.4,) * 17)
    env.close()
    full = make_env(load_config("Humanoid-v4", overrides={"task.obs_truncate": None}))
    assert env_spec(full).obs_dim == 376
    full.close()


def _collect(env_id, frames, overrides=None):
    cfg = load_config(env_id, "sac", overrides or {})
    env = make_env(cfg, seed=0)
    policy = TensorDictModule(lambda obs: torch.rand(*obs.shape[:-1], env.action_spec.shape[-1]) * 2 - 1,
                              in_keys=["observation"], out_keys=["action"])
    col = make_collector(env, policy, frames, 0, torch.device("cpu"), torch.device("cpu"))
    data = flat_transitions(next(iter(col)))
    col.shutdown()
    return data


def test_time_limit_is_truncation_not_termination():
    data = _collect("Pendulum-v1", 450)  # Pendulum never terminates; its time limit is 200
    assert not data["next", "terminated"].any()
    trunc = data["next", "truncated"].squeeze(-1).nonzero().squeeze(-1).tolist()
    assert trunc == [199, 399]
    assert torch.equal(data["next", "done"], data["next", "truncated"])


def test_inverted_pendulum_terminations_match_its_rule():
    # gymnasium's InvertedPendulum terminates when |angle| > 0.2 (obs[1]) or a value is not finite
    data = _collect("InvertedPendulum-v4", 600)
    term = data["next", "terminated"].squeeze(-1)
    rule = data["next", "observation"][:, 1].abs() > 0.2
    assert term.sum() > 5
    assert torch.equal(term, rule)
    assert not data["next", "truncated"].any()


def test_actions_in_buffer_are_normalized():
    data = _collect("Pendulum-v1", 300)
    assert data["action"].abs().max() <= 1.0
    assert data["action"].abs().max() > 0.9  # uniform over [-1, 1], not over [-2, 2] / 2


def test_unknown_env_id_suggests_close_ids():
    with pytest.raises(ConfigError, match="did you mean Hopper-v4"):
        make_env(load_config("Hoper-v4"))


def test_discrete_action_env_is_rejected():
    with pytest.raises(ConfigError, match="continuous"):
        make_env(load_config("CartPole-v1"))
