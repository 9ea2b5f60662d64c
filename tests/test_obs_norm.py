"""obs_norm (mpdp_pl/models/normalization.py): pooled moments against torch's own over every
stored row, the actor and critics reading standardized observations, refreshes every
model_train_freq env steps, and a run with every DHMBPO switch on that trains, checkpoints and
resumes."""

from __future__ import annotations

import csv

import torch

from conftest import TINY, run_train
from mpdp_pl.runtime import checkpoint
from mpdp_pl.algos.sac import SAC
from mpdp_pl.config import load_config, parse_overrides
from mpdp_pl.models.actor import MultiHeadActor
from mpdp_pl.models.critic import TwinQ
from mpdp_pl.models.normalization import RunningMoments
from mpdp_pl.run import train


def test_pooled_moments_equal_the_moments_of_all_rows():
    torch.manual_seed(0)
    rows = [torch.randn(n, 4) * torch.tensor([1.0, 10.0, 0.01, 0.0]) + 5.0 for n in (1, 7, 300)]
    m = RunningMoments(4)
    mean, std = m.mean_std(m.count, m.sum, m.sumsq)
    assert mean.eq(0).all() and std.eq(1).all()  # nothing seen: identity
    for r in rows:
        m.update(r)
    mean, std = m.mean_std(m.count, m.sum, m.sumsq)
    every = torch.cat(rows)
    assert torch.allclose(mean, every.mean(0), atol=1e-5)
    assert torch.allclose(std[:3], every.std(0, unbiased=False)[:3], rtol=1e-4)
    assert std[3] == 1e-4  # a constant dimension: the floor eps, not a division by zero


def test_actor_and_critic_read_standardized_observations():
    torch.manual_seed(0)
    mean, std = torch.tensor([1.0, -2.0, 3.0]), torch.tensor([0.5, 2.0, 10.0])
    actor, plain_actor = MultiHeadActor(3, 2, [16], obs_norm=True), MultiHeadActor(3, 2, [16])
    critic, plain_critic = TwinQ(3, 2, [16], obs_norm=True), TwinQ(3, 2, [16])
    for normed, plain in ((actor, plain_actor), (critic, plain_critic)):
        plain.load_state_dict({k: v for k, v in normed.state_dict().items() if "obs_norm" not in k})
        normed.obs_norm.set(mean, std)
    obs, act = torch.randn(20, 3) * 5, torch.rand(20, 2)
    z = (obs - mean) / std
    assert torch.allclose(actor.distribution(obs)[0], plain_actor.distribution(z)[0], atol=1e-6)
    assert torch.allclose(critic(obs, act), plain_critic(z, act), atol=1e-6)


def test_statistics_refresh_every_model_train_freq_env_steps():
    from mpdp_pl.environment.data import make_replay_buffer
    from mpdp_pl.environment.envs import EnvSpec
    from tensordict import TensorDict

    cfg = load_config("Hopper-v4", "sac", {"networks.obs_norm": True, "model.train_freq": 100,
                                           "networks.hidden_sizes": [8]})
    sac = SAC(cfg, EnvSpec(3, 2, (-1.0,) * 2, (1.0,) * 2, 100))
    sac.replay_buffer = make_replay_buffer(1000, "cpu")

    def step(value, n=50):
        batch = TensorDict({"observation": torch.full((n, 3), value), "action": torch.zeros(n, 2),
                            "next": {"observation": torch.zeros(n, 3),
                                     "reward": torch.zeros(n, 1),
                                     "terminated": torch.zeros(n, 1, dtype=torch.bool),
                                     "truncated": torch.zeros(n, 1, dtype=torch.bool),
                                     "done": torch.zeros(n, 1, dtype=torch.bool)}}, [n])
        sac.store(batch)
        sac.env_steps += n
        sac.refresh_obs_norm()

    step(2.0)   # 50: the first refresh
    assert sac.actor.obs_norm.mean.eq(2.0).all() and sac.critic_target.obs_norm.mean.eq(2.0).all()
    step(4.0)   # 100: a new interval, refreshed: mean of 50 x 2 and 50 x 4
    assert sac.critic.obs_norm.mean.eq(3.0).all()
    step(6.0)   # 150: same interval, the networks keep their statistics
    assert sac.critic.obs_norm.mean.eq(3.0).all() and sac.obs_moments.count == 150
    step(8.0)   # 200: refreshed
    assert torch.allclose(sac.actor.obs_norm.mean, torch.full((3,), 5.0))


def test_mpdp_with_dhmbpos_parts_trains_warm_starts_and_resumes(tmp_path):
    """critic_scale, obs_norm, a warm start of 30 updates and a first fit 3
    times as long, on Hopper: updates counted by hand, statistics and bounds in the checkpoint,
    and --resume continues it."""
    cfg = load_config("Hopper-v4", "mpdp", {
        **parse_overrides(TINY), "steps": 400, "data.init_random_steps": 250, "eval.every": 400,
        "eval.episodes": 1, "model.hidden": 16, "model.max_steps": 20, "model.train_freq": 1000,
        "model.eval_every": 10, "improvement.horizon": 3, "critic.scale": True, "networks.obs_norm": True,
        "updates.warmup": 30,
        "model.first_fit_scale": 3, "updates.critic_per_step": 2.0, "logger": "none",
        "out": str(tmp_path / "run")})
    out = train(cfg)
    with open(out / "metrics.csv") as f:
        last = list(csv.DictReader(f))[-1]
    assert float(last["train/updates"]) == 2 * 151 + 30  # env steps 250..400, then the warm start
    assert float(last["model/steps"]) == 60  # the only training: the first, 3 x 20 steps
    lb, ub = float(last["train/q_lb"]), float(last["train/q_ub"])
    assert lb < ub
    state = checkpoint.read(checkpoint.latest(out))["module"]
    assert torch.allclose(state["critic.q_bounds"], torch.tensor([lb, ub]))
    assert state["obs_moments.count"] == 400
    assert torch.equal(state["actor.obs_norm.mean"], state["critic_target.obs_norm.mean"])
    proc = run_train(["--resume", str(out), "--steps", "450"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(out / "metrics.csv") as f:
        assert [int(r["env_steps"]) for r in csv.DictReader(f)][-2:] == [400, 450]
