"""SAC's loss terms against hand computations, gradient isolation and target arithmetic."""

from __future__ import annotations

import math

import pytest
import torch
from tensordict import TensorDict
from torch.distributions import Normal, TanhTransform, TransformedDistribution

from mpdp_pl.algos.base import UpdateSchedule
from mpdp_pl.algos.sac import SAC
from mpdp_pl.config import load_config
from mpdp_pl.environment.envs import EnvSpec
from mpdp_pl.models.actor import tanh_gaussian_sample
from mpdp_pl.models.critic import polyak_update

OBS, ACT, B = 5, 3, 16


def plain_mlp(layers, x, e):
    """Member ``e`` of a BatchedMLP by explicit matmuls (independent of baddbmm/addmm paths)."""
    for i, layer in enumerate(layers):
        x = x @ layer.weight[e] + layer.bias[e, 0]
        if i < len(layers) - 1:
            x = torch.relu(x)
    return x


def hand_log_prob(mean, log_std, action):
    dist = TransformedDistribution(Normal(mean, log_std.exp()), [TanhTransform()])
    return dist.log_prob(action).sum(-1)


@pytest.fixture
def sac():
    torch.manual_seed(0)
    cfg = load_config("Pendulum-v1", "sac", {"networks.hidden_sizes": [16, 16], "temperature.init": 0.3})
    spec = EnvSpec(OBS, ACT, (-1.0,) * ACT, (1.0,) * ACT, 100)
    return SAC(cfg, spec)


def make_batch():
    g = torch.Generator().manual_seed(1)
    terminated = torch.zeros(B, 1, dtype=torch.bool)
    terminated[:4] = True
    truncated = torch.zeros(B, 1, dtype=torch.bool)
    truncated[4:8] = True
    return TensorDict({
        "observation": torch.randn(B, OBS, generator=g),
        "action": torch.rand(B, ACT, generator=g) * 2 - 1,
        "next": {"observation": torch.randn(B, OBS, generator=g),
                 "reward": torch.randn(B, 1, generator=g),
                 "terminated": terminated, "truncated": truncated,
                 "done": terminated | truncated},
    }, batch_size=[B])


def hand_pi(sac, obs, eps):
    """pi_0's action and log-prob by hand: mean/log_std from explicit matmuls, torch's own
    Tanh-transformed Normal for the density."""
    out = plain_mlp(sac.actor.net.layers, obs, 0)
    mean, raw = out.chunk(2, -1)
    lo, hi = sac.cfg["actor"]["log_std_min"], sac.cfg["actor"]["log_std_max"]
    log_std = lo + 0.5 * (hi - lo) * (torch.tanh(raw) + 1)
    action = torch.tanh(mean + log_std.exp() * eps)
    return action, hand_log_prob(mean, log_std, action)


def hand_q(critic, obs, action, e):
    return plain_mlp(critic.net.layers, torch.cat([obs, action], -1), e).squeeze(-1)


def test_tanh_gaussian_log_prob_matches_torch_distributions():
    g = torch.Generator().manual_seed(0)
    mean, log_std = torch.randn(64, ACT, generator=g), torch.randn(64, ACT, generator=g) * 0.5
    eps = torch.randn(64, ACT, generator=g)
    action, log_prob = tanh_gaussian_sample(mean, log_std, eps)
    torch.testing.assert_close(log_prob, hand_log_prob(mean, log_std, action), atol=1e-4, rtol=1e-4)
    # where tanh saturates, torch's formula gives inf; ours stays finite
    _, lp = tanh_gaussian_sample(torch.full((1, 1), 30.0), torch.zeros(1, 1), torch.zeros(1, 1))
    assert torch.isfinite(lp).all()


def test_critic_loss_equals_hand_computation(sac):
    batch = make_batch()
    torch.manual_seed(7)
    loss, q = sac.critic_loss(batch)
    torch.manual_seed(7)
    eps = torch.randn(B, ACT)  # the same draw the module made for a' ~ pi(s')
    nxt = batch["next"]
    a_next, logp_next = hand_pi(sac, nxt["observation"], eps)
    q_next = torch.minimum(hand_q(sac.critic_target, nxt["observation"], a_next, 0),
                           hand_q(sac.critic_target, nxt["observation"], a_next, 1))
    alpha = 0.3
    not_term = 1.0 - nxt["terminated"].float().squeeze(-1)
    y = nxt["reward"].squeeze(-1) + 0.99 * not_term * (q_next - alpha * logp_next)
    q1 = hand_q(sac.critic, batch["observation"], batch["action"], 0)
    q2 = hand_q(sac.critic, batch["observation"], batch["action"], 1)
    expected = ((q1 - y) ** 2).mean() + ((q2 - y) ** 2).mean()
    torch.testing.assert_close(loss, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(q, torch.stack([q1, q2]))


def test_target_bootstraps_through_truncation_not_termination(sac):
    from mpdp_pl.algos import losses
    batch = make_batch()
    r = batch["next", "reward"].squeeze(-1)
    nq = torch.randn(2, B)
    nlp = torch.randn(B)
    y = losses.soft_td_target(r, batch["next", "terminated"].squeeze(-1), nq, nlp,
                              torch.tensor(0.3), 0.99)
    v = nq.min(0).values - 0.3 * nlp
    torch.testing.assert_close(y[:4], r[:4])                    # terminated: no bootstrap
    torch.testing.assert_close(y[4:8], r[4:8] + 0.99 * v[4:8])  # truncated: bootstrap
    torch.testing.assert_close(y[8:], r[8:] + 0.99 * v[8:])


def test_actor_loss_equals_hand_computation(sac):
    obs = make_batch()["observation"]
    torch.manual_seed(11)
    loss, log_prob = sac.actor_loss(obs)
    torch.manual_seed(11)
    eps = torch.randn(B, ACT)
    action, logp = hand_pi(sac, obs, eps)
    q = torch.minimum(hand_q(sac.critic, obs, action, 0), hand_q(sac.critic, obs, action, 1))
    torch.testing.assert_close(loss, (0.3 * logp - q).mean(), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(log_prob, logp, atol=1e-4, rtol=1e-4)


def test_alpha_loss_equals_hand_computation(sac):
    from mpdp_pl.algos import losses
    logp = torch.tensor([-1.0, 0.5, 2.0])
    loss = losses.alpha_loss(sac.log_alpha, logp, target_entropy=-3.0)
    expected = -math.log(0.3) * ((-1.0 - 3.0) + (0.5 - 3.0) + (2.0 - 3.0)) / 3
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    loss.backward()
    # d/dlog_alpha = -mean(logp + target) = +2.5 > 0: the policy's entropy (-mean logp = -0.5)
    # is above the target (-3), so gradient descent lowers alpha
    assert sac.log_alpha.grad.item() == pytest.approx(-((-4.0 - 2.5 - 1.0) / 3), rel=1e-6)


def _grads(module):
    return [p.grad for p in module.parameters()]


def _all_zero(grads):
    return all(g is None or torch.count_nonzero(g) == 0 for g in grads)


def test_actor_loss_leaves_critic_and_alpha_gradients_zero(sac):
    loss, _ = sac.actor_loss(make_batch()["observation"])
    loss.backward()
    assert _all_zero(_grads(sac.critic)) and _all_zero(_grads(sac.critic_target))
    assert sac.log_alpha.grad is None
    assert not _all_zero(_grads(sac.actor))


def test_critic_loss_leaves_actor_and_alpha_gradients_zero(sac):
    loss, _ = sac.critic_loss(make_batch())
    loss.backward()
    assert _all_zero(_grads(sac.actor)) and sac.log_alpha.grad is None
    assert not _all_zero(_grads(sac.critic))
    assert _all_zero(_grads(sac.critic_target))


def test_targets_are_not_optimized(sac):
    optimized = {id(p) for opt in sac.configure_optimizers() for g in opt.param_groups
                 for p in g["params"]}
    assert not any(id(p) in optimized for p in sac.critic_target.parameters())
    assert all(not p.requires_grad for p in sac.critic_target.parameters())
    # every trainable parameter belongs to exactly one optimizer
    trainable = [p for p in sac.parameters() if p.requires_grad]
    assert len(trainable) == len(optimized)


@pytest.mark.parametrize("tau", [0.0, 0.005, 0.5, 1.0])
def test_polyak_update_arithmetic(sac, tau):
    with torch.no_grad():
        for p in sac.critic.parameters():
            p.add_(torch.randn_like(p))
    old = [p.clone() for p in sac.critic_target.parameters()]
    polyak_update(sac.critic_target, sac.critic, tau)
    for new, o, online in zip(sac.critic_target.parameters(), old, sac.critic.parameters()):
        torch.testing.assert_close(new, tau * online + (1 - tau) * o, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("ratio,rounds,expected", [
    (0.25, [1] * 8, [0, 0, 0, 1, 0, 0, 0, 1]),
    (1, [1, 1, 1], [1, 1, 1]),
    (20, [1, 2], [20, 40]),
    (0.5, [3, 1], [1, 1]),
])
def test_update_schedule(ratio, rounds, expected):
    s = UpdateSchedule(ratio)
    assert [s.due(n) for n in rounds] == expected
