"""Runs written before the package moved into layers (issue 28; made at 4a85891 with
``train.py --env InvertedPendulum-v4 --algo sac|mpdp --steps 300`` and tiny sizes,
``tests/data/checkpoint_4a85891``) still resume, extend their budget, and evaluate."""

from __future__ import annotations

import csv
import shutil
import subprocess
import sys

import pytest
import yaml
from conftest import ROOT, run_train

OLD = ROOT / "tests" / "data" / "checkpoint_4a85891"


@pytest.mark.parametrize("algo", ["sac", "mpdp"])
def test_a_run_from_before_the_move_resumes_and_evaluates(tmp_path, algo):
    run = tmp_path / algo
    shutil.copytree(OLD / algo, run)
    before = (run / "metrics.csv").read_text()
    proc = run_train(["--resume", str(run), "--steps", "450"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    after = (run / "metrics.csv").read_text()
    assert after.startswith(before)  # the old rows stay; the run goes on from 300
    with open(run / "metrics.csv") as f:
        assert [int(r["env_steps"]) for r in csv.DictReader(f)] == [150, 300, 450]
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert cfg["steps"] == 450 and cfg["algo"] == algo
    proc = subprocess.run([sys.executable, "-m", "mpdp_pl.evaluate", str(run), "--episodes", "1"],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
