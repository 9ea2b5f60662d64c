"""Model training whose holdout is never fitted on (a fixed split kept in the replay buffer and
its checkpoints) and whose cost is bounded by a budget of minibatch steps."""

from __future__ import annotations

import math

import pytest
import torch
from tensordict import TensorDict

from conftest import TINY, run_train, model_settings
from mpdp_pl.runtime import checkpoint
from mpdp_pl.algos.mpdp import MPDP
from mpdp_pl.config import ConfigError, load_config, parse_overrides
from mpdp_pl.environment.data import chronological_order, load_buffer, make_replay_buffer
from mpdp_pl.models.dynamics import DynamicsModel
from mpdp_pl.models.fitting import (fixed_split, holdout_flags,
                                     holdout_scores, param_groups, train_dynamics)


# ------------------------------------------------------------------ the split itself
@pytest.mark.parametrize("ratio", [0.2, 0.3, 0.05])
def test_holdout_flags_are_exact_and_continue_across_calls(ratio):
    whole = holdout_flags(0, 1000, ratio)
    assert int(whole.sum()) == int(1000 * ratio)
    # drawn round by round (as the loop stores them), the flags are the same
    pieces = torch.cat([holdout_flags(a, b - a, ratio) for a, b in [(0, 1), (1, 37), (37, 1000)]])
    assert torch.equal(pieces, whole)
    # spread evenly: every window of w consecutive transitions holds floor(w r) or ceil(w r)
    for w in (round(1 / ratio), 20, 77):
        counts = whole.float().unfold(0, w, 1).sum(-1)
        lo, hi = math.floor(w * ratio + 1e-9), math.ceil(w * ratio - 1e-9)
        assert counts.min() >= lo and counts.max() <= hi, (w, counts.min(), counts.max())


def test_fixed_split_holds_out_the_newest_flagged_and_releases_the_older():
    n, settings = 1000, model_settings(max_holdout=50, holdout_ratio=0.2)
    flags = holdout_flags(0, n, 0.2)
    train, hold = fixed_split(flags, torch.arange(n), settings)
    flagged = flags.nonzero().squeeze(-1)
    assert torch.equal(hold, flagged[-50:])                       # the newest 50 flagged rows
    assert set(train.tolist()).isdisjoint(hold.tolist())
    assert sorted(train.tolist() + hold.tolist()) == list(range(n))  # older flagged rows train


def test_chronological_order_of_a_wrapped_buffer():
    buf = make_replay_buffer(10, "cpu")
    for i in range(13):
        buf.extend(TensorDict({"x": torch.tensor([float(i)])}, batch_size=[1]))
    order = chronological_order(buf)
    assert buf[:]["x"][order].tolist() == [float(i) for i in range(3, 13)]


# ------------------------------------------------------------------ inside real runs
def _cfg(tmp_path, **extra):
    return load_config("Hopper-v4", "mpdp", {
        **parse_overrides(TINY), "steps": 700, "data.init_random_steps": 200, "eval.every": 700,
        "eval.episodes": 1, "model.train_freq": 100, "model.hidden": 16, "model.max_steps": 20,
        "model.max_holdout": 60, "durability.checkpoint_every": 400, "improvement.horizon": 3, "logger": "none",
        "out": str(tmp_path / "run"), **extra})


class Recording(MPDP):
    """Records the storage rows of every training's split (no wrap-around at this size)."""

    splits: list = []

    def __init__(self, cfg, spec):
        super().__init__(cfg, spec)
        split = self.model_learner.split

        def recording(data):
            train, hold = split(data)
            Recording.splits.append((set(train.tolist()), set(hold.tolist())))
            return train, hold

        self.model_learner.split = recording


def test_no_holdout_row_was_ever_fitted_on_and_resume_keeps_the_split(tmp_path):
    from mpdp_pl.run import train_module

    Recording.splits = []
    cfg = _cfg(tmp_path)
    out = train_module(Recording, cfg)
    splits = Recording.splits
    assert len(splits) == 6  # at 200, 300, ..., 700
    fitted: set = set()
    for train, hold in splits:
        fitted |= train
        assert not hold & fitted, "a holdout row was trained on in this or an earlier training"
    assert [len(h) for _, h in splits] == [40, 60, 60, 60, 60, 60]  # 20%, capped at 60
    # the checkpoint's buffer holds the flags: exactly the rule's, in storage order
    ckpt = checkpoint.latest(out)
    buf = make_replay_buffer(cfg["data"]["buffer_size"], "cpu")
    load_buffer(buf, ckpt / "replay_buffer")
    assert torch.equal(buf[:]["holdout"], holdout_flags(0, 700, 0.2))
    # a resumed run continues the same flags (nothing redrawn) and its holdout stays unfitted
    proc = run_train(["--resume", str(out), "--steps", "900"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    buf = make_replay_buffer(cfg["data"]["buffer_size"], "cpu")
    load_buffer(buf, checkpoint.latest(out) / "replay_buffer")
    assert len(buf) == 900
    assert torch.equal(buf[:]["holdout"], holdout_flags(0, 900, 0.2))


def test_redrawn_split_is_mbpos_fresh_split(tmp_path):
    """The old rule, kept as an option, trains on rows it held out before (what the fixed split
    exists to prevent)."""
    from mpdp_pl.run import train_module

    Recording.splits = []
    train_module(Recording, _cfg(tmp_path, model_holdout="redrawn", steps=500))
    fitted: set = set()
    leaked = 0
    for train, hold in Recording.splits:
        fitted |= train
        leaked += len(hold & fitted)
    assert leaked > 0


# ------------------------------------------------------------------ the step budget
def _data(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    obs = torch.randn(n, 3, generator=g)
    act = torch.rand(n, 1, generator=g) * 2 - 1
    nxt = obs + 0.1 * torch.tanh(obs.roll(1, -1)) + 0.05 * act
    rew = obs[:, 0] - act[:, 0] ** 2
    return obs, act, nxt, rew, torch.zeros(n, dtype=torch.bool)


@pytest.mark.parametrize("n", [1000, 8000])
def test_step_budget_bounds_the_work_whatever_the_data(n):
    torch.manual_seed(0)
    model = DynamicsModel(3, 1, members=4, num_elites=2, hidden=32, layers=2,
                          termination_fn=lambda s: torch.zeros(s.shape[0], dtype=torch.bool))
    opt = torch.optim.Adam(param_groups(model, 1e-3, [0.0] * 3))
    settings = model_settings(batch_size=64, max_steps=300, eval_every=100, patience=100)
    data = _data(n)
    hold = torch.arange(n - 200, n)
    split = (torch.arange(n - 200), hold)
    steps = []
    real_step = opt.step

    def counting_step(*a, **k):
        steps.append(1)
        return real_step(*a, **k)

    opt.step = counting_step
    metrics = train_dynamics(model, *data, opt, settings, split=split)
    assert len(steps) == 300 and metrics["model/steps"] == 300 and metrics["model/epochs"] == 3
    # and it learned: the elites' holdout MSE is far below the untrained model's (about 1)
    fresh = DynamicsModel(3, 1, members=4, num_elites=2, hidden=32, layers=2)
    fresh.input_norm.load_state_dict(model.input_norm.state_dict())
    fresh.target_norm.load_state_dict(model.target_norm.state_dict())
    x = model.input_norm(torch.cat([data[0], data[1]], -1))[hold]
    y = model.target_norm(DynamicsModel.targets(data[0], data[2], data[3]))[hold]
    untrained, _ = holdout_scores(fresh, x, y, None)
    assert metrics["model/holdout_mse"] < 0.3 * untrained.mean().item()


def test_early_stopping_counts_rounds_of_eval_every_steps():
    """A model that cannot improve (learning rate 0) stops after `patience` rounds."""
    model = DynamicsModel(3, 1, members=4, num_elites=2, hidden=16, layers=2)
    opt = torch.optim.Adam(param_groups(model, 0.0, [0.0] * 3))
    settings = model_settings(batch_size=32, max_steps=10_000, eval_every=20, patience=3)
    metrics = train_dynamics(model, *_data(600), opt, settings,
                             split=(torch.arange(500), torch.arange(500, 600)))
    assert metrics["model/epochs"] == 3 and metrics["model/steps"] == 60


@pytest.mark.parametrize("item,message", [
    ("model.max_steps=0", "model.max_steps=0: must be > 0"),
    ("model.max_steps=abc", "model.max_steps='abc': expected int or null"),
    ("model.max_steps=true", "model.max_steps=True: expected int or null"),
    ("model.eval_every=0", "model.eval_every=0: must be > 0"),
    ("model.holdout=sometimes", "model.holdout='sometimes': must be one of fixed, redrawn"),
    ("improvement.unroll_form=fast", "improvement.unroll_form='fast': must be one of auto, static, live"),
])
def test_bad_values_are_one_line_errors(item, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_config("Hopper-v4", "mpdp", parse_overrides([item]))


def test_null_budget_is_the_epoch_rule():
    assert load_config("Hopper-v4", "mpdp", parse_overrides(["model.max_steps=null"]))["model"]["max_steps"] is None
