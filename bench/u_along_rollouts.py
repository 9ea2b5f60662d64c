"""How the OvR model error u (Eq. 8) grows along model rollouts of an MPDP checkpoint's heads:
quantiles of u at each step t of an Hmax-step rollout from real states (no cuts), in units of
the step-0 0.9-quantile, and the share of samples above 1x, 3x and 10x of it. A per-step
threshold cuts a sample at step t with the probability shown: if u hardly grows with t, the
survival rate per step is about constant and the realized horizon follows Hmax.

    python bench/u_along_rollouts.py RUN_DIR_OR_CHECKPOINT [--states 2048] [--seed 0]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from farsighted import load  # noqa: E402

from mpdp_pl.lookahead.unroll import Unroll  # noqa: E402


@torch.no_grad()
def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("path", type=Path)
    p.add_argument("--states", type=int, default=2048)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    torch.set_num_threads(1)
    ckpt, state, m, buf = load(a.path)
    torch.manual_seed(a.seed)
    s = buf.sample(a.states)["observation"]
    qs = torch.tensor([0.5, 0.9, 0.95])
    print(f"{ckpt} (env step {state['counters']['env_steps']}): {a.states} real start states, "
          f"Hmax {m.horizon}, u_T of the run {m.u_T.item():.4g}")
    print("| t | u q0.5 | u q0.9 | u q0.95 | median u / step-0 q0.9 | > 1x | > 3x | > 10x | terminal |")
    print("|---|---|---|---|---|---|---|---|---|")
    ref = None
    heads = m.actor.num_heads
    for st in Unroll(m.dynamics, s, lambda t, x, pick: m.actor.sample(x, min(t, heads - 1)),
                     m.horizon):  # no cut; a sample past a predicted terminal keeps its state
        t, step = st.t, st.model
        q = torch.quantile(step.u, qs)
        ref = q[1] if ref is None else ref
        share = [(step.u > k * ref).float().mean().item() for k in (1, 3, 10)]
        print(f"| {t} | {q[0]:.2f} | {q[1]:.2f} | {q[2]:.2f} | {(step.u / ref).median():.2f} | "
              + " | ".join(f"{x:.2f}" for x in share) + f" | {step.terminated.float().mean():.2f} |")

if __name__ == "__main__":
    main()
