"""eval/q_bias against closed forms on the real InvertedPendulum-v4: its reward is 1 per step, so
an episode of length L has discounted return (1 - gamma^L) / (1 - gamma)."""

from __future__ import annotations

import pytest
import torch
from tensordict.nn import TensorDictModule

from mpdp_pl.config import load_config
from mpdp_pl.environment.envs import make_env
from mpdp_pl.environment.episodes import evaluate


class Constant(torch.nn.Module):
    def forward(self, observation):
        return torch.full((*observation.shape[:-1], 1), 0.3)


@pytest.mark.parametrize("gamma", [0.9, 0.99])
def test_q_bias_is_q_at_the_start_state_minus_the_discounted_return(gamma):
    cfg = load_config("InvertedPendulum-v4", "sac")
    env = make_env(cfg, seed=5)
    policy = TensorDictModule(Constant(), in_keys=["observation"], out_keys=["action"])
    seen = []

    def q_value(obs):
        seen.append(obs.clone())
        return obs[:, 1] * 100.0  # a Q that depends on the state it is given

    out = evaluate(env, policy, 3, 1000, seed=11, gamma=gamma, q_value=q_value)
    # the same episodes again, read step by step: their first observations and lengths
    env.set_seed(11)
    starts, discounted = [], []
    for _ in range(3):
        episode = env.rollout(1000, policy, break_when_any_done=True)
        starts.append(episode["observation"][0])
        length = episode.shape[-1]
        assert 1 < length < 1000 and bool(episode["next", "terminated"][-1])
        discounted.append((1 - gamma ** length) / (1 - gamma))
    env.close()
    starts = torch.stack(starts)
    torch.testing.assert_close(seen[0], starts)
    q = (100.0 * starts[:, 1]).double().mean().item()
    expected = q - sum(discounted) / 3
    assert out["eval/q_bias"] == pytest.approx(expected, rel=1e-4, abs=1e-4)
