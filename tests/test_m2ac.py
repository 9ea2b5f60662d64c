"""M2AC (mpdp_pl/algos/m2ac.py) against a per-row hand computation: each row's uncertainty is
the serving member's KL to the moment-matched other elites, the rows stored at step h are the
floor(N w_h) least uncertain that no terminal ended, with reward r - 0.001 u; and a run through
the shared CLI that checkpoints and resumes."""

from __future__ import annotations

import csv
import math

import torch

from conftest import TINY, run_train
from mpdp_pl.algos.m2ac import keep_fraction, masked_rollout
from mpdp_pl.config import load_config
from mpdp_pl.models.dynamics import DynamicsModel


def test_keep_fractions_are_m2acs():
    assert [keep_fraction(h, 10, 0.5) for h in (0, 5, 9)] == [10 / 22, 5 / 22, 1 / 22]
    assert keep_fraction(0, 1, 0.5) == 0.5
    c = load_config("Hopper-v4", "m2ac")
    assert (c["m2ac"]["horizon"], c["m2ac"]["penalty"], c["rollouts"]["real_ratio"], c["updates"]["critic_per_step"],
            c["rollouts"]["batch_size"]) == (10, 0.001, 0.05, 30.0, 100000)


def hand_kl(mean, var, m, b):
    """KL of member m (row b) to the moment-matched Gaussian of the other rows of ``mean``."""
    rest = [j for j in range(mean.shape[0]) if j != m]
    mu_r = sum(mean[j, b] for j in rest) / len(rest)
    var_r = sum(var[j, b] for j in rest) / len(rest) + sum((mean[j, b] - mu_r) ** 2 for j in rest) / len(rest)
    mu, v = mean[m, b], var[m, b]
    return float((0.5 * (torch.log(var_r / v) + (v + (mu - mu_r) ** 2) / var_r - 1.0)).sum())


def test_stored_rows_and_penalties_equal_a_per_row_computation():
    torch.manual_seed(0)
    model = DynamicsModel(3, 2, members=5, num_elites=3, hidden=16, layers=2,
                          termination_fn=lambda s: s[:, 0] > 1.0)
    model.elites.copy_(torch.tensor([4, 0, 2]))
    n, horizon = 40, 4
    trace = []
    out = masked_rollout(model, lambda s: torch.tanh(s[:, :2]), torch.randn(n, 3) * 0.5,
                         horizon, penalty=0.001, keep_h1=0.5, trace=trace)
    expected, ended = [], torch.zeros(n, dtype=torch.bool)
    for h, (obs, action, st, stored) in enumerate(trace):
        with torch.no_grad():
            mean, var = model.gaussians(obs, action)
        mean, var = mean[model.elites], var[model.elites]          # the elites, in their order
        pos = [model.elites.tolist().index(int(m)) for m in st.member]
        u = torch.tensor([hand_kl(mean, var, pos[b], b) for b in range(n)])
        assert torch.allclose(st.u_member, u, rtol=1e-4, atol=1e-6)
        k = math.floor(n * (horizon - h) / (2 * (horizon + 1)))
        keep = torch.zeros(n, dtype=torch.bool)
        keep[sorted(range(n), key=lambda b: float(u[b]))[:k]] = True
        assert torch.equal(stored, keep & ~ended)
        for b in range(n):
            if keep[b] and not ended[b]:
                expected.append((obs[b], float(st.reward[b] - 0.001 * u[b])))
        ended = ended | st.terminated
    assert any(t[2].terminated.any() for t in trace)  # a terminal ended some rows
    assert out.shape[0] == len(expected) > 0
    assert torch.allclose(out["observation"], torch.stack([e[0] for e in expected]))
    assert torch.allclose(out["next", "reward"].squeeze(-1), torch.tensor([e[1] for e in expected]),
                          atol=1e-6)


def test_m2ac_trains_and_resumes_through_the_cli(tmp_path):
    out = tmp_path / "run"
    proc = run_train(["--env", "Hopper-v4", "--algo", "m2ac", "--out", str(out), "--logger", "none",
                      *TINY, "model.hidden=16", "model.max_steps=20", "model.train_freq=100", "rollouts.batch_size=200",
                      "m2ac.horizon=3", "updates.critic_per_step=2", "updates.actor_per_step=2"],
                     cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    proc = run_train(["--resume", str(out), "--steps", "700"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(out / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["env_steps"]) for r in rows][-2:] == [600, 700]
    # 200 rollouts of 3 steps keep 200 * (3 + 2 + 1) / 8 = 150 rows per refill at most, after
    # each of the 6 model trainings (env steps 200, 300, ..., 700), all within MBPO's pool
    assert 0 < float(rows[-1]["train/model_buffer_size"]) <= 150 * 6
    assert float(rows[-1]["train/rollout_length"]) == 3
