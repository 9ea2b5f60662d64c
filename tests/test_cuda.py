"""The CUDA path against the CPU (marked ``cuda``; skipped where no GPU is present).

Each computation runs on the CPU and on ``MPDP_CHECK_DEVICE`` (default ``cuda``) from the same
weights, inputs and noise, in float32 with TF32 off, and must agree within ``RTOL``/``ATOL``
(float32 reductions in another order: about 1e-6 relative per op, so 1e-4 over an unroll).
``MPDP_CHECK_DEVICE=cpu`` runs the same tests CPU against CPU: how ``bench/gpu_check.sh
--device cpu`` proves itself on a machine without a GPU.
"""

from __future__ import annotations

import copy
import csv
import os

import pytest
import torch

from conftest import TINY, run_train
from mpdp_pl.algos import losses
from mpdp_pl.lookahead.improvement import farsighted_improvement, sample_noise
from mpdp_pl.models.actor import MultiHeadActor
from mpdp_pl.models.critic import TwinQ, make_target, polyak_update
from mpdp_pl.models.dynamics import DynamicsModel, ensemble_nll

DEVICE = os.environ.get("MPDP_CHECK_DEVICE", "cuda")
RTOL, ATOL = 1e-4, 1e-5
OBS, ACT, B, H = 11, 3, 256, 5

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(DEVICE.startswith("cuda") and not torch.cuda.is_available(),
                       reason="no CUDA device"),
]


@pytest.fixture(autouse=True)
def no_tf32():
    if torch.cuda.is_available():
        before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
        yield
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before
    else:
        yield


def hopper_sized_parts(seed=0):
    """Hopper's shapes: a 5-head actor and twin critics of 256x256, 7 members of 200x4."""
    torch.manual_seed(seed)
    actor = MultiHeadActor(OBS, ACT, [256, 256], H)
    critic = TwinQ(OBS, ACT, [256, 256])
    model = DynamicsModel(OBS, ACT, members=7, num_elites=5, hidden=200, layers=4,
                          termination_fn=lambda s: s[..., 0] > 1.5)
    with torch.no_grad():
        for p in model.ensemble.parameters():
            p.add_(0.05 * torch.randn_like(p))
    model.elites.copy_(torch.tensor([0, 1, 3, 4, 6]))
    return actor, critic, model


def on(device, *modules):
    return [copy.deepcopy(m).to(device) for m in modules]


def close(a, b):
    torch.testing.assert_close(a.cpu(), b.cpu(), rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("form", ["static", "live"])
def test_farsighted_improvement_matches_cpu(form):
    actor, critic, model = hopper_sized_parts()
    obs = torch.randn(B, OBS)
    noise = sample_noise(model, H, B, ACT, "cpu")
    with torch.no_grad():
        u_T = torch.quantile(model.ovr_error(obs, torch.zeros(B, ACT)), 0.7).item()
    results = []
    for device in ("cpu", DEVICE):
        a, c, m = on(device, actor, critic, model)
        moved = type(noise)(*(t.to(device) for t in noise))
        out = farsighted_improvement(obs.to(device), a, c, m, torch.tensor(0.2, device=device), 0.5,
                                     0.99, u_T, H, noise=moved, terminal_critic=True, form=form)
        grads = torch.autograd.grad(out.loss, list(a.parameters()))
        results.append((out, grads))
    (cpu, cpu_grads), (dev, dev_grads) = results
    close(cpu.loss, dev.loss)
    for g, h in zip(cpu_grads, dev_grads):
        close(g, h)
    close(cpu.diagnostics["realized_horizon"], dev.diagnostics["realized_horizon"])
    assert 0 < cpu.diagnostics["realized_horizon"] < H  # cuts and continuations both happen


def test_critic_update_matches_cpu():
    actor, critic, model = hopper_sized_parts(1)
    target_net = make_target(critic)
    batch = {"observation": torch.randn(B, OBS), "action": torch.rand(B, ACT) * 2 - 1,
             "next": {"observation": torch.randn(B, OBS), "reward": torch.randn(B, 1),
                      "terminated": torch.rand(B, 1) < 0.1}}
    from tensordict import TensorDict
    batch = TensorDict(batch, batch_size=[B])
    eps = torch.randn(1, B, ACT)
    params = []
    for device in ("cpu", DEVICE):
        a, c, t, m = on(device, actor, critic, target_net, model)
        bd, alpha = batch.to(device), torch.tensor(0.2, device=device)
        opt = torch.optim.Adam(c.parameters(), lr=3e-4)
        nxt = bd["next"]
        na, nlp = a.sample(nxt["observation"], 0, eps[0].to(device))
        y = losses.soft_td_target(nxt["reward"].squeeze(-1), nxt["terminated"].squeeze(-1),
                                  t(nxt["observation"], na), nlp, alpha, 0.99)
        loss = losses.critic_loss(c(bd["observation"], bd["action"]), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        polyak_update(t, c, 0.005)
        params.append((loss.detach(), [p.detach() for p in (*c.parameters(), *t.parameters())]))
    close(params[0][0], params[1][0])
    for p, q in zip(params[0][1], params[1][1]):
        close(p, q)
    # the step moved the critic (equal weights from a step that did nothing would prove little)
    before = list(critic.parameters())
    assert any(not torch.equal(b, p.cpu()) for b, p in zip(before, params[1][1]))


def test_model_training_step_matches_cpu():
    _, _, model = hopper_sized_parts(2)
    obs, action = torch.randn(B, OBS), torch.rand(B, ACT) * 2 - 1
    target = torch.randn(B, OBS + 1)
    out = []
    for device in ("cpu", DEVICE):
        (m,) = on(device, model)
        opt = torch.optim.Adam(m.parameters(), lr=1e-3)
        mean, log_var, _ = m.forward_normalized(obs.to(device), action.to(device))
        loss = ensemble_nll(mean, log_var, target.to(device).expand(7, B, OBS + 1), m.ensemble)
        opt.zero_grad()
        loss.backward()
        opt.step()
        out.append((loss.detach(), [p.detach() for p in m.parameters()]))
    close(out[0][0], out[1][0])
    for p, q in zip(out[0][1], out[1][1]):
        close(p, q)
    assert torch.isfinite(out[0][0]) and any(
        not torch.equal(b, p.cpu()) for b, p in zip(model.parameters(), out[1][1]))


def test_rollout_model_steps_match_cpu():
    """MBPO's and MPPVE's rollouts step the model with ``sample_step`` (one elite per sample):
    with the same assignment and noise it gives the same step on both devices, and a branched
    rollout on the device stays there and stops at predicted terminals."""
    from mpdp_pl.lookahead.rollouts import branched_rollout

    actor, _, model = hopper_sized_parts(3)
    obs, action = torch.randn(B, OBS), torch.rand(B, ACT) * 2 - 1
    assignment = (torch.randperm(B), torch.tensor([2]))
    noise = torch.randn(B, OBS + 1)
    steps = []
    for device in ("cpu", DEVICE):
        (m,) = on(device, model)
        steps.append(m.sample_step(obs.to(device), action.to(device), noise=noise.to(device),
                                   assignment=tuple(x.to(device) for x in assignment)))
    for x, y in zip(steps[0][:3], steps[1][:3]):
        close(x.float(), y.float())
    torch.testing.assert_close(steps[0].member, steps[1].member.cpu())
    a, m = on(DEVICE, actor, model)
    rollout = branched_rollout(m, lambda s: a.sample(s)[0], obs.to(DEVICE), 4)
    assert rollout["observation"].device.type == torch.device(DEVICE).type
    assert torch.isfinite(rollout["next", "observation"]).all()


def _rows(path):
    with open(path / "metrics.csv") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("algo", ["mpdp", "sac"])
def test_train_and_resume_on_the_device(tmp_path, algo):
    accel = "cpu" if DEVICE == "cpu" else "gpu"
    out = tmp_path / "run"
    args = ["--env", "Hopper-v4", "--algo", algo, "--out", str(out), "--logger", "none", *TINY,
            "steps=400", "data.init_random_steps=200", "model.train_freq=100", f"trainer.accelerator={accel}",
            *(["improvement.horizon=3", "model.max_steps=20"] if algo == "mpdp" else [])]
    proc = run_train(args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert [int(r["env_steps"]) for r in _rows(out)] == [200, 400]
    proc = run_train(["--resume", str(out), "--steps", "600"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert [int(r["env_steps"]) for r in _rows(out)] == [200, 400, 600]
    assert all(r["eval/return"] for r in _rows(out))


def test_a_cpu_checkpoint_resumes_on_the_device(tmp_path):
    out = tmp_path / "run"
    proc = run_train(["--env", "Hopper-v4", "--algo", "mpdp", "--out", str(out), "--logger", "none", *TINY,
                      "steps=400", "data.init_random_steps=200", "model.train_freq=100", "improvement.horizon=3",
                      "model.max_steps=20", "trainer.accelerator=cpu"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    accel = "cpu" if DEVICE == "cpu" else "gpu"
    proc = run_train(["--resume", str(out), "--steps", "600", f"trainer.accelerator={accel}"],
                     cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert [int(r["env_steps"]) for r in _rows(out)] == [200, 400, 600]


@pytest.mark.skipif(not DEVICE.startswith("cuda"), reason="host syncs exist on CUDA only")
def test_the_update_math_never_syncs_with_the_host():
    """The hot path of an update (the static unroll, its backward and Adam step, the soft
    TD critic target and loss, Polyak averaging) under CUDA's sync debug mode: any op that waits
    for the host raises."""
    actor, critic, model = hopper_sized_parts(4)
    a, c, m = on(DEVICE, actor, critic, model)
    t = make_target(c)
    opt_a = torch.optim.Adam(a.parameters(), lr=3e-4, capturable=True)
    opt_c = torch.optim.Adam(c.parameters(), lr=3e-4, capturable=True)
    from tensordict import TensorDict
    batch = TensorDict({"observation": torch.randn(B, OBS), "action": torch.rand(B, ACT),
                        "next": {"observation": torch.randn(B, OBS), "reward": torch.randn(B, 1),
                                 "terminated": torch.zeros(B, 1, dtype=torch.bool)}},
                       batch_size=[B]).to(DEVICE)
    alpha, u_T = torch.tensor(0.2, device=DEVICE), torch.tensor(50.0, device=DEVICE)
    for _ in range(2):  # the first pass warms up (allocations, lazy inits)
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            out = farsighted_improvement(batch["observation"], a, c, m, alpha, 0.5, 0.99, u_T, H,
                                         form="static")
            opt_a.zero_grad()
            out.loss.backward()
            torch.nn.utils.clip_grad_norm_(a.parameters(), 10.0)
            opt_a.step()
            nxt = batch["next"]
            na, nlp = a.sample(nxt["observation"], 0)
            y = losses.soft_td_target(nxt["reward"].squeeze(-1), nxt["terminated"].squeeze(-1),
                                      t(nxt["observation"], na), nlp, alpha, 0.99)
            loss = losses.critic_loss(c(batch["observation"], batch["action"]), y)
            opt_c.zero_grad()
            loss.backward()
            opt_c.step()
            polyak_update(t, c, 0.005)
        finally:
            torch.cuda.set_sync_debug_mode(0)
    torch.cuda.synchronize()
    assert torch.isfinite(out.loss)


@pytest.mark.skipif(not DEVICE.startswith("cuda"), reason="host syncs exist on CUDA only")
def test_scaled_critic_bounds_never_sync_with_the_host():
    """critic.scale's running bounds (DHMBPO's update_critic_bound), updated every critic update:
    the quantiles and the lerp under CUDA's sync debug mode."""
    c = TwinQ(OBS, ACT, [256, 256], scaled=True).to(DEVICE)
    soft_reward = torch.randn(B, device=DEVICE)
    for _ in range(2):  # the first call sets the bounds, the second lerps them
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            c.update_bounds(soft_reward, 0.99, 3e-4)
        finally:
            torch.cuda.set_sync_debug_mode(0)
    expected = torch.quantile(soft_reward.cpu(), torch.tensor([0.01, 0.99])) / 0.01
    assert torch.allclose(c.q_bounds.cpu(), expected, rtol=1e-4)


@pytest.mark.skipif(not DEVICE.startswith("cuda"), reason="host syncs exist on CUDA only")
def test_mpdp_dhs_actor_step_never_syncs_with_the_host():
    """mpdp_dh's actor step with every part on (the heads' rollout with u, the cut, the penalty:
    svg_rollout and farsighted_return), its backward and Adam step, under CUDA's sync debug
    mode."""
    a, c, m = on(DEVICE, *hopper_sized_parts(5))
    opt = torch.optim.Adam(a.parameters(), lr=3e-4, capturable=True)
    obs = torch.randn(B, OBS, device=DEVICE)
    alpha, u_T = torch.tensor(0.2, device=DEVICE), torch.tensor(50.0, device=DEVICE)
    beta = 0.5 / torch.tensor(20.0, device=DEVICE)
    ret = without_host_syncs(lambda: _mpdp_dh_actor_step(a, c, m, obs, opt, alpha, beta, u_T))
    assert torch.isfinite(ret).all()


def without_host_syncs(step):
    """``step()`` twice (the first pass warms up: allocations, lazy inits) under CUDA's sync debug
    mode, where any op that waits for the host raises; returns the second pass's result."""
    for _ in range(2):
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            out = step()
        finally:
            torch.cuda.set_sync_debug_mode(0)
    torch.cuda.synchronize()
    return out


def _mpdp_dh_actor_step(actor, critic, model, obs, opt, alpha, beta, u_T):
    from mpdp_pl.lookahead.svg import farsighted_return, svg_rollout

    params = actor.head_params()
    roll = svg_rollout(model, lambda t, s: actor.sample(s, t if t < H else 0, params=params), obs,
                       H, with_u=True)
    q = critic(torch.cat([*roll.obs, roll.last_obs]), torch.cat([*roll.action, roll.last_action]),
               detach_params=True).mean(0).view(H + 1, -1)
    ret, _ = farsighted_return(roll, q, alpha, 0.99, beta, u_T)
    opt.zero_grad()
    (-ret.mean()).backward()
    opt.step()
    return ret.detach()


@pytest.mark.skipif(not DEVICE.startswith("cuda"), reason="host syncs exist on CUDA only")
def test_mpdp_pvs_actor_step_never_syncs_with_the_host():
    """mpdp_pv's actor step, MPDP's default (the heads' unroll with u over the reward steps, the
    cut, the penalty, each sample's plan valued by the k-step critic at s_T), its backward and
    Adam step, under CUDA's sync debug mode."""
    a, c, m = on(DEVICE, *hopper_sized_parts(6))
    plan_critic = TwinQ(OBS, 3 * ACT, [256, 256]).to(DEVICE)
    opt = torch.optim.Adam(a.parameters(), lr=3e-4, capturable=True)
    obs = torch.randn(B, OBS, device=DEVICE)
    alpha, u_T = torch.tensor(0.2, device=DEVICE), torch.tensor(50.0, device=DEVICE)
    beta = 0.5 / torch.tensor(20.0, device=DEVICE)
    loss = without_host_syncs(lambda: _mpdp_pv_actor_step(a, plan_critic, m, obs, opt, alpha, beta, u_T))
    assert torch.isfinite(loss)


def _mpdp_pv_actor_step(actor, plan_critic, model, obs, opt, alpha, beta, u_T):
    from mpdp_pl.lookahead.plan_improvement import plan_improvement

    out = plan_improvement(obs, actor, plan_critic, model, alpha, beta, 0.99, u_T, H, 3)
    opt.zero_grad()
    out.loss.backward()
    torch.nn.utils.clip_grad_norm_(actor.parameters(), 10.0)
    opt.step()
    return out.loss.detach()


@pytest.mark.skipif(not DEVICE.startswith("cuda"), reason="host syncs exist on CUDA only")
def test_the_deferred_guard_never_syncs_with_the_host():
    """The deferred non-finite guard (the default on accelerators) with SAC's own optimizers:
    a finite critic update, then a NaN one that it skips and puts back (weights and Adam's
    state), under CUDA's sync debug mode. Adam keeps its step counter on the host unless it is
    capturable; putting that counter back would wait for the device."""
    import types

    from mpdp_pl.algos.sac import SAC
    from mpdp_pl.config import load_config
    from mpdp_pl.environment.envs import EnvSpec
    from mpdp_pl.runtime.guard import NonfiniteGuard

    cfg = load_config("InvertedPendulum-v4", "sac", {"logger": "none"})
    module = SAC(cfg, EnvSpec(OBS, ACT, (-1.0,) * ACT, (1.0,) * ACT, 1000)).to(DEVICE)
    critic_opt = module.configure_optimizers()[0]
    host = types.SimpleNamespace(device=module.device, manual_backward=lambda loss: loss.backward())
    guard = NonfiniteGuard(limit=5, mode="auto")
    obs, act = torch.randn(B, OBS, device=DEVICE), torch.rand(B, ACT, device=DEVICE)
    scale = torch.ones((), device=DEVICE)

    def update():
        loss = module.critic(obs, act).pow(2).mean() * scale
        return guard.step(host, "critic", critic_opt, loss, module.critic.parameters())

    without_host_syncs(update)                        # two finite updates
    params = list(module.critic.parameters())
    weights = [p.detach().clone() for p in params]
    adam = [{k: v.clone() for k, v in critic_opt.state[p].items()} for p in params]
    assert all(v.device == p.device for p, st in zip(params, adam) for v in st.values())
    scale.fill_(float("nan"))
    without_host_syncs(update)                        # two faulty ones, skipped and put back
    for p, w, st in zip(params, weights, adam):
        close(p.detach(), w)
        for k, v in st.items():
            close(critic_opt.state[p][k], v)
    guard.check_deferred(host)  # a streak of 2 < the limit: no stop
    assert guard.skips == 2
