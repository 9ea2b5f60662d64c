"""critic_scale (DHMBPO's scaled and bounded critic, mpdp_pl/models/critic.py) against hand
computations: the output map, the zero start, the target's clip, the bounds' running update, and
what it is for: a LayerNorm critic reaches targets of a few hundred in tens of Adam steps."""

from __future__ import annotations

import torch

from mpdp_pl.models.critic import TwinQ, make_target, polyak_update


def test_output_is_raw_times_width_plus_center_and_the_target_clips():
    torch.manual_seed(0)
    q = TwinQ(3, 2, [16, 16], scaled=True)
    plain = TwinQ(3, 2, [16, 16])
    plain.load_state_dict({k: v for k, v in q.state_dict().items() if k.startswith("net.")})
    obs, act = torch.randn(50, 3), torch.rand(50, 2)
    assert q(obs, act).eq(0.0).all()  # zero last layer and unset bounds: Q = q_center = 0
    q.q_bounds.copy_(torch.tensor([-20.0, 100.0]))
    with torch.no_grad():
        for p in q.net.layers[-1].parameters():
            p.normal_()
        plain.net.layers[-1].load_state_dict(q.net.layers[-1].state_dict())
    raw = plain(obs, act)
    assert torch.allclose(q(obs, act), raw * 60.0 + 40.0, atol=1e-5)
    target = make_target(q)
    assert target.clip_output and not q.clip_output
    assert torch.allclose(target(obs, act), (raw * 60.0 + 40.0).clamp(-20.0, 100.0), atol=1e-5)
    assert (raw.abs() > 1).any()  # the clip was exercised


def test_bounds_are_set_then_follow_the_quantiles_of_the_soft_reward():
    q = TwinQ(3, 2, [8], scaled=True)
    r1 = torch.linspace(-1.0, 3.0, 101)  # quantiles 0.01 and 0.99: -0.96 and 2.96
    q.update_bounds(r1, gamma=0.99, rate=0.1)
    assert torch.allclose(q.q_bounds, torch.tensor([-0.96, 2.96]) / 0.01, atol=1e-3)
    r2 = torch.linspace(0.0, 1.0, 101)  # 0.01 and 0.99
    q.update_bounds(r2, gamma=0.99, rate=0.1)
    expected = torch.tensor([-96.0, 296.0]) * 0.9 + torch.tensor([1.0, 99.0]) * 0.1
    assert torch.allclose(q.q_bounds, expected, atol=1e-2)
    target = make_target(TwinQ(3, 2, [8], scaled=True))
    polyak_update(target, q, 0.005)  # the targets take the online bounds, not an average
    assert torch.equal(target.q_bounds, q.q_bounds) and bool(target.bounds_set)


def adam_steps_to_fit(scaled: bool, limit: int = 3000) -> int:
    """Adam steps (lr 3e-4) until a LayerNorm critic's MSE on targets 300 +- 50 is below 10% of
    their variance."""
    torch.manual_seed(0)
    q = TwinQ(11, 3, [256, 256], layer_norm=True, scaled=scaled)
    if scaled:  # rewards of 0..5 per step at gamma 0.99: bounds about [0, 500]
        q.update_bounds(torch.linspace(0.0, 5.0, 256), gamma=0.99, rate=3e-4)
    obs, act = torch.randn(256, 11), torch.rand(256, 3) * 2 - 1
    y = 300.0 + 50.0 * torch.tanh(obs[:, :1].sum(-1))
    opt = torch.optim.Adam(q.parameters(), lr=3e-4)
    for step in range(1, limit + 1):
        loss = (q(obs, act) - y).pow(2).mean()
        if loss.item() < 0.1 * y.var().item():
            return step
        opt.zero_grad()
        loss.backward()
        opt.step()
    return limit + 1


def test_a_scaled_critic_reaches_returns_of_hundreds_in_tens_of_steps():
    scaled, plain = adam_steps_to_fit(True), adam_steps_to_fit(False)
    assert scaled <= 100 and plain > 10 * scaled, (scaled, plain)
