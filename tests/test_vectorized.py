"""``data.num_envs``: several environments per rank stepped as one TorchRL batched env."""

from __future__ import annotations

import csv

import pytest
import torch

from mpdp_pl.config import ConfigError, load_config
from mpdp_pl.environment.data import load_buffer, make_replay_buffer
from mpdp_pl.environment.envs import make_env
from mpdp_pl.run import train

TINY = {"steps": 600, "data.init_random_steps": 150, "data.batch_size": 32, "networks.hidden_sizes": [32, 32],
        "eval.every": 600, "eval.episodes": 1, "logger": "none", "data.num_envs": 3,
        "trainer": {"num_threads": 1}}


def test_batched_env_copies_have_their_own_seeds():
    cfg = load_config("Hopper-v4", "sac", {"data.num_envs": 3})
    env = make_env(cfg, seed=7, num_envs=3)
    td = env.reset()
    env.close()
    assert td["observation"].shape == (3, 11)
    assert not torch.equal(td["observation"][0], td["observation"][1])


def test_sac_with_three_envs_counts_every_env_step_and_stores_whole_trajectories(tmp_path):
    cfg = load_config("InvertedPendulum-v4", "sac", {**TINY, "out": str(tmp_path / "run")})
    out = train(cfg)
    with open(out / "metrics.csv") as f:
        last = list(csv.DictReader(f))[-1]
    assert int(last["env_steps"]) == 600
    # one critic update per env step from the round that reaches 150 steps (3 steps a round)
    assert int(float(last["train/updates"])) == 600 - 150 + 3
    rb = make_replay_buffer(10**6, "cpu")
    load_buffer(rb, out / "checkpoints" / "step000000600" / "replay_buffer")
    data = rb[:]
    assert data.shape[0] == 600
    # each round appends one transition of env 0, 1, 2: data[i::3] is env i's trajectory, so
    # next_observation of one step is the observation of the next unless the episode ended
    for i in range(3):
        traj = data[i::3]
        cont = ~traj["next", "done"].squeeze(-1)[:-1]
        assert cont.any()
        torch.testing.assert_close(traj["next", "observation"][:-1][cont], traj["observation"][1:][cont])
    # the three copies saw different episodes
    assert not torch.equal(data[0::3]["observation"][:50], data[1::3]["observation"][:50])


def test_mppve_refuses_several_envs():
    with pytest.raises(ConfigError, match="mppve"):
        load_config("InvertedPendulum-v4", "mppve", {"data.num_envs": 2})
