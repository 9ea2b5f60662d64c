"""MPDP on a plan-value critic (``--algo mpdp_pv``): its objective against a per-sample hand
computation, every part off against MPPVE's own loss, which head makes which action (by the
gradients they receive), the config rules, and a run on a real MuJoCo task."""

from __future__ import annotations

import csv

import pytest
import torch
from conftest import TINY, TINY_MODEL_DATA

from mpdp_pl.algos.mpdp_plan_value import MPDPPlanValue
from mpdp_pl.algos.mppve import MPPVE
from mpdp_pl.config import ConfigError, load_config, parse_overrides
from mpdp_pl.environment.envs import EnvSpec
from mpdp_pl.lookahead.plan_improvement import plan_improvement
from mpdp_pl.run import train

SPEC = EnvSpec(11, 3, (-1.0,) * 3, (1.0,) * 3, 1000)


def module(**overrides) -> MPDPPlanValue:
    torch.manual_seed(0)
    cfg = load_config("Hopper-v4", "mpdp_pv", {"networks.hidden_sizes": [16, 16], "model.hidden": 16,
                                                "data.batch_size": 32, **overrides})
    m = MPDPPlanValue(cfg, SPEC)
    m.dynamics.elites = torch.tensor([0, 1, 2, 3, 4])
    m.log_alpha.data.fill_(-1.0)
    return m


def by_hand(m: MPDPPlanValue, obs, beta: float, u_T: float, seed: int):
    """The objective of docs/mpdp.md sample by sample, on the trajectories the unroll draws
    (the same random numbers, drawn in the same order: action, then model step; every elite at
    the L reward steps, where u acts, one random elite per sample at the plan's k steps)."""
    H, k, alpha = m.horizon, m.k, float(m.alpha.detach())
    L = H - k
    torch.manual_seed(seed)
    s, rec = obs, []
    with torch.no_grad():
        for t in range(H):
            a, lp = m.actor.sample(s, min(t, m.actor.num_heads - 1))
            step = (m.dynamics.step if t < L else m.dynamics.sample_step)(s, a, detach_params=True)
            rec.append((s, a, lp, step.reward, step.terminated, step.u))
            s = step.next_obs
    J, ends, plan_lp0 = [], [], []
    for b in range(obs.shape[0]):
        total, T = 0.0, L
        for t in range(L):
            _, _, lp, r, term, u = (x[b] for x in rec[t])
            if bool(term) or float(u) >= u_T:
                T = t
                break
            total += 0.99**t * (float(r) - alpha * float(lp) - beta * float(u))
        plan, lps, ended = [], 0.0, False
        for t in range(T, T + k):
            a, lp = rec[t][1][b], rec[t][2][b]
            plan.append(a * (0.0 if ended else 1.0))
            lps += 0.0 if ended else float(lp)
            ended = ended or bool(rec[t][4][b])
        with torch.no_grad():
            q = m.critic(rec[T][0][b:b + 1], torch.cat(plan).unsqueeze(0)).min(0).values
        total += 0.99**T * (float(q) - alpha * lps)
        J.append(total)
        ends.append(T)
        plan_lp0.append(sum(float(rec[t][2][b]) for t in range(k)
                            if not any(bool(rec[j][4][b]) for j in range(t))))
    return torch.tensor(J), torch.tensor(ends, dtype=torch.float), torch.tensor(plan_lp0)


def test_objective_by_hand():
    m = module(horizon=7)
    m.dynamics.termination_fn = lambda s: s[:, 0] > 1.2
    obs = torch.randn(64, 11)
    with torch.no_grad():  # a threshold that cuts some samples early and lets others run
        a, _ = m.actor.sample(obs)
        u_T = float(m.dynamics.step(obs, a).u.quantile(0.6))
    torch.manual_seed(3)
    result = plan_improvement(obs, m.actor, m.critic, m.dynamics, m.alpha, 0.3, 0.99,
                              torch.tensor(u_T), m.horizon, m.k)
    J, T, lp0 = by_hand(m, obs, 0.3, u_T, seed=3)
    assert {0, 4} <= set(T.tolist()) and len(set(T.tolist())) >= 3  # cuts, terminals, full sums
    assert torch.allclose(result.loss, -J.mean(), atol=1e-5)
    assert torch.allclose(result.diagnostics["realized_horizon"], T.mean())
    assert torch.allclose(result.log_prob, lp0, atol=1e-5)


def test_every_part_off_is_mppve():
    """single_policy, Hmax = k, no cut, no penalty: MPPVE's actor loss, to the bit."""
    off = module(single_policy=True, horizon=3, u_T=float("inf"), beta=0.0)
    mppve = MPPVE(load_config("Hopper-v4", "mppve", {"networks.hidden_sizes": [16, 16], "model.hidden": 16,
                                                     "data.batch_size": 32}), SPEC)
    mppve.load_state_dict(off.state_dict(), strict=False)
    mppve.dynamics.elites = off.dynamics.elites
    obs = torch.randn(32, 11)
    torch.manual_seed(7)
    loss_off, lp_off = off.actor_loss(obs)
    torch.manual_seed(7)
    loss_mppve, lp_mppve = mppve.actor_loss(obs)
    assert loss_off.equal(loss_mppve) and lp_off.equal(lp_mppve)
    assert off.target_entropy == mppve.target_entropy


@pytest.mark.parametrize("u_T, used", [(0.0, range(3)), (float("inf"), range(6))])
def test_head_t_makes_the_action_of_step_t(u_T, used):
    """u_T = 0 cuts every sample at s_0: only heads 0..k-1 (the plan from s_0) get gradient;
    no cut: the sum runs L = 3 steps and the plan from s_3 uses heads 3..5."""
    m = module(horizon=6, u_T=u_T)
    m.dynamics.termination_fn = lambda s: torch.zeros(s.shape[0], dtype=torch.bool)
    m.improvement(torch.randn(32, 11)).loss.backward()
    grad = m.actor.net.layers[-1].weight.grad  # [heads, in, out]
    assert [bool(grad[h].abs().sum() > 0) for h in range(6)] == [h in used for h in range(6)]
    assert all(p.grad is None for p in [*m.critic.parameters(), *m.dynamics.parameters()])


def test_config():
    cfg = load_config("Hopper-v4", "mpdp_pv")
    assert (cfg["improvement"]["horizon"], cfg["mppve"]["plan_length"], cfg["updates"]["critic_per_step"],
            cfg["improvement"]["u_T_quantile"]) == (9, 3, 20, 0.9)  # k + 6 reward steps, cut at the 0.9 quantile
    assert load_config("Walker2d-v4", "mpdp_pv")["improvement"]["horizon"] == 8
    with pytest.raises(ConfigError, match="plan_length"):
        load_config("Hopper-v4", "mpdp_pv", {"improvement.horizon": 2})
    with pytest.raises(ConfigError, match="paper_literal_cut"):
        load_config("Hopper-v4", "mpdp_pv", {"improvement.paper_literal_cut": True})
    with pytest.raises(ConfigError, match="single_policy"):
        load_config("Hopper-v4", "mppve", {"improvement.single_policy": True})


def test_mpdp_pv_run(tmp_path):
    cfg = load_config("Hopper-v4", "mpdp_pv", {**parse_overrides(TINY), **TINY_MODEL_DATA,
                                                "out": str(tmp_path / "run")})
    out = train(cfg)
    with open(out / "metrics.csv") as f:
        last = list(csv.DictReader(f))[-1]
    assert int(last["env_steps"]) == 400
    assert 0 <= float(last["train/realized_horizon"]) <= 6 and float(last["model/u_T"]) > 0
    assert float(last["train/updates"]) == 2 * 151


@pytest.mark.parametrize("variant, parts", [
    (None, (True, True, True, True)),
    ("pv_heads", (True, False, False, False)),
    ("pv_hmax", (False, True, False, False)),
    ("pv_hmax_cut", (False, True, True, False)),
    ("pv_hmax_beta", (False, True, False, True)),
])
def test_each_delta_variant_turns_on_its_parts(variant, parts):
    """(heads, reward steps before the plan value, the u-based cut, beta * u) on Hopper."""
    cfg = load_config("Hopper-v4", "mpdp_pv" if variant is None else None,
                      {} if variant is None else {"variant": variant})
    reward_steps = cfg["improvement"]["horizon"] > cfg["mppve"]["plan_length"]
    assert (not cfg["improvement"]["single_policy"], reward_steps, reward_steps and cfg["improvement"]["u_T"] != float("inf"),
            reward_steps and cfg["improvement"]["beta"] > 0) == parts
    if variant is not None:  # the deltas as measured: Hmax 6 on Hopper, u_ref at the held-out median
        assert cfg["improvement"]["horizon"] in (3, 6)
        assert cfg["improvement"]["u_T_quantile"] == 0.5 or (not parts[2] and not parts[3])
