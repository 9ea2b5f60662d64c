"""MPPVE: segment masks against a plain loop, the plan-value target against a hand computation,
real segments against the chronological record of a real collector, model segments, SAC's
own losses at k = 1, gradient isolation, and a smoke run on a real MuJoCo task."""

from __future__ import annotations

import csv

import pytest
import torch
from conftest import TINY, TINY_MODEL_DATA
from tensordict import TensorDict
from tensordict.nn import TensorDictModule

from mpdp_pl.algos.mppve import MPPVE
from mpdp_pl.algos.sac import SAC
from mpdp_pl.config import load_config, parse_overrides
from mpdp_pl.environment.data import flat_transitions, make_collector, make_replay_buffer
from mpdp_pl.environment.envs import EnvSpec, env_spec, make_env
from mpdp_pl.models.actor import ActorPolicy
from mpdp_pl.lookahead.plan_improvement import plan_improvement
from mpdp_pl.lookahead.plan_value import (
    make_plan,
    model_segments,
    plan_value_target,
    real_segments,
    segment_masks,
)
from mpdp_pl.run import train


def loop_masks(term: list[bool], trunc: list[bool]):
    """The segment rules written out step by step."""
    alive, ended, bootstrap, valid = [], False, True, True
    for m, (te, tr) in enumerate(zip(term, trunc)):
        alive.append(not ended)
        if not ended and te:
            bootstrap = False
        if not ended and tr and not te and m < len(term) - 1:
            valid = False
        ended = ended or te or tr
    return alive, bootstrap, valid


def test_segment_masks_match_a_plain_loop():
    g = torch.Generator().manual_seed(0)
    term = torch.rand(500, 4, generator=g) < 0.2
    trunc = torch.rand(500, 4, generator=g) < 0.15
    alive, bootstrap, valid = segment_masks(term, trunc)
    for i in range(500):
        a, b, v = loop_masks(term[i].tolist(), trunc[i].tolist())
        assert alive[i].tolist() == a and bool(bootstrap[i]) == b and bool(valid[i]) == v


def test_plan_value_target_by_hand():
    seg = TensorDict({
        "reward": torch.tensor([[1.0, 2.0, 3.0], [1.0, 2.0, 3.0], [1.0, 2.0, 3.0]]),
        "alive": torch.tensor([[True, True, True], [True, True, False], [True, True, True]]),
        "bootstrap": torch.tensor([True, False, True]),
    }, [3])
    next_q = torch.tensor([[10.0, 10.0, 4.0], [12.0, 9.0, 5.0]])    # min: 10, 9, 4
    next_lp = torch.tensor([[0.5, 0.5, 0.0], [1.0, 0.0, 0.0], [-1.0, -1.0, -1.0]])
    y = plan_value_target(seg, next_q, next_lp, torch.tensor(0.2), 0.9)
    g = 0.9
    expected = torch.tensor([
        1 + g * 2 + g**2 * 3 + g**3 * (10 - 0.2 * 1.0),
        1 + g * 2,                                  # terminated at step 1: no bootstrap
        1 + g * 2 + g**2 * 3 + g**3 * (4 + 0.2 * 3.0),
    ])
    assert torch.allclose(y, expected)


def collect_real(steps: int, capacity: int):
    """A real InvertedPendulum collector (uniform random actions) with 6-step episodes, so that
    both terminations and time limits occur; returns the replay buffer and the chronological
    list of every transition."""
    torch.manual_seed(0)
    cfg = load_config("InvertedPendulum-v4", "sac", {"task.max_episode_steps": 6})
    env = make_env(cfg, seed=0)
    spec = env_spec(env)
    actor = SAC(cfg, spec).actor
    policy = TensorDictModule(ActorPolicy(actor, False), in_keys=["observation"], out_keys=["action"])
    collector = make_collector(env, policy, 50, steps, torch.device("cpu"), torch.device("cpu"))
    buffer, record = make_replay_buffer(capacity, "cpu"), []
    for batch in collector:
        batch = flat_transitions(batch)
        buffer.extend(batch)
        record.extend(batch.unbind(0))
        if len(record) >= steps:
            break
    collector.shutdown()
    return buffer, record


def test_real_segments_are_consecutive_env_steps_with_the_episode_rules():
    buffer, record = collect_real(400, capacity=300)  # the buffer has wrapped
    kept = record[-300:]
    assert any(bool(t["next", "terminated"]) for t in kept)
    assert any(bool(t["next", "truncated"] & ~t["next", "terminated"]) for t in kept)
    k = 3
    torch.manual_seed(1)
    seg = real_segments(buffer, 400, k)
    starts = {tuple(t["observation"].tolist()): i for i, t in enumerate(kept)}
    for b in range(400):
        i = starts[tuple(seg["observation"][b].tolist())]
        window = kept[i:i + k]
        assert len(window) == k  # only starts with k - 1 newer transitions
        term = [bool(t["next", "terminated"]) for t in window]
        trunc = [bool(t["next", "truncated"]) for t in window]
        alive, bootstrap, valid = loop_masks(term, trunc)
        plan = torch.cat([t["action"] * a for t, a in zip(window, alive)])
        assert seg["plan"][b].equal(plan)
        assert seg["reward"][b].equal(torch.cat([t["next", "reward"] for t in window]))
        assert seg["alive"][b].tolist() == alive
        assert bool(seg["bootstrap"][b]) == bootstrap and bool(seg["valid"][b]) == valid
        assert seg["next_observation"][b].equal(window[-1]["next", "observation"])


@pytest.fixture
def mppve():
    torch.manual_seed(0)
    cfg = load_config("Hopper-v4", "mppve", {"networks.hidden_sizes": [16, 16], "model.hidden": 16,
                                              "data.batch_size": 32})
    module = MPPVE(cfg, EnvSpec(11, 3, (-1.0,) * 3, (1.0,) * 3, 1000))
    module.dynamics.elites = torch.tensor([0, 1, 2, 3, 4])
    module.replay_buffer = make_replay_buffer(1000, "cpu")
    n = 200
    module.replay_buffer.extend(TensorDict({
        "observation": torch.randn(n, 11), "action": torch.rand(n, 3) * 2 - 1,
        "next": {"observation": torch.randn(n, 11), "reward": torch.randn(n, 1),
                 "terminated": torch.zeros(n, 1, dtype=torch.bool),
                 "truncated": torch.zeros(n, 1, dtype=torch.bool),
                 "done": torch.zeros(n, 1, dtype=torch.bool)}}, [n]))
    module.dynamics.termination_fn = lambda s: torch.zeros(s.shape[0], dtype=torch.bool)
    return module


def test_model_segments_start_in_the_real_prefix_and_stop_at_terminals(mppve):
    k, length, n = 3, 2, 50
    seg = model_segments(mppve.replay_buffer, mppve.dynamics, mppve.actor, n, length, k)
    assert seg.shape == (n * length,) and seg["alive"].all() and seg["bootstrap"].all()
    real = mppve.replay_buffer[:]
    rows = {tuple(o.tolist()): i for i, o in enumerate(real["observation"])}
    first = seg[:n]  # segments ending at model step 0: k - 1 real steps, then one model step
    for b in range(n):
        i = rows[tuple(first["observation"][b].tolist())]
        assert first["plan"][b, : 2 * 3].equal(real["action"][i:i + 2].reshape(-1))
        assert first["reward"][b, :2].equal(real["next", "reward"][i:i + 2, 0])
    # the second segment starts one step later, where the first one's second step starts
    assert seg[n:]["observation"].equal(real["observation"][[rows[tuple(o.tolist())] + 1
                                                              for o in first["observation"]]])
    mppve.dynamics.termination_fn = lambda s: torch.ones(s.shape[0], dtype=torch.bool)
    seg = model_segments(mppve.replay_buffer, mppve.dynamics, mppve.actor, n, 4, k)
    assert seg.shape == (n,) and not seg["bootstrap"].any()  # one segment each, terminal last


def test_at_k_1_the_losses_are_sacs(mppve):
    cfg = {**mppve.cfg, "mppve": {**mppve.cfg["mppve"], "plan_length": 1}}
    one = MPPVE(cfg, mppve.spec)
    sac = SAC(cfg, mppve.spec)
    sac.load_state_dict({k: v for k, v in one.state_dict().items() if k in sac.state_dict()})
    one.dynamics, one.replay_buffer = mppve.dynamics, mppve.replay_buffer
    obs = torch.randn(32, 11)
    torch.manual_seed(5)
    loss_k1, lp_k1 = one.actor_loss(obs)
    torch.manual_seed(5)
    loss_sac, lp_sac = sac.actor_loss(obs)
    assert torch.allclose(loss_k1, loss_sac) and torch.allclose(lp_k1, lp_sac)
    assert one.target_entropy == sac.target_entropy
    seg = real_segments(mppve.replay_buffer, 32, 1)
    # the same transitions as a k = 1 segment batch and as SAC's batch
    batch = TensorDict({"observation": seg["observation"], "action": seg["plan"],
                        "next": {"observation": seg["next_observation"],
                                 "reward": seg["reward"],
                                 "terminated": ~seg["bootstrap"].unsqueeze(-1)}}, [32])
    torch.manual_seed(6)
    c_k1, _ = one.critic_loss(seg)
    torch.manual_seed(6)
    c_sac, _ = sac.critic_loss(batch)
    assert torch.allclose(c_k1, c_sac)
    # the largest target, a guard against value explosion, is SAC's too
    assert one.recorder.scalars()["train/target_max"] == pytest.approx(
        sac.recorder.scalars()["train/target_max"])


def test_gradient_isolation(mppve):
    seg = real_segments(mppve.replay_buffer, 32, 3)
    loss, _ = mppve.critic_loss(seg)
    loss.backward()
    assert all(p.grad is not None for p in mppve.critic.parameters())
    others = [*mppve.actor.parameters(), *mppve.dynamics.parameters(), mppve.log_alpha,
              *mppve.critic_target.parameters()]
    assert all(p.grad is None for p in others)
    mppve.zero_grad(set_to_none=True)
    loss, log_prob = mppve.actor_loss(torch.randn(32, 11))
    loss.backward()
    assert all(p.grad is not None for p in mppve.actor.parameters())
    others = [*mppve.critic.parameters(), *mppve.dynamics.parameters(), mppve.log_alpha]
    assert all(p.grad is None for p in others)
    assert log_prob.shape == (32,)


def test_plan_gradient_flows_through_model_states_only_when_asked(mppve):
    """mppve.plan_grad_through_model: Eq. (18)'s gradient through the model states, or each
    state detached (the official code). On the same random numbers the actor's gradient
    differs between the two, since a_1 and a_2 are drawn at model states."""
    obs = torch.randn(8, 11)

    def actor_grad(through):
        mppve.actor.zero_grad(set_to_none=True)
        torch.manual_seed(1)
        result = plan_improvement(obs, mppve.actor, mppve.critic, mppve.dynamics, mppve.alpha, 0.0,
                                  0.99, None, mppve.k, mppve.k, grad_through_model=through)
        result.loss.backward()
        return result.loss.detach(), torch.cat([p.grad.flatten() for p in mppve.actor.parameters()])

    (loss_on, grad_on), (loss_off, grad_off) = actor_grad(True), actor_grad(False)
    assert torch.equal(loss_on, loss_off)  # the same plans and values: only the gradient differs
    assert grad_on.abs().sum() > 0 and grad_off.abs().sum() > 0
    assert not torch.allclose(grad_on, grad_off)


def test_config_per_task():
    assert load_config("Hopper-v4", "mppve")["mppve"]["plan_length"] == 3
    assert load_config("Walker2d-v4", "mppve")["mppve"]["plan_length"] == 2
    hum = load_config("Humanoid-v4", "mppve")
    assert hum["temperature"]["target_entropy"] == -8 and hum["rollouts"]["schedule"] == [20, 300, 1, 15]
    assert load_config("Hopper-v4", "mppve")["updates"]["critic_per_step"] == 20


def test_mppve_smoke_run(tmp_path):
    cfg = load_config("Hopper-v4", "mppve", {**parse_overrides(TINY), **TINY_MODEL_DATA,
                                              "out": str(tmp_path / "run")})
    out = train(cfg)
    with open(out / "metrics.csv") as f:
        last = list(csv.DictReader(f))[-1]
    assert int(last["env_steps"]) == 400
    assert float(last["train/rollout_length"]) == 3
    assert 0 < float(last["train/model_buffer_size"]) <= 3 * 200
    assert float(last["train/updates"]) == 2 * 151
    assert float(last["train/valid_frac"]) > 0.9
    assert last["eval/q_bias"] == ""  # a plan-value critic does not value single actions
