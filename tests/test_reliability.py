"""Durability: SIGKILL then --resume loses nothing, SIGTERM checkpoints and exits cleanly, the
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
    args = [*RUN, "steps=1500", "checkpoint_every=300", "eval_every=300", "--out", str(out)]
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
    assert proc.returncode == 0, stderr[-3000:]
    assert "Traceback" not in stderr
    ckpt = checkpoint.latest(out)
    step = checkpoint.read(ckpt)["counters"]["env_steps"]
    assert 200 <= step < 100000
    assert f"stopped by SIGTERM at env step {step}" in stdout
    assert buffer_size(ckpt) == step


def test_same_seed_same_metrics(tmp_path):
    runs = []
    for name in ("a", "b"):
        proc = run_train([*RUN, "--algo", "mpdp", "model_hidden=32", "model_max_steps=20",
                          "horizon=3", "--out", str(tmp_path / name)], cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr[-3000:]
        runs.append(rows(tmp_path / name))
    drop = ("time/elapsed", "time/env_steps_per_s", "model/train_seconds")
    strip = [[{k: v for k, v in r.items() if k not in drop} for r in run] for run in runs]
    assert len(strip[0]) == 3 and strip[0] == strip[1]


def test_resume_rejects_missing_corrupt_and_foreign_checkpoints(tiny_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    listing = sorted(str(p.relative_to(run)) for p in run.rglob("*"))

    def resume(*extra):
        proc = run_train(["--resume", str(run), *extra], cwd=tmp_path)
        assert proc.returncode == 2
        assert sorted(str(p.relative_to(run)) for p in run.rglob("*")) == listing
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
        return lines[0]

    assert "is complete at 600 env steps" in resume()
    assert "only --steps and buffer_device" in resume("--steps", "900", "seed=4")
    cfg_text = (run / "config.yaml").read_text()
    (run / "config.yaml").write_text(cfg_text.replace("seed: 3", "seed: 4"))
    assert "another config (differs in: seed)" in resume("--steps", "900")
    (run / "config.yaml").write_text(cfg_text)
    state = checkpoint.latest(run) / "state.pt"
    state.write_bytes(b"not a checkpoint")
    assert "holds no readable checkpoint" in resume("--steps", "900")
    shutil.rmtree(run / "checkpoints")
    listing = sorted(str(p.relative_to(run)) for p in run.rglob("*"))
    assert "holds no checkpoint" in resume("--steps", "900")
