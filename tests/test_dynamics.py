"""The dynamics ensemble: member routing, reparameterized gradients, training on real data."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from conftest import model_settings
from mpdp_pl.models.dynamics import DynamicsModel
from mpdp_pl.models.fitting import (holdout_scores, holdout_split,
                                     param_groups, train_dynamics)
from mpdp_pl.environment.termination import hopper

OBS, ACT, K = 3, 2, 7


class IdentifiableEnsemble(nn.Module):
    """Member i outputs mean = x[:, :OBS+1] + i with (almost) zero variance."""

    def __init__(self):
        super().__init__()
        self.members, self.out_dim, self.termination_head = K, OBS + 1, False

    def params(self, members=None, detach=False):  # what forward needs: the member indices
        return members

    def forward(self, x, detach_params=False, members=None, params=None):
        members = params if params is not None else members
        members = torch.arange(K) if members is None else members
        offsets = members.to(x.dtype).view(-1, 1, 1)
        mean = x[..., : OBS + 1].expand(len(members), *x.shape[-2:-1], OBS + 1) + offsets
        return mean, torch.full_like(mean, -30.0), None


def identifiable_model(elites):
    model = DynamicsModel(OBS, ACT, members=K, num_elites=len(elites),
                          termination_fn=lambda s: s[:, 0] > 1e9)
    model.ensemble = IdentifiableEnsemble()
    model.elites.copy_(torch.tensor(elites))
    return model


def test_each_sample_is_served_by_one_random_elite():
    model = identifiable_model([1, 4, 6])
    torch.manual_seed(0)
    obs, act = torch.randn(3000, OBS), torch.randn(3000, ACT)
    out = model.step(obs, act)
    # mean = cat(obs, act)[:OBS+1] + i, so s' = obs + obs + i and r = act[0] + i
    served = torch.round(out.reward - act[:, 0]).long()
    assert torch.equal(served, out.member)
    torch.testing.assert_close(out.next_obs, 2 * obs + served[:, None].float(), atol=1e-4, rtol=0)
    counts = torch.bincount(served, minlength=K)
    assert set(torch.nonzero(counts).squeeze(-1).tolist()) == {1, 4, 6}  # elites only
    assert counts[[1, 4, 6]].min() > 800  # each about a third


def test_explicit_member_indices_are_respected():
    model = identifiable_model([0, 3, 5])
    obs, act = torch.zeros(4, OBS), torch.zeros(4, ACT)
    out = model.step(obs, act, member=torch.tensor([5, 0, 3, 3]))
    assert out.reward.round().tolist() == [5.0, 0.0, 3.0, 3.0]


def test_sample_step_serves_each_sample_by_one_uniformly_random_elite():
    model = identifiable_model([1, 4, 6])
    torch.manual_seed(0)
    obs, act = torch.randn(1000, OBS), torch.randn(1000, ACT)  # 1000 = 3 groups of 334, padded
    out = model.sample_step(obs, act)
    served = torch.round(out.reward - act[:, 0]).long()
    assert torch.equal(served, out.member) and out.u is None
    # every sample gets its own input back (the permutation is undone) through one elite
    torch.testing.assert_close(out.next_obs, 2 * obs + served[:, None].float(), atol=1e-4, rtol=0)
    counts = torch.bincount(served, minlength=K)
    assert set(torch.nonzero(counts).squeeze(-1).tolist()) == {1, 4, 6}
    assert sorted(counts[[1, 4, 6]].tolist()) == [332, 334, 334]  # one group lost its padding
    for n in (0, 1, 2, 4):  # fewer samples than elites: groups padded by repetition
        small = model.sample_step(obs[:n], act[:n])
        assert small.next_obs.shape == (n, OBS)
        torch.testing.assert_close(small.next_obs, 2 * obs[:n] + small.member[:, None].float(),
                                   atol=1e-4, rtol=0)
    # over many calls each sample's elite is uniform (the group -> elite turn is random)
    first = torch.stack([model.sample_step(obs[:5], act[:5]).member for _ in range(600)])
    freq = torch.stack([(first == m).float().mean(0) for m in (1, 4, 6)])
    assert (freq - 1 / 3).abs().max() < 0.08, freq


def test_sample_step_equals_step_through_the_same_member():
    torch.manual_seed(0)
    for termination_fn in (lambda s: s[:, 0] > 0.5, None):  # the task's rule, the learned head
        model = DynamicsModel(OBS, ACT, members=K, num_elites=5, hidden=32, layers=2,
                              termination_fn=termination_fn)
        model.elites.copy_(torch.tensor([6, 0, 2, 5, 3]))
        obs = torch.randn(37, OBS, requires_grad=True)
        act = torch.randn(37, ACT, requires_grad=True)
        noise = torch.randn(37, OBS + 1)
        fast = model.sample_step(obs, act, noise=noise, detach_params=True)
        full = model.step(obs, act, member=fast.member, noise=noise)
        torch.testing.assert_close(fast.next_obs, full.next_obs)
        torch.testing.assert_close(fast.reward, full.reward)
        assert torch.equal(fast.terminated, full.terminated)
        (fast.next_obs.sum() + fast.reward.sum()).backward()  # reparameterized in (s, a) only
        assert obs.grad.abs().sum() > 0 and act.grad.abs().sum() > 0
        assert all(p.grad is None for p in model.parameters())


def test_step_is_reparameterized():
    torch.manual_seed(0)
    model = DynamicsModel(OBS, ACT, members=K, num_elites=5, hidden=32, layers=2,
                          termination_fn=lambda s: torch.zeros(s.shape[0], dtype=torch.bool))
    obs = torch.randn(16, OBS, requires_grad=True)
    act = torch.randn(16, ACT, requires_grad=True)
    member = torch.randint(5, (16,))
    out = model.step(obs, act, member=member, noise=torch.randn(16, OBS + 1))
    (out.next_obs.sum() + out.reward.sum() + out.u.sum()).backward()
    assert obs.grad.abs().sum() > 0 and act.grad.abs().sum() > 0
    # the noise enters: another draw gives another sample from the same member
    again = model.step(obs, act, member=member, noise=torch.randn(16, OBS + 1))
    assert not torch.allclose(again.next_obs, out.next_obs)
    assert out.u.shape == (16,) and (out.u >= 0).all()


def real_transitions(env_id: str, n: int, seed: int = 0):
    env = gym.make(env_id)
    rng = np.random.default_rng(seed)
    env.action_space.seed(seed)
    obs, _ = env.reset(seed=seed)
    rows = []
    for _ in range(n):
        a = env.action_space.sample()
        nxt, r, term, trunc, _ = env.step(a)
        rows.append((obs, a, nxt, r, term))
        obs = env.reset(seed=int(rng.integers(1 << 30)))[0] if term or trunc else nxt
    env.close()
    cols = list(zip(*rows))
    f = lambda x, dt=torch.float32: torch.as_tensor(np.array(x), dtype=dt)  # noqa: E731
    return f(cols[0]), f(cols[1]), f(cols[2]), f(cols[3]), f(cols[4], torch.bool)


def linear_baseline_mse(model, obs, act, nxt, rew, train, hold) -> float:
    """Least squares from normalized (s, a) to normalized (s' - s, r), fitted on the training
    split, scored on the holdout split."""
    x = model.input_norm(torch.cat([obs, act], -1))
    y = model.target_norm(DynamicsModel.targets(obs, nxt, rew))
    xb = torch.cat([x, torch.ones(len(x), 1)], -1).double()
    w = torch.linalg.lstsq(xb[train], y[train].double()).solution
    return ((xb[hold] @ w - y[hold].double()) ** 2).mean().item()


def test_learns_hopper_dynamics_better_than_linear(capsys):
    torch.manual_seed(0)
    obs, act, nxt, rew, term = real_transitions("Hopper-v4", 20_000)
    model = DynamicsModel(11, 3, members=7, num_elites=5, hidden=200, layers=4,
                          termination_fn=hopper)
    opt = torch.optim.Adam(param_groups(model, 1e-3, [2.5e-5, 5e-5, 7.5e-5, 7.5e-5, 1e-4]))
    settings = model_settings(max_epochs=25)
    split = holdout_split(len(obs), settings, "cpu")
    metrics = train_dynamics(model, obs, act, nxt, rew, term, opt, settings, split=split)
    linear = linear_baseline_mse(model, obs, act, nxt, rew, *split)
    with capsys.disabled():
        print(f"\nHopper-v4, 20k random-action transitions: ensemble holdout MSE "
              f"{metrics['model/holdout_mse']:.4f} (normalized units, elites' mean), linear "
              f"least squares {linear:.4f}; {metrics['model/epochs']:.0f} epochs, "
              f"{metrics['model/train_seconds']:.0f} s")
    assert metrics["model/holdout_mse"] <= 0.1
    assert metrics["model/holdout_mse"] < linear
    # the elites are the members with the lowest holdout MSE
    x = model.input_norm(torch.cat([obs, act], -1))[split[1]]
    y = model.target_norm(DynamicsModel.targets(obs, nxt, rew))[split[1]]
    mse, _ = holdout_scores(model, x, y, None)
    assert set(model.elites.tolist()) == set(torch.argsort(mse)[:5].tolist())
    assert 1 <= metrics["model/epochs"] <= 25


def test_learned_termination_head():
    torch.manual_seed(0)
    obs, act, nxt, rew, term = real_transitions("InvertedPendulum-v4", 6000)
    model = DynamicsModel(4, 1, members=3, num_elites=2, hidden=64, layers=2, termination_fn=None)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    settings = model_settings(max_epochs=40)
    train, hold = holdout_split(len(obs), settings, "cpu")
    train_dynamics(model, obs, act, nxt, rew, term, opt, settings, split=(train, hold))
    with torch.no_grad():
        pred = model.step(obs[hold], act[hold], noise=torch.zeros(len(hold), 5)).terminated
    truth = term[hold]
    assert truth.sum() > 50
    recall = (pred & truth).sum() / truth.sum()
    specificity = (~pred & ~truth).sum() / (~truth).sum()
    assert recall > 0.8 and specificity > 0.95, (recall, specificity)


def test_layer_norm_mlp_equals_torch_modules():
    """BatchedMLP(layer_norm=True), member by member, against nn.Linear / ReLU / nn.LayerNorm
    (no affine) with the same weights."""
    from mpdp_pl.models.layers import BatchedMLP

    torch.manual_seed(0)
    mlp = BatchedMLP(3, 5, 2, [8, 8], layer_norm=True)
    x = torch.randn(7, 5)
    out = mlp(x)
    for e in range(3):
        seq = []
        for i, layer in enumerate(mlp.layers):
            lin = nn.Linear(*layer.weight.shape[1:])
            with torch.no_grad():
                lin.weight.copy_(layer.weight[e].T)
                lin.bias.copy_(layer.bias[e, 0])
            seq.append(lin)
            if i < len(mlp.layers) - 1:
                seq += [nn.ReLU(), nn.LayerNorm(layer.weight.shape[2], elementwise_affine=False)]
        ref = nn.Sequential(*seq)(x)
        torch.testing.assert_close(out[e], ref)
        torch.testing.assert_close(mlp.member(x, e), ref)


def test_open_loop_error_equals_a_per_window_loop():
    """open_loop_error against a loop over windows, with an episode break and an interleaved
    row: only windows of k consecutive linked transitions count."""
    import math

    import pytest

    from mpdp_pl.models.dynamics import open_loop_error

    torch.manual_seed(0)
    model = DynamicsModel(3, 2, members=4, num_elites=2, hidden=8, layers=2)
    obs = torch.randn(12, 3)
    nxt = torch.randn(12, 3)
    for i in range(11):
        if i not in (4, 8):  # rows 5 and 9 start afresh (an episode end, another env's row)
            obs[i + 1] = nxt[i]
    action = torch.rand(12, 2)
    for k in (1, 2, 3):
        errors = []
        for i in range(12 - k + 1):
            if any(not torch.equal(obs[j + 1], nxt[j]) for j in range(i, i + k - 1)):
                continue
            s = obs[i: i + 1]
            for j in range(k):
                s, _ = model.mean_prediction(s, action[i + j: i + j + 1])
            errors.append((s - nxt[i + k - 1]).norm().item())
        got = open_loop_error(model, obs, action, nxt, k).item()
        assert got == pytest.approx(sum(errors) / len(errors), rel=1e-5)
        assert len(errors) == {1: 12, 2: 9, 3: 6}[k]
    assert math.isnan(open_loop_error(model, obs[:2], action[:2], nxt[:2], 3).item())
