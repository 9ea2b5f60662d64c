"""The guard against non-finite updates (mpdp_pl/runtime/guard.py) on real runs with injected NaNs: a
non-finite update of each part is skipped and undone in both modes, and a repeating fault stops
the run with its verdict while keeping the last checkpoint."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

from conftest import TINY, TINY_MODEL_DATA
from mpdp_pl.runtime import checkpoint
from mpdp_pl.algos.dhmbpo import DHMBPO
from mpdp_pl.algos.mbpo import MBPO
from mpdp_pl.algos.mpdp import MPDP
from mpdp_pl.algos.mpdp_plan_value import MPDPPlanValue
from mpdp_pl.algos.mppve import MPPVE
from mpdp_pl.config import load_config, parse_overrides
from mpdp_pl.runtime.guard import NumericalFault
from mpdp_pl.run import train_module


def rows(run_dir: Path) -> list[dict]:
    with open(run_dir / "metrics.csv") as f:
        return list(csv.DictReader(f))


class NaNInjection(MPDP):
    """MPDP whose ``part`` loss is NaN for the updates listed in ``bad`` (fault injection)."""

    part, bad = "critic", set()

    def __init__(self, cfg, spec):
        super().__init__(cfg, spec)
        self.calls = {"critic": 0, "actor": 0, "model": 0}
        fit = self.model_learner.fit

        def diverging_fit(data, split, first=False):  # a diverged training when listed
            metrics = fit(data, split, first)
            if self._maybe_nan("model", torch.tensor(0.0)).isnan():
                with torch.no_grad():
                    next(self.dynamics.ensemble.parameters()).fill_(float("nan"))
            return metrics

        self.model_learner.fit = diverging_fit

    def critic_loss(self, batch):
        loss, q = super().critic_loss(batch)
        return self._maybe_nan("critic", loss), q

    def actor_step(self):  # the farsighted improvement, its loss made NaN when listed
        original = self.improve

        def faulty(*args, **kwargs):
            result = original(*args, **kwargs)
            return result._replace(loss=self._maybe_nan("actor", result.loss))

        self.improve = faulty
        try:
            super().actor_step()
        finally:
            self.improve = original

    def _maybe_nan(self, part, loss):
        self.calls[part] += 1
        return loss * float("nan") if part == self.part and self.calls[part] in self.bad else loss


class MBPONaNInjection(MBPO):
    """MBPO whose critic loss is NaN for the critic updates listed in ``bad``."""

    bad = set()

    def __init__(self, cfg, spec):
        super().__init__(cfg, spec)
        self.critic_calls = 0

    def critic_loss(self, batch):
        loss, q = super().critic_loss(batch)
        self.critic_calls += 1
        return (loss * float("nan") if self.critic_calls in self.bad else loss), q


def fault_cfg(tmp_path, **extra):
    return load_config("InvertedPendulum-v4", "mpdp", {
        **parse_overrides(TINY), "steps": 400, "model.hidden": 16, "model.max_steps": 20,
        "model.train_freq": 50, "improvement.horizon": 2, "updates.critic_per_step": 1.0, "logger": "none",
        "out": str(tmp_path / "run"),
        **extra})


@pytest.mark.parametrize("part,guard", [("critic", "sync"), ("actor", "sync"), ("model", "sync"),
                                        ("critic", "deferred"), ("actor", "deferred")])
def test_a_nonfinite_update_is_skipped_and_undone(tmp_path, part, guard):
    NaNInjection.part, NaNInjection.bad = part, {2, 3}
    out = train_module(NaNInjection, fault_cfg(tmp_path, nonfinite_guard=guard))
    last = rows(out)[-1]
    assert float(last["train/nonfinite_skips"]) == 2
    assert int(last["env_steps"]) == 400
    state = checkpoint.read(checkpoint.latest(out))["module"]
    assert all(torch.isfinite(v.float()).all() for v in state.values())


@pytest.mark.parametrize("guard", ["sync", "deferred"])
def test_a_repeating_fault_stops_the_run_and_keeps_the_last_checkpoint(tmp_path, guard):
    NaNInjection.part, NaNInjection.bad = "critic", set(range(120, 10**6))
    with pytest.raises(NumericalFault, match=r"\d+ non-finite critic updates in a row"):
        train_module(NaNInjection, fault_cfg(tmp_path, nonfinite_limit=5, checkpoint_every=300,
                                             nonfinite_guard=guard))
    ckpt = checkpoint.latest(tmp_path / "run")
    assert ckpt is not None and ckpt.name == "step000000300"
    # the verdict stays with the run, for the report's table
    assert "non-finite critic updates in a row" in (tmp_path / "run" / "failed.txt").read_text()


@pytest.mark.parametrize("guard", ["sync", "deferred"])
def test_the_guard_holds_at_twenty_critic_updates_on_model_data(tmp_path, guard):
    """Critics on MBPO's real/model mix at 20 updates per env step: faults deep into the bursts
    are skipped and undone, the run ends finite and logs the model data's age."""
    MBPONaNInjection.bad = {900, 901, 1700}
    cfg = load_config("InvertedPendulum-v4", "mbpo", {
        **parse_overrides(TINY), "steps": 300, "model.hidden": 16, "model.max_steps": 20,
        "model.train_freq": 50, "logger": "none", "out": str(tmp_path / "run"),
        "durability.nonfinite_guard": guard, "updates.critic_per_step": 20.0, "updates.actor_per_step": 1.0,
        "rollouts.batch_size": 100,
        "rollouts.epoch_length": 50, "rollouts.schedule": [0, 1, 1, 2]})
    out = train_module(MBPONaNInjection, cfg)
    last = rows(out)[-1]
    assert float(last["train/nonfinite_skips"]) == 3 and int(last["env_steps"]) == 300
    assert float(last["train/updates"]) == 20 * 101  # env steps 200..300, 20 critic updates each
    assert float(last["train/model_buffer_size"]) > 0 and float(last["train/model_data_age"]) > 0
    state = checkpoint.read(checkpoint.latest(out))["module"]
    assert all(torch.isfinite(v.float()).all() for v in state.values())


def first_fit_diverges(base):
    """``base`` whose first model training diverges (NaN weights: the guard undoes it and the
    training is tried again next round), recording at each critic update whether a model had
    trained. Each instance is kept in ``made``."""

    class FirstFitDiverges(base):
        made = []

        def __init__(self, cfg, spec):
            super().__init__(cfg, spec)
            self.fits, self.model_at_update = 0, []
            self.made.append(self)
            fit = self.model_learner.fit

            def diverging_fit(data, split, first=False):
                metrics = fit(data, split, first)
                self.fits += 1
                if self.fits == 1:
                    with torch.no_grad():
                        next(self.dynamics.ensemble.parameters()).fill_(float("nan"))
                return metrics

            self.model_learner.fit = diverging_fit

        def critic_loss(self, batch):
            self.model_at_update.append(self.model_ready)
            return super().critic_loss(batch)

    return FirstFitDiverges


@pytest.mark.parametrize("base,algo", [(MPPVE, "mppve"), (MPDPPlanValue, "mpdp_pv")])
def test_plan_value_updates_wait_for_a_model_that_trained(tmp_path, base, algo):
    """MPPVE's targets and plans run through the model: after a first training that diverged,
    no critic update runs until a training succeeds, and then they run."""
    cfg = load_config("Hopper-v4", algo, {**parse_overrides(TINY), **TINY_MODEL_DATA,
                                          "steps": 300, "out": str(tmp_path / "run")})
    cls = first_fit_diverges(base)
    train_module(cls, cfg)
    module = cls.made[0]
    assert module.fits >= 2 and module.model_learner.trainings >= 1
    assert module.model_at_update and all(module.model_at_update)


def test_a_dhmbpo_burst_waits_for_a_model_that_trained(tmp_path):
    """DHMBPO's rollouts run through the model: after a first training that diverged (env step
    200), the burst it owes (25 critic-only updates, 100 pairs) waits for the training that
    succeeds (201) and runs there whole, with the 10 warm-start pairs; the burst at 300 adds 125.
    No rollout comes from an untrained model."""

    class DHFirstFitDiverges(first_fit_diverges(DHMBPO)):
        def rollout(self, with_u=False):
            self.model_at_update.append(self.model_ready)
            return super().rollout(with_u)

    cfg = load_config("Hopper-v4", "dhmbpo", {
        "data.init_random_steps": 200, "eval.every": 100, "eval.episodes": 1, "data.batch_size": 64,
        "networks.hidden_sizes": [32, 32], "model.hidden": 32, "updates.every": 100,
        "model.train_freq": 100, "model.batch_size": 64, "model.max_epochs": 2,
        "dhmbpo.rollout_every": 10, "dhmbpo.rollout_length": 5, "dhmbpo.buffer_size": 2000,
        "updates.warmup": 10, "trainer.num_threads": 1, "logger": "none", "steps": 300,
        "out": str(tmp_path / "run")})
    train_module(DHFirstFitDiverges, cfg)
    module = DHFirstFitDiverges.made[-1]
    assert module.fits >= 2 and module.model_learner.trainings >= 1
    assert module.model_at_update and all(module.model_at_update)
    assert module.updates == (25 + 100 + 10) + (25 + 100)
