"""Benchmark: cost of MPDP's parts at each task's default config, and the wall time per 1k env
steps they add up to.

Times, on random inputs with the real module shapes (default config of each task): one
farsighted update (forward, backward, optimizer step), one critic update, and one epoch of
model training per 1k real transitions. Then composes

    s per 1k env steps = 1000 * (critic_updates_per_step * t_critic + actor_updates_per_step * t_fars)
                         + (1000 / model_train_freq) * epochs * t_epoch_per_1k * (data / 1000)

at ``--data`` transitions in the buffer and ``--epochs`` epochs per model training (the cap,
``model_max_epochs``, by default: an upper bound; early stopping often ends sooner).
Collection, evaluation and logging are not included.

    python bench/throughput.py [--tasks Hopper-v4 Humanoid-v4] [--threads 1] [--data 50000] [key=value ...]
"""

from __future__ import annotations

import argparse
import time

import torch
from tensordict import TensorDict

from mpdp_pl.algos.mpdp import MPDP
from mpdp_pl.config import load_config, parse_overrides
from mpdp_pl.envs import env_spec, make_env
from mpdp_pl.improvement import farsighted_improvement
from mpdp_pl.models.dynamics_training import TrainSettings, param_groups, train_dynamics


def timeit(fn, repeat: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    t0 = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - t0) / repeat


def measure(env_id: str, overrides: dict, data_size: int, epochs: int | None, repeat: int):
    cfg = load_config(env_id, "mpdp", overrides)
    env = make_env(cfg)
    spec = env_spec(env)
    env.close()
    m = MPDP(cfg, spec)
    b, od, ad = cfg["batch_size"], spec.obs_dim, spec.action_dim
    obs = torch.randn(b, od)
    batch = TensorDict({"observation": obs, "action": torch.rand(b, ad) * 2 - 1,
                        "next": {"observation": torch.randn(b, od), "reward": torch.randn(b, 1),
                                 "terminated": torch.zeros(b, 1, dtype=torch.bool)}}, [b])
    opt_a = torch.optim.Adam(m.actor.parameters())
    opt_c = torch.optim.Adam(m.critic.parameters())

    def fars():
        r = farsighted_improvement(obs, m.actor, m.critic, m.dynamics, m.alpha, cfg["beta"],
                                   cfg["gamma"], float("inf"), cfg["horizon"])
        opt_a.zero_grad()
        r.loss.backward()
        opt_a.step()

    def critic():
        loss, _ = m.critic_loss(batch)
        opt_c.zero_grad()
        loss.backward()
        opt_c.step()

    t_fars, t_crit = timeit(fars, repeat), timeit(critic, repeat * 5)
    n = 2000
    x = torch.randn(n, od)
    opt_m = torch.optim.Adam(param_groups(m.dynamics, cfg["model_lr"], cfg["model_weight_decay"]))
    settings = TrainSettings(batch_size=cfg["model_batch_size"], max_epochs=2, patience=100)
    t0 = time.perf_counter()
    train_dynamics(m.dynamics, x, torch.rand(n, ad) * 2 - 1, x + 0.1 * torch.randn(n, od),
                   torch.randn(n), torch.zeros(n, dtype=torch.bool), opt_m, settings)
    t_epoch_1k = (time.perf_counter() - t0) / 2 / (n * (1 - cfg["model_holdout_ratio"]) / 1000)
    epochs = epochs or cfg["model_max_epochs"]
    per_1k = (1000 * (cfg["critic_updates_per_step"] * t_crit + cfg["actor_updates_per_step"] * t_fars)
              + 1000 / cfg["model_train_freq"] * epochs * t_epoch_1k * data_size * 0.8 / 1000)
    print(f"{env_id}: obs {od}, action {ad}, Hmax {cfg['horizon']}, batch {b}, model "
          f"{cfg['ensemble_size']}x{cfg['model_hidden']}x{cfg['model_layers']}, critic/actor "
          f"updates per step {cfg['critic_updates_per_step']}/{cfg['actor_updates_per_step']}, "
          f"model_train_freq {cfg['model_train_freq']}")
    print(f"  farsighted update {1000 * t_fars:.1f} ms, critic update {1000 * t_crit:.1f} ms, "
          f"model epoch {t_epoch_1k:.3f} s per 1k transitions")
    print(f"  => about {per_1k:.0f} s per 1k env steps at {data_size} buffered transitions and "
          f"{epochs} epochs per model training")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--tasks", nargs="+", default=["InvertedPendulum-v4", "Hopper-v4",
                                                   "Walker2d-v4", "HalfCheetah-v4", "Ant-v4",
                                                   "Humanoid-v4"])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--data", type=int, default=50_000)
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("overrides", nargs="*")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {a.threads} thread(s), device cpu")
    for env_id in a.tasks:
        measure(env_id, parse_overrides(a.overrides), a.data, a.epochs, a.repeat)


if __name__ == "__main__":
    main()
