"""Durability: SIGKILL then --resume loses nothing, SIGTERM checkpoints and exits cleanly, the
same seed gives the same metrics, non-finite updates are skipped and undone, and --resume
rejects what it cannot continue, all on real runs."""

from __future__ import annotations

import csv
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import ROOT, TINY, run_train
from mpdp_pl import checkpoint
from mpdp_pl.algos.base import NumericalFault
from mpdp_pl.algos.mpdp import MPDP
from mpdp_pl.config import load_config, parse_overrides
from mpdp_pl.run import train_module

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
    from mpdp_pl.data import load_buffer, make_replay_buffer

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


class NaNInjection(MPDP):
    """MPDP whose ``part`` loss is NaN for the updates listed in ``bad`` (fault injection)."""

    part, bad = "critic", set()

    def __init__(self, cfg, spec):
        super().__init__(cfg, spec)
        self.calls = {"critic": 0, "actor": 0, "model": 0}

    def critic_loss(self, batch):
        loss, q = super().critic_loss(batch)
        return self._maybe_nan("critic", loss), q

    def actor_step(self):  # the farsighted improvement, its loss made NaN when listed
        original = self.improve

        def faulty(*args, **kwargs):
            result = original(*args, **kwargs)
            return result._replace(loss=self._maybe_nan("actor", result.loss))

        self.improve = faulty
        try:
            super().actor_step()
        finally:
            self.improve = original

    def fit_dynamics(self, data, split):
        metrics = super().fit_dynamics(data, split)
        if self._maybe_nan("model", torch.tensor(0.0)).isnan():  # a diverged training
            with torch.no_grad():
                next(self.dynamics.ensemble.parameters()).fill_(float("nan"))
        return metrics

    def _maybe_nan(self, part, loss):
        self.calls[part] += 1
        return loss * float("nan") if part == self.part and self.calls[part] in self.bad else loss


def fault_cfg(tmp_path, **extra):
    return load_config("InvertedPendulum-v4", "mpdp", {
        **parse_overrides(TINY), "steps": 400, "model_hidden": 16, "model_max_steps": 20,
        "model_train_freq": 50, "horizon": 2, "critic_updates_per_step": 1.0, "logger": "none",
        "out": str(tmp_path / "run"),
        **extra})


@pytest.mark.parametrize("part,guard", [("critic", "sync"), ("actor", "sync"), ("model", "sync"),
                                        ("critic", "deferred"), ("actor", "deferred")])
def test_a_nonfinite_update_is_skipped_and_undone(tmp_path, part, guard):
    NaNInjection.part, NaNInjection.bad = part, {2, 3}
    out = train_module(NaNInjection, fault_cfg(tmp_path, nonfinite_guard=guard))
    last = rows(out)[-1]
    assert float(last["train/nonfinite_skips"]) == 2
    assert int(last["env_steps"]) == 400
    state = checkpoint.read(checkpoint.latest(out))["module"]
    assert all(torch.isfinite(v.float()).all() for v in state.values())


@pytest.mark.parametrize("guard", ["sync", "deferred"])
def test_a_repeating_fault_stops_the_run_and_keeps_the_last_checkpoint(tmp_path, guard):
    NaNInjection.part, NaNInjection.bad = "critic", set(range(120, 10**6))
    with pytest.raises(NumericalFault, match=r"\d+ non-finite critic updates in a row"):
        train_module(NaNInjection, fault_cfg(tmp_path, nonfinite_limit=5, checkpoint_every=300,
                                             nonfinite_guard=guard))
    ckpt = checkpoint.latest(tmp_path / "run")
    assert ckpt is not None and ckpt.name == "step000000300"
    # the verdict stays with the run, for the comparison runner's table
    assert "non-finite critic updates in a row" in (tmp_path / "run" / "failed.txt").read_text()


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
