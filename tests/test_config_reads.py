"""Keys an algorithm does not read are refused (mpdp_pl/config/algorithms.py, ``READS``), checked
against the keys each algorithm reads in a real run: a short in-process run on Hopper whose
config groups record every key the app's code reads."""

from __future__ import annotations

import sys
from collections import defaultdict
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, run_train
from mpdp_pl.config import _Dumper, load_config
from mpdp_pl.config.algorithms import ALGORITHM_GROUPS, READS, reads
from mpdp_pl.errors import ConfigError

PACKAGE = ROOT / "mpdp_pl"
NOT_READERS = (PACKAGE / "config", PACKAGE / "runtime" / "checkpoint.py")  # copy and compare whole configs


class RecordingGroup(dict):
    """A config group that notes each key read by the app's code (not by config handling)."""

    read: dict = defaultdict(set)

    def __init__(self, name: str, values: dict):
        super().__init__(values)
        self.name = name

    def _note(self, key) -> None:
        caller = Path(sys._getframe(2).f_code.co_filename)
        if PACKAGE in caller.parents and not any(caller == p or p in caller.parents for p in NOT_READERS):
            RecordingGroup.read[self.name].add(key)

    def __getitem__(self, key):
        self._note(key)
        return super().__getitem__(key)

    def get(self, key, default=None):
        self._note(key)
        return super().get(key, default)

    def __iter__(self):  # ** and dict() then read through __getitem__, which notes the reader
        return iter(list(super().keys()))

    def __reduce__(self):  # copies and checkpoints keep recording
        return RecordingGroup, (self.name, dict(self.items()))


_Dumper.add_representer(RecordingGroup, lambda dumper, g: dumper.represent_dict(dict(g.items())))
yaml.SafeDumper.add_representer(RecordingGroup, lambda dumper, g: dumper.represent_dict(dict(g.items())))

SHORT = {"steps": 300, "data.init_random_steps": 250, "eval.every": 300, "eval.episodes": 1,
         "data.batch_size": 32, "networks.hidden_sizes": [16, 16], "model.hidden": 16,
         "model.max_steps": 20, "model.train_freq": 50, "logging.every": 50, "trainer.num_threads": 1,
         "logger": "csv"}
MODEL_DATA = {"rollouts.batch_size": 100, "rollouts.schedule": [0, 1, 1, 3], "rollouts.epoch_length": 50}
DH = {"updates.every": 50, "updates.critic_per_step": 1.5, "updates.warmup": 10, "model.batch_size": 64,
      "model.max_epochs": 4, "model.patience": 2, "dhmbpo.rollout_every": 10,
      "dhmbpo.rollout_length": 5, "dhmbpo.buffer_size": 2000}
CEM = {"pets.population": 20, "pets.iterations": 2, "pets.particles": 5, "pets.horizon": 5, "pets.elites": 5}
PER_ALGO = {"mbpo": MODEL_DATA, "m2ac": MODEL_DATA, "mppve": MODEL_DATA, "mpdp_pv": MODEL_DATA,
            "dhmbpo": DH, "mpdp_dh": DH, "pets": CEM, "poplin_a": CEM, "poplin_p": CEM}
NOT_READ_BY_SAC = {"model.ensemble_size": 8, "model.hidden": 3, "model.lr": 0.01, "improvement.beta": 0.2}


def record_reads(algo: str, out: Path) -> dict[str, set[str]]:
    from mpdp_pl.run import train

    over = {**SHORT, **PER_ALGO.get(algo, {}), "out": str(out)}
    # the keys this test sets only to keep the run short, where the algorithm does not read them
    cfg = load_config("Hopper-v4", algo, {k: v for k, v in over.items() if reads(algo, k)})
    for name in ALGORITHM_GROUPS:
        cfg[name] = RecordingGroup(name, cfg[name])
    RecordingGroup.read.clear()
    train(cfg)
    return {g: set(keys) for g, keys in RecordingGroup.read.items()}


@pytest.mark.parametrize("algo", list(READS))
def test_each_algorithm_reads_what_its_table_says(algo, tmp_path):
    """What an algorithm reads in a run is allowed by its READS entry (no key it reads is
    refused), and every entry is read (no stale entry that would let an ignored key through)."""
    read = record_reads(algo, tmp_path / "run")
    refused = sorted(f"{g}.{k}" for g, keys in read.items() for k in keys if not reads(algo, f"{g}.{k}"))
    assert not refused, f"{algo} reads {refused}, which its READS entry would refuse"
    for entry in READS[algo]:
        group, _, key = entry.partition(".")
        assert (key in read.get(group, ())) if key else read.get(group), f"{algo} never read {entry}"


def test_a_key_an_algorithm_does_not_read_is_refused_and_one_it_reads_is_not():
    for key, value in NOT_READ_BY_SAC.items():
        with pytest.raises(ConfigError, match=f"{key}: sac does not read this key"):
            load_config("Hopper-v4", "sac", {key: value})
    with pytest.raises(ConfigError, match="model.hidden, improvement.beta: sac does not read these keys"):
        load_config("Hopper-v4", "sac", {"model.hidden": 3, "improvement.beta": 0.2})
    assert load_config("Hopper-v4", "sac", {"model.train_freq": 100})["model"]["train_freq"] == 100
    assert load_config("Hopper-v4", "mpdp", {"improvement.beta": 0.3})["improvement"]["beta"] == 0.3
    # given at the value the files compose, it changes nothing, and passes
    assert load_config("Hopper-v4", "sac", {"improvement.beta": 0.5})["algo"] == "sac"
    with pytest.raises(ConfigError, match="improvement.u_T: dhmbpo does not read"):
        load_config("Hopper-v4", "dhmbpo", {"improvement.u_T": 1.0})
    with pytest.raises(ConfigError, match="actor.lr: pets does not read"):
        load_config("Hopper-v4", "pets", {"actor.lr": 0.001, "critic.gamma": 0.9})


def test_the_cli_refuses_it_in_one_line_and_writes_nothing(tmp_path):
    out = tmp_path / "run"
    proc = run_train(["--algo", "sac", "improvement.beta=0.2", "--out", str(out), "--steps", "10"],
                     cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "error: improvement.beta: sac does not read this key, so the run would ignore it (in a grid "
        "over algorithms, give them in a command of the algorithms that read them)"]
    assert not out.exists()


def test_a_grid_over_algorithms_gives_each_job_the_keys_its_algorithm_reads(tmp_path, capsys):
    """A grid's keys go to the jobs whose algorithm reads them (one note per algorithm says
    which it left out); a key that no job reads, or one swept where a job ignores it (its jobs
    would repeat one run), is refused before any job starts."""
    from mpdp_pl.experiments.multirun import plan

    common = ["env=Pendulum-v1", "seed=0", "model.hidden=32", "improvement.beta=0.2"]
    jobs = {j[[o.split("=")[0] for o in j].index("algo")]: j
            for j in plan(tmp_path / "g", [["algo=sac,mbpo,mpdp", *common]])}
    assert "model.hidden=32" not in jobs["algo=sac"] and "improvement.beta=0.2" not in jobs["algo=sac"]
    assert "model.hidden=32" in jobs["algo=mbpo"] and "improvement.beta=0.2" not in jobs["algo=mbpo"]
    assert {"model.hidden=32", "improvement.beta=0.2"} <= set(jobs["algo=mpdp"])
    assert capsys.readouterr().err.splitlines() == [
        "note: mbpo does not read improvement.beta: its jobs run without it",
        "note: sac does not read improvement.beta, model.hidden: its jobs run without them"]
    with pytest.raises(ConfigError, match="model.hidden: no job of the grid reads this key"):
        plan(tmp_path / "g", [["algo=sac,ddpg", "env=Pendulum-v1", "model.hidden=32"]])
    with pytest.raises(ConfigError, match="improvement.beta is swept, but sac does not read it"):
        plan(tmp_path / "g", [["algo=sac,mpdp", "env=Pendulum-v1", "improvement.beta=0.2,0.7"]])


def test_a_grid_continues_its_runs_that_an_earlier_version_gave_an_ignored_key(tmp_path):
    """Versions before this check gave every job the grid's keys: a run of such a grid that
    holds a key its algorithm ignores is still the job's run (reused, or resumed)."""
    from mpdp_pl.experiments.multirun import plan

    sweep = ["algo=sac", "env=Pendulum-v1", "seed=0", "steps=300", "data.init_random_steps=200",
             "eval.every=100", "eval.episodes=1", "data.batch_size=32", "networks.hidden_sizes=[16,16]"]
    out = tmp_path / "g"
    proc = run_train(["-m", "--out", str(out), "--logger", "none", *sweep], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    config = out / "Pendulum-v1" / "sac" / "seed0" / "config.yaml"
    text = config.read_text()
    assert "  hidden: 200\n" in text
    config.write_text(text.replace("  hidden: 200\n", "  hidden: 32\n", 1))  # as the earlier grid wrote it
    again = ["algo=sac,mbpo", *sweep[1:], "model.hidden=32", "logger=none"]  # the earlier grid
    assert len(plan(out, [again])) == 2  # sac's job takes its run
    with pytest.raises(ConfigError, match="holds a run with other values of critic.gamma"):
        plan(out, [[*sweep, "critic.gamma=0.9", "logger=none"]])  # a key sac reads
