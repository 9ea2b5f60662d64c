"""Learning tests: real runs at real budgets, minutes each, so marked ``slow`` and kept out of
the default run (``pytest -m slow`` runs them)."""

from __future__ import annotations

import csv

import pytest

from conftest import run_train


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1])
def test_the_first_run_learns_inverted_pendulum(tmp_path, seed):
    """``python train.py`` (MPDP on InvertedPendulum-v4 at its default budget) ends with an
    evaluation return of at least 900 (a random policy gets about 8)."""
    out = tmp_path / "run"
    proc = run_train(["--seed", str(seed), "--out", str(out), "--logger", "csv"], cwd=tmp_path,
                     timeout=3600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(out / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert int(rows[-1]["env_steps"]) == 6000
    assert float(rows[-1]["eval/return"]) >= 900, [r["eval/return"] for r in rows]


HOPPER_STEPS = 10_000  # init_random_steps (5000) + 5000 env steps of farsighted updates


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason="MPDP's default u_T rule (the held-out median) cuts about "
                   "half of each batch per model step: a realized horizon of 1-1.9 on Hopper; "
                   "a threshold at 1.5 x the 0.9 quantile of u at s_0 reached 4.3-4.6 of Hmax 5 "
                   "(docs/hopper_probes.md) but did not out-learn it. strict: passing fails, so the mark "
                   "goes when the default changes")
def test_hopper_horizon_grows_past_two_at_the_default_config(tmp_path):
    """MPDP on Hopper-v4 at its default config for 10k env steps: the mean realized horizon
    over the last 2k env steps (the logged interval means of ``train/realized_horizon``) is
    above 2, i.e. the lookahead is not the one step of SAC plus a model."""
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
