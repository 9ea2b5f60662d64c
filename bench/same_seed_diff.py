"""Behaviour across a refactor: one short same-seed run of each algorithm at two commits (MPDP
also with the static unroll and with its switches on), and the metrics.csv rows compared
(wall-time columns aside). Prints each algorithm's verdict and, where
rows differ, the first differing columns and the largest relative difference among their cells.

    python bench/same_seed_diff.py BASE_COMMIT [NEW_COMMIT (default: the working tree)] [--only RUN ...]

Each commit's tree is checked out with ``git worktree`` into a temporary directory and run with
this interpreter (the same installed packages), one torch thread, on InvertedPendulum-v4:
600 env steps, 200 random, evaluation every 200 with 2 episodes, a small model (the budget of
the test suite's tiny runs)."""

from __future__ import annotations

import argparse
import csv
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Flat keys: every version reads them (those with config groups, with a one-line warning each),
# so that this compares commits on either side of that change.
RUN = ["--env", "InvertedPendulum-v4", "--seed", "0", "--logger", "none", "steps=600",
       "init_random_steps=200", "eval_every=200", "eval_episodes=2", "batch_size=64",
       "log_every=100", "trainer.num_threads=1"]
# each algorithm gets only the keys it reads (later versions refuse the others)
NETS = ["hidden_sizes=[32,32]"]
MODEL_KEYS = ["model_max_steps=20", "model_hidden=32", "model_train_freq=100"]
MODEL = [*NETS, *MODEL_KEYS]
PLANNER = [*MODEL_KEYS, "pets_horizon=3", "pets_population=10", "pets_elites=2", "pets_iterations=2",
           "pets_particles=5"]
# name: (algorithm, its overrides); MPDP also with the static unroll and with its switches on
RUNS = {"sac": ("sac", NETS), "mpdp": ("mpdp", [*MODEL, "horizon=3"]),
        "mpdp-static": ("mpdp", [*MODEL, "horizon=3", "unroll_form=static"]),
        "mpdp-switches": ("mpdp", [*MODEL, "horizon=3", "u_T_quantile=0.9", "single_policy=true",
                                   "critic_layernorm=true"]),
        "mbpo": ("mbpo", [*MODEL, "rollout_batch_size=256"]),
        "mppve": ("mppve", [*MODEL, "rollout_batch_size=256"]),
        "mpdp_pv": ("mpdp_pv", [*MODEL, "rollout_batch_size=256"]),
        "m2ac": ("m2ac", [*MODEL, "rollout_batch_size=256"]),
        "dhmbpo": ("dhmbpo", [*MODEL, "update_every=100", "critic_updates_per_step=1.5", "warmup_updates=10",
                              "model_batch_size=64", "model_max_epochs=4", "model_patience=2",
                              "start_rollout_every=10", "start_rollout_length=5",
                              "start_buffer_size=2000"]),
        "ddpg": ("ddpg", NETS),
        "pets": ("pets", PLANNER),
        "poplin_a": ("poplin_a", [*PLANNER, "poplin_bc_epochs=2"]),
        "poplin_p": ("poplin_p", PLANNER)}
DROP = ("time/elapsed", "time/env_steps_per_s", "model/train_seconds")


def rows(path: Path) -> list[dict]:
    with open(path) as f:
        return [{k: v for k, v in r.items() if k not in DROP} for r in csv.DictReader(f)]


def largest_relative_difference(old: list[dict], new: list[dict], keys: set[str]) -> float:
    """max |a - b| / max(|a|, |b|) over the differing numeric cells (inf where one is empty)."""
    worst = 0.0
    for r0, r1 in zip(old, new):
        for k in keys:
            try:
                a, b = float(r0[k]), float(r1[k])
            except (KeyError, ValueError):
                return float("inf")
            if a != b:
                worst = max(worst, abs(a - b) / max(abs(a), abs(b)))
    return worst


def run_all(tree: Path, out: Path, names: list[str]) -> dict[str, Path]:
    runs = {}
    for name in names:
        algo, extra = RUNS[name]
        d = out / name
        proc = subprocess.run([sys.executable, str(tree / "train.py"), "--algo", algo, "--out",
                               str(d), *RUN, *extra], cwd=tree, capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"{name} at {tree}: exit {proc.returncode}: {proc.stderr[-500:]}")
        runs[name] = d / "metrics.csv"
    return runs


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("base")
    p.add_argument("new", nargs="?")
    p.add_argument("--only", nargs="+", choices=list(RUNS), default=list(RUNS),
                   help="the runs to compare (default: all)")
    a = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        trees = {}
        for name, commit in (("base", a.base), ("new", a.new)):
            if commit is None:
                trees[name] = ROOT
                continue
            trees[name] = tmp / f"tree-{name}"
            subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(trees[name]),
                            commit], check=True, capture_output=True)
        try:
            results = {name: run_all(tree, tmp / name, a.only) for name, tree in trees.items()}
        finally:
            for name, commit in (("base", a.base), ("new", a.new)):
                if commit is not None:
                    subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force",
                                    str(trees[name])], capture_output=True)
        print(f"base {a.base}, new {a.new or 'working tree'}; config: {' '.join(RUN)}")
        same = True
        for algo in a.only:
            old, new = rows(results["base"][algo]), rows(results["new"][algo])
            # a column only one side logs counts only if it holds a value
            diff = {k for r0, r1 in zip(old, new) for k in r0.keys() | r1.keys()
                    if (r0.get(k) or "") != (r1.get(k) or "")}
            only = sorted(set(old[0]) ^ set(new[0])) if old and new else []
            note = f"; empty columns on one side only: {only}" if only else ""
            if len(old) != len(new) or diff:
                same = False
                print(f"{algo}: DIFFERENT ({len(old)} vs {len(new)} rows; columns {sorted(diff)[:8]}; "
                      f"largest relative difference {largest_relative_difference(old, new, diff):.1e}){note}")
            else:
                print(f"{algo}: identical ({len(old)} rows, {len(old[0])} columns each){note}")
        sys.exit(0 if same else 1)


if __name__ == "__main__":
    main()
