"""Runs written by earlier versions still resume, extend their budget, and evaluate:
- before the package moved into layers (made at 4a85891 with ``train.py --env
  InvertedPendulum-v4 --algo sac|mpdp --steps 300`` and tiny sizes, ``tests/data/checkpoint_4a85891``);
- by the last version with one flat namespace of keys (made at aad51ef, the command in each
  run's config.yaml, ``tests/data/checkpoint_aad51ef``): their configs and checkpoints hold flat
  keys, which migrate to the groups."""

from __future__ import annotations

import csv
import shutil
import subprocess
import sys

import pytest
import yaml
from conftest import ROOT, run_train

OLD = ROOT / "tests" / "data" / "checkpoint_4a85891"
FLAT = ROOT / "tests" / "data" / "checkpoint_aad51ef"


@pytest.mark.parametrize("where, algo", [(OLD, "sac"), (OLD, "mpdp"), (FLAT, "dhmbpo"), (FLAT, "mpdp_pv")])
def test_an_earlier_run_resumes_and_evaluates(tmp_path, where, algo):
    run = tmp_path / algo
    shutil.copytree(where / algo, run)
    flat = yaml.safe_load((run / "config.yaml").read_text())
    before = (run / "metrics.csv").read_text()
    if where is FLAT:  # as it was written, before any resume rewrote its config
        proc = subprocess.run([sys.executable, "-m", "mpdp_pl.evaluate", str(run), "--episodes", "1"],
                              cwd=ROOT, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
    proc = run_train(["--resume", str(run), "--steps", "450"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    after = (run / "metrics.csv").read_text()
    assert after.startswith(before)  # the old rows stay; the run goes on from 300
    with open(run / "metrics.csv") as f:
        assert [int(r["env_steps"]) for r in csv.DictReader(f)] == [150, 300, 450]
    with open(run / "metrics.csv") as f:  # every row under the file's own header
        header, *rows = list(csv.reader(f))
    assert all(len(r) == len(header) for r in rows)
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert cfg["steps"] == 450 and cfg["algo"] == algo
    # the stored config now holds the groups, with the flat values it had
    assert "batch_size" not in cfg and cfg["data"]["batch_size"] == flat["batch_size"] == 32
    assert cfg["model"]["hidden"] == flat["model_hidden"] and cfg["critic"]["gamma"] == flat["gamma"]
    proc = subprocess.run([sys.executable, "-m", "mpdp_pl.evaluate", str(run), "--episodes", "1"],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_a_run_that_used_a_removed_switch_is_refused_with_the_commit_that_continues_it(tmp_path):
    """The old MPDP run with ``critic_target: mve`` in its config (a switch removed after it
    measured no gain): --resume is refused with one line naming the commit that still has it,
    and nothing the run wrote changes."""
    from mpdp_pl.config import LAST_WITH_REMOVED

    run = tmp_path / "mpdp"
    shutil.copytree(OLD / "mpdp", run)
    cfg_file = run / "config.yaml"
    cfg_file.write_text(cfg_file.read_text().replace("critic_target: td", "critic_target: mve"))
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    proc = run_train(["--resume", str(run), "--steps", "450"], cwd=tmp_path)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "critic_target=mve" in lines[0] and LAST_WITH_REMOVED in lines[0]
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before


def test_the_benchmarks_read_an_earlier_versions_transitions():
    """bench/cost.py and bench/model_training.py prefill their buffers from a recorded run, which
    an earlier version may have written in flat keys: its config is migrated, and every transition
    it collected comes back, in order."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_model_training", ROOT / "bench" / "model_training.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    flat = yaml.safe_load((FLAT / "mpdp_pv" / "config.yaml").read_text())
    cfg, data = bench.load_transitions(FLAT / "mpdp_pv")
    assert "buffer_size" in flat and cfg["data"]["buffer_size"] == flat["buffer_size"]
    assert data.shape[0] == flat["steps"] == 300  # one env: one transition per env step
    # in the order collected: each transition starts where the last one ended, unless an episode ended
    chained = (data["next", "observation"][:-1] == data["observation"][1:]).all(-1)
    ended = data["next", "done"][:-1].squeeze(-1)
    assert (chained | ended).all() and chained.sum() >= 250
