"""DHMBPO (mpdp_pl/algos/dhmbpo.py; 4kubo/erl_lib) against hand computations: the REDQ target,
the weighted NLL with given Exp(1) weights, the z-test stop on a synthetic score sequence, the
burst schedule's update counts, the first-row n-step target on a 2-step model; and its run
through the CLI: train, checkpoint, resume, evaluate."""

from __future__ import annotations

import csv
import math
import subprocess
import sys

import pytest
import torch

from conftest import run_train
from mpdp_pl.algos.base import UpdateSchedule, burst_due
from mpdp_pl.config import ConfigError, load_config
from mpdp_pl.lookahead.svg import soft_return, svg_rollout
from mpdp_pl.models.critic import redq_min
from mpdp_pl.models.dynamics import GaussianEnsemble, ModelStep, ensemble_nll, mixture_nll
from mpdp_pl.models.fitting import ZTestRule
from mpdp_pl.runtime import checkpoint


def test_config_is_erl_libs():
    c = load_config("Hopper-v4", "dhmbpo")
    assert (c["critic"]["gamma"], c["temperature"]["init"], c["temperature"]["target_entropy"], c["critic"]["count"], c["improvement"]["horizon"]) == (
        0.995, 0.1, "auto", 5, 5)
    assert (c["model"]["ensemble_size"], c["model"]["elites"], c["model"]["hidden"], c["model"]["layers"]) == (8, 8, 256, 3)
    assert (c["updates"]["every"], c["updates"]["critic_per_step"], c["updates"]["warmup"]) == (1000, 1.25, 4000)
    with pytest.raises(ConfigError, match="model.weights=exp"):
        load_config("Hopper-v4", "dhmbpo", {"model.epoch_batches": None})
    with pytest.raises(ConfigError, match="model.noise"):
        load_config("Hopper-v4", "dhmbpo", {"model.noise": "both"})


def test_redq_target_is_the_min_of_the_chosen_pair_and_two_critics_draw_nothing():
    q = torch.tensor([[5.0, 1.0, 3.0], [2.0, 7.0, 0.5], [9.0, 9.0, 9.0], [4.0, 0.0, 8.0],
                      [1.0, 1.0, 1.0]])
    # pair (0, 3) by hand: min(5, 4), min(1, 0), min(3, 8)
    assert redq_min(q, torch.tensor([0, 3])).tolist() == [4.0, 0.0, 3.0]
    assert redq_min(q, torch.tensor([2, 1])).tolist() == [2.0, 7.0, 0.5]
    torch.manual_seed(0)
    drawn = redq_min(q)  # a random pair: one of the 10 pairs' minima
    pairs = [[min(q[i, j], q[k, j]).item() for j in range(3)] for i in range(5) for k in range(i + 1, 5)]
    assert drawn.tolist() in pairs
    state = torch.get_rng_state()
    assert redq_min(q[:2]).tolist() == [2.0, 1.0, 0.5]  # SAC's clipped double-Q
    assert torch.equal(state, torch.get_rng_state())


def test_weighted_nll_is_the_per_sample_per_member_sum_by_hand():
    torch.manual_seed(1)
    k, b, d = 3, 4, 2
    ens = GaussianEnsemble(k, 5, d, 8, 2, noise="member")
    mean, target = torch.randn(k, b, d), torch.randn(b, d)
    log_noise = torch.randn(k, 1, d) * 0.3
    log_var = (2 * log_noise).expand(k, b, d)
    w = torch.distributions.Exponential(1.0).sample((k, b))
    total = 0.0
    for i in range(b):
        for m in range(k):
            per_dim = 0.0
            for j in range(d):
                s = log_noise[m, 0, j].item()
                err = (mean[m, i, j] - target[i, j]).item()
                per_dim += 0.5 * err ** 2 / math.exp(2 * s) + s
            total += w[m, i].item() * per_dim
    expected = total / b
    assert ensemble_nll(mean, log_var, target, ens, w).item() == pytest.approx(expected, rel=1e-5)


def test_mixture_nll_is_the_moment_matched_gaussian_per_row():
    mean = torch.tensor([[[1.0]], [[3.0]]])          # two members, one row, one dim
    log_var = torch.log(torch.tensor([[[0.5]], [[2.0]]]))
    var = 2.0 + math.exp(0.5 * (math.log(0.5) + math.log(2.0)))  # var of (1, 3) unbiased + geo mean
    expected = 0.5 * (4.0 - 2.0) ** 2 / var + 0.5 * math.log(var)
    assert mixture_nll(mean, log_var, torch.tensor([[4.0]])).item() == pytest.approx(expected, rel=1e-6)


def _shifted(base: torch.Tensor, c: float) -> torch.Tensor:
    """base + d where d has mean exactly c and standard deviation exactly 1 (so z = c sqrt(n))."""
    e = torch.linspace(-1.0, 1.0, base.numel(), dtype=torch.float64)
    e = (e - e.mean()) / e.std()
    return base + c + e


def test_z_test_stops_after_patience_rounds_without_evidence():
    n = 1000
    best = torch.zeros(n, dtype=torch.float64)
    rule = ZTestRule(best, patience=2)
    first = _shifted(best, -0.2)       # z = -6.3: p ~ 1e-10, a new best
    assert rule.step(first) == (True, False)
    # z = -0.03 sqrt(1000) = -0.949: p = Phi(-0.949) = 0.171, may continue, no new best
    p = 0.5 * (1 + math.erf(-0.03 * math.sqrt(n) / math.sqrt(2)))
    assert 0.1 < p < 0.5
    assert rule.step(_shifted(first, -0.03)) == (False, False)
    assert torch.equal(rule.best_scores, first)
    worse = _shifted(first, 0.1)       # p ~ 1: no evidence of improvement
    assert rule.step(worse) == (False, False)   # 1 round without
    assert rule.step(worse) == (False, False)   # 2
    assert rule.step(_shifted(first, -0.03)) == (False, False)  # p < 0.5 resets the count
    assert [rule.step(worse)[1] for _ in range(3)] == [False, False, True]  # stop after more than 2


def test_burst_schedule_pays_the_updates_of_every_1000_env_steps_at_once():
    critic, actor = UpdateSchedule(1.25), UpdateSchedule(1.0)
    paid = {t: (critic.due(1, burst_due(t - 1, t, 1000)), actor.due(1, burst_due(t - 1, t, 1000)))
            for t in range(1, 7001)}
    assert {t: v for t, v in paid.items() if v != (0, 0)} == {
        t: (1250, 1000) for t in range(1000, 7001, 1000)}
    # rounds of 3 env steps never land on 1000: the burst comes in the round that crosses it
    rounds = [(t - 3, t) for t in range(3, 3001, 3)]
    assert [t for b, t in rounds if burst_due(b, t, 1000)] == [1002, 2001, 3000]
    per_step = UpdateSchedule(0.25)  # update_every 1: every round is paid, one update in 4 steps
    assert [per_step.due(1, burst_due(t - 1, t, 1)) for t in range(1, 9)] == [0, 0, 0, 1, 0, 0, 0, 1]


class _LineModel:
    """A model with known steps: s' = s + (1, 0), reward r = s[0], terminal where s'[0] > 2."""

    def sample_step(self, obs, action, detach_params=False):
        nxt = obs + torch.tensor([1.0, 0.0])
        return ModelStep(nxt, obs[:, 0], nxt[:, 0] > 2.0, None, None)


def test_first_row_target_is_the_n_step_soft_return_by_hand():
    model = _LineModel()
    s0 = torch.tensor([[0.0, 1.0], [1.5, -1.0], [2.5, 0.0]])
    log_pi = lambda s: -0.1 * s[:, 1] - 0.5 * s[:, 0]  # noqa: E731
    policy = lambda t, s: (torch.tanh(s[:, :1]), log_pi(s))  # noqa: E731
    gamma, alpha = 0.9, torch.tensor(0.2)
    q_tail = lambda s, a: 10.0 + s[:, 0] + a[:, 0]  # noqa: E731

    roll = svg_rollout(model, policy, s0, 2)
    tail = q_tail(roll.last_obs, roll.last_action)
    got = soft_return(roll, tail, alpha, gamma, first_entropy=False)
    expected = []
    for s in s0.tolist():  # by hand: r_t = s_t[0], s_{t+1} = s_t + (1, 0), terminal at s[0] > 2
        st, g, alive = list(s), 0.0, True
        for t in range(2):
            if not alive:
                break
            ent = 0.0 if t == 0 else -0.2 * (-0.1 * st[1] - 0.5 * st[0])
            g += gamma ** t * (st[0] + ent)
            st = [st[0] + 1.0, st[1]]
            alive = st[0] <= 2.0
        if alive:
            a = math.tanh(st[0])
            g += gamma ** 2 * (10.0 + st[0] + a - 0.2 * (-0.1 * st[1] - 0.5 * st[0]))
        expected.append(g)
    assert got.tolist() == pytest.approx(expected, rel=1e-5)
    with_entropy = soft_return(roll, tail, alpha, gamma, first_entropy=True)
    assert (with_entropy - got).tolist() == pytest.approx((-0.2 * log_pi(s0)).tolist(), abs=1e-5)


def test_dhmbpo_trains_resumes_and_evaluates_through_the_cli(tmp_path):
    out = tmp_path / "run"
    tiny = ["steps=500", "data.init_random_steps=200", "eval.every=100", "eval.episodes=1",
            "data.batch_size=64", "networks.hidden_sizes=[32,32]", "model.hidden=32", "logging.every=100",
            "trainer.num_threads=1", "updates.every=100", "model.train_freq=100",
            "updates.critic_per_step=1.5", "updates.warmup=10", "model.batch_size=64",
            "model.max_epochs=4", "model.patience=2", "dhmbpo.rollout_every=10",
            "dhmbpo.rollout_length=5", "dhmbpo.buffer_size=2000"]
    proc = run_train(["--env", "Hopper-v4", "--algo", "dhmbpo", "--out", str(out),
                      "--logger", "none", *tiny, "steps=300"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # the start-state FIFO in the checkpoint: a refill before each burst's updates and one every
    # 10 pairs, each (5 + 1) x 64 states: 12 refills at 200 (110 pairs), 11 at 300 (100 pairs)
    fifo = checkpoint.read(checkpoint.latest(out))["counters"]["start_fifo"]
    assert tuple(fifo["states"].shape) == (2000, 11) and fifo["pos"] == 23 * 384 % 2000
    proc = run_train(["--resume", str(out), "--steps", "500"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # the resumed run went on from the saved FIFO (from an empty one its position would be 22 * 384 % 2000)
    fifo_end = checkpoint.read(checkpoint.latest(out))["counters"]["start_fifo"]
    assert fifo_end["pos"] == 45 * 384 % 2000
    with open(out / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    # bursts at 200 (150 critic, 100 actor: 50 critic-only and 100 + 10 warm pairs), 300, 400, 500
    assert [(int(r["env_steps"]), float(r["train/updates"])) for r in rows] == [
        (100, 0.0), (200, 160.0), (300, 310.0), (400, 460.0), (500, 610.0)]
    assert all(r["train/actor_loss"] and r["train/q_lb"] for r in rows[1:])
    proc = subprocess.run([sys.executable, "-m", "mpdp_pl.evaluate", str(out), "--episodes", "1"],
                          capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_the_actors_return_reaches_the_actor_only_and_the_critic_target_nothing():
    from mpdp_pl.models.actor import MultiHeadActor
    from mpdp_pl.models.critic import TwinQ, make_target
    from mpdp_pl.models.dynamics import DynamicsModel

    torch.manual_seed(0)
    dyn = DynamicsModel(3, 2, 4, 4, 16, 2, termination_fn=lambda s: s[:, 0] > 5.0, noise="member",
                        layer_norm=[1.0, 0.1], dropout=[0.01, 0.0, 0.0])
    actor = MultiHeadActor(3, 2, [16, 16], activation=torch.nn.SiLU, std="softplus")
    critic = TwinQ(3, 2, [16, 16], 5, layer_norm=True, scaled=True, activation=torch.nn.SiLU)
    critic.update_bounds(torch.randn(100), 0.99, 1.0)  # a nonzero width: Q depends on the weights
    with torch.no_grad():
        critic.net.layers[-1].weight.normal_()
    target = make_target(critic)
    roll = svg_rollout(dyn, lambda t, s: actor.sample(s), torch.randn(32, 3), 5)
    tail = critic(roll.last_obs, roll.last_action, detach_params=True).mean(0)
    (-soft_return(roll, tail, 0.1, 0.99, first_entropy=True).mean()).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in actor.parameters())
    assert all(p.grad is None for p in [*dyn.parameters(), *critic.parameters()])
    actor.zero_grad()
    with torch.no_grad():
        y = soft_return(roll, redq_min(target(roll.last_obs, roll.last_action)), 0.1, 0.99, False)
    q = critic(roll.obs[0].detach(), roll.action[0].detach())
    ((q - y).pow(2).mean(-1).sum()).backward()
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in actor.parameters())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in critic.net.parameters())
