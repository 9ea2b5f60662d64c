"""POPLIN-A and POPLIN-P (mpdp_pl/lookahead/policy_planning.py, algos/poplin.py) against
independent truths: the planners with a small system's true dynamics reach its known optimal
return from a policy that proposes nothing useful; the mean model step is the mean of the
elites' noiseless per-member steps; a candidate's weights act as the policy set to them; the
distillations equal their hand computations (AVG) or fit what they are shown (BC-AI). Their runs
through the shared CLI: tests/test_pets.py."""

from __future__ import annotations

import pytest
import torch

from mpdp_pl.algos.poplin import POPLINA, POPLINP
from mpdp_pl.config import ConfigError, load_config
from mpdp_pl.environment.envs import EnvSpec
from mpdp_pl.lookahead.planning import CEMSettings, expected_returns
from mpdp_pl.lookahead.policy_planning import ActionNoisePlanner, ParameterNoisePlanner
from mpdp_pl.models.actor import ProposalPolicy
from mpdp_pl.models.dynamics import DynamicsModel, ModelStep


class PointMass:
    """s' = s + a in R^2, r = -||s'||^2, a in [-1, 1]^2, never terminal: from s = (0.6, -0.4)
    the best return is 0 (a = -s, then stay); a = 0 throughout gets -2.6 over 5 steps."""

    def mean_step(self, obs, action):
        nxt = obs + action
        return ModelStep(nxt, -nxt.pow(2).sum(-1), torch.zeros(nxt.shape[0], dtype=torch.bool),
                         None, None)


def episode_return(planner, steps=5):
    s, ret = torch.tensor([[0.6, -0.4]]), 0.0
    for _ in range(steps):
        s = s + planner.sample(s)[0]
        ret -= float(s.pow(2).sum())
    return ret


def zero_policy(hidden):
    policy = ProposalPolicy(2, 2, hidden)
    policy.set_flat_weights(torch.zeros_like(policy.flat_weights()))
    return policy


def test_action_noise_planner_with_true_dynamics_reaches_the_optimal_return():
    torch.manual_seed(0)
    planner = ActionNoisePlanner(PointMass(), zero_policy([8]), CEMSettings(
        horizon=5, population=500, elites=50, iterations=5, momentum=0.1, particles=20), init_var=0.25)
    ret = episode_return(planner)
    assert ret > -0.1, ret  # the policy alone proposes a = 0: -2.6
    obs, executed, elite = (torch.cat(x) for x in zip(*planner.pending))
    assert obs.shape == (5, 2) and executed.shape == (5, 2) and elite.shape == (5, 50, 2)
    assert elite.abs().max() <= 1.0


def test_parameter_noise_planner_with_true_dynamics_beats_its_policy():
    torch.manual_seed(0)
    planner = ParameterNoisePlanner(PointMass(), zero_policy([8]), CEMSettings(
        horizon=5, population=500, elites=50, iterations=5, momentum=0.1, particles=20),
        init_var=0.1)
    ret = episode_return(planner)
    assert ret > -0.5, ret  # the zero weights alone get -2.6
    assert torch.cat([p[0] for p in planner.pending]).shape == (5, planner.policy.flat_weights().numel())


def test_mean_step_is_the_mean_of_the_elites_noiseless_steps():
    torch.manual_seed(0)
    model = DynamicsModel(3, 2, members=5, num_elites=3, hidden=16, layers=2,
                          termination_fn=lambda s: s[:, 0] > 0.2)
    model.elites.copy_(torch.tensor([4, 1, 2]))
    obs, act = torch.randn(6, 3), torch.rand(6, 2) * 2 - 1
    with torch.no_grad():
        st = model.mean_step(obs, act)
        each = [model.step(obs, act, member=torch.full((6,), int(e)), noise=torch.zeros(6, 4))
                for e in model.elites]
    assert torch.allclose(st.next_obs, torch.stack([s.next_obs for s in each]).mean(0), atol=1e-5)
    assert torch.allclose(st.reward, torch.stack([s.reward for s in each]).mean(0), atol=1e-5)
    assert torch.equal(st.terminated, st.next_obs[:, 0] > 0.2)


def test_expected_returns_follow_each_candidates_actions_and_stop_at_terminals():
    class Counter:  # reward 1 per step, terminal once s >= 2
        def mean_step(self, obs, action):
            nxt = obs + action
            return ModelStep(nxt, torch.ones(nxt.shape[0]), nxt[:, 0] >= 2.0, None, None)

    steps = torch.tensor([1.0, 0.5, 0.0]).repeat(2)  # two states, three candidates each
    values = expected_returns(Counter(), torch.tensor([[0.0], [1.0]]), 3, 4,
                              lambda t, s: steps[:, None])
    # from 0: a = 1 ends at step 2, a = 0.5 at step 4, a = 0 never; from 1: 1, 2 and 4 steps
    assert values.tolist() == [[2.0, 4.0, 4.0], [1.0, 2.0, 4.0]]


def test_a_candidates_weights_act_as_the_policy_set_to_them():
    torch.manual_seed(0)
    policy = ProposalPolicy(3, 2, [5, 4])
    policy.obs_norm.set(torch.randn(3), torch.rand(3) + 0.5)
    flat = torch.randn(4, policy.flat_weights().numel())
    obs = torch.randn(4, 3) * 3
    batched = policy.with_weights(flat, obs)
    for i in range(4):
        policy.set_flat_weights(flat[i])
        assert torch.allclose(batched[i], policy(obs[i: i + 1])[0], atol=1e-6)
    assert batched.abs().max() <= 1.0 and (batched.abs() == 1.0).any()  # the output is clipped


SPEC = EnvSpec(3, 2, (-1.0,) * 2, (1.0,) * 2, 100)


def test_avg_moves_the_weights_by_the_executed_noises_mean():
    torch.manual_seed(0)
    module = POPLINP(load_config("InvertedPendulum-v4", "poplin_p"), SPEC)
    before = module.actor.policy.flat_weights().clone()
    noise = torch.randn(7, before.numel())
    module.actor.warm_start[1] = torch.ones(1, 3, before.numel())
    module.improve_policy([noise])
    after = module.actor.policy.flat_weights()
    assert torch.allclose(after, before + noise.mean(0), atol=1e-6)
    assert not module.actor.warm_start  # the old noise means are dropped with the old weights


def test_bc_ai_fits_the_executed_and_elite_actions():
    """Executed actions at 0.5 * s0 and elites scattered around them: the clone learns their
    mean, 0.5 * s0, on states it was not shown."""
    torch.manual_seed(0)
    module = POPLINA(load_config("InvertedPendulum-v4", "poplin_a", {"poplin.bc_epochs": 30}), SPEC)
    optimizers = module.configure_optimizers()  # outside a Trainer: its optimizers and backward
    module.optimizers = lambda: optimizers
    module.manual_backward = lambda loss: loss.backward()
    obs = torch.rand(200, 3) * 2 - 1
    target = torch.stack([0.5 * obs[:, 0], -0.5 * obs[:, 0]], dim=1)
    elite = (target[:, None] + 0.1 * torch.randn(200, 10, 2)).clamp(-1, 1)
    module.improve_policy([obs, target, elite])
    test = torch.rand(100, 3) * 2 - 1
    want = torch.stack([0.5 * test[:, 0], -0.5 * test[:, 0]], dim=1)
    with torch.no_grad():
        assert (module.actor.policy(test) - want).pow(2).mean() < 0.005
    assert float(module.recorder.latest["poplin/bc_rows"]) == 200 * 11


def test_config_is_the_published_one_and_checked():
    a, p = load_config("Hopper-v4", "poplin_a"), load_config("Hopper-v4", "poplin_p")
    for c in (a, p):
        assert (c["pets"]["horizon"], c["pets"]["population"], c["pets"]["elites"], c["pets"]["iterations"],
                c["pets"]["momentum"]) == (30, 500, 50, 5, 0.1)
    assert (a["poplin"]["hidden"], a["poplin"]["init_var"], a["poplin"]["bc_epochs"], a["poplin"]["bc_batch"],
            a["poplin"]["bc_lr"]) == ([64, 64], 0.25, 100, 64, 0.003)
    assert (p["poplin"]["hidden"], p["poplin"]["init_var"]) == ([32], 0.1)
    with pytest.raises(ConfigError, match="poplin.init_var"):
        load_config("Hopper-v4", "poplin_p", {"poplin.init_var": 0.0})
