"""Learning tests: real runs at real budgets, minutes each, so marked ``slow`` and kept out of
the default run (``pytest -m slow`` runs them)."""

from __future__ import annotations

import csv

import pytest

from conftest import run_train


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1])
def test_the_first_run_learns_inverted_pendulum(tmp_path, seed):
    """``python train.py`` (MPDP, ``mpdp_pv``, on InvertedPendulum-v4 at its default budget) ends
    with an evaluation return of at least 900 (a random policy gets about 6)."""
    out = tmp_path / "run"
    proc = run_train(["--seed", str(seed), "--out", str(out), "--logger", "csv"], cwd=tmp_path,
                     timeout=3600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(out / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert int(rows[-1]["env_steps"]) == 6000
    assert float(rows[-1]["eval/return"]) >= 900, [r["eval/return"] for r in rows]


HOPPER_STEPS = 10_000  # init_random_steps (5000) + 5000 env steps of updates


@pytest.mark.slow
def test_hopper_horizon_grows_past_two_at_the_default_config(tmp_path):
    """MPDP (``mpdp_pv``) on Hopper-v4 at its default config for 10k env steps: the mean realized
    horizon over the last 2k env steps (the logged interval means of ``train/realized_horizon``:
    model rewards before the plan value, of at most 6) is above 2, i.e. the lookahead reaches
    past the plan. The one-step ``mpdp``'s held-out-median cut stayed at 1-1.9 here."""
    out = tmp_path / "run"
    proc = run_train(["--env", "Hopper-v4", "--steps", str(HOPPER_STEPS), "--out", str(out),
                      "--logger", "csv", "eval.every=1000", "eval.episodes=2"], cwd=tmp_path,
                     timeout=3 * 3600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(out / "metrics.csv") as f:
        rows = [r for r in csv.DictReader(f) if int(r["env_steps"]) > HOPPER_STEPS - 2000]
    assert len(rows) == 2
    horizons = [float(r["train/realized_horizon"]) for r in rows]
    assert sum(horizons) / len(horizons) > 2, horizons
