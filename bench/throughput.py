"""Benchmark: where MPDP's time goes, at each task's default config.

For every task (default: Hopper-v4 and Humanoid-v4), on one device:

1. **Update costs**, on random inputs with the real module shapes: one farsighted update
   (Algorithm 1 forward, backward, optimizer step), one critic update, and one epoch of model
   training per 1k real transitions.
2. **Matmul ceiling** of the farsighted update: every matrix multiply the update executes (the
   unroll's ensemble, actor and critic layers, forward and backward) is recorded with its shapes
   (a ``TorchDispatchMode``), then the same sequence of matmuls alone is replayed on fresh tensors
   and timed in the same process. ``efficiency = t(matmuls alone) / t(farsighted update)`` is the
   ratio of the update's achieved FLOP/s to the FLOP/s of its own matmuls (same FLOPs, so the
   ratio of times); everything else in the update (elementwise ops, masking, sampling, the
   OvR error, autograd bookkeeping, the optimizer) is the gap.
3. **The whole loop**: a real run (Lightning Trainer, TorchRL collector and buffer, MuJoCo) of
   ``--loop-steps`` env steps after ``init_random_steps``, timing every round's updates (model
   training, critic, farsighted, temperature) against the round's wall time. ``overhead`` is
   the share of the loop's wall time outside the updates (collection, buffer, logging,
   Lightning). Evaluation is outside the measured window (``eval_every`` = the budget).

    python bench/throughput.py [--quick] [--tasks Hopper-v4 Humanoid-v4] [--threads 1]
                               [--loop-steps 200] [key=value ...]

``--quick``: Hopper only, fewer repeats, a 40-step loop; under two minutes on this machine.
Goals (issue 6): efficiency >= 0.8, overhead <= 0.1.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch
from tensordict import TensorDict
from torch.utils._python_dispatch import TorchDispatchMode

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mpdp_pl.algos.mpdp import MPDP  # noqa: E402
from mpdp_pl.config import load_config, parse_overrides  # noqa: E402
from mpdp_pl.envs import env_spec, make_env  # noqa: E402
from mpdp_pl.models.dynamics_training import TrainSettings, param_groups, train_dynamics  # noqa: E402
from mpdp_pl.run import train_module  # noqa: E402

aten = torch.ops.aten
MATMULS = {aten.mm.default, aten.addmm.default, aten.bmm.default, aten.baddbmm.default}


def timeit(fn, repeat: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    t0 = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - t0) / repeat


class RecordMatmuls(TorchDispatchMode):
    """Records (op, argument shapes and strides' contiguity) of every matmul that runs."""

    def __init__(self):
        super().__init__()
        self.calls: list[tuple] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func in MATMULS:
            self.calls.append((func, [(a.shape, a.dtype, a.is_contiguous()) if torch.is_tensor(a) else a
                                      for a in args]))
        return func(*args, **(kwargs or {}))


def matmul_replay(calls: list[tuple]):
    """A function running the recorded matmuls on fresh tensors of the same shapes (transposed
    inputs stay transposed, as autograd produces them)."""
    prepared = []
    for func, args in calls:
        tensors = []
        for a in args:
            if isinstance(a, tuple):
                shape, dtype, contiguous = a
                t = torch.randn(shape, dtype=dtype)
                if not contiguous and len(shape) >= 2:
                    t = torch.randn(*shape[:-2], shape[-1], shape[-2], dtype=dtype).transpose(-1, -2)
                tensors.append(t)
            else:
                tensors.append(a)
        prepared.append((func, tensors))

    def run():
        for func, tensors in prepared:
            func(*tensors)
    return run


def matmul_flops(calls: list[tuple]) -> float:
    total = 0.0
    for func, args in calls:
        shapes = [a[0] for a in args if isinstance(a, tuple)]
        a, b = shapes[-2], shapes[-1]  # (bias,) x, w
        batch = a[0] if len(a) == 3 else 1
        total += 2 * batch * a[-2] * a[-1] * b[-1]
    return total


def update_costs(env_id: str, cfg: dict, spec, repeat: int) -> dict:
    m = MPDP(cfg, spec)
    b, od, ad = cfg["batch_size"], spec.obs_dim, spec.action_dim
    obs = torch.randn(b, od)
    batch = TensorDict({"observation": obs, "action": torch.rand(b, ad) * 2 - 1,
                        "next": {"observation": torch.randn(b, od), "reward": torch.randn(b, 1),
                                 "terminated": torch.zeros(b, 1, dtype=torch.bool)}}, [b])
    opt_a = torch.optim.Adam(m.actor.parameters())
    opt_c = torch.optim.Adam(m.critic.parameters())
    # u_T = inf: every sample runs the full Hmax steps (the most work an update can do)
    inf = torch.tensor(float("inf"))

    def fars():
        r = m.improve(obs, m.actor, m.critic, m.dynamics, m.alpha, cfg["beta"], cfg["gamma"], inf,
                      cfg["horizon"], terminal_critic=cfg["terminal_critic"])
        opt_a.zero_grad()
        r.loss.backward()
        opt_a.step()

    def critic():
        loss, _ = m.critic_loss(batch)
        opt_c.zero_grad()
        loss.backward()
        opt_c.step()

    t_fars = timeit(fars, repeat)
    rec = RecordMatmuls()
    with rec:
        fars()
    replay = matmul_replay(rec.calls)
    t_mm = timeit(replay, repeat)
    t_crit = timeit(critic, repeat * 5)
    n = 2000
    x = torch.randn(n, od)
    opt_m = torch.optim.Adam(param_groups(m.dynamics, cfg["model_lr"], cfg["model_weight_decay"]))
    settings = TrainSettings(batch_size=cfg["model_batch_size"], max_epochs=2, patience=100)
    t0 = time.perf_counter()
    train_dynamics(m.dynamics, x, torch.rand(n, ad) * 2 - 1, x + 0.1 * torch.randn(n, od),
                   torch.randn(n), torch.zeros(n, dtype=torch.bool), opt_m, settings)
    t_epoch_1k = (time.perf_counter() - t0) / 2 / (n * (1 - cfg["model_holdout_ratio"]) / 1000)
    flops = matmul_flops(rec.calls)
    return {"farsighted_ms": 1000 * t_fars, "matmuls_ms": 1000 * t_mm, "efficiency": t_mm / t_fars,
            "matmul_calls": len(rec.calls), "gflop": flops / 1e9,
            "achieved_gflops": flops / t_fars / 1e9, "ceiling_gflops": flops / t_mm / 1e9,
            "critic_ms": 1000 * t_crit, "model_epoch_s_per_1k": t_epoch_1k}


class TimedMPDP(MPDP):
    """MPDP that times each round's updates (model training included) and the round itself."""

    def on_train_start(self) -> None:
        super().on_train_start()
        self.update_time, self.window_start, self.window_end, self.window_steps = 0.0, None, None, 0
        self._round_start = time.perf_counter()

    def before_updates(self) -> None:
        t0 = time.perf_counter()
        super().before_updates()
        self.update_time += time.perf_counter() - t0

    def update(self, critic_updates: int, actor_updates: int) -> None:
        t0 = time.perf_counter()
        super().update(critic_updates, actor_updates)
        self.update_time += time.perf_counter() - t0

    def training_step(self, batch, batch_idx):
        start = self._round_start
        updating = self.env_steps + batch.numel() >= self.update_after
        if updating and self.window_start is None:  # the window opens at the first update round
            self.window_start, self.update_time = start, 0.0
        super().training_step(batch, batch_idx)
        self._round_start = now = time.perf_counter()  # the next round's collection starts here
        if self.window_start is not None and self.remaining_steps() >= 0:
            self.window_end = now
            self.window_steps += batch.numel()


def loop_costs(cfg: dict, loop_steps: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        steps = cfg["init_random_steps"] + loop_steps
        run_cfg = {**cfg, "steps": steps, "eval_every": steps, "eval_episodes": 1, "logger": "none",
                   "checkpoint_every": 0, "out": str(Path(tmp) / "run")}
        holder = {}

        class Keep(TimedMPDP):
            def on_train_end(self):
                holder["m"] = self
                super().on_train_end()

        train_module(Keep, run_cfg)
        m = holder["m"]
    wall = m.window_end - m.window_start
    return {"loop_steps": m.window_steps, "loop_s": wall, "env_steps_per_s": m.window_steps / wall,
            "update_s": m.update_time, "overhead": 1 - m.update_time / wall}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tasks", nargs="+", default=None)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeat", type=int, default=None)
    p.add_argument("--loop-steps", type=int, default=None)
    p.add_argument("--init-random-steps", type=int, default=250,
                   help="random steps before the measured loop (the first model training's data)")
    p.add_argument("overrides", nargs="*")
    a = p.parse_args()
    tasks = a.tasks or (["Hopper-v4"] if a.quick else ["Hopper-v4", "Humanoid-v4"])
    repeat = a.repeat or (3 if a.quick else 10)
    loop_steps = a.loop_steps or (40 if a.quick else 200)
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {a.threads} thread(s), device cpu, repeat {repeat}, "
          f"loop {loop_steps} env steps after {a.init_random_steps} random ones, overrides {a.overrides}")
    for env_id in tasks:
        overrides = {"init_random_steps": a.init_random_steps, "trainer": {"num_threads": a.threads},
                     **parse_overrides(a.overrides)}
        cfg = load_config(env_id, "mpdp", overrides)
        env = make_env(cfg)
        spec = env_spec(env)
        env.close()
        print(f"{env_id}: obs {spec.obs_dim}, action {spec.action_dim}, Hmax {cfg['horizon']}, batch "
              f"{cfg['batch_size']}, model {cfg['ensemble_size']}x{cfg['model_hidden']}x"
              f"{cfg['model_layers']}, actor/critic {cfg['hidden_sizes']}, critic/actor updates per "
              f"step {cfg['critic_updates_per_step']}/{cfg['actor_updates_per_step']}, "
              f"model_train_freq {cfg['model_train_freq']}, compile {cfg['compile']}", flush=True)
        u = update_costs(env_id, cfg, spec, repeat)
        print(f"  farsighted update {u['farsighted_ms']:.1f} ms; its {u['matmul_calls']} matmuls alone "
              f"{u['matmuls_ms']:.1f} ms ({u['gflop']:.2f} GFLOP: {u['achieved_gflops']:.1f} GFLOP/s "
              f"achieved vs {u['ceiling_gflops']:.1f} ceiling) -> efficiency {u['efficiency']:.2f}")
        print(f"  critic update {u['critic_ms']:.1f} ms; model epoch {u['model_epoch_s_per_1k']:.3f} s "
              f"per 1k transitions", flush=True)
        lc = loop_costs(cfg, loop_steps)
        print(f"  whole loop: {lc['loop_steps']} env steps in {lc['loop_s']:.1f} s = "
              f"{lc['env_steps_per_s']:.2f} env steps/s; updates {lc['update_s']:.1f} s -> "
              f"overhead (collection, buffer, logging, Lightning) {100 * lc['overhead']:.1f}%", flush=True)


if __name__ == "__main__":
    main()
