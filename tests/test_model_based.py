"""The ensemble trained inside the LightningModule's manual step, through the real Trainer."""

from __future__ import annotations

import csv

import pytest

from conftest import TINY
from mpdp_pl.algos.model_based import ModelBasedSAC
from mpdp_pl.algos.model_learner import MODEL_METRIC_KEYS
from mpdp_pl.config import load_config, parse_overrides
from mpdp_pl.run import train_module


@pytest.fixture(scope="module")
def model_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("model_run") / "run"
    cfg = load_config("Hopper-v4", "sac", {
        **parse_overrides(TINY), "steps": 700, "data.init_random_steps": 300, "eval.every": 350,
        "eval.episodes": 1, "logger": "none", "out": str(out)})
    # set here: --algo sac, whose config this test-only module takes, does not read them
    cfg["model"].update(train_freq=100, hidden=32, max_steps=30, error_window=100)
    return train_module(ModelBasedSAC, cfg)


def _rows(run):
    with open(run / "metrics.csv") as f:
        return list(csv.DictReader(f))


def test_model_metrics_reach_metrics_csv(model_run):
    rows = _rows(model_run)
    assert [int(r["env_steps"]) for r in rows] == [350, 700]
    last = rows[-1]
    for key in MODEL_METRIC_KEYS:
        assert last[key] != "", key
    assert 0 < float(last["model/holdout_mse"]) < 10
    assert 1 <= float(last["model/epochs"]) <= 3
    elites = [int(i) for i in last["model/elites"].split()]
    assert len(elites) == 5 and len(set(elites)) == 5 and all(0 <= i < 7 for i in elites)
    # model/error is in env units: a norm over Hopper's 11 dims, finite and positive
    assert 0 < float(last["model/error"]) < 100


def test_model_trained_every_freq_steps(tmp_path):
    """First training when updates start (150), then at every multiple of model_train_freq:
    the env steps at which the learner's count of finished trainings went up."""
    calls = []

    class Counting(ModelBasedSAC):
        def train_model(self, open_loop_k=None):
            before = self.model_learner.trainings
            out = super().train_model(open_loop_k)
            if self.model_learner.trainings > before:
                assert out is not None  # a finished training hands back its holdout
                calls.append(self.env_steps)
            return out

    cfg = load_config("Pendulum-v1", "sac", {
        **parse_overrides(TINY), "steps": 400, "data.init_random_steps": 150, "eval.every": 400,
        "eval.episodes": 1, "logger": "none", "out": str(tmp_path / "run")})
    cfg["model"].update(train_freq=100, hidden=16, max_steps=10)  # as in model_run
    train_module(Counting, cfg)
    assert calls == [150, 200, 300, 400]
