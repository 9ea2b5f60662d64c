"""The command-line contract: defaults, overrides, --print-config, --help, clear errors."""

from __future__ import annotations

import fcntl
import os
import re

import pytest
import yaml

from conftest import run_train
from mpdp_pl.config import ConfigError, load_config, parse_overrides


def test_every_flag_has_a_default():
    cfg = load_config()
    assert cfg["env"] == "InvertedPendulum-v4" and cfg["algo"] == "mpdp_pv" and cfg["seed"] == 0
    assert cfg["steps"] == 6000  # MPDP's first-run budget on this task (conf/algo_env/mpdp_pv_InvertedPendulum.yaml)
    assert cfg["updates"]["critic_per_step"] == 5
    assert load_config(algo="sac")["steps"] == 15000  # the task file's budget (the paper's)


@pytest.mark.parametrize("env_id", ["Hopper-v4", "Hopper-v5"])
def test_task_file_applies_to_v4_and_v5(env_id):
    cfg = load_config(env_id)
    assert cfg["temperature"]["target_entropy"] == -1 and cfg["steps"] == 100000


def test_env_without_file_gets_base_defaults():
    cfg, base = load_config("Swimmer-v4"), load_config()
    assert cfg["temperature"]["target_entropy"] == "auto" and cfg["model"]["termination"] == "learned"
    assert cfg["data"]["init_random_steps"] == 5000 != base["data"]["init_random_steps"]


def test_humanoid_truncates_observations_by_default():
    assert load_config("Humanoid-v4")["task"]["obs_truncate"] == 45


def test_overrides_are_typed_and_nested():
    cfg = load_config("Hopper-v4", overrides=parse_overrides(
        ["data.batch_size=128", "critic.tau=1e-2", "critic.gamma=1", "wandb.project=x", "networks.hidden_sizes=[64,64]",
         "temperature.target_entropy=-2.5", "updates.critic_per_step=0.25"]))
    assert cfg["data"]["batch_size"] == 128 and cfg["critic"]["tau"] == 0.01 and cfg["critic"]["gamma"] == 1.0
    assert isinstance(cfg["critic"]["gamma"], float)
    assert cfg["wandb"]["project"] == "x" and cfg["networks"]["hidden_sizes"] == [64, 64]
    assert cfg["temperature"]["target_entropy"] == -2.5 and cfg["updates"]["critic_per_step"] == 0.25


@pytest.mark.parametrize("items,match", [
    (["batchsize=1"], "unknown key 'batchsize'.*batch_size"),
    (["data.batch_size=abc"], "batch_size"),
    (["data.batch_size=0"], "data.batch_size=0"),
    (["critic.gamma=2"], "gamma"),
    (["eval_every"], "key=value"),
    (["logger=tensorboard"], "logger"),
    (["wandb.nope=1"], "unknown key"),
])
def test_bad_overrides_raise(items, match):
    with pytest.raises(ConfigError, match=match):
        load_config(overrides=parse_overrides(items))


@pytest.mark.parametrize("env,algo,items,match", [
    ("Hopper-v4", None, ["env=Walker2d-v4"], "env is given twice: Hopper-v4 and env=Walker2d-v4"),
    (None, "sac", ["algo=mpdp"], "algo is given twice: sac and algo=mpdp"),
])
def test_a_flag_and_a_key_that_disagree_are_refused(env, algo, items, match):
    """``--env Hopper-v4 env=Walker2d-v4`` composed Hopper's task file (its termination) under
    Walker2d's id; the two must agree."""
    with pytest.raises(ConfigError, match=match):
        load_config(env, algo, parse_overrides(items))
    assert load_config("Hopper-v4", "sac", parse_overrides(["env=Hopper-v4", "algo=sac"]))["env"] == "Hopper-v4"


def test_unknown_algorithm_lists_the_available_ones():
    with pytest.raises(ConfigError, match="available: .*sac"):
        load_config(algo="ppo")


def test_print_config_from_another_directory(tmp_path):
    proc = run_train(["--env", "Walker2d-v4", "--print-config", "data.batch_size=64", "--seed", "5"],
                     cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    cfg = yaml.safe_load(proc.stdout)
    assert cfg["env"] == "Walker2d-v4" and cfg["data"]["batch_size"] == 64 and cfg["seed"] == 5
    assert cfg["temperature"]["target_entropy"] == -3
    assert list(tmp_path.iterdir()) == []  # printed, nothing written


def test_help_lists_options_and_algorithms(tmp_path):
    proc = run_train(["--help"], cwd=tmp_path)
    assert proc.returncode == 0
    for word in ("--env", "--algo", "--steps", "--seed", "--out", "--logger", "--print-config",
                 "--resume", "algorithms: ddpg, dhmbpo, m2ac, mbpo, mpdp, mpdp_dh, mpdp_paper, mpdp_pv, mppve, "
                 "pets, poplin_a, poplin_p, sac", "variants: beta0.2, beta0.5, beta0.7, dh_beta, dh_cut, dh_heads, pv_heads, pv_hmax, "
                 "pv_hmax_beta, pv_hmax_cut, sac_2M, uT_q0.25, uT_q0.5, uT_q0.75", "train.py -m"):
        assert word in proc.stdout, word


@pytest.mark.parametrize("args,match", [
    (["foo=1"], "unknown key 'foo'"),
    (["--env", "Hoper-v4", "--steps", "10"], "unknown env id 'Hoper-v4'"),
    (["--env", "CartPole-v1", "--steps", "10"], "continuous"),
    (["--env", "Hopper-v3", "--steps", "10"], "env 'Hopper-v3' cannot be built here: .*gymnasium-robotics"),
    (["--algo", "ppo"], "unknown algorithm"),
    (["--steps", "x"], "invalid int"),
    (["--steps", "0"], "steps=0"),
    (["improvement.horizon=0"], "improvement.horizon=0: must be >= 1"),
    (["improvement.beta=-1"], "improvement.beta=-1.0: must be >= 0"),
    (["model.ensemble_size=1"], "model.ensemble_size=1: must be >= 2"),
    (["model.elites=9"], "model.elites=9"),
    (["data.batch_size=0"], "data.batch_size=0"),
    (["data.batch_size=abc"], "batch_size"),
    (["critic.gamma=1.5"], "critic.gamma=1.5"),
    (["improvement.u_T=abc"], "improvement.u_T='abc'"),
    (["mppve.plan_length=0"], "mppve.plan_length=0"),
    (["durability.checkpoint_every=-1"], "durability.checkpoint_every=-1"),
    (["--resume", "no/such/run"], "no such run directory"),
    (["trainer.strategy=fsdp"], "trainer.strategy=fsdp is not supported"),
    (["trainer.strategy=ddp_find_unused_parameters_true"], "not supported"),
    (["trainer.strategy=bogus"], "the Lightning Trainer refuses trainer.* .*strategy='bogus'"),
    (["trainer.accelerator=tpuu"], "the Lightning Trainer refuses trainer.* .*accelerator='tpuu'"),
    (["trainer.devices=0"], "the Lightning Trainer refuses"),
    (["trainer.precision=bogus"], "the Lightning Trainer refuses trainer.* .*Precision 'bogus'"),
    (["--seed", "-1"], r"seed=-1: must be in \[0, 2\^32\)"),
    (["trainer.num_threads=-2"], "trainer.num_threads=-2: must be >= 1"),
    (["model.dropout=[2,2,2,2,2]"], r"model.dropout=.*: must be a list of rates in \[0, 1\)"),
    (["data.buffer_device=foo"], "data.buffer_device='foo': not a torch device"),
    (["data.buffer_device=cuda"], "data.buffer_device=cuda: this machine has no CUDA device"),
    (["updates.critic_per_step=inf"], "updates.critic_per_step=inf: must be a finite number >= 0"),
    (["pets.particles=0"], "pets.particles=0: must be >= 1"),
    (["task.max_episode_steps=-5"], "task.max_episode_steps=-5: must be >= 1"),
    (["task.obs_truncate=100"], "task.obs_truncate=100: InvertedPendulum-v4 has only 4 observation dims"),
])
def test_bad_input_is_one_line_exit_2_and_no_run_dir(tmp_path, args, match):
    proc = run_train([*args, "--out", str(tmp_path / "run"), "--logger", "none"], cwd=tmp_path)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), proc.stderr
    assert re.search(match, lines[0]), lines[0]
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("line, match", [
    ("horizn: 3", r"In 'env/Hopper'.*Key 'horizn' not in 'RunConfig'"),
    ("data: {batch_size: abc}", r"In 'env/Hopper'.*'abc'.*could not be converted to Integer.*data.batch_size"),
    ("batch_size: 3", r"In 'env/Hopper'.*Key 'batch_size' not in 'RunConfig'"),  # flat: files are nested
])
def test_structured_config_rejects_a_bad_group_file_in_one_line(tmp_path, monkeypatch, line, match):
    """A group file with an unknown key or a value of the wrong type fails Hydra's composition
    against the structured schema; the report is one line (Hydra's own spans several)."""
    import shutil

    import mpdp_pl.config as config

    conf = tmp_path / "conf"
    shutil.copytree(config.CONF_DIR, conf)
    with open(conf / "env" / "Hopper.yaml", "a") as f:
        f.write(f"\n{line}\n")
    monkeypatch.setattr(config, "CONF_DIR", conf)
    assert load_config("Walker2d-v4", "mpdp")["improvement"]["horizon"] == 10  # the other files still compose
    with pytest.raises(ConfigError, match=match) as err:
        load_config("Hopper-v4")
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("item, match", [
    ("data.batch_size=abc", "data.batch_size='abc': expected int"),
    ("data.batch_size=null", "data.batch_size=None: expected int$"),  # not Optional
    ("critic.gamma=[1]", "critic.gamma=\\[1\\]: expected float"),
    ("improvement.compile=3", "improvement.compile=3: expected bool"),
    ("networks.hidden_sizes=[a]", "networks.hidden_sizes=\\['a'\\]: expected list\\[int\\]"),
    ("networks.activation=tanh", "networks.activation='tanh': must be one of relu, silu"),
    ("model.nosuch=1", "unknown key 'model.nosuch'"),
    ("critic=1", "critic=1: critic is a group"),
])
def test_the_schema_types_every_key(item, match):
    """Types, choices and nesting come from the schema's dataclasses (OmegaConf checks them)."""
    with pytest.raises(ConfigError, match=match):
        load_config("Hopper-v4", "mpdp", parse_overrides([item]))
    cfg = load_config("Hopper-v4", "mpdp", parse_overrides(["model.max_steps=null", "data.batch_size=1e2",
                                                          "improvement.u_T=inf", "trainer.num_threads=null"]))
    assert cfg["model"]["max_steps"] is None and cfg["data"]["batch_size"] == 100
    assert cfg["improvement"]["u_T"] == float("inf") and cfg["trainer"]["num_threads"] is None


def test_a_flat_key_of_earlier_versions_works_with_a_one_line_warning(tmp_path):
    proc = run_train(["--print-config", "--env", "Hopper-v4", "batch_size=64", "model_hidden=32",
                      "horizon=3"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    cfg = yaml.safe_load(proc.stdout)
    assert (cfg["data"]["batch_size"], cfg["model"]["hidden"], cfg["improvement"]["horizon"]) == (64, 32, 3)
    assert proc.stderr.splitlines() == ["warning: batch_size is now data.batch_size",
                                        "warning: model_hidden is now model.hidden",
                                        "warning: horizon is now improvement.horizon"]


def test_child_ranks_accept_the_arguments_lightning_appends_under_hydra(tmp_path):
    proc = run_train(["--print-config", "--env", "Hopper-v4", "hydra.run.dir=x", "hydra.job.name=y",
                      "hydra.output_subdir=null"], cwd=tmp_path)
    assert proc.returncode == 0 and yaml.safe_load(proc.stdout)["env"] == "Hopper-v4", proc.stderr
    assert not list(tmp_path.iterdir())


def test_unknown_wandb_mode_in_the_environment_is_one_line_exit_2(tmp_path):
    """The environment is input too: wandb would end an unknown WANDB_MODE in a pydantic
    traceback after the run directory exists."""
    env = {**os.environ, "WANDB_MODE": "ofline"}
    proc = run_train(["--steps", "10", "--out", str(tmp_path / "run"), "--logger", "wandb"],
                     cwd=tmp_path, env=env)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "error: WANDB_MODE='ofline': must be one of online, offline, disabled, dryrun, run, "
        "shared (or unset)"]
    assert not (tmp_path / "run").exists()


def test_existing_run_dir_is_refused_and_left_untouched(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.csv").write_text("env_steps,eval/return\n100,5.0\n")
    proc = run_train(["--steps", "10", "--out", str(run), "--logger", "none"], cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"error: {run} already holds a run; choose another --out"]
    assert (run / "metrics.csv").read_text() == "env_steps,eval/return\n100,5.0\n"
    assert sorted(p.name for p in run.iterdir()) == ["metrics.csv"]


def test_a_run_another_process_is_writing_is_refused(tmp_path):
    """A run holds ``.run.lock`` from before its first file: a second start into its directory,
    there before the first wrote ``config.yaml``, is one line and writes nothing."""
    run = tmp_path / "run"
    run.mkdir()
    with open(run / ".run.lock", "w") as held:  # what the first run's process holds
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        proc = run_train(["--steps", "10", "--out", str(run), "--logger", "none"], cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        f"error: another process is writing the run in {run}; wait for it to end, or choose another --out")
    assert sorted(p.name for p in run.iterdir()) == [".run.lock"]


def test_a_stale_run_dir_in_the_environment_does_not_redirect_a_run(tmp_path):
    """``MPDP_RUN_DIR`` passes rank 0's run directory to DDP's re-launched ranks; left in a
    shell, it must not send a run (rank 0) anywhere but its ``--out``."""
    old, new = tmp_path / "old", tmp_path / "new"
    old.mkdir()
    (old / "metrics.csv").write_text("env_steps,eval/return\n100,5.0\n")
    proc = run_train(["--steps", "10", "--out", str(new), "--logger", "none"], cwd=tmp_path,
                     env={**os.environ, "MPDP_RUN_DIR": str(old)})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (new / "config.yaml").exists()
    assert sorted(p.name for p in old.iterdir()) == ["metrics.csv"]


def test_paper_preset_is_mpdp_with_algorithm_2_as_printed():
    paper, mpdp = load_config("Hopper-v4", "mpdp_paper"), load_config("Hopper-v4", "mpdp")
    # the task table of mpdp applies (Hmax 15 on Hopper), then the preset's own values
    assert paper["improvement"]["horizon"] == mpdp["improvement"]["horizon"] == 15
    assert paper["improvement"]["u_T_quantile"] == 0.5 and not paper["improvement"]["single_policy"]
    assert paper["improvement"]["paper_literal_cut"] and not paper["improvement"]["terminal_critic"]
    assert not paper["improvement"]["beta_relative"]
    # an override still wins over the preset
    assert load_config("Hopper-v4", "mpdp_paper", {"improvement.horizon": 4})["improvement"]["horizon"] == 4
    from mpdp_pl.algos import ALGOS
    assert ALGOS["mpdp_paper"] is ALGOS["mpdp"]


@pytest.mark.parametrize("items,match", [
    (["improvement.u_T_quantile=0"], "improvement.u_T_quantile=0"),
    (["improvement.beta=-1"], "improvement.beta=-1"),
])
def test_bad_mpdp_switches_raise(items, match):
    with pytest.raises(ConfigError, match=match):
        load_config("Hopper-v4", "mpdp", parse_overrides(items))


@pytest.mark.parametrize("algo", ["sac", "mbpo"])
@pytest.mark.parametrize("key,value", [("single_policy", True), ("paper_literal_cut", True)])
def test_mpdp_switches_are_refused_elsewhere(algo, key, value):
    with pytest.raises(ConfigError, match=f"{key}=.*MPDP's"):
        load_config("Hopper-v4", algo, {key: value})


@pytest.mark.parametrize("algo,key,value", [
    ("ddpg", "critic.layernorm", True), ("pets", "critic.layernorm", True),
    ("ddpg", "critic.count", 5), ("mppve", "critic.count", 5), ("mpdp_pv", "critic.count", 3),
    ("mpdp_pv", "improvement.terminal_critic", False), ("mpdp_pv", "improvement.unroll_form", "live"),
    ("mpdp_dh", "improvement.unroll_form", "static"), ("ddpg", "networks.activation", "silu"),
    ("poplin_p", "networks.activation", "silu")])
def test_keys_an_algorithm_would_ignore_are_refused(algo, key, value):
    with pytest.raises(ConfigError, match=f"{key}"):
        load_config("Hopper-v4", algo, {key: value})


@pytest.mark.parametrize("algo", ["sac", "mbpo", "mpdp", "dhmbpo", "mppve"])
def test_critic_keys_reach_the_critics_that_take_them(algo):
    import torch

    from mpdp_pl.algos import ALGOS
    from mpdp_pl.environment.envs import EnvSpec

    count = 2 if algo == "mppve" else 3
    cfg = load_config("Hopper-v4", algo, {"critic.layernorm": True, "critic.count": count,
                                          "networks.hidden_sizes": [8, 8], "networks.activation": "silu"})
    module = ALGOS[algo](cfg, EnvSpec(3, 2, (-1.0,) * 2, (1.0,) * 2, 100))
    plan = cfg["mppve"]["plan_length"] if algo == "mppve" else 1  # MPPVE's Q(s, a_0..a_{k-1})
    obs, act = torch.zeros(4, 3), torch.zeros(4, 2 * plan)
    assert module.critic(obs, act).shape == (count, 4)
    assert module.critic.net.norm_eps and module.critic_target.net.norm_eps
    assert isinstance(module.critic.net.activation, torch.nn.SiLU)


@pytest.mark.parametrize("algo", ["sac", "mppve", "mpdp_pv", "dhmbpo", "pets"])
def test_compile_is_refused_where_nothing_compiles(algo):
    """improvement.compile compiles mpdp's farsighted unroll only; elsewhere it would do nothing."""
    with pytest.raises(ConfigError, match="improvement.compile=True compiles mpdp's"):
        load_config("Hopper-v4", algo, {"improvement.compile": True})
    assert load_config("Hopper-v4", "mpdp", {"improvement.compile": True, "improvement.unroll_form": "static"})


@pytest.mark.parametrize("key", ["critic_target", "u_T_rule", "start_states"])
def test_a_removed_switch_is_an_unknown_key(key):
    with pytest.raises(ConfigError, match=key):
        load_config("Hopper-v4", "mpdp", {key: "x"})


def test_keys_a_run_predates_count_as_their_defaults():
    """A run started before a switch existed resumes (and its grid is reused) when the switch
    is at its default, and is refused when it is not."""
    import copy

    from mpdp_pl.config import differing_keys

    cfg = load_config("Hopper-v4", "mpdp")
    old = copy.deepcopy(cfg)
    for group, key in (("critic", "scale"), ("networks", "obs_norm"), ("improvement", "single_policy")):
        del old[group][key]
    assert differing_keys(old, cfg) == []
    assert differing_keys(old, load_config("Hopper-v4", "mpdp", {"critic.scale": True})) == ["critic.scale"]
    assert differing_keys(cfg, load_config("Hopper-v4", "mpdp", {"improvement.beta": 0.7})) == ["improvement.beta"]


def test_a_resume_takes_the_flat_keys_of_earlier_versions(tiny_run):
    """``--resume DIR buffer_device=cpu`` (a flat key of earlier versions) is
    ``data.buffer_device=cpu``, as on a fresh run."""
    from argparse import Namespace

    from mpdp_pl.cli import resume_target

    cfg, _ = resume_target(Namespace(resume=str(tiny_run), env=None, algo=None),
                           {"buffer_device": "cpu", "steps": 10_000})
    assert cfg["data"]["buffer_device"] == "cpu" and cfg["steps"] == 10_000


def test_the_start_state_fifo_bounds_the_batch_only_where_it_exists():
    """DHMBPO's FIFO must hold a batch; SAC has no FIFO, so its batch is not bounded by it."""
    assert load_config("Hopper-v4", "sac", {"data.batch_size": 60000})["data"]["batch_size"] == 60000
    with pytest.raises(ConfigError, match="dhmbpo.buffer_size=51200: must be >= data.batch_size"):
        load_config("Hopper-v4", "dhmbpo", {"data.batch_size": 60000})
