"""``improvement.compile=true``: MPDP's farsighted improvement through torch.compile."""

from __future__ import annotations

import csv

import torch

from conftest import run_train
from mpdp_pl.algos.mpdp import MPDP
from mpdp_pl.config import load_config
from mpdp_pl.environment.envs import env_spec, make_env
from mpdp_pl.lookahead.improvement import farsighted_improvement, sample_noise

SMALL = {"data.batch_size": 16, "networks.hidden_sizes": [16, 16], "model.hidden": 16, "improvement.horizon": 3}


def test_compiled_improvement_equals_eager_in_loss_and_gradients():
    torch.manual_seed(0)
    cfg = load_config("Hopper-v4", "mpdp", {**SMALL, "improvement.compile": True})
    env = make_env(cfg, seed=0)
    module = MPDP(cfg, env_spec(env))
    obs = env.rollout(16, break_when_any_done=False)["observation"]
    env.close()
    assert module.improve is not farsighted_improvement
    noise = sample_noise(module.dynamics, 3, 16, module.actor.action_dim, obs.device)
    results = []
    for fn in (farsighted_improvement, module.improve):
        module.actor.zero_grad()
        r = fn(obs, module.actor, module.critic, module.dynamics, module.alpha, 0.5, 0.99,
               torch.tensor(2.0), 3, noise=noise, terminal_critic=True)
        r.loss.backward()
        results.append((r.loss.detach(), [p.grad.clone() for p in module.actor.parameters()],
                        r.diagnostics["realized_horizon"]))
    (l0, g0, h0), (l1, g1, h1) = results
    torch.testing.assert_close(l1, l0, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(h1, h0)
    for a, b in zip(g1, g0):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    assert any(g.abs().sum() > 0 for g in g0)


def test_a_compiled_mpdp_run_trains_end_to_end(tmp_path):
    out = tmp_path / "run"
    proc = run_train(["--env", "InvertedPendulum-v4", "--algo", "mpdp", "--steps", "300", "--out", str(out),
                      "--logger", "none", "improvement.compile=true", "data.init_random_steps=100",
                      "model.train_freq=100", "model.max_steps=20", "eval.every=300",
                      "eval.episodes=1", "logging.every=100", "trainer.num_threads=1",
                      *(f"{k}={v}".replace(" ", "") for k, v in SMALL.items())], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(out / "metrics.csv") as f:
        row = list(csv.DictReader(f))[-1]
    assert int(row["env_steps"]) == 300
    assert float(row["train/realized_horizon"]) > 0  # farsighted updates ran (not SAC's fallback)
