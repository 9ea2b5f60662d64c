"""The comparison runner on a real (tiny) grid: its CSV, table and PNG agree with the runs' own
metrics.csv files, a second call resumes instead of redoing finished runs, and a larger budget
continues the runs from their checkpoints."""

from __future__ import annotations

import csv
import fcntl
import shutil
import statistics
import subprocess
import sys

import pytest
from conftest import ROOT

OVERRIDES = ["init_random_steps=200", "eval_every=200", "eval_episodes=2", "batch_size=64",
             "hidden_sizes=[32,32]", "model_hidden=32", "model_max_steps=20", "horizon=3"]


GRID = ["--envs", "InvertedPendulum-v4=400", "--algos", "sac", "mpdp", "--seeds", "0", "1",
        "--max-seeds", "mpdp=1"]


def compare(out, *extra, grid=GRID):
    cmd = [sys.executable, "-m", "mpdp_pl.compare", *grid, "--workers", "2", "--out", str(out),
           *extra]
    return subprocess.run(cmd, check=False, cwd=ROOT, capture_output=True, text=True, timeout=900)


def evals(run_dir):
    with open(run_dir / "metrics.csv") as f:
        return [(int(r["env_steps"]), float(r["eval/return"])) for r in csv.DictReader(f)]


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    out = tmp_path_factory.mktemp("grid")
    proc = compare(out, *OVERRIDES)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out


def test_outputs_match_the_runs(grid):
    runs = {("sac", 0), ("sac", 1), ("mpdp", 0)}
    assert {p.name for p in (grid / "InvertedPendulum-v4").iterdir() if p.is_dir()} == {
        f"{a}-seed{s}" for a, s in runs}
    with open(grid / "results.csv") as f:
        rows = list(csv.DictReader(f))
    for algo, seed in runs:
        mine = [(int(r["env_steps"]), float(r["eval/return"])) for r in rows
                if r["algo"] == algo and r["seed"] == str(seed)]
        assert mine == evals(grid / "InvertedPendulum-v4" / f"{algo}-seed{seed}")
        assert [s for s, _ in mine] == [200, 400]
    # the table's SAC cell at 400 steps: mean and std over the two seeds' own last evaluations
    final = [evals(grid / "InvertedPendulum-v4" / f"sac-seed{s}")[-1][1] for s in (0, 1)]
    cell = f"{statistics.mean(final):.0f} ± {statistics.stdev(final):.0f} @ 400"
    table = (grid / "table.md").read_text()
    sac_row = next(line for line in table.splitlines() if "| sac |" in line)
    assert cell in sac_row and "| 2 |" in sac_row
    mpdp_row = next(line for line in table.splitlines() if "| mpdp |" in line)
    assert "| 1 |" in mpdp_row
    assert (grid / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_rliable_statistics_match_the_runs(grid):
    """stats.csv against the runs' own last evaluations: the mean, the IQM (= the mean with 2
    seeds), the score normalized by InvertedPendulum's maximum, and P(mpdp > sac) counted pair
    by pair."""
    task = grid / "InvertedPendulum-v4"
    sac = [evals(task / f"sac-seed{s}")[-1][1] for s in (0, 1)]
    mpdp = evals(task / "mpdp-seed0")[-1][1]
    with open(grid / "stats.csv") as f:
        stats = {(r["scope"], r["algo"], r["metric"]): r for r in csv.DictReader(f)}
    for metric in ("mean", "IQM"):
        r = stats[("InvertedPendulum-v4", "sac", metric)]
        assert float(r["value"]) == pytest.approx(statistics.mean(sac), rel=1e-5)
        assert min(sac) - 1e-3 <= float(r["ci_low"]) <= float(r["ci_high"]) <= max(sac) + 1e-3
        assert r["seeds"] == "2"
    assert float(stats[("normalized", "sac", "mean")]["value"]) == pytest.approx(
        statistics.mean(sac) / 1000, rel=1e-5)
    pairs = [1.0 if mpdp > y else 0.5 if mpdp == y else 0.0 for y in sac]
    assert float(stats[("P(mpdp > sac)", "sac", "P")]["value"]) == pytest.approx(
        statistics.mean(pairs), abs=1e-6)
    table = (grid / "table.md").read_text()
    assert "## Statistics (rliable)" in table and "IQM = mean" in table
    assert (grid / "profiles.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_resume_reuses_finished_runs_and_restarts_partial_ones(grid):
    base = grid / "InvertedPendulum-v4"
    kept = {p: p.stat().st_mtime_ns for p in (base / "sac-seed0" / "metrics.csv",
                                              base / "mpdp-seed0" / "metrics.csv")}
    partial = base / "sac-seed1" / "metrics.csv"
    lines = partial.read_text().splitlines(keepends=True)
    partial.write_text("".join(lines[:2]))  # as if killed after the first evaluation,
    shutil.rmtree(base / "sac-seed1" / "checkpoints")  # before any checkpoint
    proc = compare(grid, *OVERRIDES)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "(2 already done)" in proc.stdout
    assert {p: p.stat().st_mtime_ns for p in kept} == kept
    assert [s for s, _ in evals(base / "sac-seed1")] == [200, 400]
    aside = [p for p in base.iterdir() if p.name.startswith("sac-seed1.incomplete-")]
    assert len(aside) == 1 and (aside[0] / "metrics.csv").read_text() == "".join(lines[:2])


def test_other_overrides_are_refused(grid):
    proc = compare(grid, *OVERRIDES[:-1])
    assert proc.returncode != 0
    assert proc.stderr.strip().count("\n") == 0 and "overrides" in proc.stderr


def test_a_second_runner_on_a_grid_in_use_is_refused(grid):
    before = (grid / "results.csv").read_text()
    with open(grid / ".grid.lock", "w") as held:  # as a runner working on this grid holds it
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        proc = compare(grid, *OVERRIDES)
    assert proc.returncode != 0
    assert proc.stderr.strip().count("\n") == 0 and "another runner" in proc.stderr
    assert (grid / "results.csv").read_text() == before

def test_merge_rebuilds_the_table_from_an_earlier_results_csv(grid, tmp_path):
    proc = compare(tmp_path, "--report-only", "--merge", str(grid / "results.csv"), *OVERRIDES)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert (tmp_path / "table.md").read_text() == (grid / "table.md").read_text()
    rows = {tuple(r.values()) for r in csv.DictReader(open(tmp_path / "results.csv"))}
    assert rows == {tuple(r.values()) for r in csv.DictReader(open(grid / "results.csv"))}
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n")
    proc = compare(tmp_path / "other", "--report-only", "--merge", str(bad), *OVERRIDES)
    assert proc.returncode != 0 and proc.stderr.strip().count("\n") == 0 and "bad.csv" in proc.stderr
    assert not (tmp_path / "other").exists()  # refused before anything was written

def test_a_larger_budget_continues_runs_from_their_checkpoints(grid):
    run = grid / "InvertedPendulum-v4" / "sac-seed0"
    before = evals(run)
    aside_before = sorted(p.name for p in run.parent.iterdir())
    proc = compare(grid, *OVERRIDES, grid=["--envs", "InvertedPendulum-v4=600", "--algos", "sac",
                                           "--seeds", "0"])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    after = evals(run)
    assert after[: len(before)] == before  # the first 400 steps are kept, not redone
    assert [s for s, _ in after] == [200, 400, 600]
    assert "resumed" in (run / "config.yaml").read_text()
    assert sorted(p.name for p in run.parent.iterdir()) == aside_before  # nothing moved aside


def test_published_anchors_join_the_table_and_figure(grid, tmp_path):
    anchors = tmp_path / "anchors.csv"
    anchors.write_text("method,env,env_steps,mean_return,std_return,seeds,mean_hours\n"
                       "DHMBPO,InvertedPendulum,200,512.4,10.2,8,0.01\n"
                       "DHMBPO,InvertedPendulum,5000,900,1,8,0.1\n"
                       "SAC,Hopper,200,7,1,8,0.01\n")  # another task: not in this grid's table
    proc = compare(tmp_path, "--report-only", "--merge", str(grid / "results.csv"),
                   "--anchors", str(anchors), *OVERRIDES)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = [ln for ln in (tmp_path / "table.md").read_text().splitlines() if "(published)" in ln]
    # the budget is 400: columns at 200 and 400; the anchor reports 200 only
    assert rows == ["| InvertedPendulum-v4 | DHMBPO (published) | - | 512 ± 10 @ 200 | - | - |"]
    assert (tmp_path / "curves.png").stat().st_size > 0
    anchors.write_text("method,env\nDHMBPO,Hopper\n")
    proc = compare(tmp_path / "bad", "--report-only", "--anchors", str(anchors), *OVERRIDES)
    assert proc.returncode != 0 and proc.stderr.strip().count("\n") == 0 and "anchors" in proc.stderr


def test_a_variant_runs_under_its_own_name_with_its_overrides(tmp_path):
    grid = ["--envs", "InvertedPendulum-v4=200", "--algos", "sac", "--seeds", "0",
            "--variant", "sac-c2", "sac", "critic_updates_per_step=2"]
    proc = compare(tmp_path, *OVERRIDES, "init_random_steps=100", "eval_every=100", grid=grid)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    import yaml
    cfg = yaml.safe_load((tmp_path / "InvertedPendulum-v4" / "sac-c2-seed0" / "config.yaml").read_text())
    assert cfg["critic_updates_per_step"] == 2 and cfg["algo"] == "sac"
    plain = yaml.safe_load((tmp_path / "InvertedPendulum-v4" / "sac-seed0" / "config.yaml").read_text())
    assert plain["critic_updates_per_step"] == 1
    names = {r["algo"] for r in csv.DictReader(open(tmp_path / "results.csv"))}
    assert names == {"sac", "sac-c2"}
    # twice the critic updates of the plain run by the same env step
    rows = {r: list(csv.DictReader(open(tmp_path / "InvertedPendulum-v4" / f"{r}-seed0" / "metrics.csv")))
            for r in ("sac", "sac-c2")}
    assert float(rows["sac-c2"][-1]["train/updates"]) == 2 * float(rows["sac"][-1]["train/updates"])
    # a report from the grid alone keeps the variant's rows (its definition is in grid.json)
    report = grid[:-4]
    proc = compare(tmp_path, "--report-only", *OVERRIDES, "init_random_steps=100", "eval_every=100",
                   grid=report)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert {r["algo"] for r in csv.DictReader(open(tmp_path / "results.csv"))} == {"sac", "sac-c2"}
    # a grid override of the variant's own key is refused
    proc = compare(tmp_path / "clash", *OVERRIDES, "critic_updates_per_step=4", grid=grid)
    assert proc.returncode != 0 and "critic_updates_per_step" in proc.stderr
    # the same name with another definition is refused in one line
    changed = grid[:-1] + ["critic_updates_per_step=3"]
    proc = compare(tmp_path, *OVERRIDES, "init_random_steps=100", "eval_every=100", grid=changed)
    assert proc.returncode != 0 and proc.stderr.strip().count("\n") == 0 and "sac-c2" in proc.stderr


def test_a_run_stopped_by_numerical_faults_stays_in_the_table_as_a_failure(grid, tmp_path):
    env_dir = tmp_path / "InvertedPendulum-v4"
    env_dir.mkdir()
    for run in ("sac-seed0", "sac-seed1", "mpdp-seed0"):
        shutil.copytree(grid / "InvertedPendulum-v4" / run, env_dir / run)
    (tmp_path / "grid.json").write_text((grid / "grid.json").read_text())
    failed = env_dir / "sac-seed1"
    lines = (failed / "metrics.csv").read_text().splitlines(keepends=True)
    (failed / "metrics.csv").write_text("".join(lines[:2]))  # it stopped after its first eval
    (failed / "failed.txt").write_text("5 non-finite critic updates in a row by env step 300\n")
    first = evals(failed)[0]
    proc = compare(tmp_path, *OVERRIDES)  # not rerun: the failure is the result
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert evals(failed) == [first] and "(3 already done)" in proc.stdout
    row = next(ln for ln in (tmp_path / "table.md").read_text().splitlines() if "| sac |" in ln)
    assert "failed, non-finite: seed 1 at 200" in row
    # at the budget the failed seed counts with its last evaluation
    other = dict(evals(env_dir / "sac-seed0"))[400]  # (another test may have extended the run)
    expected = statistics.mean([other, first[1]])
    assert f"{expected:.0f} ± " in row.split("|")[5]
    flags = {(r["seed"], r["failed"]) for r in csv.DictReader(open(tmp_path / "results.csv"))
             if r["algo"] == "sac"}
    assert flags == {("0", "0"), ("1", "1")}


def test_every_run_is_validated_before_anything_is_written(tmp_path):
    grid = ["--envs", "InvertedPendulum-v4=200", "--algos", "sac", "--seeds", "0",
            "--variant", "typo", "mpdp", "horizn=3"]
    proc = compare(tmp_path / "grid", *OVERRIDES, grid=grid)
    assert proc.returncode != 0 and proc.stderr.strip().count("\n") == 0
    assert "typo-seed0" in proc.stderr and "horizn" in proc.stderr
    assert not (tmp_path / "grid").exists()  # no grid.json to hold the typo against a rerun
