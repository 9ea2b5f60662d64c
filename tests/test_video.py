"""Training-time evaluation videos: rendered headless on CPU, saved under the run directory,
decoding to one frame per step of the evaluated episode plus the reset frame, and logged to the
W&B offline run as media."""

from __future__ import annotations

import csv

from conftest import TINY, offline_env, run_train
from mpdp_pl.environment.video import count_frames, video_fps


def test_videos_every_evaluation(tmp_path):
    out = tmp_path / "run"
    proc = run_train(["--env", "InvertedPendulum-v4", "--algo", "sac", "--out", str(out),
                      "--logger", "wandb", *TINY, "steps=400", "eval.episodes=1",
                      "eval.video_every=1"], cwd=tmp_path, env=offline_env(tmp_path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(out / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["env_steps"]) for r in rows] == [200, 400]
    for r in rows:
        video = out / "videos" / f"step{int(r['env_steps']):09d}.mp4"
        # the video replays the (deterministic) evaluation episode from the evaluation seed
        assert count_frames(video) == int(float(r["eval/episode_length"])) + 1
        assert video_fps(video) == 25  # real time: InvertedPendulum-v4's dt is 0.04 s
    media = list((out / "wandb").glob("offline-run-*/files/media/videos/**/*.mp4"))
    assert len(media) == 2
