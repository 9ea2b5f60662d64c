"""The farsighted improvement (Algorithm 1, Eq. 9-10) against independent computations:
SAC's actor loss and a hand-written Eq. (5) in the degenerate cases, a plain per-sample loop
for H >= 2, gradient routing between heads, isolation of every other part, and masking."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from mpdp_pl.lookahead.improvement import FORMS, farsighted_improvement, sample_noise
from mpdp_pl.models.actor import MultiHeadActor
from mpdp_pl.models.critic import TwinQ
from mpdp_pl.models.dynamics import DynamicsModel

OBS, ACT, B, K = 4, 2, 12, 5
GAMMA, ALPHA = 0.9, torch.tensor(0.2)


def terminal_rule(s):
    return s[..., 0] > 0.8


def parts(heads=4, seed=0, hidden=16):
    torch.manual_seed(seed)
    actor = MultiHeadActor(OBS, ACT, [hidden, hidden], heads)
    critic = TwinQ(OBS, ACT, [hidden, hidden])
    model = DynamicsModel(OBS, ACT, members=K, num_elites=3, hidden=hidden, layers=2,
                          termination_fn=terminal_rule)
    with torch.no_grad():  # members that disagree, so u > 0 and varies
        for p in model.ensemble.parameters():
            p.add_(0.3 * torch.randn_like(p))
        model.target_norm.std.fill_(0.3)
    model.elites.copy_(torch.tensor([0, 2, 4]))
    obs = torch.randn(B, OBS)
    return actor, critic, model, obs


def run(actor, critic, model, obs, heads, beta=0.5, u_T=float("inf"), literal=False, seed=1):
    torch.manual_seed(seed)
    noise = sample_noise(model, heads, obs.shape[0], ACT, "cpu")
    out = farsighted_improvement(obs, actor, critic, model, ALPHA, beta, GAMMA, u_T, heads,
                                 literal, noise)
    return out, noise


def v_old_ref(actor, critic, s, eps):
    """V^{pi_old}: the old policy's value, so pi_0's parameters are held fixed in it."""
    a, lp = actor.sample(s, 0, eps, detach_params=True)
    return critic(s, a).min(0).values - ALPHA * lp


# ------------------------------------------------------------------ degeneration
@pytest.mark.parametrize("heads,beta", [(1, 0.0), (3, 0.5), (6, 2.0)])
def test_all_cut_at_t0_is_sacs_actor_loss(heads, beta):
    actor, critic, model, obs = parts(heads)
    out, noise = run(actor, critic, model, obs, heads, beta, u_T=-math.inf)
    # SAC's actor loss with the same noise: mean(alpha log pi_0(a|s) - min_j Q_j(s, a))
    a, lp = actor.sample(obs, 0, noise.actor[0])
    sac = (ALPHA * lp - critic(obs, a).min(0).values).mean()
    torch.testing.assert_close(out.loss, sac)
    out.loss.backward()
    w = actor.net.layers[0].weight.grad
    assert w[0].abs().sum() > 0
    assert heads == 1 or torch.count_nonzero(w[1:]) == 0
    assert out.diagnostics["realized_horizon"] == 0


def test_h1_beta0_no_cut_is_eq5_through_the_model():
    actor, critic, model, obs = parts(1)
    out, noise = run(actor, critic, model, obs, 1, beta=0.0, u_T=math.inf)
    a, lp = actor.sample(obs, 0, noise.actor[0])
    # the serving member's reparameterized sample, written out from the model's Gaussians
    mean, log_var, _ = model.forward_normalized(obs, a)
    rows = torch.arange(B)
    m = noise.member[0]
    y = (mean[m, rows] + (0.5 * log_var[m, rows]).exp() * noise.model[0]) * model.target_norm.std \
        + model.target_norm.mean
    s1, r = obs + y[:, :-1], y[:, -1]
    d = terminal_rule(s1).float()
    eq5 = r - ALPHA * lp + GAMMA * (1 - d) * v_old_ref(actor, critic, s1, noise.actor[1])
    torch.testing.assert_close(out.loss, -eq5.mean())


# ------------------------------------------------------------------ reference loop
def loop_reference(actor, critic, model, obs, noise, heads, beta, u_T, literal,
                   terminal_critic=False):
    """Eq. (9)-(10) for one sample at a time, written with Python control flow."""
    total = 0.0
    for b in range(obs.shape[0]):
        s = obs[b: b + 1]
        j = 0.0
        alive = True
        for t in range(heads):
            a, lp = actor.sample(s, t, noise.actor[t, b: b + 1])
            step = model.step(s, a, member=noise.member[t, b: b + 1],
                              noise=noise.model[t, b: b + 1])
            cut = step.u.item() >= u_T
            if literal:
                if cut or step.terminated.item():
                    j = j + GAMMA ** (t + 1) * v_old_ref(actor, critic, step.next_obs,
                                                         noise.actor[heads, b: b + 1])
                    alive = False
                    break
                j = j + GAMMA ** t * (step.reward - ALPHA * lp - beta * step.u)
            else:
                if cut or (terminal_critic and step.terminated.item()):
                    j = j + GAMMA ** t * (critic(s, a).min(0).values - ALPHA * lp)
                    alive = False
                    break
                j = j + GAMMA ** t * (step.reward - ALPHA * lp - beta * step.u)
                if step.terminated.item():
                    alive = False
                    break
            s = step.next_obs
        if alive and not literal:
            j = j + GAMMA ** heads * v_old_ref(actor, critic, s, noise.actor[heads, b: b + 1])
        total = total + j
    return -(total / obs.shape[0]).squeeze()


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("literal,terminal_critic", [(False, False), (True, False), (False, True)])
@pytest.mark.parametrize("quantile", [0.3, 0.6, 0.9])
def test_batched_equals_per_sample_loop(literal, terminal_critic, quantile, form):
    heads, beta = 4, 0.5
    actor, critic, model, obs = parts(heads, seed=3)
    obs = obs * 1.5  # some samples reach the terminal rule s[0] > 0.8
    with torch.no_grad():
        u_T = torch.quantile(model.ovr_error(obs, torch.zeros(B, ACT)), quantile).item()
    torch.manual_seed(1)
    noise = sample_noise(model, heads, obs.shape[0], ACT, "cpu")
    out = farsighted_improvement(obs, actor, critic, model, ALPHA, beta, GAMMA, u_T, heads,
                                 literal, noise, terminal_critic, form=form)
    grads = torch.autograd.grad(out.loss, list(actor.parameters()))
    ref = loop_reference(actor, critic, model, obs, noise, heads, beta, u_T, literal,
                         terminal_critic)
    ref_grads = torch.autograd.grad(ref, list(actor.parameters()))
    torch.testing.assert_close(out.loss, ref, rtol=1e-5, atol=1e-5)
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g, r, rtol=1e-4, atol=1e-5)
    h = out.diagnostics["realized_horizon"].item()
    assert 0 < h < heads, "the test should exercise cuts and continuations"


# ------------------------------------------------------------------ routing and isolation
def _head_grads(actor):
    """Per-head gradient mass of the first layer's weights."""
    return actor.net.layers[0].weight.grad.abs().sum(dim=(1, 2))


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("t", [0, 1, 3])
def test_a_cut_at_step_t_reaches_heads_up_to_t_only(t, form):
    """Every sample cut at step t (the controlled ensemble: s_0 climbs by 1 a step and u grows
    with it): heads 0..t get gradient (head t through the tail at s_t), later heads none."""
    heads = 5
    actor, critic, model, _ = parts(heads)
    controlled(model)
    obs = torch.zeros(B, OBS)
    obs[:, 0] = 3.25 - t  # s_0 at step i is about 3.25 - t + i: first >= 3 at i = t
    with torch.no_grad():
        u_T = model.ovr_error(torch.tensor([[3.0, 0, 0, 0.]]), torch.zeros(1, ACT)).item()
    torch.manual_seed(0)
    noise = sample_noise(model, heads, B, ACT, "cpu")
    noise = noise._replace(member=torch.full_like(noise.member, 2))  # the member with no offset
    out = farsighted_improvement(obs, actor, critic, model, ALPHA, 0.5, GAMMA, u_T, heads,
                                 False, noise, form=form)
    assert out.diagnostics["realized_horizon"].item() == t
    out.loss.backward()
    g = _head_grads(actor)
    assert (g[: t + 1] > 0).all() and torch.count_nonzero(g[t + 1:]) == 0


def test_full_loss_routing_and_tail_through_s_h():
    heads = 4
    actor, critic, model, obs = parts(heads)
    out, _ = run(actor, critic, model, obs, heads, u_T=math.inf)
    out.loss.backward()
    assert (_head_grads(actor) > 0).all()


def test_only_the_actor_receives_gradients():
    heads = 3
    actor, critic, model, obs = parts(heads)
    log_alpha = nn.Parameter(torch.tensor(-1.6))
    torch.manual_seed(0)
    noise = sample_noise(model, heads, B, ACT, "cpu")
    out = farsighted_improvement(obs, actor, critic, model, log_alpha.exp(), 0.5, GAMMA,
                                 math.inf, heads, False, noise)
    out.loss.backward()
    assert all(p.grad is None for p in critic.parameters())
    assert all(p.grad is None for p in model.parameters())
    assert log_alpha.grad is None
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in actor.parameters())


# ------------------------------------------------------------------ masking
class ControlledEnsemble(nn.Module):
    """Members agree except by +-c * |x_0| on every output, with variance 1: u grows with |s_0|.
    The mean of the delta is +1 on dim 0, so s_0 climbs by ~1 per model step."""

    def __init__(self, c=0.1):
        super().__init__()
        self.members, self.out_dim, self.termination_head, self.c = K, OBS + 1, False, c

    def params(self, members=None, detach=False):  # what forward needs: the member indices
        return members

    def forward(self, x, detach_params=False, members=None, params=None):
        members = params if params is not None else members
        members = torch.arange(K) if members is None else members
        spread = torch.linspace(-1, 1, K)[members].view(-1, 1, 1) * self.c * x[..., :1].abs()
        base = torch.zeros(*x.shape[:-1], OBS + 1)
        base[..., 0] = 1.0
        mean = base + spread
        return mean, torch.full_like(mean, -12.0), None


def controlled(model):
    """``model`` served by :class:`ControlledEnsemble`, identity normalizers, no terminals."""
    model.ensemble = ControlledEnsemble()
    model.termination_fn = lambda s: s[..., 0] > 100  # never, here
    model.input_norm.std.fill_(1.0), model.input_norm.mean.zero_()
    model.target_norm.std.fill_(1.0), model.target_norm.mean.zero_()


def test_cut_samples_contribute_nothing_after_the_cut():
    heads = 6
    actor, critic, model, _ = parts(heads)
    controlled(model)
    obs = torch.zeros(B, OBS)
    obs[:, 0] = torch.arange(B, dtype=torch.float32) * 0.5 + 0.25  # u_t grows with s_0 ~ obs_0 + t
    with torch.no_grad():
        u_of = lambda x0: model.ovr_error(torch.tensor([[x0, 0, 0, 0.]]), torch.zeros(1, ACT)).item()  # noqa: E731
    u_T = u_of(3.0)
    torch.manual_seed(0)
    noise = sample_noise(model, heads, B, ACT, "cpu")
    noise = noise._replace(member=torch.full_like(noise.member, 2))  # the member with no offset
    out = farsighted_improvement(obs, actor, critic, model, ALPHA, 0.5, GAMMA, u_T, heads,
                                 False, noise)
    # s_0 at step t is about obs_0 + t; cut at the first t with s_0 >= 3 (u increases in |s_0|)
    first_cut = [next((t for t in range(heads) if x + t >= 3.0), heads)
                 for x in obs[:, 0].tolist()]
    expected = sum(first_cut) / B
    assert out.diagnostics["realized_horizon"].item() == pytest.approx(expected, abs=1e-6)
    fracs = out.diagnostics["cut_frac"]
    for t in range(heads):
        assert fracs[t].item() == pytest.approx(sum(1 for c in first_cut if c == t) / B)
    # and J itself (nothing after a cut enters it) agrees with the per-sample loop
    ref = loop_reference(actor, critic, model, obs, noise, heads, 0.5, u_T, False)
    torch.testing.assert_close(out.loss, ref, rtol=1e-5, atol=1e-5)


def test_predicted_terminal_ends_the_sum_without_bootstrap():
    heads = 4
    actor, critic, model, obs = parts(heads)
    model.termination_fn = lambda s: torch.ones(s.shape[0], dtype=torch.bool)  # always terminal
    out, noise = run(actor, critic, model, obs, heads, beta=0.5, u_T=math.inf)
    a, lp = actor.sample(obs, 0, noise.actor[0])
    step = model.step(obs, a, member=noise.member[0], noise=noise.model[0])
    expected = -(step.reward - ALPHA * lp - 0.5 * step.u).mean()
    torch.testing.assert_close(out.loss, expected)
    assert out.diagnostics["realized_horizon"].item() == 1.0
    assert out.diagnostics["J_tail"].item() == 0.0


# ------------------------------------------------------------------ the two forms
@pytest.mark.parametrize("literal,terminal_critic", [(False, False), (True, False), (False, True)])
@pytest.mark.parametrize("u_T", [-math.inf, "q0.2", "q0.7", math.inf])
def test_live_form_equals_static_form(literal, terminal_critic, u_T):
    """Loss, every actor gradient and every diagnostic agree, on a batch with early cuts, late
    cuts, predicted terminals and survivors (and with everything cut, or nothing)."""
    heads, batch = 6, 64
    actor, critic, model, _ = parts(heads, seed=5)
    torch.manual_seed(7)
    obs = torch.randn(batch, OBS) * 1.2
    if isinstance(u_T, str):
        with torch.no_grad():
            u_T = torch.quantile(model.ovr_error(obs, torch.zeros(batch, ACT)), float(u_T[1:])).item()
    noise = sample_noise(model, heads, batch, ACT, "cpu")
    results = {}
    for form in FORMS:
        out = farsighted_improvement(obs, actor, critic, model, ALPHA, 0.5, GAMMA, u_T, heads,
                                     literal, noise, terminal_critic, form=form)
        grads = torch.autograd.grad(out.loss, list(actor.parameters()), allow_unused=True)
        results[form] = out, [torch.zeros_like(p) if g is None else g
                              for g, p in zip(grads, actor.parameters())]
    (static, g_static), (live, g_live) = results["static"], results["live"]
    torch.testing.assert_close(live.loss, static.loss, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(live.log_prob0, static.log_prob0)
    for a, b in zip(g_live, g_static):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    for key, value in static.diagnostics.items():  # live_rows too: the same alive count
        torch.testing.assert_close(live.diagnostics[key].float(), value.float(),
                                   rtol=1e-5, atol=1e-6, msg=key)
    live_rows = live.diagnostics["live_rows"].item()
    if u_T == -math.inf:
        assert live_rows == pytest.approx(1 / heads)  # everything ends at t = 0
    else:
        assert 1 / heads < live_rows <= 1


@pytest.mark.parametrize("form", FORMS)
def test_live_rows_counts_the_alive_sample_steps(form):
    """live_rows = (sample-steps run) / (B * Hmax), against the controlled ensemble whose cut
    times are known in closed form."""
    heads = 6
    actor, critic, model, _ = parts(heads)
    controlled(model)
    obs = torch.zeros(B, OBS)
    obs[:, 0] = torch.arange(B, dtype=torch.float32) * 0.5 + 0.25
    with torch.no_grad():
        u_T = model.ovr_error(torch.tensor([[3.0, 0, 0, 0.]]), torch.zeros(1, ACT)).item()
    noise = sample_noise(model, heads, B, ACT, "cpu")
    noise = noise._replace(member=torch.full_like(noise.member, 2))
    out = farsighted_improvement(obs, actor, critic, model, ALPHA, 0.5, GAMMA, u_T, heads,
                                 False, noise, form=form)
    first_cut = [next((t for t in range(heads) if x + t >= 3.0), heads) for x in obs[:, 0].tolist()]
    steps_run = sum(min(c + 1, heads) for c in first_cut)  # a sample cut at t ran t + 1 steps
    assert out.diagnostics["live_rows"].item() == pytest.approx(steps_run / (B * heads))
    assert out.diagnostics["realized_horizon"].item() == pytest.approx(sum(first_cut) / B)


@pytest.mark.parametrize("form", FORMS)
def test_single_policy_uses_pi0_at_every_step(form):
    """One head and Hmax = 4: the per-sample loop with pi_0 at every step (SVG, DHMBPO)."""
    horizon, beta = 4, 0.5
    actor, critic, model, obs = parts(1, seed=3)
    obs = obs * 1.5
    with torch.no_grad():
        u_T = torch.quantile(model.ovr_error(obs, torch.zeros(B, ACT)), 0.8).item()
    torch.manual_seed(1)
    noise = sample_noise(model, horizon, B, ACT, "cpu")
    out = farsighted_improvement(obs, actor, critic, model, ALPHA, beta, GAMMA, u_T, horizon,
                                 False, noise, form=form)

    class OneHead:  # the reference loop asks for head t: answer with pi_0
        def sample(self, s, t, eps, **kw):
            return actor.sample(s, 0, eps, **kw)

    ref = loop_reference(OneHead(), critic, model, obs, noise, horizon, beta, u_T, False)
    torch.testing.assert_close(out.loss, ref, rtol=1e-5, atol=1e-5)
    assert out.diagnostics["realized_horizon"].item() > 1


@pytest.mark.parametrize("dim", [0, -1])
def test_stop_masks_match_a_loop_over_steps(dim):
    """none_through / none_before (every stopped sum's mask) against a loop that walks each
    sample's steps and remembers whether a flag was seen."""
    from mpdp_pl.lookahead.masks import none_before, none_through
    g = torch.Generator().manual_seed(0)
    flags = torch.rand(7, 9, generator=g) < 0.3
    flags[:, 2] = False                  # a sample that never stops
    flags[0, 3] = True                   # one that stops at its first step
    f = flags if dim == 0 else flags.T   # steps along dim
    through, before = none_through(f, dim), none_before(f, dim)
    if dim != 0:
        through, before = through.T, before.T
    for b in range(flags.shape[1]):
        seen = False
        for t in range(flags.shape[0]):
            assert bool(before[t, b]) == (not seen)
            seen = seen or bool(flags[t, b])
            assert bool(through[t, b]) == (not seen)
    assert through[:, 2].all() and not before[1:, 3].any() and before[0, 3]
