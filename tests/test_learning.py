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
