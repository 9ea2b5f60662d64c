"""PETS (mpdp_pl/lookahead/planning.py, algos/pets.py) against independent truths: CEM finds the optimum of
a known quadratic, the planner with a small system's true dynamics reaches its known optimal
return, the grouped model step equals the per-sample one with the same member and noise; and
runs of PETS and POPLIN through the shared CLI that checkpoint, resume and evaluate."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import pytest
import torch

from conftest import TINY, run_train
from mpdp_pl.config import ConfigError, load_config
from mpdp_pl.models.dynamics import DynamicsModel, ModelStep
from mpdp_pl.lookahead.planning import CEMPlanner, CEMSettings, cem, particle_returns


def test_cem_finds_the_optimum_of_a_quadratic():
    torch.manual_seed(0)
    # optima inside the box (CEM's variance cap slows it down right at a bound, as PETS's does)
    target = torch.tensor([[0.3, -0.7], [0.6, 0.0], [-0.5, 0.5]])[:, None, :].expand(3, 4, 2)
    s = CEMSettings(horizon=4, population=300, elites=30, iterations=12, momentum=0.1,
                    particles=20)
    lb, ub = -torch.ones(2), torch.ones(2)
    mean, _ = cem(lambda x: -(x - target.unsqueeze(1)).pow(2).sum((-2, -1)),
                  torch.zeros(3, 4, 2), ((ub - lb) ** 2 / 16).expand(3, 4, 2), lb, ub, s)
    assert torch.allclose(mean, target, atol=0.03)


def test_cem_ranks_a_nan_value_last():
    """A plan whose value is NaN (a diverged model trajectory) is never an elite: with NaN for
    every plan whose first action exceeds 0.2, CEM finds the best finite plan, 0.2 (the objective
    peaks at 0.5, inside the NaN region), instead of drifting into that region (``topk`` ranks NaN
    first)."""
    torch.manual_seed(0)
    s = CEMSettings(horizon=1, population=200, elites=20, iterations=10, momentum=0.1,
                    particles=20)
    lb, ub = -torch.ones(1), torch.ones(1)

    def objective(x):
        v = -(x - 0.5).pow(2).sum((-2, -1))
        return torch.where(x[..., 0, 0] > 0.2, torch.nan, v)

    mean, elite = cem(objective, torch.zeros(2, 1, 1), torch.full((2, 1, 1), 0.25), lb, ub, s)
    assert (elite <= 0.2).all()
    assert torch.allclose(mean, torch.full_like(mean, 0.2), atol=0.03)


class PointMass:
    """s' = s + a in R^2, r = -||s'||^2, a in [-1, 1]^2, never terminal: from s = (0.6, -0.4) the
    best return is 0 (a = -s, then stay); uniform random actions get about -12.6 in expectation."""

    elites = torch.tensor([0])

    def grouped_step(self, obs, action, noise=None):
        nxt = obs + action
        return ModelStep(nxt, -nxt.pow(2).sum(-1), torch.zeros(nxt.shape[:-1], dtype=torch.bool),
                         None, torch.zeros(nxt.shape[:-1], dtype=torch.long))


def test_the_planner_with_true_dynamics_reaches_the_optimal_return():
    torch.manual_seed(0)
    planner = CEMPlanner(PointMass(), 2, CEMSettings(horizon=5, population=500, elites=50,
                                                      iterations=5, momentum=0.1, particles=1))
    s, ret = torch.tensor([[0.6, -0.4]]), 0.0
    for _ in range(5):
        s = s + planner.deterministic(s)
        ret -= float(s.pow(2).sum())
    assert ret > -0.1, ret  # within 0.1 of the optimum 0; standing still gets -2.6


def test_grouped_step_is_the_per_sample_step_of_each_groups_elite():
    torch.manual_seed(0)
    model = DynamicsModel(3, 2, members=5, num_elites=3, hidden=16, layers=2,
                          termination_fn=lambda s: s[:, 0] > 0.5)
    model.elites.copy_(torch.tensor([4, 1, 2]))
    obs, act, noise = torch.randn(3, 6, 3), torch.rand(3, 6, 2) * 2 - 1, torch.randn(3, 6, 4)
    with torch.no_grad():
        grouped = model.grouped_step(obs, act, noise)
        single = model.step(obs.reshape(18, 3), act.reshape(18, 2),
                            member=model.elites.repeat_interleave(6), noise=noise.reshape(18, 4))
    assert torch.allclose(grouped.next_obs.reshape(18, 3), single.next_obs, atol=1e-5)
    assert torch.allclose(grouped.reward.reshape(18), single.reward, atol=1e-5)
    assert torch.equal(grouped.terminated.reshape(18), single.terminated)


def test_particle_returns_stop_at_terminals_and_average_particles():
    class Counter(PointMass):  # reward 1 per step, terminal once s >= 2
        elites = torch.tensor([0, 1])

        def grouped_step(self, obs, action, noise=None):
            nxt = obs + action
            return ModelStep(nxt, torch.ones(nxt.shape[:-1]), nxt[..., 0] >= 2.0, None, None)

    plans = torch.tensor([1.0, 0.5, 0.0]).view(1, 3, 1, 1).expand(1, 3, 4, 1)
    values = particle_returns(Counter(), torch.zeros(1, 1), plans, particles=4)
    # a = 1: terminal at step 2 (s = 2), so 2 rewards; a = 0.5: s = 2 at step 4; a = 0: 4
    assert values.tolist() == [[2.0, 4.0, 4.0]]


def test_config_is_the_published_one_and_checked():
    c = load_config("Hopper-v4", "pets")
    assert (c["pets"]["horizon"], c["pets"]["population"], c["pets"]["elites"], c["pets"]["iterations"],
            c["pets"]["momentum"], c["pets"]["particles"]) == (30, 500, 50, 5, 0.1, 20)
    with pytest.raises(ConfigError, match="multiple of model.elites"):
        load_config("Hopper-v4", "pets", {"pets.particles": 7})


@pytest.mark.parametrize("algo,extra,key", [
    ("pets", ["pets.particles=5"], "model/steps"),
    ("poplin_a", ["poplin.bc_epochs=2"], "poplin/bc_rows"),
    ("poplin_p", [], "poplin/weight_step"),
])
def test_planner_trains_resumes_and_evaluates_through_the_cli(tmp_path, algo, extra, key):
    """PETS, POPLIN-A and POPLIN-P (tests/test_poplin.py) through the shared CLI."""
    out = tmp_path / "run"
    small = ["pets.horizon=3", "pets.population=10", "pets.elites=2", "pets.iterations=2",
             "model.hidden=16", "model.max_steps=20", "model.train_freq=100", *extra]
    tiny = [o for o in TINY if not o.startswith("networks.")]  # a planner has no actor or critic
    proc = run_train(["--env", "InvertedPendulum-v4", "--algo", algo, "--out", str(out),
                      "--logger", "none", *tiny, "steps=400", *small], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    proc = run_train(["--resume", str(out), "--steps", "500"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(out / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["env_steps"]) for r in rows] == [200, 400, 500]
    assert float(rows[-1][key]) > 0 and rows[-1]["eval/return"]
    # the run's own seed and episodes: the planner's evaluation at 500 again, to the bit (its
    # CEM draws from a seeded fork of the RNG and plans from no previous plan)
    proc = subprocess.run([sys.executable, "-m", "mpdp_pl.evaluate", str(out)],
                          capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(next((out / "checkpoints").glob("*.eval.json")).read_text())
    assert result["return_mean"] == pytest.approx(float(rows[-1]["eval/return"]), abs=1e-9)
    proc = subprocess.run([sys.executable, "-m", "mpdp_pl.evaluate", str(out), "--episodes", "1",
                           "--export", str(tmp_path / "pi.pt")],
                          capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode != 0 and "no policy network" in proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "pi.pt").exists()
