"""MVE critic targets (mpdp_pl/lookahead/value_expansion.py) against independent computations: SAC's own
TD target at K = 0, a per-sample loop with Python control flow for K >= 1 (cuts, predicted
terminals, real terminals), and gradient isolation of the critic loss."""

from __future__ import annotations

import math

import pytest
import torch
from tensordict import TensorDict

from mpdp_pl.algos import losses
from mpdp_pl.lookahead.improvement import sample_noise
from mpdp_pl.models.actor import MultiHeadActor
from mpdp_pl.models.critic import TwinQ, make_target
from mpdp_pl.models.dynamics import DynamicsModel
from mpdp_pl.lookahead.value_expansion import expansion_loss, expansion_targets, state_expansion_targets

OBS, ACT, N = 4, 2, 16
GAMMA, ALPHA = 0.9, torch.tensor(0.3)


def terminal_rule(s):
    return s[..., 0] > 0.8


def parts(seed=0, hidden=16):
    torch.manual_seed(seed)
    actor = MultiHeadActor(OBS, ACT, [hidden, hidden], 3)
    critic = TwinQ(OBS, ACT, [hidden, hidden])
    target = make_target(critic)
    with torch.no_grad():  # a target that differs from the online critic
        for p in target.parameters():
            p.add_(0.2 * torch.randn_like(p))
    model = DynamicsModel(OBS, ACT, members=5, num_elites=3, hidden=hidden, layers=2,
                          termination_fn=terminal_rule)
    with torch.no_grad():
        for p in model.ensemble.parameters():
            p.add_(0.3 * torch.randn_like(p))
        model.target_norm.std.fill_(0.3)
    model.elites.copy_(torch.tensor([0, 2, 4]))
    obs = 1.5 * torch.randn(N, OBS)
    nxt = 1.5 * torch.randn(N, OBS)
    done = torch.zeros(N, 1, dtype=torch.bool)
    done[::5] = True  # some real terminals: no expansion behind them
    batch = TensorDict({"observation": obs, "action": torch.rand(N, ACT) * 2 - 1,
                        "next": {"observation": nxt, "reward": torch.randn(N, 1),
                                 "terminated": done}}, batch_size=[N])
    return actor, critic, target, model, batch


def test_k0_is_sacs_td_target():
    actor, critic, target, model, batch = parts()
    torch.manual_seed(3)
    noise = sample_noise(model, 0, N, ACT, "cpu")
    out = expansion_targets(batch, actor, target, model, ALPHA, GAMMA, 0, noise=noise)
    nxt = batch["next"]
    a, lp = actor.sample(nxt["observation"], 0, noise.actor[0])
    sac = losses.soft_td_target(nxt["reward"].squeeze(-1), nxt["terminated"].squeeze(-1),
                                target(nxt["observation"], a), lp, ALPHA, GAMMA)
    torch.testing.assert_close(out.target, sac)
    loss, _ = expansion_loss(critic, out)
    q = critic(batch["observation"], batch["action"])
    torch.testing.assert_close(loss, losses.critic_loss(q, sac))


def per_sample_targets(batch, actor, target, model, noise, horizon, u_T):
    """The same targets, one sample at a time, with Python control flow: returns
    {(row, k): y} where k = -1 is the real transition and k >= 0 the imagined ones."""
    def v(x, eps):
        b, lp = actor.sample(x, 0, eps)
        return (target(x, b).min(0).values - ALPHA * lp).item(), b, lp.item()

    out = {}
    for i in range(N):
        r = batch["next", "reward"][i].item()
        if batch["next", "terminated"][i].item():
            out[(i, -1)] = r
            continue
        x = batch["next", "observation"][i: i + 1]
        path = []  # (rho_k, -alpha log pi_k, terminal_k) of the valid steps
        end_value = None
        for k in range(horizon):
            value, b, lp = v(x, noise.actor[k, i: i + 1])
            step = model.step(x, b, member=noise.member[k, i: i + 1],
                              noise=noise.model[k, i: i + 1])
            if step.u.item() >= u_T:  # cut: the expansion ends with V'(x_k)
                end_value = value
                break
            path.append((step.reward.item(), -ALPHA.item() * lp, step.terminated.item()))
            if step.terminated.item():
                end_value = 0.0
                break
            x = step.next_obs
        if end_value is None:
            end_value = v(x, noise.actor[horizon, i: i + 1])[0]
        # G after the last valid step, then backwards
        g = end_value
        for k in reversed(range(len(path))):
            rho, ent, term = path[k]
            y = rho + (0.0 if term else GAMMA * g)
            out[(i, k)] = y
            g = ent + y
        out[(i, -1)] = r + GAMMA * g
    return out


@pytest.mark.parametrize("u_quantile", [0.4, 0.8, None])
@pytest.mark.parametrize("horizon", [1, 3])
def test_batched_targets_equal_per_sample_loop(horizon, u_quantile):
    actor, critic, target, model, batch = parts(seed=2)
    with torch.no_grad():
        u = model.ovr_error(batch["next", "observation"], torch.zeros(N, ACT))
    u_T = math.inf if u_quantile is None else torch.quantile(u, u_quantile).item()
    torch.manual_seed(5)
    noise = sample_noise(model, horizon, N, ACT, "cpu")
    out = expansion_targets(batch, actor, target, model, ALPHA, GAMMA, horizon, u_T, noise=noise)
    ref = per_sample_targets(batch, actor, target, model, noise, horizon, u_T)
    weight = out.weight.view(horizon + 1, N)
    y = out.target.view(horizon + 1, N)
    expected_weight = torch.zeros(horizon + 1, N)
    for (i, k), value in ref.items():
        expected_weight[k + 1, i] = 1.0
        assert y[k + 1, i].item() == pytest.approx(value, rel=1e-5, abs=1e-5), (i, k)
    torch.testing.assert_close(weight, expected_weight)
    # the case mix this test relies on: cuts (or not), terminals and full expansions
    imagined = expected_weight[1:].sum().item()
    assert 0 < imagined < horizon * N or (horizon == 1 and u_quantile is None)
    assert out.imagined_frac.item() == pytest.approx(imagined / (horizon * N))
    assert torch.equal(out.obs[:N], batch["observation"])


@pytest.mark.parametrize("u_quantile", [0.5, None])
def test_model_state_targets_equal_per_sample_loop(u_quantile):
    """critic_states=model: from states x with no real transition behind them, the rows are
    y(x_k, b_k) of the per-sample loop started at x_0 = x, and no real row."""
    actor, critic, target, model, batch = parts(seed=6)
    states = batch["next", "observation"]
    batch["next", "terminated"] = torch.zeros(N, 1, dtype=torch.bool)  # every x is expanded
    horizon = 3
    with torch.no_grad():
        u = model.ovr_error(states, torch.zeros(N, ACT))
    u_T = math.inf if u_quantile is None else torch.quantile(u, u_quantile).item()
    torch.manual_seed(8)
    noise = sample_noise(model, horizon, N, ACT, "cpu")
    out = state_expansion_targets(states, actor, target, model, ALPHA, GAMMA, horizon, u_T,
                                  noise=noise)
    ref = per_sample_targets(batch, actor, target, model, noise, horizon, u_T)
    assert out.target.shape == (horizon * N,) and torch.equal(out.obs[:N], states)
    y, weight = out.target.view(horizon, N), out.weight.view(horizon, N)
    expected_weight = torch.zeros(horizon, N)
    for (i, k), value in ref.items():
        if k >= 0:
            expected_weight[k, i] = 1.0
            assert y[k, i].item() == pytest.approx(value, rel=1e-5, abs=1e-5), (i, k)
    torch.testing.assert_close(weight, expected_weight)
    assert expected_weight[0].sum() > 0 and out.imagined_frac.item() == pytest.approx(
        expected_weight.mean().item())
    with pytest.raises(ValueError, match="horizon >= 1"):
        state_expansion_targets(states, actor, target, model, ALPHA, GAMMA, 0)


def test_critic_loss_reaches_only_the_critic():
    actor, critic, target, model, batch = parts()
    log_alpha = torch.nn.Parameter(torch.tensor(-1.0))
    out = expansion_targets(batch, actor, target, model, log_alpha.exp(), GAMMA, 3)
    loss, _ = expansion_loss(critic, out)
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in critic.parameters())
    for module in (actor, target, model):
        assert all(p.grad is None for p in module.parameters())
    assert log_alpha.grad is None


def test_invalid_rows_do_not_count():
    actor, critic, target, model, batch = parts()
    out = expansion_targets(batch, actor, target, model, ALPHA, GAMMA, 3, -math.inf)
    # every imagined step is cut: only the real rows count, each with y = r + gamma V'(s')
    assert out.weight[N:].sum() == 0 and out.imagined_frac == 0
    poisoned = out._replace(target=torch.cat([out.target[:N], torch.full((3 * N,), 1e6)]))
    torch.testing.assert_close(expansion_loss(critic, poisoned)[0], expansion_loss(critic, out)[0])


def test_bounded_targets_clip_to_the_soft_reward_range():
    actor, critic, target, model, batch = parts(seed=4)
    with torch.no_grad():  # a target critic far out of range: the bound must bite
        target.net.layers[-1].bias.add_(500.0)
    torch.manual_seed(7)
    noise = sample_noise(model, 3, N, ACT, "cpu")
    free = expansion_targets(batch, actor, target, model, ALPHA, GAMMA, 3, noise=noise)
    clipped = expansion_targets(batch, actor, target, model, ALPHA, GAMMA, 3, noise=noise,
                                bounded=True)
    # the range by hand: the real rewards and rho_k - alpha log pi_0 of every counted step
    soft = [batch["next", "reward"].squeeze(-1)]
    x, alive = batch["next", "observation"], ~batch["next", "terminated"].squeeze(-1)
    for k in range(3):
        b, lp = actor.sample(x, 0, noise.actor[k])
        step = model.step(x, b, member=noise.member[k], noise=noise.model[k])
        soft.append(torch.where(alive, step.reward - ALPHA * lp, torch.nan))
        x, alive = step.next_obs, alive & ~step.terminated
    soft = torch.cat(soft)
    low = min(0.0, soft.nanquantile(0.0).item()) / (1 - GAMMA)
    high = max(0.0, soft.nanquantile(1.0).item()) / (1 - GAMMA)
    assert free.target.max().item() > high  # the test exercises the clip
    expected = free.target.clamp(low, high)
    torch.testing.assert_close(clipped.target, expected)
