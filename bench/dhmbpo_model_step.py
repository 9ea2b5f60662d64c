"""Benchmark: one training step of DHMBPO's model (8 members, 3 x 256 SiLU, LayerNorm before
layers 2-4, dropout, batch 2048 per member, AdamW) as this app builds it and as erl_lib's own
layers build it, timed in turn in one process (one torch thread). The step's cost is what bounds
DHMBPO on a CPU: about 14 GFLOP, 750-3726 of them per 1k env steps (docs/dhmbpo.md).

    python bench/dhmbpo_model_step.py ERL_LIB_CHECKOUT [--rounds 10]

ERL_LIB_CHECKOUT: a clone of 4kubo/erl_lib (only ``erl_lib/agent/module/layer.py`` is imported).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mpdp_pl.models.dynamics import DynamicsModel  # noqa: E402

MEMBERS, BATCH, OBS, ACT, HIDDEN = 8, 2048, 11, 3, 256
DROPOUT = [0.0075, 0.005, 0.0025, 0.0]   # conf/algo/dhmbpo.yaml
LAYER_NORM = [1.0, 0.1, 0.01]


def erl_model(checkout: Path) -> torch.nn.Module:
    sys.path.insert(0, str(checkout))
    from erl_lib.agent.module.layer import NormalizedEnsembleLinear

    silu = torch.nn.SiLU
    return torch.nn.Sequential(
        NormalizedEnsembleLinear(MEMBERS, OBS + ACT, dim_output=HIDDEN, dropout_rate=DROPOUT[0],
                                 activation=silu()),
        NormalizedEnsembleLinear(MEMBERS, HIDDEN, dim_output=HIDDEN, dropout_rate=DROPOUT[1],
                                 normalize_eps=LAYER_NORM[0], activation=silu()),
        NormalizedEnsembleLinear(MEMBERS, HIDDEN, dim_output=HIDDEN, dropout_rate=DROPOUT[2],
                                 normalize_eps=LAYER_NORM[1], activation=silu()),
        NormalizedEnsembleLinear(MEMBERS, HIDDEN, dim_output=2 * (OBS + 1),
                                 normalize_eps=LAYER_NORM[2]))


def app_model() -> torch.nn.Module:
    ensemble = DynamicsModel(OBS, ACT, MEMBERS, MEMBERS, HIDDEN, 3,
                             termination_fn=lambda s: s[:, 0] > 1e9, noise="member",
                             layer_norm=LAYER_NORM, dropout=DROPOUT).ensemble
    for m in ensemble.modules():  # dropout on, as during the model's trainings
        if hasattr(m, "dropout_active"):
            m.dropout_active = True
    return ensemble


def training_step(net: torch.nn.Module, split):
    """A Gaussian NLL step on fixed random data (the loss's form does not change the cost)."""
    x, y = torch.randn(MEMBERS, BATCH, OBS + ACT), torch.randn(MEMBERS, BATCH, OBS + 1)
    opt = torch.optim.AdamW(net.parameters(), 1e-3)

    def step():
        mean, log_var = split(net(x))
        loss = ((mean - y).pow(2) * torch.exp(-log_var) + log_var).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return step


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("erl_lib", type=Path)
    p.add_argument("--rounds", type=int, default=10)
    a = p.parse_args()
    torch.set_num_threads(1)
    steps = {"erl_lib": training_step(erl_model(a.erl_lib), lambda out: out.split(OBS + 1, -1)),
             "mpdp_pl": training_step(app_model(), lambda out: out[:2])}
    times = {name: [] for name in steps}
    for r in range(a.rounds + 2):   # in turn, so that both see the same machine; 2 warm-up rounds
        for name, step in steps.items():
            t = time.perf_counter()
            step()
            if r >= 2:
                times[name].append(time.perf_counter() - t)
    flop = 3 * 2 * MEMBERS * BATCH * ((OBS + ACT) * HIDDEN + 2 * HIDDEN * HIDDEN + HIDDEN * 2 * (OBS + 1))
    print(f"DHMBPO's model step: {MEMBERS} members x batch {BATCH}, 3 x {HIDDEN} SiLU, LayerNorm, "
          f"dropout, AdamW; 1 torch thread; {flop / 1e9:.1f} GFLOP per step; {a.rounds} rounds in turn")
    for name, t in times.items():
        med = statistics.median(t)
        print(f"{name}: median {med * 1000:.0f} ms (min {min(t) * 1000:.0f}, max {max(t) * 1000:.0f}), "
              f"{flop / med / 1e9:.0f} GFLOP/s")
    ratio = [a_ / b for a_, b in zip(times["mpdp_pl"], times["erl_lib"])]
    print(f"mpdp_pl / erl_lib, round by round: median {statistics.median(ratio):.2f}")


if __name__ == "__main__":
    main()
