"""MBPO on the shared parts: rollout schedule, model buffer retention, real/model mix, smoke run
and resume."""

from __future__ import annotations

import csv

import pytest
import torch
from tensordict import TensorDict

from conftest import TINY, run_train
from mpdp_pl.runtime import checkpoint
from mpdp_pl.algos.mbpo import MBPO
from mpdp_pl.config import load_config, parse_overrides
from mpdp_pl.environment.data import load_buffer, make_replay_buffer
from mpdp_pl.environment.envs import EnvSpec
from mpdp_pl.lookahead.rollouts import branched_rollout, rollout_length
from mpdp_pl.run import train


@pytest.mark.parametrize("steps,expected", [
    (0, 1), (20_999, 1), (21_000, 1), (30_000, 2), (85_000, 8), (149_999, 14), (150_000, 15),
    (500_000, 15),
])
def test_hopper_rollout_schedule(steps, expected):
    # [20, 150, 1, 15]: 1 + 14 * (epoch - 20) / 130, truncated, as MBPO's _set_rollout_length
    assert rollout_length(steps, [20, 150, 1, 15], 1000) == expected


def test_schedule_from_configs():
    assert load_config("Hopper-v4", "mbpo")["rollouts"]["schedule"] == [20, 150, 1, 15]
    ip = load_config("InvertedPendulum-v4", "mbpo")
    assert ip["rollouts"]["epoch_length"] == 250 and ip["updates"]["critic_per_step"] == 10
    assert ip["temperature"]["target_entropy"] == -1  # the algorithm's task table wins over the task file
    assert load_config("Humanoid-v4", "mbpo")["rollouts"]["retain_epochs"] == 5


def _transitions(n, reward, obs_dim=3, act_dim=2):
    return TensorDict({
        "observation": torch.randn(n, obs_dim), "action": torch.rand(n, act_dim),
        "next": {"observation": torch.randn(n, obs_dim), "reward": torch.full((n, 1), reward),
                 "terminated": torch.zeros(n, 1, dtype=torch.bool),
                 "truncated": torch.zeros(n, 1, dtype=torch.bool),
                 "done": torch.zeros(n, 1, dtype=torch.bool)}}, [n])


@pytest.fixture
def mbpo():
    cfg = load_config("Hopper-v4", "mbpo", {"rollouts.batch_size": 40, "model.train_freq": 250,
                                             "rollouts.epoch_length": 1000, "data.batch_size": 100,
                                             "rollouts.real_ratio": 0.05, "networks.hidden_sizes": [16, 16],
                                             "model.hidden": 16})
    module = MBPO(cfg, EnvSpec(3, 2, (-1.0,) * 2, (1.0,) * 2, 100))
    from mpdp_pl.environment.data import make_replay_buffer
    module.replay_buffer = make_replay_buffer(1000, "cpu")
    module.replay_buffer.extend(_transitions(500, reward=1.0))
    return module


def test_model_buffer_retains_model_retain_epochs_of_rollouts(mbpo):
    # 40 rollouts per model training, 4 trainings per epoch, length 1, 1 epoch retained
    assert mbpo.model_data.size_for(1) == 160 and mbpo.model_data.size_for(3) == 480
    mbpo.model_data.resize(160)
    for round_ in range(6):
        mbpo.model_data.buffer.extend(_transitions(40, reward=-float(round_)))
    kept = mbpo.model_data.buffer[:]["next", "reward"].unique().tolist()
    assert len(mbpo.model_data.buffer) == 160 and sorted(kept) == [-5.0, -4.0, -3.0, -2.0]
    mbpo.model_data.resize(480)  # the schedule lengthened rollouts: keep what is there
    assert len(mbpo.model_data.buffer) == 160 and mbpo.model_data.capacity == 480
    mbpo.model_data.resize(80)   # shrink: the newest 80 survive
    assert sorted(mbpo.model_data.buffer[:]["next", "reward"].unique().tolist()) == [-5.0, -4.0]


def test_batches_mix_real_and_model_data_at_real_ratio(mbpo):
    assert mbpo.sample_batch()["next", "reward"].eq(1.0).all()  # no rollouts yet: all real
    mbpo.model_data.resize(160)
    mbpo.model_data.buffer.extend(_transitions(160, reward=-1.0))
    batch = mbpo.sample_batch()
    r = batch["next", "reward"].squeeze(-1)
    assert batch.shape == (100,)
    assert (r == 1.0).sum() == 5 and (r == -1.0).sum() == 95


def test_branched_rollout_stops_terminated_samples(mbpo):
    mbpo.dynamics.termination_fn = lambda s: s[:, 0] > 0  # about half terminate each step
    torch.manual_seed(0)
    start = torch.randn(64, 3)
    out = branched_rollout(mbpo.dynamics, lambda s: torch.zeros(s.shape[0], 2), start, 4)
    assert out[:64]["observation"].equal(start)
    assert out["next", "done"].equal(out["next", "terminated"])
    # step by step: the termination function's verdict on each next state, and each later step
    # starts, in order, from the next states of the samples that survived the one before
    n, at, sizes = 64, 0, []
    while at < out.shape[0]:
        step = out[at:at + n]
        alive = ~step["next", "terminated"].squeeze(-1)
        assert step["next", "terminated"].squeeze(-1).equal(step["next", "observation"][:, 0] > 0)
        sizes.append(n)
        at, n = at + n, int(alive.sum())
        if at < out.shape[0]:
            assert out[at:at + n]["observation"].equal(step["next", "observation"][alive])
    assert len(sizes) == 4 and sizes[-1] < sizes[0]  # 4 steps, terminated samples dropped


def test_mbpo_smoke_run_and_resume(tmp_path):
    cfg = load_config("Hopper-v4", "mbpo", {
        **parse_overrides(TINY), "steps": 400, "data.init_random_steps": 250, "eval.every": 400,
        "eval.episodes": 1, "model.train_freq": 50, "model.hidden": 16, "model.max_steps": 20,
        "rollouts.batch_size": 200, "rollouts.schedule": [0, 1, 1, 3], "rollouts.epoch_length": 50,
        "updates.critic_per_step": 2.0, "updates.actor_per_step": 2.0, "logger": "none",
        "out": str(tmp_path / "run")})
    out = train(cfg)
    with open(out / "metrics.csv") as f:
        last = list(csv.DictReader(f))[-1]
    assert int(last["env_steps"]) == 400
    assert float(last["train/rollout_length"]) == 3
    assert 0 < float(last["train/model_buffer_size"]) <= 3 * 200 * 1
    assert float(last["train/updates"]) == 2 * 151  # updates from env step 250 to 400
    # the final checkpoint holds the model buffer; --resume restores it and continues
    ckpt = checkpoint.latest(out)
    model_buffer = make_replay_buffer(checkpoint.read(ckpt)["counters"]["model_buffer_capacity"], "cpu")
    load_buffer(model_buffer, ckpt / "model_buffer")
    assert len(model_buffer) == float(last["train/model_buffer_size"])
    proc = run_train(["--resume", str(out), "--steps", "500"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(out / "metrics.csv") as f:
        assert [int(r["env_steps"]) for r in csv.DictReader(f)][-2:] == [400, 500]
