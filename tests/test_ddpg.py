"""DDPG (mpdp_pl/algos/ddpg.py, sfujim/TD3's OurDDPG) against hand computations: its critic
target and loss per sample, its actor loss, its exploration noise; and its run through the same
CLI as the others: train, checkpoint, resume, evaluate and export."""

from __future__ import annotations

import csv
import subprocess
import sys

import pytest
import torch
from tensordict import TensorDict

from conftest import TINY, run_train
from mpdp_pl.algos.ddpg import DDPG
from mpdp_pl.config import ConfigError, load_config
from mpdp_pl.environment.envs import EnvSpec

SPEC = EnvSpec(3, 2, (-1.0,) * 2, (1.0,) * 2, 100)


@pytest.fixture
def ddpg():
    torch.manual_seed(0)
    m = DDPG(load_config("Hopper-v4", "ddpg", {"networks.hidden_sizes": [16, 16]}), SPEC)
    with torch.no_grad():  # targets unlike the online networks, so that mixing them up shows
        for p in [*m.actor_target.parameters(), *m.critic_target.parameters()]:
            p.add_(0.3 * torch.randn_like(p))
    return m


def test_config_is_ourddpgs():
    c = load_config("Hopper-v4", "ddpg")
    assert (c["networks"]["hidden_sizes"], c["actor"]["lr"], c["critic"]["lr"], c["data"]["batch_size"], c["critic"]["tau"],
            c["critic"]["gamma"], c["ddpg"]["exploration_noise"]) == ([256, 256], 3e-4, 3e-4, 256, 0.005, 0.99, 0.1)
    assert c["updates"]["critic_per_step"] == c["updates"]["actor_per_step"] == 1.0
    with pytest.raises(ConfigError, match="ddpg has no policy updates|ddpg has no model"):
        load_config("Hopper-v4", "ddpg", {"updates.warmup": 10})


def test_critic_loss_is_the_per_sample_td_error_of_the_targets(ddpg):
    n = 8
    batch = TensorDict({"observation": torch.randn(n, 3), "action": torch.rand(n, 2) * 2 - 1,
                        "next": {"observation": torch.randn(n, 3), "reward": torch.randn(n, 1),
                                 "terminated": torch.tensor([[i % 3 == 0] for i in range(n)])}}, [n])
    loss, q = ddpg.critic_loss(batch)
    errors = []
    for i in range(n):  # one sample at a time, through the plain networks
        s, a = batch["observation"][i:i + 1], batch["action"][i:i + 1]
        s2 = batch["next", "observation"][i:i + 1]
        with torch.no_grad():
            mu2 = torch.tanh(ddpg.actor_target.net.member(s2, 0))
            q2 = ddpg.critic_target.net(torch.cat([s2, mu2], -1))[0, 0, 0]
        done = bool(batch["next", "terminated"][i])
        y = batch["next", "reward"][i, 0] + (0.0 if done else 0.99 * q2)
        q_i = ddpg.critic.net(torch.cat([s, a], -1))[0, 0, 0]
        assert q[0, i].item() == pytest.approx(q_i.item(), abs=1e-6)
        errors.append((q_i - y) ** 2)
    assert loss.item() == pytest.approx(torch.stack(errors).mean().item(), rel=1e-5)


def test_actor_loss_is_minus_q_at_mu_and_leaves_the_critic_alone(ddpg):
    obs = torch.randn(16, 3)
    loss = ddpg.actor_loss(obs)
    mu = torch.tanh(ddpg.actor.net.member(obs, 0))
    assert loss.item() == pytest.approx(-ddpg.critic.net(torch.cat([obs, mu], -1))[0].mean().item(), rel=1e-6)
    loss.backward()
    assert all(p.grad is None for p in ddpg.critic.parameters())
    assert all(p.grad is not None for p in ddpg.actor.parameters())


def test_exploration_is_mu_plus_gaussian_noise_clipped_to_the_box(ddpg):
    obs = torch.zeros(20000, 3)
    mu = ddpg.actor.deterministic(obs)
    action, log_prob = ddpg.actor.sample(obs)
    assert log_prob is None and action.abs().max() <= 1.0
    inside = (mu.abs() < 0.6).all(-1)  # far from the clip: the noise is plain N(0, 0.1^2)
    noise = (action - mu)[inside]
    assert noise.mean().abs() < 0.005 and noise.std().item() == pytest.approx(0.1, rel=0.03)


def test_ddpg_trains_resumes_evaluates_and_exports_through_the_cli(tmp_path):
    out = tmp_path / "run"
    proc = run_train(["--env", "InvertedPendulum-v4", "--algo", "ddpg", "--out", str(out),
                      "--logger", "none", *TINY], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    proc = run_train(["--resume", str(out), "--steps", "800"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(out / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["env_steps"]) for r in rows] == [200, 400, 600, 800]
    assert float(rows[-1]["train/updates"]) == 800 - 200 + 1  # one per env step from 200 on
    assert all(r["train/actor_loss"] for r in rows[1:]) and rows[-1]["eval/q_bias"]
    proc = subprocess.run([sys.executable, "-m", "mpdp_pl.evaluate", str(out), "--episodes", "1",
                           "--export", str(tmp_path / "mu.pt")], capture_output=True, text=True,
                          timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    policy = torch.jit.load(str(tmp_path / "mu.pt"))
    assert policy(torch.zeros(4, 4)).shape == (4, 1)
