"""``python train.py [--env ENV_ID] [--algo NAME] [--steps N] [--seed S] [--out DIR]
[--logger wandb|csv|none] [--print-config] [key=value ...]``"""

from __future__ import annotations

import argparse
import sys

from .config import ConfigError, available_algos, load_config, parse_overrides, to_yaml

EXIT_BAD_INPUT = 2


def build_parser() -> argparse.ArgumentParser:
    algos = ", ".join(available_algos())
    p = argparse.ArgumentParser(
        prog="train.py",
        description="Train MPDP or a baseline on a gymnasium task with a continuous action space.",
        epilog=(
            f"algorithms: {algos}\n"
            "overrides: any key of the resolved config (see --print-config), dots for nested\n"
            "keys, e.g.  batch_size=128 eval_every=1000 wandb.project=mine trainer.devices=2"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--env", help="gymnasium env id (default: InvertedPendulum-v4)")
    p.add_argument("--algo", help=f"algorithm: {algos} (default: mpdp)")
    p.add_argument("--steps", type=int, help="env-step budget (default: the task config's)")
    p.add_argument("--seed", type=int, help="random seed (default: 0)")
    p.add_argument("--out", help="run directory (default: runs/<env>/<algo>/seed<S>-<time>)")
    p.add_argument("--logger", choices=["wandb", "csv", "none"],
                   help="wandb (offline without an API key), csv or none (default: wandb)")
    p.add_argument("--print-config", action="store_true",
                   help="print the resolved config and exit")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    parser.error = lambda msg: _fail(msg)  # one line, exit 2, no usage dump
    args = parser.parse_args(argv)
    try:
        overrides = parse_overrides(args.overrides)
        for key in ("steps", "seed", "out", "logger"):
            if getattr(args, key) is not None:
                overrides[key] = getattr(args, key)
        cfg = load_config(args.env, args.algo, overrides)
        if args.print_config:
            print(to_yaml(cfg), end="")
            return 0
        from .run import train  # heavy imports only when training

        out = train(cfg, ["train.py", *argv])
    except ConfigError as e:
        return _fail(str(e))
    print(f"run written to {out}")
    return 0


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(EXIT_BAD_INPUT)
