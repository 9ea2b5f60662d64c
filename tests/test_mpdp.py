"""MPDP end to end: every paper task's config through one model epoch and one farsighted
update in-process, and a tiny real run of ``python train.py --env Humanoid-v4``."""

from __future__ import annotations

import csv

import pytest
import torch

from conftest import offline_env, run_train, model_settings
from mpdp_pl.algos.mpdp import MPDP, set_threshold
from mpdp_pl.config import load_config
from mpdp_pl.environment.envs import env_spec, make_env
from mpdp_pl.lookahead.improvement import farsighted_improvement
from mpdp_pl.models.fitting import param_groups, train_dynamics

TASKS = ["InvertedPendulum-v4", "Hopper-v4", "Walker2d-v4", "HalfCheetah-v4", "Ant-v4",
         "Humanoid-v4"]


def test_mpdp_on_the_plan_value_critic_is_the_default_algorithm():
    assert load_config()["algo"] == "mpdp_pv"
    assert load_config("Hopper-v4")["improvement"]["horizon"] == 9  # conf/algo_env/mpdp_pv_Hopper.yaml
    assert load_config("Hopper-v4", "mpdp")["improvement"]["horizon"] == 15  # conf/algo_env/mpdp_Hopper.yaml
    assert load_config("Hopper-v4", "sac")["improvement"]["horizon"] == 10  # the table is MPDP's only


@pytest.mark.parametrize("env_id", TASKS)
def test_task_config_through_one_model_epoch_and_one_farsighted_update(env_id):
    torch.manual_seed(0)
    cfg = load_config(env_id, "mpdp", {"data.batch_size": 32})
    env = make_env(cfg, seed=0)
    spec = env_spec(env)
    module = MPDP(cfg, spec)
    data = env.rollout(300, break_when_any_done=False)  # uniform random actions, real env
    env.close()
    nxt = data["next"]
    opt = torch.optim.Adam(param_groups(module.dynamics, cfg["model"]["lr"], cfg["model"]["weight_decay"]))
    metrics = train_dynamics(module.dynamics, data["observation"], data["action"],
                             nxt["observation"], nxt["reward"].squeeze(-1),
                             nxt["terminated"].squeeze(-1), opt,
                             model_settings(batch_size=64, max_epochs=1))
    assert metrics["model/epochs"] == 1 and metrics["model/holdout_mse"] > 0
    assert module.actor.num_heads == cfg["improvement"]["horizon"]
    out = farsighted_improvement(data["observation"][:32], module.actor, module.critic,
                                 module.dynamics, module.alpha, cfg["improvement"]["beta"], cfg["critic"]["gamma"],
                                 float("inf"), cfg["improvement"]["horizon"])
    out.loss.backward()
    assert torch.isfinite(out.loss)
    grads = [p.grad for p in module.actor.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


def test_humanoid_smoke_run(tmp_path):
    out = tmp_path / "run"
    proc = run_train(["--env", "Humanoid-v4", "--algo", "mpdp", "--steps", "260", "--out", str(out),
                      "data.init_random_steps=200", "model.train_freq=30", "model.max_steps=10",
                      "data.batch_size=32", "eval.every=130", "eval.episodes=1", "improvement.horizon=3",
                      "trainer.num_threads=1"], cwd=tmp_path, env=offline_env(tmp_path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(out / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["env_steps"]) for r in rows] == [130, 260]
    last = rows[-1]
    # every alive sample-step is counted (its reward entered J), cut, or ended by a predicted
    # terminal: realized horizon = alive steps - cuts - terminals, all from the same update
    realized, live = float(last["train/realized_horizon"]), float(last["train/live_rows"]) * 3
    cuts = sum(float(last[f"train/cut_frac/{t}"]) for t in range(3))
    assert 1.0 <= live <= 3.0  # every sample is alive at t = 0
    assert 0.0 <= realized <= live - cuts + 1e-5
    assert float(last["model/u_T"]) > 0  # calibrated on held-out real transitions
    assert last["train/cut_frac/2"] != "" and last["train/actor_grad_norm"] != ""
    assert (out / "wandb").exists()  # the default logger, offline here


@pytest.mark.parametrize("u_T", ["auto", 0.7, float("inf")])
def test_u_T_calibrated_on_held_out_real_transitions_or_fixed(u_T):
    cfg = load_config("Hopper-v4", "mpdp", {"improvement.u_T": u_T, "improvement.u_T_quantile": 0.8})
    env = make_env(cfg, seed=1)
    module = MPDP(cfg, env_spec(env))
    held_out = env.rollout(200, break_when_any_done=False)
    env.close()
    set_threshold(module, held_out)
    u = module.dynamics.ovr_error(held_out["observation"], held_out["action"]).detach()
    if u_T == "auto":
        expected = torch.quantile(u, 0.8)
        assert 0.15 < (u >= module.u_T).float().mean() < 0.25
    else:
        expected = torch.tensor(u_T)
    torch.testing.assert_close(module.u_T, expected)
    # the penalty is in units of the held-out quantile, whatever u_T is
    torch.testing.assert_close(module.u_ref, torch.quantile(u, 0.8))
    torch.testing.assert_close(module.penalty_weight(), cfg["improvement"]["beta"] / torch.quantile(u, 0.8))
    assert module.recorder.latest["model/u_T"] is module.u_T or torch.equal(
        module.recorder.latest["model/u_T"], module.u_T)


def test_checkpoints_of_older_versions_load():
    """A state dict from before the threshold's rename (``u_threshold``) and from while the
    first-step rule existed (its ``u_first_ref``) loads: the threshold keeps its value."""
    cfg = load_config("Hopper-v4", "mpdp", {"improvement.u_T": 0.7})
    env = make_env(cfg, seed=0)
    spec = env_spec(env)
    env.close()
    old = MPDP(cfg, spec).state_dict()
    old["u_threshold"] = old.pop("u_T").fill_(3.5)
    old["u_first_ref"] = torch.tensor(2.0)
    module = MPDP(cfg, spec)
    module.load_state_dict(old)
    assert module.u_T.item() == 3.5 and "u_first_ref" not in module.state_dict()


def test_hopper_run_with_every_switch(tmp_path):
    """A real run through one policy, LayerNorm critics and a cut at a high quantile."""
    out = tmp_path / "run"
    proc = run_train(["--env", "Hopper-v4", "--algo", "mpdp", "--steps", "400", "--out", str(out), "--logger", "csv",
                      "data.init_random_steps=200", "model.train_freq=100", "model.max_steps=20",
                      "data.batch_size=32", "eval.every=200", "eval.episodes=2", "improvement.horizon=4",
                      "improvement.single_policy=true", "critic.layernorm=true", "improvement.u_T_quantile=0.9",
                      "trainer.num_threads=1"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(out / "metrics.csv") as f:
        last = list(csv.DictReader(f))[-1]
    assert 0 < float(last["train/realized_horizon"]) <= 4
    assert abs(float(last["eval/q_bias"])) < 1e4
    # measured open loop at the realized horizon (rounded), on unseen real transitions
    assert float(last["model/open_loop_k"]) in (1.0, 2.0, 3.0, 4.0)  # Hmax = 4 here
    assert 0 < float(last["model/open_loop_error"]) < 100


def test_horizon_and_cut_fractions_are_means_over_the_logging_interval():
    cfg = load_config("Hopper-v4", "mpdp", {"improvement.horizon": 2})
    env = make_env(cfg, seed=0)
    module = MPDP(cfg, env_spec(env))
    env.close()
    for h in (1.0, 2.0, 6.0):
        module.record_mean({"train/realized_horizon": torch.tensor(h)})
    assert module.recorder.scalars()["train/realized_horizon"] == pytest.approx(3.0)  # open interval
    module.recorder.close_interval()  # a push to the logger
    assert module.recorder.scalars()["train/realized_horizon"] == pytest.approx(3.0)
    module.record_mean({"train/realized_horizon": torch.tensor(10.0)})
    assert module.recorder.scalars()["train/realized_horizon"] == pytest.approx(10.0)  # a new interval
