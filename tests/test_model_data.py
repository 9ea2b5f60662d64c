"""MBPO's model data as one shared part (mpdp_pl/algos/model_data.py): the real/model mix of a
batch, the refill from real states after a model training, and the model buffer's age against a
hand computation."""

from __future__ import annotations

import pytest
import torch
from tensordict import TensorDict

from mpdp_pl.algos.mbpo import MBPO
from mpdp_pl.config import load_config
from mpdp_pl.environment.data import make_replay_buffer
from mpdp_pl.environment.envs import EnvSpec

SPEC = EnvSpec(3, 2, (-1.0,) * 2, (1.0,) * 2, 100)
SMALL = {"rollouts.batch_size": 40, "model.train_freq": 250, "rollouts.epoch_length": 1000,
         "data.batch_size": 100, "rollouts.real_ratio": 0.05, "networks.hidden_sizes": [16, 16], "model.hidden": 16}


def transitions(n, value):
    """n transitions whose observation and reward are all ``value`` (to tell sources apart)."""
    return TensorDict({
        "observation": torch.full((n, 3), value), "action": torch.zeros(n, 2),
        "next": {"observation": torch.full((n, 3), value), "reward": torch.full((n, 1), value),
                 "terminated": torch.zeros(n, 1, dtype=torch.bool),
                 "truncated": torch.zeros(n, 1, dtype=torch.bool),
                 "done": torch.zeros(n, 1, dtype=torch.bool)}}, [n])


def module(cls, algo, **extra):
    m = cls(load_config("Hopper-v4", algo, {**SMALL, **extra}), SPEC)
    m.replay_buffer = make_replay_buffer(1000, "cpu")
    m.replay_buffer.extend(transitions(500, 1.0))
    return m


def test_a_batch_takes_real_ratio_real_rows_and_the_rest_from_the_model_buffer():
    mbpo = module(MBPO, "mbpo")
    assert mbpo.sample_batch()["next", "reward"].eq(1.0).all()  # no rollouts yet: all real
    mbpo.model_data.refill(transitions(160, -1.0), length=1)
    for _ in range(3):
        r = mbpo.sample_batch()["next", "reward"].squeeze(-1)
        assert r.shape == (100,) and (r == 1.0).sum() == 5 and (r == -1.0).sum() == 95


def test_the_model_buffer_is_refilled_with_pi0_rollouts_after_each_model_training():
    mbpo = module(MBPO, "mbpo", rollout_schedule=[0, 1, 2, 2])
    mbpo.env_steps = 5000
    mbpo.model_rollouts()
    # 40 start states, 2 model steps each (minus any predicted terminal), all model transitions
    assert 40 <= len(mbpo.model_data.buffer) <= 80
    assert mbpo.model_data.buffer[:]["observation"][:40].eq(1.0).all()  # they start at real states
    assert "train/model_data_age" in mbpo.metric_keys


def test_model_data_age_is_the_mean_age_of_the_rows_held():
    mbpo = module(MBPO, "mbpo", rollout_batch_size=25)  # MBPO's pool: 25 * 4 trainings * 1 step
    for step, rows in ((1000, 60), (1250, 30), (1500, 50)):
        mbpo.env_steps = step
        mbpo.model_data.refill(transitions(rows, float(step)), length=1)
    # the FIFO of 100 holds the newest 50 (step 1500), 30 (1250) and 20 of the 60 (1000)
    held = mbpo.model_data.buffer[:]["next", "reward"].squeeze(-1)
    assert sorted(held.unique().tolist()) == [1000.0, 1250.0, 1500.0] and held.numel() == 100
    mbpo.env_steps = 1750
    by_hand = (1750 - held).mean().item()  # (20 * 750 + 30 * 500 + 50 * 250) / 100 = 425
    assert mbpo.model_data.age() == pytest.approx(by_hand) == pytest.approx(425.0)
    mbpo.model_data.refill(transitions(0, 0.0), length=1)  # logged before the next refill
    assert mbpo.recorder.latest["train/model_data_age"] == pytest.approx(425.0)
