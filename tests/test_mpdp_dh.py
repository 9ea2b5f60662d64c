"""MPDP's parts on DHMBPO (mpdp_pl/algos/mpdp_dh.py): the actor's objective with a cut and a
penalty against a sample-by-sample computation on a model with known steps; every part off is
DHMBPO's objective to the bit, and through the CLI the same run; the heads get gradient up to
each sample's end only; each delta variant turns on its own part."""

from __future__ import annotations

import csv
import math

import pytest
import torch

from conftest import run_train
from mpdp_pl.config import load_config
from mpdp_pl.lookahead.svg import farsighted_return, soft_return, svg_rollout
from mpdp_pl.models.actor import MultiHeadActor
from mpdp_pl.models.dynamics import DynamicsModel, ModelStep


class _LineModel:
    """Known steps: s' = s + (1, 0), r = s[0], terminal where s'[0] > 2, u = s[0] + 0.5 a."""

    def elite_params(self, detach=False):
        return None

    def step(self, obs, action, member=None, noise=None, detach_params=False, params=None):
        nxt = obs + torch.tensor([1.0, 0.0])
        return ModelStep(nxt, obs[:, 0], nxt[:, 0] > 2.0, obs[:, 0] + 0.5 * action[:, 0], None)


def _log_pi(s):
    return -0.1 * s[:, 1] - 0.5 * s[:, 0]


def _q(s, a):
    return 10.0 + s[:, 0] + a[:, 0]


def _by_hand(s0, horizon, gamma, alpha, beta, u_T):
    """J and the counted reward steps of each sample, stepped one by one: s_{t+1} = s_t + (1, 0),
    r_t = s_t[0], a_t = tanh(s_t[0] + t), u_t = s_t[0] + 0.5 a_t, terminal where s[0] > 2."""
    expected, steps, ends = [], [], []
    for x, y in s0.tolist():
        g, n, end = 0.0, 0, "H"
        for t in range(horizon):
            a = math.tanh(x + t)
            lp = -0.1 * y - 0.5 * x
            if x + 0.5 * a >= u_T:  # cut: the critic's value of (s_t, a_t)
                g += gamma ** t * (10.0 + x + a - alpha * lp)
                end = "cut"
                break
            g += gamma ** t * (x - alpha * lp - beta * (x + 0.5 * a))
            n += 1
            x += 1.0
            if x > 2.0:  # a predicted terminal: nothing after it
                end = "terminal"
                break
        if end == "H":
            a = math.tanh(x + horizon)
            g += gamma ** horizon * (10.0 + x + a - alpha * (-0.1 * y - 0.5 * x))
        expected.append(g), steps.append(n), ends.append(end)
    return expected, steps, ends


@pytest.mark.parametrize("u_T, ends", [
    (1.2, {"cut", "H"}),              # cuts at s_0 and later; every terminal comes after a cut
    (2.5, {"cut", "terminal", "H"}),  # terminals before a cut too
])
def test_the_cut_the_penalty_and_the_terminals_by_hand(u_T, ends):
    s0 = torch.tensor([[0.0, 1.0], [1.5, -1.0], [-0.4, 0.3], [-3.0, 0.0], [0.9, 2.0], [2.5, 0.0]])
    policy = lambda t, s: (torch.tanh(s[:, :1] + t), _log_pi(s))  # noqa: E731  (head t: a shift)
    gamma, alpha, beta, horizon = 0.9, 0.2, 0.3, 3
    roll = svg_rollout(_LineModel(), policy, s0, horizon, with_u=True)
    q = torch.stack([_q(s, a) for s, a in zip([*roll.obs, roll.last_obs],
                                              [*roll.action, roll.last_action])])
    got, counted = farsighted_return(roll, q, alpha, gamma, beta, u_T)
    expected, steps, kinds = _by_hand(s0, horizon, gamma, alpha, beta, u_T)
    assert got.tolist() == pytest.approx(expected, rel=1e-5)
    assert counted.sum(0).tolist() == steps
    assert set(kinds) == ends


def _parts(seed=0, heads=1):
    torch.manual_seed(seed)
    dyn = DynamicsModel(3, 2, 4, 3, 16, 2, termination_fn=lambda s: s[:, 0] > 5.0, noise="member")
    actor = MultiHeadActor(3, 2, [16, 16], num_heads=heads)
    return dyn, actor


def test_every_part_off_is_dhmbpos_objective_to_the_bit():
    dyn, actor = _parts()
    obs, q_tail = torch.randn(64, 3), torch.randn(64)
    torch.manual_seed(1)
    roll = svg_rollout(dyn, lambda t, s: actor.sample(s), obs, 5)
    q = torch.cat([torch.randn(5, 64), q_tail.unsqueeze(0)])  # rows a sample cannot end at: unread
    got, counted = farsighted_return(roll, q, 0.1, 0.99)
    assert torch.equal(got, soft_return(roll, q_tail, 0.1, 0.99, first_entropy=True))
    assert torch.equal(counted, roll.mask[:-1])
    with_u = svg_rollout(dyn, lambda t, s: actor.sample(s), obs, 5, with_u=True)
    assert with_u.u.shape == (5, 64) and (with_u.u >= 0).all()
    assert torch.equal(farsighted_return(with_u, q, 0.1, 0.99, 0.0, float("inf"))[0],
                       soft_return(with_u, q_tail, 0.1, 0.99, first_entropy=True))


def test_the_heads_get_gradient_up_to_each_samples_end():
    horizon = 4
    dyn, actor = _parts(heads=horizon)
    obs = torch.randn(128, 3)
    params = actor.head_params()
    act = lambda t, s: actor.sample(s, t if t < horizon else 0, params=params)  # noqa: E731

    def head_grads(u_T, seed):
        """Which heads got gradient, and which steps some sample reached alive and uncut."""
        actor.zero_grad()
        torch.manual_seed(seed)
        roll = svg_rollout(dyn, act, obs, horizon, with_u=True)
        q = torch.stack([a.sum(-1) + s.sum(-1) for s, a in zip([*roll.obs, roll.last_obs],
                                                              [*roll.action, roll.last_action])])
        (-farsighted_return(roll, q, 0.1, 0.99, 0.5, u_T)[0].mean()).backward()
        weight = actor.net.layers[0].weight.grad  # [heads, in, out]
        no_cut_before = torch.cat([torch.ones(1, obs.shape[0], dtype=torch.bool),
                                   (roll.u < u_T).cumprod(0).bool()[:-1]])
        reached = (no_cut_before & roll.mask[:-1].bool()).any(-1)
        return [bool(weight[h].abs().sum() > 0) for h in range(horizon)], reached.tolist()

    assert head_grads(float("inf"), 0)[0] == [True] * horizon  # the whole H: every head
    assert head_grads(0.0, 0)[0] == [True] + [False] * (horizon - 1)  # every sample cut at s_0
    torch.manual_seed(2)
    u = svg_rollout(dyn, act, obs, horizon, with_u=True).u.detach()  # the rollout of seed 2
    by_step_1 = u[:2].max(0).values.min()  # every sample cut at step 0 or 1
    grads, reached = head_grads(by_step_1, 2)
    assert grads == reached == [True, True, False, False]
    grads, reached = head_grads(u.flatten().median(), 2)
    assert grads == reached and grads[0]


@pytest.mark.parametrize("variant, parts", [
    (None, (True, True, True)),
    ("dh_heads", (True, False, False)),
    ("dh_cut", (False, True, False)),
    ("dh_beta", (False, False, True)),
])
def test_each_delta_variant_turns_on_its_part(variant, parts):
    """(heads, the u-based cut, beta * u) on Hopper, DHMBPO's values otherwise."""
    cfg = load_config("Hopper-v4", "mpdp_dh" if variant is None else None,
                      {} if variant is None else {"variant": variant})
    dh = load_config("Hopper-v4", "dhmbpo")
    assert (not cfg["improvement"]["single_policy"], cfg["improvement"]["u_T"] != float("inf"),
            cfg["improvement"]["beta"] > 0) == parts
    assert {k: v for k, v in cfg.items() if k not in ("algo", "variant", "improvement")} == \
           {k: v for k, v in dh.items() if k not in ("algo", "variant", "improvement")}


TINY = ["steps=300", "data.init_random_steps=200", "eval.every=100", "eval.episodes=1",
        "data.batch_size=64", "networks.hidden_sizes=[32,32]", "model.hidden=32", "logging.every=100",
        "trainer.num_threads=1", "updates.every=100", "model.train_freq=100",
        "updates.critic_per_step=1.5", "updates.warmup=10", "model.batch_size=64",
        "model.max_epochs=4", "model.patience=2", "dhmbpo.rollout_every=10",
        "dhmbpo.rollout_length=5", "dhmbpo.buffer_size=2000", "--seed", "5"]
OFF = ["improvement.single_policy=true", "improvement.u_T=inf", "improvement.beta=0"]


def _rows(out):
    with open(out / "metrics.csv") as f:
        return list(csv.DictReader(f))


def test_every_part_off_is_dhmbpos_run_and_every_part_on_trains_and_resumes(tmp_path):
    runs = {"dhmbpo": ["--algo", "dhmbpo"], "off": ["--algo", "mpdp_dh", *OFF],
            "on": ["--algo", "mpdp_dh"]}
    for name, args in runs.items():
        proc = run_train(["--env", "Hopper-v4", "--out", str(tmp_path / name), "--logger", "none",
                          *args, *TINY], cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr[-3000:]
    dh, off = _rows(tmp_path / "dhmbpo"), _rows(tmp_path / "off")
    timing = ("time", "seconds", "fps", "elapsed")
    same = [k for k in dh[0] if not any(w in k for w in timing)]
    assert len(dh) == len(off) == 3 and "eval/return" in same and "train/actor_loss" in same
    assert [[r[k] for k in same] for r in dh] == [[r[k] for k in same] for r in off]

    proc = run_train(["--resume", str(tmp_path / "on"), "--steps", "400"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    on = _rows(tmp_path / "on")
    assert [int(r["env_steps"]) for r in on] == [100, 200, 300, 400]
    for r in on[1:]:
        assert 0 <= float(r["train/realized_horizon"]) <= 5 and float(r["model/u_T"]) > 0
        assert float(r["train/J_penalty"]) <= 0 and r["train/actor_loss"]
