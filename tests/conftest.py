"""Shared fixtures. The expensive one, ``tiny_run``, trains one real run once per session
(train.py in a subprocess, real MuJoCo env, real W&B offline files); tests only read it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TINY = ["steps=600", "data.init_random_steps=200", "eval.every=200", "eval.episodes=2",
        "data.batch_size=64", "networks.hidden_sizes=[32,32]", "logging.every=100", "trainer.num_threads=1"]
# with TINY: a 400-step Hopper run whose model trains every 50 steps and refills a model buffer
# of 3-step rollouts (MBPO's data: MPPVE, mpdp_pv)
TINY_MODEL_DATA = {"steps": 400, "data.init_random_steps": 250, "eval.every": 400, "eval.episodes": 1,
                   "model.train_freq": 50, "model.hidden": 16, "model.max_steps": 20,
                   "rollouts.batch_size": 200, "rollouts.schedule": [0, 1, 1, 3], "rollouts.epoch_length": 50,
                   "updates.critic_per_step": 2.0, "logger": "none"}


def pytest_configure(config):
    """Under pytest-xdist (pyproject's ``-n auto``) each worker computes on one torch thread: the
    workers already take one core each."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        import torch

        torch.set_num_threads(1)


def model_settings(**changes):
    """The model group's defaults as TrainSettings, with ``changes`` (whole-buffer epochs unless
    ``max_steps`` is given)."""
    import dataclasses

    from mpdp_pl.config.schema import defaults
    from mpdp_pl.models.fitting import TrainSettings

    return dataclasses.replace(TrainSettings.from_config(defaults()), **{"max_steps": None, **changes})


def offline_env(tmp_home: Path) -> dict:
    """An environment with no W&B key and no netrc: W&B must fall back to offline by itself."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env["HOME"] = str(tmp_home)
    env["NETRC"] = str(tmp_home / ".netrc")
    return env


def run_train(args: list[str], cwd: Path, env: dict | None = None, timeout: float = 600):
    return subprocess.run([sys.executable, str(ROOT / "train.py"), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """InvertedPendulum-v4, 600 env steps, W&B in automatic (hence offline) mode. WANDB_MODE
    is set but empty, which counts as unset (wandb itself fails on it with a traceback): the
    W&B tests that read this run show that it did."""
    tmp = tmp_path_factory.mktemp("tiny_run")
    out = tmp / "run"
    proc = run_train(["--env", "InvertedPendulum-v4", "--algo", "sac", "--seed", "3",
                      "--out", str(out), "--logger", "wandb", *TINY],
                     cwd=tmp, env={**offline_env(tmp), "WANDB_MODE": ""})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out
