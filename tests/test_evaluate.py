"""Using a trained agent: evaluating a checkpoint reproduces the run's own last evaluation,
the exported pi_0 acts like the in-package policy in a process without mpdp_pl, videos decode,
and bad input is one line with exit code 2."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest
import torch
from conftest import ROOT

from mpdp_pl.runtime import checkpoint
from mpdp_pl.evaluate import load_agent


def evaluate(*args, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", "mpdp_pl.evaluate", *map(str, args)], check=False, cwd=cwd,
                          capture_output=True, text=True, timeout=600)


def test_evaluating_the_checkpoint_reproduces_the_runs_last_evaluation(tiny_run):
    with open(tiny_run / "metrics.csv") as f:
        last = list(csv.DictReader(f))[-1]
    proc = evaluate(tiny_run)  # the run's own seed and episode count
    assert proc.returncode == 0, proc.stderr[-3000:]
    ckpt = checkpoint.latest(tiny_run)
    result = json.loads((ckpt.parent / f"{ckpt.name}.eval.json").read_text())
    assert result["episodes"] == 2
    assert result["return_mean"] == pytest.approx(float(last["eval/return"]), abs=1e-9)
    assert result["length_mean"] == pytest.approx(float(last["eval/episode_length"]))
    assert result["return_min"] <= result["return_mean"] <= result["return_max"]


def test_a_result_that_cannot_be_written_is_printed_and_the_export_still_runs(tiny_run, tmp_path):
    """The result's file cannot be written (a read-only copy of a run; here a folder in its
    place): the figures are printed, the command goes on to ``--export``, and exits 0."""
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    ckpt = checkpoint.latest(run)
    result = ckpt.parent / f"{ckpt.name}.eval.json"
    result.unlink(missing_ok=True)  # written by an earlier evaluation of the shared run
    result.mkdir()
    proc = evaluate(run, "--episodes", 1, "--export", tmp_path / "pi0.pt")
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert "return" in proc.stdout and f"{ckpt.name}.eval.json not written" in proc.stdout
    assert (tmp_path / "pi0.pt").stat().st_size > 0


def test_exported_policy_acts_identically_without_the_package(tiny_run, tmp_path):
    path = tmp_path / "pi0.pt"
    proc = evaluate(tiny_run, "--episodes", 1, "--export", path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # 100 real observations of the task, from random actions
    env = gym.make("InvertedPendulum-v4")
    obs, _ = env.reset(seed=0)
    observations = []
    for _ in range(100):
        observations.append(obs)
        obs, _, term, trunc, _ = env.step(env.action_space.sample())
        if term or trunc:
            obs, _ = env.reset()
    env.close()
    np.save(tmp_path / "obs.npy", np.stack(observations))
    script = (
        "import sys, numpy as np, torch\n"
        f"p = torch.jit.load({str(path)!r})\n"
        f"a = p(torch.as_tensor(np.load({str(tmp_path / 'obs.npy')!r}))).numpy()\n"
        f"np.save({str(tmp_path / 'act.npy')!r}, a)\n"
        "assert not any(m.startswith('mpdp_pl') for m in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", script], check=False, cwd=tmp_path, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    exported = np.load(tmp_path / "act.npy")
    # the in-package policy: pi_0 on the env's observation, then the env's ActionScaling
    _, module, _ = load_agent(tiny_run)
    from mpdp_pl.environment.envs import make_env

    tenv = make_env(module.cfg)
    from tensordict import TensorDict

    td = TensorDict({"observation": torch.as_tensor(np.stack(observations), dtype=torch.float32)}, [100])
    with torch.no_grad():
        td = module.policy(deterministic=True)(td)
        expected = tenv.transform.inv(td)["action"].numpy()
    tenv.close()
    assert exported.shape == (100, 1)
    np.testing.assert_allclose(exported, expected, rtol=0, atol=1e-6)


def test_video_renders_headless_and_decodes(tiny_run, tmp_path):
    path = tmp_path / "ep.mp4"
    proc = evaluate(tiny_run, "--episodes", 1, "--video", path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = proc.stdout.split("video: ")[-1]
    frames = int(line.split("(")[-1].split(" frames")[0])
    ret = float(line.split("return ")[-1].rstrip(")\n"))
    from mpdp_pl.environment.video import count_frames, video_fps

    # InvertedPendulum pays 1 a step: the first frame, then one per step of the episode
    assert frames >= 2 and frames == round(ret) + 1 and count_frames(path) == frames
    assert video_fps(path) == 25  # real time: InvertedPendulum-v4's dt is 0.04 s


@pytest.mark.parametrize("case,match", [
    ("missing", "no such run directory or checkpoint"),
    ("corrupt", "holds no readable checkpoint"),
    ("other_task", "is a checkpoint of InvertedPendulum-v4, not of Hopper-v4"),
    ("episodes", "--episodes 0"),
    ("seed", "--seed -1"),
    ("export_to_a_folder", "is a directory; give a file name"),
    ("video_nowhere", "no such directory"),
])
def test_bad_input_is_one_line_exit_2(tiny_run, tmp_path, case, match):
    """Refused before any episode runs: the output paths too, not after minutes of evaluation."""
    args = {"missing": [tmp_path / "nothing"],
            "other_task": [tiny_run, "--env", "Hopper-v4"],
            "episodes": [tiny_run, "--episodes", 0],
            "seed": [tiny_run, "--seed", -1],
            "export_to_a_folder": [tiny_run, "--export", tmp_path],
            "video_nowhere": [tiny_run, "--video", tmp_path / "no" / "ep.mp4"]}.get(case)
    if case == "corrupt":
        bad = tmp_path / "ckpt"
        bad.mkdir()
        (bad / "state.pt").write_bytes(b"\x00garbage")
        args = [bad]
    proc = evaluate(*args)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and match in lines[0] and "Traceback" not in proc.stderr, proc.stderr
    assert "return" not in proc.stdout  # no episode was run
