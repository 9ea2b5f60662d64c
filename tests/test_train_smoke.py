"""End to end: train.py in a subprocess on a real MuJoCo env (the shared ``tiny_run``)."""

from __future__ import annotations

import csv
import math

import yaml

from wandb_reader import history

STEPS, EVAL_EVERY = 600, 200


def _rows(run):
    with open(run / "metrics.csv") as f:
        return list(csv.DictReader(f))


def test_metrics_csv_has_one_row_per_evaluation(tiny_run):
    rows = _rows(tiny_run)
    steps = [int(r["env_steps"]) for r in rows]
    # evaluations at 200, 400 and 600; the final evaluation coincides with 600: no second row
    assert steps == [200, 400, 600]
    for col in ("env_steps", "eval/return", "time/elapsed", "time/env_steps_per_s",
                "train/critic_loss", "train/actor_loss", "train/alpha", "train/entropy"):
        assert col in rows[0], col
    elapsed = [float(r["time/elapsed"]) for r in rows]
    assert elapsed == sorted(elapsed) and elapsed[0] > 0
    for r in rows:
        assert 0 < float(r["eval/return"]) <= 1000  # InvertedPendulum: +1 per step alive
        assert float(r["eval/episode_length"]) == float(r["eval/return"])
    # updates start after init_random_steps=200: one critic update per env step after that
    assert [int(float(r["train/updates"])) for r in rows] == [1, 201, 401]
    assert all(math.isfinite(float(rows[-1][c])) for c in ("train/critic_loss", "train/alpha"))


def test_config_yaml_records_config_command_commit_and_versions(tiny_run):
    cfg = yaml.safe_load((tiny_run / "config.yaml").read_text())
    assert cfg["env"] == "InvertedPendulum-v4" and cfg["algo"] == "sac"
    assert cfg["steps"] == STEPS and cfg["seed"] == 3 and cfg["networks"]["hidden_sizes"] == [32, 32]
    assert cfg["temperature"]["target_entropy"] == -0.05  # from conf/env/InvertedPendulum.yaml
    assert cfg["out"] == str(tiny_run)
    run = cfg["run"]
    assert run["command"][0] == "train.py" and "steps=600" in run["command"]
    assert len(run["git_commit"]) == 40 or run["git_commit"] == "unknown"
    for pkg in ("torch", "torchrl", "tensordict", "lightning", "gymnasium", "mujoco"):
        assert run["versions"][pkg], pkg


def test_wandb_offline_run_holds_the_logged_metrics(tiny_run):
    runs = list((tiny_run / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(runs) == 1, "W&B must have run offline (no API key in the test environment)"
    rows = history(runs[0])
    keys = set().union(*rows)
    for key in ("env_steps", "eval/return", "train/critic_loss", "train/actor_loss",
                "train/alpha", "time/env_steps_per_s"):
        assert key in keys, key
    evals = {r["env_steps"]: r["eval/return"] for r in rows if "eval/return" in r}
    csv_evals = {int(r["env_steps"]): float(r["eval/return"]) for r in _rows(tiny_run)}
    assert evals == csv_evals


def test_a_run_writes_nothing_outside_its_directory(tiny_run):
    """tiny_run ran with its working directory and HOME both set to the folder above --out:
    nothing else may appear there (no outputs/, .hydra/, wandb/ or log files), W&B's own debug
    logs included, which wandb-core would put under ~/.cache/wandb. The only exception is
    matplotlib's font cache, a library cache that any matplotlib import writes."""
    top = tiny_run.parent
    written = sorted(str(p.relative_to(top)) for p in top.rglob("*")
                     if p.is_file() and tiny_run not in p.parents)
    assert all(w.startswith((".cache/matplotlib/", ".config/matplotlib/")) for w in written), written
    assert list((tiny_run / "wandb" / "cache").rglob("core-debug-*.log")), "W&B logs are elsewhere"
