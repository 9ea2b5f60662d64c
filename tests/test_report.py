"""``python -m mpdp_pl.report`` on a real (tiny) grid made by ``train.py -m``: its CSV, table,
statistics and PNGs agree with the runs' own metrics.csv files, an earlier report's results.csv
stands for its runs, published anchors join the table, a run stopped by numerical faults stays
in it as a failure, and bad input is one line and writes nothing."""

from __future__ import annotations

import csv
import shutil
import statistics
import subprocess
import sys

import pytest
from conftest import ROOT, run_train

TINY = ["--env", "InvertedPendulum-v4", "data.init_random_steps=200", "eval.every=200", "eval.episodes=2",
        "data.batch_size=64", "networks.hidden_sizes=[32,32]", "steps=400", "--logger", "csv"]
MPDP = ["algo=mpdp", "model.hidden=32", "model.max_steps=20", "improvement.horizon=3"]


def report(*args):
    return subprocess.run([sys.executable, "-m", "mpdp_pl.report", *map(str, args)], cwd=ROOT,
                          check=False, capture_output=True, text=True, timeout=600)


def evals(run_dir, metric="eval/return"):
    with open(run_dir / "metrics.csv") as f:
        return [(int(r["env_steps"]), float(r[metric])) for r in csv.DictReader(f) if r[metric]]


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    top = tmp_path_factory.mktemp("report")
    for sweep in (["algo=sac", "seed=0,1"], [*MPDP, "seed=0"]):  # two commands, one grid
        proc = run_train(["-m", *TINY, "--out", str(top / "grid"), *sweep], cwd=top, timeout=900)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return top / "grid"


def test_outputs_match_the_runs(grid):
    task = grid / "InvertedPendulum-v4"
    with open(grid / "results.csv") as f:
        rows = list(csv.DictReader(f))
    for algo, seed in (("sac", 0), ("sac", 1), ("mpdp", 0)):
        mine = [(int(r["env_steps"]), float(r["eval/return"])) for r in rows
                if r["algo"] == algo and r["seed"] == str(seed)]
        assert mine == evals(task / algo / f"seed{seed}") and [s for s, _ in mine] == [200, 400]
    # the table's SAC cell at 400 steps: mean and std over the two seeds' own last evaluations
    final = [evals(task / "sac" / f"seed{s}")[-1][1] for s in (0, 1)]
    cell = f"{statistics.mean(final):.0f} ± {statistics.stdev(final):.0f} @ 400"
    table = (grid / "table.md").read_text()
    sac_row = next(line for line in table.splitlines() if "| sac |" in line)
    assert cell in sac_row and "| 2 |" in sac_row
    assert "| 1 |" in next(line for line in table.splitlines() if "| mpdp |" in line)
    # every seed's own value at each column, after the means
    seeds = table.split("Every seed:")[1].split("## ")[0]
    for algo, seed in (("sac", 0), ("sac", 1), ("mpdp", 0)):
        own = dict(evals(task / algo / f"seed{seed}"))
        assert (f"| InvertedPendulum-v4 | {algo} | {seed} | {own[200]:.0f} @ 200 | "
                f"{own[400]:.0f} @ 400 |") in seeds
    assert (grid / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the same report, written again by the report command, into another folder
    proc = report(grid, "--out", grid.parent / "again")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (grid.parent / "again" / "table.md").read_text() == table


def test_rliable_statistics_match_the_runs(grid):
    """stats.csv against the runs' own last evaluations: the mean, the IQM (= the mean with 2
    seeds), the score normalized by InvertedPendulum's maximum, and P(mpdp > sac) counted pair
    by pair."""
    task = grid / "InvertedPendulum-v4"
    sac = [evals(task / "sac" / f"seed{s}")[-1][1] for s in (0, 1)]
    mpdp = evals(task / "mpdp" / "seed0")[-1][1]
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
    assert "## Statistics (rliable)" in (grid / "table.md").read_text()
    assert (grid / "profiles.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_an_earlier_results_csv_stands_for_its_runs(grid, tmp_path):
    proc = report(grid / "results.csv", "--out", tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "table.md").read_text() == (grid / "table.md").read_text()
    rows = {tuple(r.values()) for r in csv.DictReader(open(tmp_path / "results.csv"))}
    assert rows == {tuple(r.values()) for r in csv.DictReader(open(grid / "results.csv"))}


def test_another_metric_is_reported_from_the_runs_own_rows(grid, tmp_path):
    proc = report(grid, "--out", tmp_path, "--metric", "train/realized_horizon", "--at", "300")
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(tmp_path / "results.csv") as f:
        rows = [(int(r["env_steps"]), float(r["train/realized_horizon"])) for r in csv.DictReader(f)
                if r["algo"] == "mpdp"]
    assert rows == evals(grid / "InvertedPendulum-v4" / "mpdp" / "seed0", "train/realized_horizon") and rows
    table = (tmp_path / "table.md").read_text()
    assert "train/realized_horizon (a)" in table
    # the horizon in hundredths (a whole-unit cell would read 1 for 0.8 to 1.4)
    at_300 = [v for step, v in rows if step <= 300][-1]
    assert f"| mpdp | 1 | {at_300:.2f} @ 300 |" in table
    assert "| sac |" not in table  # SAC logs no realized horizon: no row of dashes for it
    assert not (tmp_path / "stats.csv").exists()  # rliable's statistics are for returns


def test_published_anchors_join_the_table_and_figure(grid, tmp_path):
    anchors = tmp_path / "anchors.csv"
    anchors.write_text("method,env,env_steps,mean_return,std_return,seeds,mean_hours\n"
                       "DHMBPO,InvertedPendulum,200,512.4,10.2,8,0.01\n"
                       "DHMBPO,InvertedPendulum,5000,900,1,8,0.1\n"
                       "SAC,Hopper,200,7,1,8,0.01\n")  # another task: not in this grid's table
    proc = report(grid, "--out", tmp_path / "r", "--anchors", anchors)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [ln for ln in (tmp_path / "r" / "table.md").read_text().splitlines() if "(published)" in ln]
    # the budget is 400: columns at 200 and 400; the anchor stores 200 and 5000, so 400 is
    # interpolated: 512.4 + (200 / 4800) (900 - 512.4) = 528.55, std 10.2 - (200 / 4800) 9.2 = 9.82
    assert rows == ["| InvertedPendulum-v4 | DHMBPO (published) | - | 512 ± 10 @ 200 | ≈529 ± 10 @ 400 | - |"]
    assert "≈: a published curve interpolated" in (tmp_path / "r" / "table.md").read_text()
    assert (tmp_path / "r" / "curves.png").stat().st_size > 0


def test_two_runs_of_one_seed_are_both_reported_named_by_what_differs(tmp_path):
    common = ["--env", "InvertedPendulum-v4", "--algo", "sac", "--logger", "none", "--seed", "0",
              "steps=300", "data.init_random_steps=200", "eval.every=100", "eval.episodes=1",
              "data.batch_size=64", "networks.hidden_sizes=[16,16]", "trainer.num_threads=1"]
    for name, extra in (("a", "critic.gamma=0.9"), ("b", "critic.gamma=0.99"), ("c", "critic.gamma=0.99")):
        proc = run_train([*common, "--out", str(tmp_path / name), extra], cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr[-3000:]
    proc = report(tmp_path / "a", tmp_path / "b", "--out", tmp_path / "r")
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = list(csv.DictReader(open(tmp_path / "r" / "results.csv")))
    assert {r["algo"] for r in rows} == {"sac,critic.gamma=0.9", "sac,critic.gamma=0.99"}
    assert len(rows) == 2 * 3  # both runs, three evaluations each
    proc = report(tmp_path / "b", tmp_path / "c", "--out", tmp_path / "r2")  # the same config
    assert proc.returncode == 2 and "same run configuration" in proc.stderr
    assert str(tmp_path / "b") in proc.stderr and str(tmp_path / "c") in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and not (tmp_path / "r2").exists()


def test_a_run_stopped_by_numerical_faults_stays_in_the_table_as_a_failure(grid, tmp_path):
    for run in ("sac/seed0", "sac/seed1"):
        shutil.copytree(grid / "InvertedPendulum-v4" / run, tmp_path / "InvertedPendulum-v4" / run)
    failed = tmp_path / "InvertedPendulum-v4" / "sac" / "seed1"
    lines = (failed / "metrics.csv").read_text().splitlines(keepends=True)
    (failed / "metrics.csv").write_text("".join(lines[:2]))  # it stopped after its first eval
    (failed / "failed.txt").write_text("5 non-finite critic updates in a row by env step 300\n")
    first = evals(failed)[0]
    proc = report(tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    row = next(ln for ln in (tmp_path / "table.md").read_text().splitlines() if "| sac |" in ln)
    assert "failed, non-finite: seed 1 at 200" in row
    # at the budget the failed seed counts with its last evaluation
    other = evals(tmp_path / "InvertedPendulum-v4" / "sac" / "seed0")[-1][1]
    assert f"{statistics.mean([other, first[1]]):.0f} ± " in row.split("|")[5]
    flags = {(r["seed"], r["failed"]) for r in csv.DictReader(open(tmp_path / "results.csv"))}
    assert flags == {("0", "0"), ("1", "1")}


def test_a_seed_that_has_not_reached_a_column_leaves_the_mean_to_the_others(grid, tmp_path):
    for run in ("sac/seed0", "sac/seed1"):
        shutil.copytree(grid / "InvertedPendulum-v4" / run, tmp_path / "InvertedPendulum-v4" / run)
    behind = tmp_path / "InvertedPendulum-v4" / "sac" / "seed1"
    lines = (behind / "metrics.csv").read_text().splitlines(keepends=True)
    (behind / "metrics.csv").write_text("".join(lines[:2]))  # still running: at 200 so far
    ahead = dict(evals(tmp_path / "InvertedPendulum-v4" / "sac" / "seed0"))
    proc = report(tmp_path, "--at", "400")
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = (tmp_path / "table.md").read_text()
    row = next(ln for ln in table.splitlines() if "| sac |" in ln)
    assert f"| {ahead[400]:.0f} @ 400 (1 of 2 seeds) |" in row
    assert "| InvertedPendulum-v4 | sac | 1 | - |" in table.split("Every seed:")[1]


@pytest.mark.parametrize("args, match", [
    (["{tmp}/nothing", "--out", "{tmp}/r"], "no such run, grid or results.csv"),
    (["{tmp}/empty", "--out", "{tmp}/r"], "no runs"),
    (["{tmp}/bad.csv", "--out", "{tmp}/r"], "not a results.csv"),
    (["{grid}", "--out", "{tmp}/r", "--anchors", "{tmp}/bad.csv"], "not an anchors table"),
    (["{grid}", "--out", "{tmp}/r", "--at", "Hopper-v4=100"], "--at Hopper-v4=100"),
    (["{grid}", "{grid}/results.csv"], "--out DIR is needed"),
    (["{tmp}/nothing"], "no such run, grid or results.csv"),
    (["{grid}", "--metric", "eval/retrun"], "no run has a value of eval/retrun"),
    (["{tmp}/bad_rows", "--out", "{tmp}/r"], "not a metrics.csv of this app (ValueError"),
    (["{tmp}/bad_config", "--out", "{tmp}/r"], "config.yaml: not a run's config (ParserError"),
])
def test_bad_input_is_one_line_and_writes_nothing(grid, tmp_path, args, match):
    (tmp_path / "empty").mkdir()
    (tmp_path / "bad.csv").write_text("a,b\n1,2\n")
    run = grid / "InvertedPendulum-v4" / "sac" / "seed0"
    for name, file, text in (("bad_rows", "metrics.csv", None), ("bad_config", "config.yaml", "env: [\n")):
        shutil.copytree(run, tmp_path / name)
        if text is None:  # the last row again, its env step not a number
            text = (run / file).read_text()
            text += "oops," + text.splitlines()[-1].split(",", 1)[1] + "\n"
        (tmp_path / name / file).write_text(text)
    before = {p.name: p.read_bytes() for p in grid.iterdir() if p.is_file()}
    proc = report(*(a.format(tmp=tmp_path, grid=grid) for a in args))
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0, proc.stderr
    assert match in proc.stderr and proc.stderr.startswith("error:")
    assert not (tmp_path / "r").exists()
    assert {p.name: p.read_bytes() for p in grid.iterdir() if p.is_file()} == before  # the grid's report kept


def test_the_report_never_imports_torch(grid, tmp_path):
    """A report starts in a fraction of a second: it reads CSV and YAML files and imports neither
    torch nor Lightning (several seconds of imports)."""
    code = ("import sys; from mpdp_pl.experiments.report import main; "
            f"rc = main([{str(grid)!r}, '--out', {str(tmp_path / 'r')!r}]); "
            "assert not {'torch', 'lightning'} & set(sys.modules), 'imported'; sys.exit(rc)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                          timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "r" / "table.md").read_text() == (grid / "table.md").read_text()


def test_a_final_value_is_the_mean_of_the_runs_last_evaluations(grid, tmp_path):
    """``--final LABEL`` (the paper's PETS in Fig. 1) draws one value per task: the mean over
    seeds of each run's last evaluation, read here from the runs' own metrics.csv."""
    from mpdp_pl.experiments.results import plot, read_runs

    results, _ = read_runs([grid])
    drawn = plot(results, tmp_path / "c.png", "t", finals=["sac"])
    last = [evals(grid / "InvertedPendulum-v4" / "sac" / f"seed{s}")[-1][1] for s in (0, 1)]
    assert drawn == {("InvertedPendulum-v4", "sac"): pytest.approx(statistics.mean(last))}
    proc = report(grid, "--out", tmp_path / "r", "--final", "sac")
    assert proc.returncode == 0 and (tmp_path / "r" / "curves.png").stat().st_size > 0, proc.stderr


def test_a_longer_final_reference_sets_no_budget_and_stays_out_of_the_statistics(grid, tmp_path):
    """SAC at 2M env steps in Fig. 1: a ``--final`` label whose runs went on past the others'
    budget is drawn at its last evaluation and listed under the table, while the table's columns
    stay at the other runs' budget and rliable's statistics leave it out."""
    src = tmp_path / "g"
    shutil.copytree(grid / "InvertedPendulum-v4", src / "InvertedPendulum-v4")
    for seed, extra in ((0, 900.0), (1, 700.0)):  # a longer run: the same run, evaluated again at 4000
        run = src / "InvertedPendulum-v4" / "sac_long" / f"seed{seed}"
        shutil.copytree(src / "InvertedPendulum-v4" / "sac" / f"seed{seed}", run)
        cfg = (run / "config.yaml").read_text()
        (run / "config.yaml").write_text(cfg.replace("steps: 400\n", "steps: 4000\n"))
        with open(run / "metrics.csv") as f:
            rows = list(csv.DictReader(f))
        last = dict(next(r for r in reversed(rows) if r["eval/return"]), env_steps="4000")
        last["eval/return"] = str(extra)
        with open(run / "metrics.csv", "a", newline="") as f:
            csv.DictWriter(f, fieldnames=list(rows[0])).writerow(last)
    proc = report(src, "--out", tmp_path / "r", "--final", "sac_long")
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = (tmp_path / "r" / "table.md").read_text()
    sac = [evals(grid / "InvertedPendulum-v4" / "sac" / f"seed{s}")[-1][1] for s in (0, 1)]
    sac_row = next(line for line in table.splitlines() if "| sac |" in line)
    assert f"{statistics.mean(sac):.0f} ± {statistics.stdev(sac):.0f} @ 400" in sac_row
    assert "| InvertedPendulum-v4 | sac_long | 2 | 800 ± 141 @ 4,000 |" in table
    with open(tmp_path / "r" / "stats.csv") as f:
        assert {r["algo"] for r in csv.DictReader(f)} >= {"sac", "mpdp"}
    with open(tmp_path / "r" / "stats.csv") as f:
        assert not any(r["algo"] == "sac_long" or "sac_long" in r["scope"] for r in csv.DictReader(f))
