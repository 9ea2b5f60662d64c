"""Data-parallel training (mpdp_pl/runtime/distributed.py): a real 2-process DDP run on CPU (gloo), and
one 2-rank update of every optimizer against a single-process update on the union of the two
ranks' batches."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from conftest import ROOT, offline_env
from mpdp_pl.algos import losses
from mpdp_pl.algos.mpdp import MPDP
from mpdp_pl.config import load_config
from mpdp_pl.runtime.distributed import average_gradients, gather_across_ranks, ranks
from mpdp_pl.environment.envs import env_spec, make_env
from mpdp_pl.lookahead.improvement import farsighted_improvement
from mpdp_pl.models.dynamics import DynamicsModel
from mpdp_pl.models.fitting import _loss, holdout_scores, param_groups

SMALL = {"data.batch_size": 32, "networks.hidden_sizes": [32, 32], "model.hidden": 32, "improvement.horizon": 3}
DDP_RUN = ["steps=400", "data.init_random_steps=100", "model.train_freq=100", "data.batch_size=32",
           "networks.hidden_sizes=[32,32]", "model.hidden=32", "model.max_steps=30", "improvement.horizon=3",
           "eval.every=200", "eval.episodes=1", "durability.checkpoint_every=200", "logging.every=100",
           "logger=wandb", "trainer.num_threads=1", "trainer.strategy=ddp", "trainer.devices=2",
           "trainer.accelerator=cpu"]


def test_two_process_ddp_run_keeps_ranks_identical_and_counts_all_env_steps(tmp_path):
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, str(ROOT / "tests" / "ddp_worker.py"), str(out), *DDP_RUN],
                          cwd=tmp_path, capture_output=True, text=True, timeout=900,
                          env=offline_env(tmp_path))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    s = {(r, t): torch.load(out / f"rank{r}-{t}.pt", weights_only=False)
         for r in (0, 1) for t in ("initial", "final")}
    final0, final1, initial0 = s[0, "final"]["module"], s[1, "final"]["module"], s[0, "initial"]["module"]
    assert s[0, "final"]["world_size"] == s[1, "final"]["world_size"] == 2
    # the whole state is equal across ranks: every network, the targets, normalizers, elites, u_T
    assert set(final0) == set(final1)
    unequal = [k for k in final0 if not torch.equal(final0[k], final1[k])]
    assert not unequal, unequal
    for k in ("dynamics.input_norm.mean", "dynamics.elites", "u_T", "critic_target.net.layers.0.weight"):
        assert k in final0
    # and so are the optimizers' moments
    for opt0, opt1 in zip(s[0, "final"]["optimizers"], s[1, "final"]["optimizers"]):
        for p, st in opt0["state"].items():
            for name, v in st.items():
                assert torch.equal(v, opt1["state"][p][name]), (p, name)
    # the parameters moved (every optimized part) and the data-decided values were set
    for prefix in ("actor.", "critic.", "critic_target.", "dynamics.ensemble.", "log_alpha"):
        assert any(not torch.equal(final0[k], initial0[k]) for k in final0 if k.startswith(prefix)), prefix
    assert not torch.equal(final0["dynamics.input_norm.std"], initial0["dynamics.input_norm.std"])
    assert float(final0["u_T"]) > 0
    # the ranks collected different transitions, 200 each; the global count is their sum
    b0, b1 = s[0, "final"]["buffer"], s[1, "final"]["buffer"]
    assert b0["observation"].shape[0] == b1["observation"].shape[0] == 200
    assert not torch.equal(b0["observation"], b1["observation"])
    assert s[0, "final"]["counters"]["env_steps"] == s[1, "final"]["counters"]["env_steps"] == 400
    # only rank 0 evaluates and writes: one metrics.csv with one row per evaluation, global steps
    rows = (out / "metrics.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == ["200", "400"]
    runs = list((out / "wandb").glob("offline-run-*"))  # one W&B run (offline: no key here)
    assert len(runs) == 1 and list(runs[0].glob("run-*.wandb")), runs
    # checkpoints hold every rank's buffer
    ckpt = out / "checkpoints" / "step000000400"
    assert (ckpt / "state.pt").exists() and (ckpt / "replay_buffer").is_dir()
    assert (ckpt / "rank1" / "replay_buffer").is_dir() and (ckpt / "rank1" / "rng.pt").exists()

    # resuming restores each rank's own buffer and continues with both ranks in step
    proc = subprocess.run([sys.executable, str(ROOT / "tests" / "ddp_worker.py"), str(out), "--resume",
                           *DDP_RUN, "steps=600"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=900, env=offline_env(tmp_path))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for r, before in ((0, b0), (1, b1)):
        after = torch.load(out / f"rank{r}-final.pt", weights_only=False)
        assert after["counters"]["env_steps"] == 600
        assert after["buffer"]["observation"].shape[0] == 300
        assert torch.equal(after["buffer"]["observation"][:200], before["observation"])
    r0, r1 = (torch.load(out / f"rank{r}-final.pt", weights_only=False)["module"] for r in (0, 1))
    assert all(torch.equal(r0[k], r1[k]) for k in r0)
    assert [r.split(",")[0] for r in (out / "metrics.csv").read_text().splitlines()[1:]] == ["200", "400", "600"]


# ------------------------------------------------------------- one update, 2 ranks vs union
def _setup():
    torch.manual_seed(0)
    cfg = load_config("InvertedPendulum-v4", "mpdp", SMALL)
    env = make_env(cfg, seed=0)
    module = MPDP(cfg, env_spec(env))
    batches = []
    for rank in (0, 1):  # real transitions, different per rank
        env.set_seed(100 + rank)
        batches.append(env.rollout(64, break_when_any_done=False))
    env.close()
    # a model fitted on both ranks' data (as it would be), so the unroll is meaningful
    data = torch.cat(batches)
    x = torch.cat([data["observation"], data["action"]], -1)
    y = DynamicsModel.targets(data["observation"], data["next", "observation"], data["next", "reward"].squeeze(-1))
    module.dynamics.input_norm.fit(x)
    module.dynamics.target_norm.fit(y)
    module.u_T.fill_(5.0)
    return cfg, module, batches


def _optimizers(module, cfg):
    return {"critic": torch.optim.SGD(module.critic.parameters(), lr=0.1),
            "actor": torch.optim.SGD(module.actor.parameters(), lr=0.1),
            "alpha": torch.optim.SGD([module.log_alpha], lr=0.1),
            "model": torch.optim.SGD(param_groups(module.dynamics, 0.1, cfg["model"]["weight_decay"]))}


def _loss_of(part: str, module, cfg, batch, seed: int) -> torch.Tensor:
    """The loss each optimizer steps on, for one rank's batch and noise seed."""
    torch.manual_seed(seed)
    if part == "critic":
        return module.critic_loss(batch)[0]
    if part in ("actor", "alpha"):
        result = farsighted_improvement(
            batch["observation"], module.actor, module.critic, module.dynamics, module.alpha,
            cfg["improvement"]["beta"], cfg["critic"]["gamma"], module.u_T, module.horizon, terminal_critic=True)
        if part == "actor":
            return result.loss
        return losses.alpha_loss(module.log_alpha, result.log_prob0, module.target_entropy)
    d = module.dynamics
    x = d.input_norm(torch.cat([batch["observation"], batch["action"]], -1))
    y = d.target_norm(DynamicsModel.targets(batch["observation"], batch["next", "observation"],
                                            batch["next", "reward"].squeeze(-1)))
    k = d.members
    return _loss(d, x.expand(k, *x.shape), y.expand(k, *y.shape),
                 batch["next", "terminated"].float().reshape(1, -1).expand(k, -1))


PARTS = ("critic", "actor", "alpha", "model")


def _params(module, part):
    return {"critic": list(module.critic.parameters()), "actor": list(module.actor.parameters()),
            "alpha": [module.log_alpha], "model": list(module.dynamics.parameters())}[part]


def _rank_main(rank: int, init_file: str, result_file: str) -> None:
    torch.set_num_threads(1)
    cfg, module, batches = _setup()  # before the group: the same start as the single process
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    opts = _optimizers(module, cfg)
    for part in PARTS:  # one update of each optimizer, in Algorithm 2's order
        loss = _loss_of(part, module, cfg, batches[rank], seed=1000 + rank)
        opts[part].zero_grad()
        loss.backward()
        flag = average_gradients(_params(module, part), loss)
        assert torch.isfinite(flag)
        opts[part].step()
    # data-decided values: u over both ranks' held-out data, holdout scores averaged
    u = gather_across_ranks(module.dynamics.ovr_error(batches[rank]["observation"], batches[rank]["action"]))
    x = module.dynamics.input_norm(torch.cat([batches[rank]["observation"], batches[rank]["action"]], -1))
    y = module.dynamics.target_norm(DynamicsModel.targets(
        batches[rank]["observation"], batches[rank]["next", "observation"], batches[rank]["next", "reward"].squeeze(-1)))
    mse, _ = holdout_scores(module.dynamics, x, y, None, ranks())
    norm = module.dynamics.input_norm
    norm.fit(torch.cat([batches[rank]["observation"], batches[rank]["action"]], -1), ranks())
    if rank == 0:
        torch.save({"state": module.state_dict(), "u": u, "mse": mse,
                    "norm": (norm.mean.clone(), norm.std.clone())}, result_file)
    dist.destroy_process_group()


def test_one_two_rank_update_equals_one_update_on_the_union_of_both_batches():
    with tempfile.TemporaryDirectory() as tmp:
        init_file, result_file = os.path.join(tmp, "init"), os.path.join(tmp, "result.pt")
        mp.spawn(_rank_main, args=(init_file, result_file), nprocs=2, join=True)
        got = torch.load(result_file, weights_only=False)
    # single process: the mean loss over the union of both batches (each half with its rank's
    # noise: the mean over 2B samples is the mean of the two B-sample means)
    torch.set_num_threads(1)
    cfg, module, batches = _setup()
    before = {k: v.clone() for k, v in module.state_dict().items()}
    opts = _optimizers(module, cfg)
    for part in PARTS:
        loss = sum(_loss_of(part, module, cfg, batches[r], seed=1000 + r) for r in (0, 1)) / 2
        opts[part].zero_grad()
        loss.backward()
        opts[part].step()
    for k, v in module.state_dict().items():
        torch.testing.assert_close(got["state"][k], v, rtol=1e-5, atol=1e-6, msg=k)
    moved = [k for k, v in module.state_dict().items() if not torch.equal(v, before[k])]
    assert any(k.startswith("actor.") for k in moved) and any(k.startswith("dynamics.ensemble") for k in moved)
    assert "log_alpha" in moved and any(k.startswith("critic.") for k in moved)
    # u_T's data: both ranks' u; holdout scores: the mean over both; normalizer: the union's
    u = torch.cat([module.dynamics.ovr_error(b["observation"], b["action"]) for b in batches])
    torch.testing.assert_close(got["u"], u, rtol=1e-5, atol=1e-6)
    x_all = torch.cat([torch.cat([b["observation"], b["action"]], -1) for b in batches])
    d = module.dynamics
    y_all = torch.cat([DynamicsModel.targets(b["observation"], b["next", "observation"],
                                             b["next", "reward"].squeeze(-1)) for b in batches])
    mse, _ = holdout_scores(d, d.input_norm(x_all), d.target_norm(y_all), None)
    torch.testing.assert_close(got["mse"], mse, rtol=1e-5, atol=1e-6)
    d.input_norm.fit(x_all)
    torch.testing.assert_close(got["norm"][0], d.input_norm.mean, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got["norm"][1], d.input_norm.std, rtol=1e-5, atol=1e-6)


def test_several_devices_without_a_strategy_get_this_apps_ddp(tmp_path):
    """``trainer.devices=2`` alone: Lightning's "auto" would pick its own DDP, whose wrapper
    these modules cannot run under (it failed at the first update); the run gets
    :class:`GradientAveragingDDP`."""
    from mpdp_pl.run import make_trainer
    from mpdp_pl.runtime.distributed import GradientAveragingDDP

    cfg = load_config("InvertedPendulum-v4", "sac", {"trainer.devices": 2, "trainer.accelerator": "cpu"})
    trainer = make_trainer(cfg, tmp_path, "auto")
    assert isinstance(trainer.strategy, GradientAveragingDDP) and trainer.world_size == 2
