"""Logger choice and W&B mode: offline by itself without a key, switchable off."""

from __future__ import annotations

import csv

import pytest

from conftest import TINY, run_train
from mpdp_pl.config import load_config, parse_overrides
from mpdp_pl.runtime.loggers import MetricsCSV, resolve_wandb_mode
from mpdp_pl.run import train


@pytest.fixture
def no_wandb_key(tmp_path, monkeypatch):
    for k in ("WANDB_API_KEY", "WANDB_MODE"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("NETRC", str(tmp_path / ".netrc"))


def test_wandb_auto_is_offline_without_a_key(no_wandb_key):
    assert resolve_wandb_mode("auto") == "offline"


def test_wandb_with_key_but_no_network_is_offline(no_wandb_key, monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    monkeypatch.setattr("mpdp_pl.runtime.loggers._can_reach", lambda host: False)
    assert resolve_wandb_mode("auto") == "offline"


def test_wandb_mode_env_var_and_config_win(no_wandb_key, monkeypatch):
    assert resolve_wandb_mode("disabled") == "disabled"
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert resolve_wandb_mode("auto") == "disabled"


def test_wandb_online_without_a_key_is_one_line_before_any_file(no_wandb_key, tmp_path):
    proc = run_train(["--steps", "10", "--out", str(tmp_path / "run"), "--logger", "wandb",
                      "wandb.mode=online"], cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "error: W&B online needs an API key (WANDB_API_KEY or `wandb login`); wandb.mode=offline "
        "or auto logs offline without one"]
    assert not (tmp_path / "run").exists()


def test_metrics_csv_refuses_a_second_row_for_the_same_step(tmp_path):
    m = MetricsCSV(tmp_path / "m.csv", ["env_steps", "eval/return"])
    m.write({"env_steps": 10, "eval/return": 1.0})
    with pytest.raises(ValueError):
        m.write({"env_steps": 10, "eval/return": 2.0})
    with pytest.raises(KeyError):
        m.write({"env_steps": 20, "nope": 1})
    assert (tmp_path / "m.csv").read_text().splitlines() == ["env_steps,eval/return", "10,1.0"]


def test_a_resumed_file_keeps_its_columns_and_gains_new_ones_at_the_end(tmp_path):
    """A version that logs a column fewer (``b``) and one more (``d``) than the file holds:
    every value stays under its name, the old rows are padded, the new row fits the header."""
    path = tmp_path / "m.csv"
    path.write_text("env_steps,a,b,c\n10,1.0,2.0,3.0\n")
    m = MetricsCSV(path, ["env_steps", "a", "c", "d"])
    m.write({"env_steps": 20, "a": 4.0, "c": 6.0, "d": 7.0})
    with pytest.raises(ValueError):
        m.write({"env_steps": 20, "a": 0.0})
    with open(path) as f:
        rows = list(csv.reader(f))
    assert rows == [["env_steps", "a", "b", "c", "d"], ["10", "1.0", "2.0", "3.0", ""],
                    ["20", "4.0", "", "6.0", "7.0"]]
    MetricsCSV(path, ["env_steps", "a", "c", "d"])  # nothing to add: the file stays as it is
    assert list(csv.reader(open(path))) == rows


def test_truncation_at_a_resume_keeps_earlier_rows_and_passes_over_blank_lines(tmp_path):
    """The rows after the checkpoint's step go; earlier ones stay byte for byte; a blank line (a
    hand edit) is no row; a row that does not start with an env step is one line of error."""
    from mpdp_pl.errors import ConfigError

    path = tmp_path / "m.csv"
    path.write_text("env_steps,a\n10,1.0\n\n20,2.0\n30,3.0\n")
    MetricsCSV.truncate_after(path, 20)
    assert path.read_text() == "env_steps,a\n10,1.0\n20,2.0\n"
    m = MetricsCSV(path.with_name("n.csv"), ["env_steps", "a"])
    m.path.write_text("env_steps,a\n10,1.0\n\n")
    assert MetricsCSV(m.path, ["env_steps", "a"]).last_step == 10
    path.write_text("env_steps,a\n10,1.0\noops,2.0\n")
    with pytest.raises(ConfigError, match="does not start with an env step: 'oops,2.0'"):
        MetricsCSV.truncate_after(path, 5)


def test_csv_logger_run_in_process(tmp_path, no_wandb_key):
    """train() without a subprocess; --logger csv writes Lightning's CSV of training metrics
    against env steps next to metrics.csv, and no W&B files."""
    cfg = load_config("Pendulum-v1", "sac", {
        **parse_overrides(TINY), "steps": 300, "data.init_random_steps": 100, "eval.every": 150,
        "eval.episodes": 1, "logging.every": 50, "logger": "csv", "out": str(tmp_path / "run")})
    out = train(cfg)
    assert not (out / "wandb").exists()
    with open(out / "lightning" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    logged_steps = sorted({int(float(r["env_steps"])) for r in rows if r.get("env_steps")})
    assert logged_steps[:4] == [50, 100, 150, 200]
    assert any(r.get("train/critic_loss") for r in rows)
    with open(out / "metrics.csv") as f:
        assert [int(r["env_steps"]) for r in csv.DictReader(f)] == [150, 300]
    # a resume continues Lightning's file (Lightning's own writer deletes it): the rows up to
    # the checkpoint stay as they were, then the resumed run's
    with open(out / "lightning" / "metrics.csv") as f:
        before = [r for r in csv.DictReader(f) if float(r["step"]) <= 300]
    proc = run_train(["--resume", str(out), "--steps", "400"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(out / "lightning" / "metrics.csv") as f:
        after = list(csv.DictReader(f))
    assert after[:len(before)] == before
    assert sorted({int(float(r["step"])) for r in after[len(before):]}) == [350, 400]
