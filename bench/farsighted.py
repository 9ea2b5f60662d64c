"""Benchmark (issue 15): one farsighted update (Algorithm 1) in its static and live forms, on a
real MPDP checkpoint.

The checkpoint gives the states (update batches are drawn from its replay buffer), the actor
heads, the critics, the ensemble with its elites and normalizers, alpha and u_T (the rule the
run used). One update = the unroll's forward, its backward and the actor's Adam step, on a
fresh batch and fresh noise; the two forms are timed in the same process, alternating, on the
same batches and noise. Then u_T is set (by bisection on the realized horizon of a fixed
batch) so that the realized horizon is about each ``--horizons`` value, and both forms are
timed again. The actor's weights are put back after every update, so every repeat sees the
checkpoint's policy.

``live rows``: the share of the static form's sample-steps that are alive, i.e. the share of
its compute spent on live samples (the live form runs only those).

``--device cuda``: the module and the batches on the GPU (TF32 off), each update timed between
two synchronizations; the peak GPU memory is printed at the end.

    python bench/farsighted.py RUN_DIR_OR_CHECKPOINT [--repeat 20] [--horizons 3 5] [--device cpu]
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mpdp_pl.runtime import checkpoint  # noqa: E402
from mpdp_pl.algos import ALGOS  # noqa: E402
from mpdp_pl.config import stored_config  # noqa: E402
from mpdp_pl.environment.data import load_buffer, make_replay_buffer  # noqa: E402
from mpdp_pl.lookahead.improvement import FORMS, farsighted_improvement, sample_noise  # noqa: E402
from mpdp_pl.run import probe_env_spec  # noqa: E402


def load(path: Path):
    ckpt = path if (path / "state.pt").exists() else checkpoint.latest(path)
    if ckpt is None:
        raise SystemExit(f"error: {path} holds no checkpoint")
    state = checkpoint.read(ckpt)
    cfg = stored_config(state["config"], ckpt)  # earlier versions' keys migrated, new ones at defaults
    if cfg["algo"] not in ("mpdp", "mpdp_paper"):
        raise SystemExit(f"error: {ckpt} is a {cfg['algo']} checkpoint, not mpdp")
    module = ALGOS["mpdp"](cfg, probe_env_spec(cfg))
    module.load_state_dict(state["module"])
    buf = make_replay_buffer(cfg["data"]["buffer_size"], "cpu")
    load_buffer(buf, ckpt / "replay_buffer")
    return ckpt, state, module, buf


COMPILED = {}  # "compiled": the static form under torch.compile (--compile)


def update(m, obs, noise, u_T, form, opt):
    c = m.cfg
    fn = COMPILED.get(form, farsighted_improvement)
    out = fn(obs, m.actor, m.critic, m.dynamics, m.alpha, m.penalty_weight(),
             c["critic"]["gamma"], u_T, m.horizon, c["improvement"]["paper_literal_cut"], noise,
             c["improvement"]["terminal_critic"], form="static" if form == "compiled" else form)
    opt.zero_grad(set_to_none=True)
    out.loss.backward()
    torch.nn.utils.clip_grad_norm_(m.actor.parameters(), c["actor"]["grad_clip"])
    opt.step()
    return out.diagnostics


@torch.no_grad()
def realized(m, obs, noise, u_T) -> float:
    c = m.cfg
    return farsighted_improvement(obs, m.actor, m.critic, m.dynamics, m.alpha, m.penalty_weight(),
                                  c["critic"]["gamma"], u_T, m.horizon, c["improvement"]["paper_literal_cut"], noise,
                                  c["improvement"]["terminal_critic"], form="live").diagnostics["realized_horizon"].item()


def u_t_for(m, obs, noise, target: float) -> float:
    """u_T whose realized horizon on (obs, noise) is closest to ``target`` (it grows with u_T)."""
    lo, hi = math.log(1e-6), math.log(1e6)
    for _ in range(40):
        mid = 0.5 * (lo + hi)
        if realized(m, obs, noise, math.exp(mid)) < target:
            lo = mid
        else:
            hi = mid
    return math.exp(0.5 * (lo + hi))


def sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def time_forms(m, buf, u_T, repeat: int, seed: int, device="cpu") -> dict:
    opt = torch.optim.Adam(m.actor.parameters(), lr=m.cfg["actor"]["lr"])
    saved = {k: v.clone() for k, v in m.actor.state_dict().items()}
    g = torch.Generator().manual_seed(seed)
    forms = (*FORMS, *COMPILED)
    times = {f: [] for f in forms}
    diags = {f: [] for f in forms}
    b = m.cfg["data"]["batch_size"]
    for i in range(repeat + 2):  # two warm-up rounds
        idx = torch.randint(len(buf), (b,), generator=g)
        obs = buf[idx]["observation"].to(device)
        torch.manual_seed(seed + i)
        noise = sample_noise(m.dynamics, m.horizon, b, m.spec.action_dim, device)
        for form in (forms if i % 2 == 0 else forms[::-1]):
            m.actor.load_state_dict(saved)
            sync(device)
            t0 = time.perf_counter()
            d = update(m, obs, noise, u_T, form, opt)
            sync(device)
            if i >= 2:
                times[form].append(time.perf_counter() - t0)
                diags[form].append(d)
    m.actor.load_state_dict(saved)
    mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
    return {"ms": {f: 1000 * mean(times[f]) for f in forms},
            "horizon": mean([d["realized_horizon"].item() for d in diags["live"]]),
            "live_rows": mean([d["live_rows"].item() for d in diags["live"]])}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("path", type=Path)
    p.add_argument("--repeat", type=int, default=20)
    p.add_argument("--horizons", type=float, nargs="*", default=[3.0, 5.0])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--compile", action="store_true",
                   help="also time the static form compiled with torch.compile (column compiled ms)")
    a = p.parse_intermixed_args()
    if a.compile:
        COMPILED["compiled"] = torch.compile(farsighted_improvement)
    torch.set_num_threads(1)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    ckpt, state, m, buf = load(a.path)
    m = m.to(a.device)
    c = m.cfg
    print(f"{c['env']} MPDP checkpoint {ckpt} (env step {state['counters']['env_steps']}, "
          f"{len(buf)} real transitions): batch {c['data']['batch_size']}, Hmax {m.horizon}, ensemble "
          f"{c['model']['ensemble_size']}x{c['model']['hidden']}x{c['model']['layers']} ({len(m.dynamics.elites)} "
          f"elites), actor/critic {c['networks']['hidden_sizes']}, u_T {m.u_T.item():.4g} "
          f"(improvement.u_T={c['improvement']['u_T']}, quantile {c['improvement']['u_T_quantile']}); device {a.device}, 1 torch thread; "
          f"{a.repeat} updates per form", flush=True)
    g = torch.Generator().manual_seed(a.seed + 999)
    probe = buf[torch.randint(len(buf), (1024,), generator=g)]["observation"].to(a.device)
    torch.manual_seed(a.seed + 999)
    probe_noise = sample_noise(m.dynamics, m.horizon, probe.shape[0], m.spec.action_dim, a.device)
    settings = [("checkpoint's u_T", m.u_T.item())]
    settings += [(f"u_T for horizon ~{h:g}", u_t_for(m, probe, probe_noise, h)) for h in a.horizons]
    extra = " compiled ms |" if a.compile else ""
    print(f"\n| u_T | value | realized horizon | live rows | static ms | live ms | live / static |{extra}")
    print("|---|---|---|---|---|---|---|" + ("---|" if a.compile else ""))
    for name, u_T in settings:
        r = time_forms(m, buf, u_T, a.repeat, a.seed, a.device)
        print(f"| {name} | {u_T:.4g} | {r['horizon']:.2f} | {r['live_rows']:.3f} | "
              f"{r['ms']['static']:.1f} | {r['ms']['live']:.1f} | "
              f"{r['ms']['live'] / r['ms']['static']:.2f} |"
              + (f" {r['ms']['compiled']:.1f} |" if a.compile else ""), flush=True)
    if torch.device(a.device).type == "cuda":
        print(f"peak GPU memory: {torch.cuda.max_memory_allocated() / 2**20:.0f} MiB")


if __name__ == "__main__":
    main()
