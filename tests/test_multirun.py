"""Grids on Hydra's multirun (train.py -m): a local grid of real tiny runs that resumes when run
again, the same through submitit's local executor (real subprocesses, no SLURM), and bad grids
refused in one line before anything is written."""

from __future__ import annotations

import csv
import re

import pytest
import yaml
from conftest import ROOT, run_train

TINY = ["--env", "Pendulum-v1", "algo=sac", "data.init_random_steps=100", "eval.every=150",
        "eval.episodes=1", "networks.hidden_sizes=[32,32]", "data.batch_size=64", "--logger", "csv",
        "durability.checkpoint_every=150"]


def evals(run_dir):
    with open(run_dir / "metrics.csv") as f:
        return [int(r["env_steps"]) for r in csv.DictReader(f)]


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    top = tmp_path_factory.mktemp("multirun")
    (top / "cwd").mkdir()
    proc = run_train(["-m", *TINY, "--out", str(top / "grid"), "seed=0,1", "steps=300"], cwd=top / "cwd")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return top


def test_each_job_is_its_own_run_in_a_fixed_directory(grid):
    runs = grid / "grid" / "Pendulum-v1" / "sac"
    assert sorted(p.name for p in runs.iterdir() if p.is_dir()) == ["seed0", "seed1"]
    for s in (0, 1):
        assert evals(runs / f"seed{s}") == [150, 300]
        cfg = yaml.safe_load((runs / f"seed{s}" / "config.yaml").read_text())
        assert cfg["seed"] == s and cfg["trainer"]["num_threads"] == 1
    assert not list((grid / "cwd").iterdir())  # no outputs/, .hydra/ or logs in the working dir
    table = (grid / "grid" / "table.md").read_text()  # the grid's report, from the runs' own rows
    with open(runs / "seed0" / "metrics.csv") as f:
        last = float(list(csv.DictReader(f))[-1]["eval/return"])
    assert "## Statistics (rliable)" in table and (grid / "grid" / "profiles.png").exists()
    with open(grid / "grid" / "results.csv") as f:
        rows = [r for r in csv.DictReader(f) if r["seed"] == "0" and r["env_steps"] == "300"]
    assert [float(r["eval/return"]) for r in rows] == [last]
    assert not list((grid / "grid").rglob(".hydra"))


def test_running_the_grid_again_reuses_and_continues_runs(grid):
    runs = grid / "grid" / "Pendulum-v1" / "sac"
    before = (runs / "seed0" / "metrics.csv").stat().st_mtime_ns
    proc = run_train(["-m", *TINY, "--out", str(grid / "grid"), "seed=0,1", "steps=300"], cwd=grid / "cwd")
    assert proc.returncode == 0 and "2 jobs" in proc.stdout, proc.stderr[-2000:]
    assert (runs / "seed0" / "metrics.csv").stat().st_mtime_ns == before  # finished: reused
    # a larger budget continues seed 1 from its checkpoint: its first rows stay, one more comes
    first = (runs / "seed1" / "metrics.csv").read_text()
    proc = run_train(["-m", *TINY, "--out", str(grid / "grid"), "seed=1", "steps=450"], cwd=grid / "cwd")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert (runs / "seed1" / "metrics.csv").read_text().startswith(first)
    assert evals(runs / "seed1") == [150, 300, 450]
    assert (runs / "seed1.log").read_text().count("run written to") == 2  # resumed: log appended
    assert not list(runs.glob("seed1.incomplete-*"))  # not moved aside and started again


def test_a_grid_run_again_with_other_values_is_refused(grid):
    proc = run_train(["-m", *TINY, "--out", str(grid / "grid"), "seed=0", "steps=300", "critic.gamma=0.95"],
                     cwd=grid / "cwd")
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert proc.stderr.strip().endswith("holds a run with other values of critic.gamma; use another --out")


def test_submitit_local_executor_runs_the_grid(tmp_path):
    proc = run_train(["-m", *TINY, "--out", str(tmp_path / "grid"), "seed=3", "steps=150",
                      "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=10"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert evals(tmp_path / "grid" / "Pendulum-v1" / "sac" / "seed3") == [150]
    assert list((tmp_path / "grid" / ".submitit").rglob("*_result.pkl"))  # a real submitit job


@pytest.mark.parametrize("args, match", [
    (["seed=0,1", "data.batch_size=abc"], r"job .*data.batch_size=abc.*: data.batch_size='abc': expected int"),
    (["seed=0,1", "horizn=3"], r"unknown key 'horizn'"),
    (["algo=sac,ppo"], r"unknown algorithm 'ppo'"),
    (["trainer.strategy=ddp"], r"-m with trainer.strategy=ddp is not supported"),
    (["seed=0", "hydra/launcher=nope"], r"hydra/launcher"),
    (["seed=0,1", "--resume", "x"], r"--resume cannot be combined with -m"),
    (["seed=0", "env=Nope-v0"], r"job .*env=Nope-v0.*: unknown env id 'Nope-v0'"),
    (["seed=0", "env=CartPole-v1"], r"job .*env=CartPole-v1.*: .*no continuous \(Box\) action space"),
])
def test_bad_grids_are_one_line_exit_2_and_write_nothing(tmp_path, args, match):
    proc = run_train(["-m", *TINY, "steps=150", "--out", str(tmp_path / "grid"), *args], cwd=tmp_path)
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), proc.stderr
    assert re.search(match, lines[0]), lines[0]
    assert not (tmp_path / "grid").exists()


def test_a_grid_whose_out_is_a_file_is_refused(tmp_path):
    (tmp_path / "grid").write_text("notes\n")
    proc = run_train(["-m", *TINY, "steps=150", "--out", str(tmp_path / "grid"), "seed=0"], cwd=tmp_path)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        f"error: --out {tmp_path / 'grid'} is a file, not a directory"], proc.stderr
    assert (tmp_path / "grid").read_text() == "notes\n"


def test_a_start_that_failed_before_its_first_row_does_not_block_the_grid(tmp_path):
    """A job's directory holding only a config.yaml of other values (a start that failed before
    any row or checkpoint) is set aside, and the job runs."""
    run = tmp_path / "grid" / "Pendulum-v1" / "sac" / "seed5"
    run.mkdir(parents=True)
    cfg = run_train([*TINY, "--print-config", "steps=150", "seed=5", "critic.gamma=0.95"], cwd=tmp_path)
    assert cfg.returncode == 0, cfg.stderr
    (run / "config.yaml").write_text(cfg.stdout)
    proc = run_train(["-m", *TINY, "steps=150", "--out", str(tmp_path / "grid"), "seed=5"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert evals(run) == [150]
    aside = list(run.parent.glob("seed5.incomplete-*"))
    assert len(aside) == 1 and (aside[0] / "config.yaml").read_text() == cfg.stdout


def test_a_grid_needs_out(tmp_path):
    proc = run_train(["-m", "--env", "Pendulum-v1", "seed=0,1"], cwd=tmp_path)
    assert proc.returncode == 2 and "needs --out" in proc.stderr and not list(tmp_path.iterdir())


def test_submitit_owns_requeueing_inside_a_slurm_job(monkeypatch):
    from mpdp_pl.run import cluster_plugins

    for k in ("SUBMITIT_EXECUTOR", "SLURM_NTASKS", "SLURM_NTASKS_PER_NODE", "SLURM_JOB_NAME"):
        monkeypatch.delenv(k, raising=False)
    assert cluster_plugins() == []
    monkeypatch.setenv("SLURM_NTASKS", "2")
    monkeypatch.setenv("SLURM_NTASKS_PER_NODE", "2")
    monkeypatch.setenv("SLURM_JOB_NAME", "grid")
    assert cluster_plugins() == []  # sbatch without submitit: Lightning's own SLURM handling
    monkeypatch.setenv("SUBMITIT_EXECUTOR", "slurm")
    (plugin,) = cluster_plugins()
    assert plugin.auto_requeue is False


def test_jobs_resolve_their_configs_side_by_side():
    """mpdp_pool resolves its jobs' configs in threads; Hydra's composition is one global state,
    and two at once failed now and then ("GlobalHydra is already initialized": the flaky
    fig2 grid). 60 concurrent resolutions must all succeed and agree."""
    import threading

    from mpdp_pl.experiments.multirun import job_config

    results, errors = [], []

    def work(seed):
        for _ in range(20):
            try:
                results.append(job_config(["env=InvertedPendulum-v4", "algo=mpdp", f"seed={seed}"]))
            except Exception as e:  # noqa: BLE001 - counted, not raised in a thread
                errors.append(repr(e))

    threads = [threading.Thread(target=work, args=(s,)) for s in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and len(results) == 60
    assert {r["seed"] for r in results} == {0, 1, 2}


def test_a_job_that_fails_before_train_py_leaves_its_reason_in_the_log(tmp_path, monkeypatch, capsys):
    """A job that raises in the launcher (no train.py, hence no log of its own) gets the
    exception written where the grid's message points."""
    from mpdp_pl.experiments import multirun

    monkeypatch.setattr(multirun, "launch_jobs", lambda out, jobs, args, ready: (ready(), [ValueError("boom")])[1])
    assert multirun.main(["-m", *TINY, "--out", str(tmp_path), "seed=0", "steps=150"]) == 1
    log = tmp_path / "Pendulum-v1" / "sac" / "seed0.log"
    assert f"see {log.resolve()}" in capsys.readouterr().out
    assert "ValueError('boom')" in log.read_text()


def test_variants_and_swept_keys_name_their_runs(tmp_path):
    """A variant (conf/variant/<name>.yaml) runs under its name with its values; a key the sweep
    varies joins the name; both reach the report's rows."""
    proc = run_train(["-m", *TINY[3:], "--env", "InvertedPendulum-v4", "--out", str(tmp_path / "g"),
                      "variant=beta0.2", "data.init_random_steps=100", "eval.every=100", "steps=100",
                      "model.max_steps=20", "model.hidden=32", "improvement.horizon=3", "model.train_freq=100",
                      "critic.gamma=0.9,0.95"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    task = tmp_path / "g" / "InvertedPendulum-v4"
    assert sorted(p.name for p in task.iterdir() if p.is_dir()) == ["beta0.2,critic.gamma=0.9", "beta0.2,critic.gamma=0.95"]
    cfg = yaml.safe_load((task / "beta0.2,critic.gamma=0.95" / "seed0" / "config.yaml").read_text())
    assert (cfg["variant"], cfg["algo"], cfg["improvement"]["beta"], cfg["critic"]["gamma"]) == ("beta0.2", "mpdp_pv", 0.2, 0.95)
    with open(tmp_path / "g" / "results.csv") as f:
        assert {r["algo"] for r in csv.DictReader(f)} == {"beta0.2,critic.gamma=0.9", "beta0.2,critic.gamma=0.95"}
    # a variant is a configuration of one algorithm
    proc = run_train(["-m", *TINY, "--out", str(tmp_path / "bad"), "variant=beta0.2"], cwd=tmp_path)
    assert proc.returncode == 2 and "variant beta0.2 is a configuration of mpdp_pv, not of sac" in proc.stderr


def test_a_grid_still_takes_the_flat_keys_of_earlier_versions():
    """A committed grid command from before the config groups plans the same jobs (one line of
    warning per key, on stderr)."""
    from mpdp_pl.experiments.multirun import expand, job_config

    jobs = expand(["env=Hopper-v4", "algo=mpdp", "gamma=0.9,0.95", "eval_every=1000",
                   "model_train_freq=500"])
    cfgs = [job_config(job) for job in jobs]
    assert [c["critic"]["gamma"] for c in cfgs] == [0.9, 0.95]
    assert {(c["eval"]["every"], c["model"]["train_freq"]) for c in cfgs} == {(1000, 500)}


def test_an_experiment_takes_the_command_lines_values(tmp_path):
    """experiment=NAME expands its sweeps; an item on the command line replaces the experiment's
    value of that key in every sweep. Validated only: a typo in the command is refused first."""
    from mpdp_pl.experiments.multirun import experiment, plan

    sweeps, report = experiment("fig4_quick", ["seed=5", "steps=300"])
    assert report == {} and len(sweeps) == 2
    jobs = plan(tmp_path, sweeps)
    names = sorted(j[-1].split("=", 1)[1].removeprefix(str(tmp_path.resolve()) + "/") for j in jobs)
    assert names == [f"InvertedPendulum-v4/{n}/seed5" for n in ("beta0.2", "beta0.5", "beta0.7", "mbpo")]
    assert all("steps=300" in j and "seed=5" in j and "steps=2000" not in j for j in jobs)
    proc = run_train(["-m", "--out", str(tmp_path / "x"), "experiment=fig9"], cwd=tmp_path)
    assert proc.returncode == 2 and "unknown experiment 'fig9'" in proc.stderr


def test_fig1_runs_every_method_at_the_budget_and_sac_at_2M_as_a_reference(tmp_path):
    """experiment=fig1 for one task: the nine methods at the task's budget (conf/env) and SAC
    at 2M env steps (variant sac_2M), which the report draws as one line per task, as PETS."""
    from mpdp_pl.experiments.multirun import experiment, job_config, plan

    sweeps, report = experiment("fig1", ["env=Hopper-v4", "seed=0"])
    jobs = plan(tmp_path, sweeps)
    cfgs = {j[-1].split("=", 1)[1].split("/")[-2]: job_config(j[:-1]) for j in jobs}
    assert sorted(cfgs) == sorted(["mpdp_pv", "sac", "mbpo", "mppve", "m2ac", "ddpg", "pets",
                                   "poplin_a", "poplin_p", "sac_2M"])
    assert {n: c["steps"] for n, c in cfgs.items() if n != "sac_2M"} == dict.fromkeys(
        set(cfgs) - {"sac_2M"}, 100_000)
    assert (cfgs["sac_2M"]["algo"], cfgs["sac_2M"]["steps"]) == ("sac", 2_000_000)
    assert report["final"] == ["pets", "sac_2M"]


def test_fig1_gives_inverted_pendulum_its_paper_budget_not_the_first_runs(tmp_path):
    """`python train.py` (mpdp_pv on InvertedPendulum) is a 6k first run; Fig. 1's steps=task runs
    every method to the paper's 15k there (conf/env), and steps=N on the command line still wins."""
    from mpdp_pl.config import load_config, task_budget
    from mpdp_pl.experiments.multirun import experiment, job_config, plan

    assert load_config("InvertedPendulum-v4", "mpdp_pv", {})["steps"] == 6000
    assert (task_budget("InvertedPendulum-v5"), task_budget("Walker2d-v4")) == (15000, 200_000)
    assert task_budget("MountainCarContinuous-v0") == load_config("MountainCarContinuous-v0", "sac", {})["steps"]
    for cli, budget in ((["seed=0"], 15000), (["seed=0", "steps=300"], 300)):
        jobs = plan(tmp_path / str(budget), experiment("fig1", ["env=InvertedPendulum-v4", *cli])[0])
        cfgs = {j[-1].split("/")[-2]: job_config(j[:-1]) for j in jobs}
        assert {n: c["steps"] for n, c in cfgs.items() if n != "sac_2M"} == dict.fromkeys(
            set(cfgs) - {"sac_2M"}, budget)
        assert cfgs["mpdp_pv"]["updates"]["critic_per_step"] == 5.0  # the task's other values stay


def test_the_mpdp_hopper_grid_is_the_one_fixed_before_it_starts(tmp_path):
    """experiment=mpdp_hopper: MPDP's default and SAC on seeds 0-2, MPPVE and mpdp_paper on 0-1,
    all on Hopper-v4 to 30k with 10 evaluation episodes every 1k env steps; its report draws the
    published anchors and tabulates the budgets the goals name."""
    from mpdp_pl.experiments.multirun import experiment, job_config, plan
    from mpdp_pl.experiments.results import read_anchors

    sweeps, report = experiment("mpdp_hopper", [])
    jobs = plan(tmp_path, sweeps)
    names = sorted(j[-1].split("=", 1)[1].removeprefix(str(tmp_path.resolve()) + "/") for j in jobs)
    assert names == sorted([f"Hopper-v4/{a}/seed{s}" for a in ("mpdp_pv", "sac") for s in (0, 1, 2)]
                           + [f"Hopper-v4/{a}/seed{s}" for a in ("mppve", "mpdp_paper") for s in (0, 1)])
    cfgs = [job_config(j[:-1]) for j in jobs]
    assert {(c["steps"], c["eval"]["every"], c["eval"]["episodes"]) for c in cfgs} == {(30000, 1000, 10)}
    assert report["at"] == [10000, 15000, 20000, 30000]
    assert ("Hopper", "DHMBPO") in read_anchors(ROOT / report["anchors"])


def test_an_experiments_bad_report_settings_are_refused(tmp_path, monkeypatch):
    from mpdp_pl.errors import ConfigError
    from mpdp_pl.experiments import multirun

    (tmp_path / "experiment").mkdir()
    monkeypatch.setattr(multirun, "CONF_DIR", tmp_path)
    for report, match in [("{anchor: docs/anchors_hopper.csv}", "unknown report setting"),
                          ("{anchors: docs/none.csv}", "is not a file")]:
        (tmp_path / "experiment" / "x.yaml").write_text(f"sweeps: [[seed=0]]\nreport: {report}\n")
        with pytest.raises(ConfigError, match=match):
            multirun.experiment("x", [])


@pytest.mark.parametrize("name", sorted(p.stem for p in (ROOT / "conf" / "experiment").glob("*.yaml")))
def test_every_experiment_plans_its_grid(tmp_path, name):
    """Each experiment file's sweeps are valid jobs for every task it names (one seed here);
    a sweep item with commas must be quoted, or YAML splits it into items."""
    from mpdp_pl.experiments.multirun import experiment, plan

    sweeps, _ = experiment(name, ["seed=0"])
    jobs = plan(tmp_path, sweeps)
    assert jobs and all(o.count("=") >= 1 for j in jobs for o in j)


def test_a_second_grid_on_a_grid_in_use_is_refused(tmp_path):
    import fcntl

    (tmp_path / "g").mkdir()
    with open(tmp_path / "g" / ".grid.lock", "w") as held:  # as a running train.py -m holds it
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        proc = run_train(["-m", *TINY, "--out", str(tmp_path / "g"), "seed=0", "steps=150"], cwd=tmp_path)
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0
    assert "another train.py -m is working on" in proc.stderr
    assert sorted(p.name for p in (tmp_path / "g").iterdir()) == [".grid.lock"]


@pytest.mark.parametrize("name", ["SIGTERM", "SIGINT"])
def test_a_signal_to_a_grid_stops_every_running_job_at_a_checkpoint(tmp_path, name):
    """SIGTERM to ``train.py -m``, or Ctrl-C (SIGINT to its whole process group, as a terminal
    sends it), reaches its running jobs (real train.py processes), which checkpoint and exit;
    the job not started yet is never started; the grid exits 128 + the signal's number."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from mpdp_pl.experiments.multirun import _resumable
    from mpdp_pl.runtime import checkpoint

    grid, sig = tmp_path / "g", getattr(signal, name)
    proc = subprocess.Popen([sys.executable, str(ROOT / "train.py"), "-m", *TINY, "--out", str(grid),
                             "seed=0,1,2", "steps=20000", "hydra.launcher.workers=2"],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    runs = [grid / "Pendulum-v1" / "sac" / f"seed{s}" for s in (0, 1)]
    deadline = time.monotonic() + 300
    # both past their first evaluation: a row, not the header alone (written before env step 1,
    # where a stop has nothing to checkpoint)
    while not all(r.joinpath("metrics.csv").exists() and r.joinpath("metrics.csv").read_text().count("\n") >= 2
                  for r in runs):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.5)
    if sig == signal.SIGINT:
        os.killpg(proc.pid, sig)  # the grid and its jobs at once
    else:
        proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + sig, out + err
    assert f"stopped by {name}" in out and "Traceback" not in err
    for r in runs:
        assert checkpoint.latest(r) is not None and _resumable(r, 20000)
    assert not (grid / "Pendulum-v1" / "sac" / "seed2").exists()
