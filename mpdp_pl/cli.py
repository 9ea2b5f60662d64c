"""``python train.py [--env ENV_ID] [--algo NAME] [--steps N] [--seed S] [--out DIR]
[--logger wandb|csv|none] [--print-config] [key=value ...]``, or
``python train.py --resume DIR|auto [--steps N]``, or a grid: ``python train.py -m --out DIR
[experiment=NAME] [key=a,b ...]`` (:mod:`mpdp_pl.experiments.multirun`)."""

from __future__ import annotations

import argparse
import sys

from .config import (ConfigError, available_algos, available_variants, flatten, load_config,
                     parse_overrides, regroup, to_yaml)
from .config.schema import RunConfig, describe, groups

EXIT_BAD_INPUT = 2
HYDRA_RANK_ARGS = ("hydra.run.dir=", "hydra.job.name=", "hydra.output_subdir=")


def build_parser() -> argparse.ArgumentParser:
    algos = ", ".join(available_algos())
    p = argparse.ArgumentParser(
        prog="train.py",
        description="Train MPDP or a baseline on a gymnasium task with a continuous action space.",
        epilog=(
            f"algorithms: {algos}\n"
            f"variants: {', '.join(available_variants())} (variant=NAME, conf/variant/)\n"
            "config groups (--keys [GROUP]: each key's type, default and meaning):\n"
            + "".join(f"  {name:<12} {cls.__doc__.splitlines()[0]}\n" for name, cls in groups().items())
            + "overrides: group.key=value, e.g.  data.batch_size=128 eval.every=1000\n"
            "  wandb.project=mine trainer.devices=2 (a flat key of earlier versions still works)\n"
            "grids: train.py -m --out DIR [experiment=NAME] key=a,b ... (docs/usage.md, Grids);\n"
            "reports: python -m mpdp_pl.report DIR..."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--env", help="gymnasium env id (default: InvertedPendulum-v4)")
    p.add_argument("--algo", help=f"algorithm: {algos} (default: {RunConfig.algo})")
    p.add_argument("--steps", type=int, help="env-step budget (default: the task config's)")
    p.add_argument("--seed", type=int, help="random seed (default: 0)")
    p.add_argument("--out", help="run directory (default: runs/<env>/<algo>/seed<S>-<time>)")
    p.add_argument("--logger", choices=["wandb", "csv", "none"],
                   help="wandb (offline without an API key), csv or none (default: wandb)")
    p.add_argument("--resume", metavar="DIR|auto",
                   help="continue a run from its last checkpoint (its config is read from DIR; "
                        "--steps N extends the budget); auto: the newest run under runs/ with "
                        "the config given by the other arguments")
    p.add_argument("--print-config", action="store_true",
                   help="print the resolved config (its groups) and exit")
    p.add_argument("--keys", nargs="?", const="", metavar="GROUP",
                   help="list every key (or GROUP's) with its type, default and meaning, and exit")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if "-m" in argv or "--multirun" in argv:  # a grid: Hydra's sweeper and a launcher plugin
        from .experiments.multirun import main as multirun

        try:
            return multirun(argv)
        except ConfigError as e:
            return _fail(str(e))
    # Lightning's DDP launcher re-runs sys.argv per rank and, where Hydra's config is set (a job
    # of Hydra's own app), appends these three: they place Hydra's outputs, not the run's
    argv = [a for a in argv if not a.startswith(HYDRA_RANK_ARGS)]
    from .environment.video import headless

    headless()  # MUJOCO_GL=egl unless set: must precede MuJoCo's import (training videos)
    parser = build_parser()
    parser.error = lambda msg: _fail(msg)  # one line, exit 2, no usage dump
    args = parser.parse_intermixed_args(argv)  # key=value items may come between flags
    try:
        if args.keys is not None:
            print(describe(args.keys or None))
            return 0
        overrides = parse_overrides(args.overrides)
        for key in ("steps", "seed", "out", "logger"):
            if getattr(args, key) is not None:
                overrides[key] = getattr(args, key)
        resume = None
        if args.resume is not None:
            cfg, resume = resume_target(args, overrides)
        else:
            cfg = load_config(args.env, args.algo, overrides)
        if args.print_config:
            print(to_yaml(cfg), end="")
            return 0
        from .run import RunStopped, train  # heavy imports only when training

        from .runtime.guard import NumericalFault

        try:
            out = train(cfg, ["train.py", *argv], resume=resume, stop_raises=True)
        except NumericalFault as e:  # not bad input: the run diverged
            print(f"error: {e}", file=sys.stderr)
            return 1
        except RunStopped as e:  # checkpointed; 128 + signal number, the shell's convention
            return 128 + e.signum
    except ConfigError as e:
        return _fail(str(e))
    from lightning.pytorch.utilities import rank_zero_only

    if rank_zero_only.rank == 0:  # once, not once per DDP rank
        print(f"run written to {out}")
    return 0


def resume_target(args, overrides: dict):
    """(config, checkpoint path) of ``--resume DIR|auto``; every problem is a ConfigError and
    nothing is written before the checks pass."""
    from pathlib import Path

    from .runtime import checkpoint

    overrides = regroup(overrides)  # buffer_device= of earlier versions: data.buffer_device
    if args.resume == "auto":
        if "logger" in overrides:
            raise ConfigError("--resume takes the logger of the run it continues; drop --logger")
        root = Path(overrides["out"]) if "out" in overrides else Path("runs")
        run_dir = checkpoint.find_run(load_config(args.env, args.algo, overrides), root)
    else:
        run_dir = Path(args.resume)
        if not run_dir.is_dir():
            raise ConfigError(f"--resume {run_dir}: no such run directory")
        extra = [k for k in overrides if k != "steps" and k not in checkpoint.PLACEMENT_KEYS]
        if extra:
            raise ConfigError(f"--resume DIR takes its config from DIR; only --steps and "
                              f"{', '.join(sorted(checkpoint.PLACEMENT_KEYS))} may be given "
                              f"(got {', '.join(sorted(extra))})")
    cfg = checkpoint.run_config(run_dir)
    ckpt = checkpoint.latest(run_dir)
    if ckpt is None:
        raise ConfigError(f"{run_dir} holds no checkpoint to resume from")
    state = checkpoint.read(ckpt)
    if "steps" in overrides:
        cfg["steps"] = overrides["steps"]
    placement = {k: v for k, v in overrides.items() if k in checkpoint.PLACEMENT_KEYS}
    cfg = load_config(cfg["env"], cfg["algo"], {**flatten(cfg), **placement,
                                                "out": str(run_dir.resolve())}, stored=True)
    checkpoint.check_compatible(state["config"], cfg)
    done = state["counters"]["env_steps"]
    if cfg["steps"] <= done:
        from .experiments.results import evaluation_owed

        if not evaluation_owed(run_dir, done):
            raise ConfigError(f"{run_dir} is complete at {done} env steps; give --steps N > {done} "
                              f"to extend it")
        cfg["steps"] = done  # a stop dropped the last evaluation: the resume takes it, no more
    return cfg, ckpt


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(EXIT_BAD_INPUT)
