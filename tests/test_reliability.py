"""Durability: SIGKILL then --resume loses nothing, SIGTERM checkpoints and exits (143) within
30 s wherever the run is (an evaluation, a model fit, a burst of updates), the
same seed gives the same metrics, and --resume rejects what it cannot continue, all on real runs
(the guard against non-finite updates: tests/test_guard.py)."""

from __future__ import annotations

import csv
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
from conftest import ROOT, TINY, run_train
from mpdp_pl.runtime import checkpoint

RUN = ["--env", "InvertedPendulum-v4", "--algo", "sac", "--logger", "none", *TINY]


def rows(run_dir: Path) -> list[dict]:
    with open(run_dir / "metrics.csv") as f:
        return list(csv.DictReader(f))


def start(args: list[str], cwd: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(ROOT / "train.py"), *args], cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(cond, proc: subprocess.Popen, timeout: float = 300) -> None:
    t0 = time.time()
    while not cond():
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.time() - t0 < timeout, "timed out"
        time.sleep(0.2)


def buffer_size(ckpt: Path) -> int:
    from mpdp_pl.environment.data import load_buffer, make_replay_buffer

    rb = make_replay_buffer(10**6, "cpu")
    load_buffer(rb, ckpt / "replay_buffer")
    return len(rb)


def test_sigkill_then_resume_continues_without_gaps_or_lost_transitions(tmp_path):
    out = tmp_path / "run"
    args = [*RUN, "steps=1500", "durability.checkpoint_every=300", "eval.every=300", "--out", str(out)]
    proc = start(args, tmp_path)
    wait_for(lambda: (ck := checkpoint.latest(out)) is not None and ck.name >= "step000000600", proc)
    proc.kill()  # SIGKILL: no handler runs
    proc.wait()
    ckpt = checkpoint.latest(out)
    done = checkpoint.read(ckpt)["counters"]["env_steps"]
    assert buffer_size(ckpt) == done  # every collected transition up to the checkpoint
    before = [r for r in rows(out) if int(r["env_steps"]) <= done]
    proc = subprocess.run([sys.executable, str(ROOT / "train.py"), "--resume", str(out)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    after = rows(out)
    steps = [int(r["env_steps"]) for r in after]
    assert steps == [300, 600, 900, 1200, 1500]  # no gap, no duplicate
    assert after[: len(before)] == before  # rows up to the checkpoint untouched
    final = checkpoint.latest(out)
    assert checkpoint.read(final)["counters"]["env_steps"] == 1500
    assert buffer_size(final) == 1500
    assert float(after[-1]["train/updates"]) > float(before[-1]["train/updates"])


def test_sigterm_writes_a_checkpoint_and_exits_cleanly(tmp_path):
    out = tmp_path / "run"
    proc = start([*RUN, "steps=100000", "--out", str(out)], tmp_path)
    wait_for(lambda: (out / "metrics.csv").exists() and len(rows(out)) >= 1, proc)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, stderr[-3000:]  # the shell's convention
    assert "Traceback" not in stderr
    ckpt = checkpoint.latest(out)
    step = checkpoint.read(ckpt)["counters"]["env_steps"]
    assert 200 <= step < 100000
    assert f"stopped by SIGTERM at env step {step}" in stdout
    assert buffer_size(ckpt) == step


def stop_inside(args: list[str], out: Path, tmp_path: Path, marker_step: int) -> tuple[float, str]:
    """Start a run, wait for its checkpoint at ``marker_step`` (written just before the slow
    part begins: checkpoint_every = marker_step), send SIGTERM; returns (seconds to exit, stdout)."""
    proc = start([*args, "--out", str(out), f"durability.checkpoint_every={marker_step}"], tmp_path)
    marker = out / "checkpoints" / f"step{marker_step:09d}"
    wait_for(lambda: (marker / "state.pt").exists(), proc, timeout=600)
    time.sleep(1.0)  # inside the slow part by now
    t0 = time.time()
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=300)
    seconds = time.time() - t0
    assert proc.returncode == 128 + signal.SIGTERM, stderr[-3000:]
    assert "Traceback" not in stderr
    return seconds, stdout


SLOW_EVAL = ["--env", "Pendulum-v1", "--algo", "pets", "--logger", "none", "pets.population=125",
             "data.init_random_steps=200", "eval.every=100", "eval.episodes=1",
             "task.max_episode_steps=10", "trainer.num_threads=1"]


def test_sigterm_inside_a_planners_evaluation_exits_within_30_s(tmp_path):
    # PETS at its published CEM with a quarter of its population (about 1.5 s per planned step
    # here) evaluates 10-step episodes from env step 100: one evaluation is about 15 s; the stop
    # drops it
    out = tmp_path / "run"
    seconds, stdout = stop_inside([*SLOW_EVAL, "steps=300"], out, tmp_path, marker_step=99)
    assert seconds < 30, seconds
    assert not (out / "metrics.csv").exists() or rows(out) == []  # no half-finished row
    assert checkpoint.read(checkpoint.latest(out))["counters"]["env_steps"] == 100
    assert "stopped by SIGTERM at env step 100" in stdout
    proc = subprocess.run([sys.executable, str(ROOT / "train.py"), "--resume", str(out),
                           "--steps", "101"], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # the evaluation the stop dropped is taken at the resume, at its own env step, then the last
    assert [int(r["env_steps"]) for r in rows(out)] == [100, 101]


def test_a_stop_inside_the_last_evaluation_is_resumed_not_restarted(tmp_path):
    # the run's budget is the evaluation's env step: the stop leaves a checkpoint at the budget
    # and no row for it
    out = tmp_path / "run"
    stop_inside([*SLOW_EVAL, "steps=100"], out, tmp_path, marker_step=99)
    assert checkpoint.read(checkpoint.latest(out))["counters"]["env_steps"] == 100
    assert not (out / "metrics.csv").exists() or rows(out) == []
    # a grid's job at that budget is unfinished and resumed (not moved aside and started again)
    from mpdp_pl.experiments.multirun import _resumable, finished
    assert not finished(out, 100) and _resumable(out, 100)
    proc = subprocess.run([sys.executable, str(ROOT / "train.py"), "--resume", str(out)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert [int(r["env_steps"]) for r in rows(out)] == [100]  # the evaluation owed, no more
    assert finished(out, 100)
    proc = subprocess.run([sys.executable, str(ROOT / "train.py"), "--resume", str(out)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 2 and "is complete at 100 env steps" in proc.stderr


def test_a_resume_ends_the_episode_in_flight_at_the_checkpoint(tmp_path):
    # Pendulum-v1 has no terminal states and a 200-step time limit: at 250 the second episode
    # is 50 steps in; the resumed run starts a new episode, so that transition ends one
    out = tmp_path / "run"
    run = ["--env", "Pendulum-v1", "--algo", "sac", "--logger", "none", *TINY, "--out", str(out)]
    proc = run_train([*run, "steps=250"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    proc = run_train(["--resume", str(out), "--steps", "300"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    from mpdp_pl.environment.data import load_buffer, make_replay_buffer
    rb = make_replay_buffer(10**6, "cpu")
    load_buffer(rb, checkpoint.latest(out) / "replay_buffer")
    nxt = rb[:]["next"]
    assert len(rb) == 300 and not nxt["terminated"].any()
    ends = nxt["truncated"].squeeze(-1).nonzero().squeeze(-1).tolist()
    assert ends == [199, 249] and torch.equal(nxt["done"], nxt["truncated"])
    # the next episode starts at the resume: slot 250 is a fresh reset, not 249's successor
    assert not torch.equal(rb[250]["observation"], nxt["observation"][249])


def test_resume_auto_continues_the_run_with_this_config_under_out(tmp_path):
    config = ["--env", "InvertedPendulum-v4", "--algo", "sac", *TINY, "steps=200"]
    proc = run_train([*config, "--logger", "none", "--out", str(tmp_path / "runs" / "a")], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # the search root is --out; the run's config but the budget and the logger matches
    proc = run_train(["--resume", "auto", *config, "--out", str(tmp_path / "runs"), "--steps", "400"],
                     cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert [int(r["env_steps"]) for r in rows(tmp_path / "runs" / "a")] == [200, 400]
    # a resume keeps the run's logger: asking for another is refused, not ignored
    proc = run_train(["--resume", "auto", *config, "--out", str(tmp_path / "runs"), "--steps", "600",
                      "--logger", "csv"], cwd=tmp_path)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        "error: --resume takes the logger of the run it continues; drop --logger"], proc.stderr


DH_TINY = ["--env", "Hopper-v4", "--algo", "dhmbpo", "--logger", "none", "data.init_random_steps=200",
           "eval.every=100", "eval.episodes=1", "data.batch_size=64", "networks.hidden_sizes=[32,32]",
           "model.hidden=32", "updates.every=100", "model.train_freq=100", "model.batch_size=64",
           "dhmbpo.rollout_every=10", "dhmbpo.rollout_length=5", "dhmbpo.buffer_size=2000",
           "trainer.num_threads=1"]


def test_sigterm_inside_a_model_fit_exits_within_30_s_and_the_resume_runs_the_burst(tmp_path):
    # the first fit at env step 200: 5 x 1000 rounds, never stopping early (patience), about
    # 15 s here; the resume runs it again, whole
    out = tmp_path / "run"
    seconds, _ = stop_inside([*DH_TINY, "steps=250", "model.max_epochs=1000",
                              "model.patience=100000", "updates.warmup=10"], out, tmp_path,
                             marker_step=199)
    assert seconds < 30, seconds
    before = rows(out)
    assert [int(r["env_steps"]) for r in before] == [100]  # the evaluation at 200 was dropped
    counters = checkpoint.read(checkpoint.latest(out))["counters"]
    # the cut training does not count: the resume trains the model again, whole, then warm
    # starts (10 pairs) and runs the burst the stop left (25 critic-only, 100 pairs)
    assert counters["env_steps"] == 200 and counters["model_trainings"] == 0
    assert counters["burst_left"] == [25, 100]
    # and the model's optimizer is back where the cut training found it: no moments yet
    assert checkpoint.read(checkpoint.latest(out))["optimizers"][-1]["state"] == {}
    # as versions before 98df1eb wrote it: the dropped evaluation marked as done; the rows of
    # metrics.csv still tell the resume that it is owed
    state = checkpoint.read(checkpoint.latest(out))
    assert state["counters"]["last_eval_step"] == 100
    state["counters"]["last_eval_step"] = 200
    torch.save(state, checkpoint.latest(out) / "state.pt")
    proc = subprocess.run([sys.executable, str(ROOT / "train.py"), "--resume", str(out)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    after = rows(out)
    # the resume finishes the round the stop cut (the fit, the warm start, the burst), then
    # takes the evaluation that round owed, at its env step, before any new env step
    assert after[:1] == before and [int(r["env_steps"]) for r in after] == [100, 200, 250]
    assert float(after[1]["train/updates"]) == float(after[2]["train/updates"]) == 25 + 110


def test_sigterm_inside_a_burst_exits_within_30_s_and_the_resume_runs_what_it_owes(tmp_path):
    out = tmp_path / "run"
    seconds, _ = stop_inside([*DH_TINY, "steps=250", "model.max_epochs=2",
                              "updates.warmup=1000"], out, tmp_path, marker_step=199)
    assert seconds < 30, seconds
    before = rows(out)
    counters = checkpoint.read(checkpoint.latest(out))["counters"]
    critic_only, pairs = counters["burst_left"]
    assert critic_only == 0 and 0 < pairs  # stopped among the pairs
    assert counters["updates"] + pairs == 25 + 100 + 1000
    proc = subprocess.run([sys.executable, str(ROOT / "train.py"), "--resume", str(out)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    after = rows(out)
    assert after[: len(before)] == before and [int(r["env_steps"]) for r in after[len(before):]] == [200, 250]
    assert float(after[-2]["train/updates"]) == float(after[-1]["train/updates"]) == 25 + 100 + 1000


def test_same_seed_same_metrics(tmp_path):
    runs = []
    for name in ("a", "b"):
        proc = run_train([*RUN, "--algo", "mpdp", "model.hidden=32", "model.max_steps=20",
                          "improvement.horizon=3", "--out", str(tmp_path / name)], cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr[-3000:]
        runs.append(rows(tmp_path / name))
    drop = ("time/elapsed", "time/env_steps_per_s", "model/train_seconds")
    strip = [[{k: v for k, v in r.items() if k not in drop} for r in run] for run in runs]
    assert len(strip[0]) == 3 and strip[0] == strip[1]


def test_resume_rejects_missing_corrupt_and_foreign_checkpoints(tiny_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    listing = sorted(str(p.relative_to(run)) for p in run.rglob("*"))

    # a row after the checkpoint (a run killed between an evaluation and its next checkpoint):
    # a resume that is refused must keep it, and config.yaml as it was
    (run / "metrics.csv").write_text((run / "metrics.csv").read_text() + "800" + "," * 4 + "\n")
    files = ("config.yaml", "metrics.csv")

    def resume(*extra, new_files_ok=False):
        before = {f: (run / f).read_bytes() for f in files}
        proc = run_train(["--resume", str(run), *extra], cwd=tmp_path)
        assert proc.returncode == 2
        if not new_files_ok:
            assert sorted(str(p.relative_to(run)) for p in run.rglob("*")) == listing
        assert {f: (run / f).read_bytes() for f in files} == before
        lines = proc.stderr.strip().splitlines()
        if new_files_ok:  # refused inside fit: after Lightning's own lines on the devices
            lines = [ln for ln in lines if ln.startswith("error:")]
        assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
        return lines[0]

    assert "is complete at 600 env steps" in resume()
    assert "the Lightning Trainer refuses" in resume("--steps", "900", "trainer.accelerator=tpuu")
    assert "only --steps and data.buffer_device" in resume("--steps", "900", "seed=4")
    cfg_text = (run / "config.yaml").read_text()
    (run / "config.yaml").write_text(cfg_text.replace("seed: 3", "seed: 4"))
    assert "another config (differs in: seed)" in resume("--steps", "900")
    (run / "config.yaml").write_text(cfg_text)
    writer = checkpoint.latest(run) / "replay_buffer" / "writer.pt"
    kept = writer.read_bytes()
    writer.write_bytes(b"")  # found only when the buffers load, inside fit (W&B has started)
    assert "the checkpoint's buffers cannot be read" in resume("--steps", "900", new_files_ok=True)
    writer.write_bytes(kept)
    memmap = next((writer.parent / "storage").rglob("*.memmap"))
    kept = memmap.read_bytes()
    memmap.write_bytes(kept[:2])  # truncated: found, not loaded as zeros and written back whole
    assert "the checkpoint's buffers cannot be read" in resume("--steps", "900", new_files_ok=True)
    assert memmap.stat().st_size == 2
    memmap.write_bytes(kept)
    listing = sorted(str(p.relative_to(run)) for p in run.rglob("*"))
    state = checkpoint.latest(run) / "state.pt"
    state.write_bytes(b"not a checkpoint")
    assert "holds no readable checkpoint" in resume("--steps", "900")
    shutil.rmtree(run / "checkpoints")
    listing = sorted(str(p.relative_to(run)) for p in run.rglob("*"))
    assert "holds no checkpoint" in resume("--steps", "900")
