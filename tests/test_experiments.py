"""Every paper experiment's quick form (``train.py -m experiment=figN_quick``), shrunk further to
a tiny budget, runs real training and writes its report, checked against the runs' own
metrics.csv; the report command, given the grid alone, writes the same table from the
experiment's report settings."""

from __future__ import annotations

import csv
import subprocess
import sys

import pytest
from conftest import ROOT, run_train

TINY = ["steps=300", "seed=0", "data.init_random_steps=200", "data.batch_size=64", "networks.hidden_sizes=[32,32]",
        "model.hidden=32", "model.max_steps=20", "improvement.horizon=4", "eval.episodes=1",
        "eval.every=100", "model.train_freq=100", "rollouts.batch_size=500",
        "updates.critic_per_step=2", "updates.actor_per_step=1", "--logger", "csv"]
RUNS = {"fig1": ["mpdp_pv", "sac", "mbpo", "mppve", "m2ac", "ddpg", "pets", "poplin_a", "poplin_p"], "fig2": ["uT_q0.25", "uT_q0.5", "uT_q0.75"],
        "fig3": ["beta0.2", "beta0.5", "beta0.7"], "fig4": ["beta0.2", "beta0.5", "beta0.7", "mbpo"]}
METRIC = {"fig1": "eval/return", "fig2": "train/realized_horizon", "fig3": "model/error",
          "fig4": "eval/return"}


@pytest.mark.parametrize("fig", ["fig1", "fig2", "fig3", "fig4"])
def test_quick_experiment(tmp_path, fig):
    proc = run_train(["-m", "--out", str(tmp_path), f"experiment={fig}_quick", *TINY], cwd=tmp_path,
                     timeout=1200)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert (tmp_path / "curves.png").read_bytes()[:4] == b"\x89PNG"
    metric = METRIC[fig]
    with open(tmp_path / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert {r["algo"] for r in rows} == set(RUNS[fig])
    for name in RUNS[fig]:
        with open(tmp_path / "InvertedPendulum-v4" / name / "seed0" / "metrics.csv") as f:
            own = [(r["env_steps"], float(r[metric])) for r in csv.DictReader(f) if r[metric]]
        mine = [(r["env_steps"], float(r[metric])) for r in rows if r["algo"] == name]
        assert mine == own and own
    if fig == "fig3":  # the betas reached the runs
        for b in ("0.2", "0.5", "0.7"):
            cfg = (tmp_path / "InvertedPendulum-v4" / f"beta{b}" / "seed0" / "config.yaml").read_text()
            assert f"beta: {b}" in cfg
    # the grid reported again, alone: the experiment's settings (fig2's metric, fig1's PETS as a
    # final value) without naming them
    again = subprocess.run([sys.executable, "-m", "mpdp_pl.report", str(tmp_path), "--out",
                            str(tmp_path / "again")], cwd=ROOT, capture_output=True, text=True,
                           timeout=600, check=False)
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-2000:]
    assert (f"experiment={fig}_quick's report settings" in again.stdout) == (fig != "fig4")  # none
    assert (tmp_path / "again" / "table.md").read_text() == (tmp_path / "table.md").read_text()
