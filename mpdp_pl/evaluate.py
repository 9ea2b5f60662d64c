"""Evaluate a trained agent: ``python -m mpdp_pl.evaluate RUN_DIR_OR_CKPT [--episodes N]
[--seed S] [--video PATH] [--deterministic | --stochastic] [--env ENV_ID] [--export PATH]``.

Loads pi_0 from a checkpoint (a run directory means its latest one) with the observation
handling it was trained with (the task's transforms, from the checkpoint's config), runs N
episodes on the real env, prints mean, std, min and max of the return and the episode length,
and writes them as JSON next to the checkpoint (``checkpoints/<step>.eval.json``). By default the
seed and episode count are the run's own evaluation settings, so the result equals the run's
last ``eval/return`` at that checkpoint. ``--video`` renders one more episode headless (mp4);
``--export`` writes pi_0 as a self-contained TorchScript file (see :mod:`mpdp_pl.export`).
Bad input is one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from .config import ConfigError, stored_config
from .config.algorithms import PLANNERS

EXIT_BAD_INPUT = 2


def load_agent(path: Path, env_id: str | None = None):
    """(config, module with the checkpoint's weights, checkpoint dir) of a run dir or checkpoint."""
    from .runtime import checkpoint
    from .algos import ALGOS
    from .run import probe_env_spec

    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: no such run directory or checkpoint")
    ckpt = path if (path / "state.pt").exists() else checkpoint.latest(path)
    if ckpt is None:
        raise ConfigError(f"{path} holds no checkpoint")
    state = checkpoint.read(ckpt)
    cfg = state["config"]
    if cfg.get("algo") in ALGOS:
        cfg = stored_config(cfg, ckpt)  # a run of an earlier version: its keys migrated
    if env_id is not None and env_id != cfg["env"]:
        raise ConfigError(f"{ckpt} is a checkpoint of {cfg['env']}, not of {env_id}")
    if cfg.get("algo") not in ALGOS:
        raise ConfigError(f"{ckpt}: unknown algorithm {cfg.get('algo')!r}")
    module = ALGOS[cfg["algo"]](cfg, probe_env_spec(cfg))
    try:
        module.load_state_dict(state["module"])
    except RuntimeError:
        raise ConfigError(f"{ckpt} does not match this version's {cfg['algo']} networks") from None
    module.eval()
    return cfg, module, ckpt


def evaluate_agent(cfg: dict, module, episodes: int, seed: int, deterministic: bool) -> dict:
    import statistics

    from .environment.envs import make_env
    from .environment.episodes import run_episodes

    env = make_env(cfg, seed=seed)
    try:
        with module.evaluating(seed):
            episodes_run = run_episodes(env, module.policy(deterministic), episodes,
                                        module.spec.max_episode_steps or 10**6)
        returns, lengths = episodes_run.returns, episodes_run.lengths
    finally:
        env.close()
    return {
        "episodes": episodes, "seed": seed, "deterministic": deterministic,
        "return_mean": statistics.fmean(returns),
        "return_std": statistics.pstdev(returns), "return_min": min(returns),
        "return_max": max(returns), "length_mean": statistics.fmean(lengths),
        "length_min": min(lengths), "length_max": max(lengths), "returns": returns,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m mpdp_pl.evaluate", description=__doc__.split("\n")[0])
    p.add_argument("path", help="a run directory (its latest checkpoint) or a checkpoint directory")
    p.add_argument("--episodes", type=int, help="default: the run's eval_episodes")
    p.add_argument("--seed", type=int, help="default: the run's evaluation seed")
    p.add_argument("--video", help="also render one episode to this mp4 file")
    p.add_argument("--export", help="also export pi_0 as TorchScript to this file")
    p.add_argument("--env", help="refuse a checkpoint of another task")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--deterministic", dest="deterministic", action="store_true", default=True,
                      help="tanh(mean) actions (the default, as in training evaluations)")
    mode.add_argument("--stochastic", dest="deterministic", action="store_false")
    p.error = lambda msg: _fail(msg)
    a = p.parse_args(argv)
    try:
        if a.episodes is not None and a.episodes < 1:
            raise ConfigError(f"--episodes {a.episodes}: must be >= 1")
        if a.seed is not None and not 0 <= a.seed < 2**32:
            raise ConfigError(f"--seed {a.seed}: must be in [0, 2**32)")
        for flag, target in (("--video", a.video), ("--export", a.export)):
            check_writable(flag, target)
        if a.video:
            from .environment.video import headless

            headless()  # before MuJoCo is imported
        cfg, module, ckpt = load_agent(Path(a.path), a.env)
        if a.export and cfg["algo"] in PLANNERS:
            raise ConfigError(f"--export: {cfg['algo']} plans through its model at every step; "
                              "it has no policy network to export")
        from .algos.env_setup import EVAL_SEED_OFFSET

        seed = a.seed if a.seed is not None else cfg["seed"] + EVAL_SEED_OFFSET
        result = evaluate_agent(cfg, module, a.episodes or cfg["eval"]["episodes"], seed,
                                a.deterministic)
    except ConfigError as e:
        return _fail(str(e))
    result["checkpoint"] = str(ckpt)
    out = ckpt.parent / f"{ckpt.name}.eval.json"
    try:  # a run read from a read-only copy: the figures are printed all the same
        out.write_text(json.dumps(result, indent=2))
        wrote = f"wrote {out}"
    except OSError as e:
        wrote = f"{out} not written ({e.strerror})"
    print(f"{cfg['env']} {cfg['algo']} {ckpt.name}: return {result['return_mean']:.2f} ± "
          f"{result['return_std']:.2f} (min {result['return_min']:.2f}, max "
          f"{result['return_max']:.2f}), length {result['length_mean']:.1f} over "
          f"{result['episodes']} episodes (seed {seed}); {wrote}")
    if a.video:
        from .environment.envs import make_env
        from .environment.video import frame_rate, render_episode, write_video

        env = make_env(cfg, seed=seed, render=True)
        try:
            with module.evaluating(seed):
                frames, ret = render_episode(env, module.policy(a.deterministic),
                                             module.spec.max_episode_steps or 1000)
            fps = frame_rate(env)
        finally:
            env.close()
        print(f"video: {write_video(frames, Path(a.video), fps)} ({len(frames)} frames, "
              f"return {ret:.2f})")
    if a.export:
        from .export import export_policy

        print(f"exported pi_0 to {export_policy(cfg, module, Path(a.export))}")
    return 0


def check_writable(flag: str, target: str | None) -> None:
    """Before any episode runs: ``target`` is a file path that can be written (not a folder, in
    a folder that exists)."""
    if target is None:
        return
    path = Path(target)
    if path.is_dir():
        raise ConfigError(f"{flag} {target}: is a directory; give a file name")
    if not path.resolve().parent.is_dir():
        raise ConfigError(f"{flag} {target}: no such directory {path.resolve().parent}")
    if not os.access(path.resolve().parent, os.W_OK):
        raise ConfigError(f"{flag} {target}: cannot write to {path.resolve().parent}")


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(EXIT_BAD_INPUT)


if __name__ == "__main__":
    sys.exit(main())
