"""Evaluation videos: one episode of a policy rendered headless and written as mp4.

MuJoCo renders without a display through EGL (GPU or Mesa on CPU) or OSMesa; ``MUJOCO_GL`` must
be set before MuJoCo is first imported, so entry points call :func:`headless` early.
"""

from __future__ import annotations

import os
from pathlib import Path


def headless() -> None:
    """Default to EGL rendering unless the user chose a backend."""
    os.environ.setdefault("MUJOCO_GL", "egl")


def render_episode(env, policy, max_steps: int, seed: int | None = None):
    """Frames (``list[np.ndarray]``) of one episode of ``policy`` on ``env`` (made with
    ``make_env(render=True)``), the reset frame included, and the episode's return. ``seed``
    re-seeds the env first (training videos use the evaluation seed: the video shows the first
    evaluation episode)."""
    import numpy as np
    import torch

    if seed is not None:
        env.set_seed(seed)
    gym_env = env.base_env._env
    td = env.reset()
    frames = [np.asarray(gym_env.render())]

    def grab(*_):
        frames.append(np.asarray(gym_env.render()))

    with torch.no_grad():
        rollout = env.rollout(max_steps, policy, break_when_any_done=True, callback=grab,
                              auto_reset=False, tensordict=td)
    if len(frames) < rollout.shape[-1] + 1:  # TorchRL skips the callback on the final step
        grab()
    return frames, float(rollout["next", "reward"].sum())


def frame_rate(env) -> int:
    """Frames per second at which ``env``'s episodes play in real time: gymnasium's
    ``metadata["render_fps"]`` (1 / dt; Hopper-v4 125, InvertedPendulum-v4 25), else 30."""
    return int(env.base_env._env.metadata.get("render_fps", 30))


def write_video(frames, path: Path, fps: int) -> Path:
    import imageio.v2 as imageio

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with imageio.get_writer(path, fps=fps, codec="libx264", macro_block_size=1) as w:
        for f in frames:
            w.append_data(f)
    return path


def count_frames(path: Path) -> int:
    """Decode an mp4 and count its frames (what the tests check a video with)."""
    import imageio.v2 as imageio

    with imageio.get_reader(path) as r:
        return sum(1 for _ in r)


def video_fps(path: Path) -> float:
    """An mp4's frame rate as its container states it."""
    import imageio.v2 as imageio

    with imageio.get_reader(path) as r:
        return float(r.get_meta_data()["fps"])
