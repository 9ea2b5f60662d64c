"""Benchmark (issue 25, item 4): which ``trainer.num_threads`` a single run should default to.

Paired runs that alternate: each pair runs the same short training once per thread setting
(``--threads``, ``0`` = torch's default, all cores), the order flipping from pair to pair, and
the pair's ratio of wall seconds is taken, so that a drift of the machine's speed cancels. With
``--beside N``, N other trainings (``--beside-args``, at normal priority, each with torch's
default threads, as a user's second run would be) run through the whole measurement and are
stopped at its end. Every run is a real ``train.py`` process (MuJoCo, TorchRL collector,
Lightning); its wall time includes start-up, so compare settings, not absolute rates.

    python bench/threads.py [--pairs 3] [--threads 1 0] [--beside 0]
                            [--args "--env InvertedPendulum-v4 --algo mpdp steps=1500 ..."]
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RUN = ("--env InvertedPendulum-v4 --algo mpdp --logger none steps=1500 data.init_random_steps=1000 "
       "eval.every=100000 durability.checkpoint_every=0")
BESIDE = "--env Hopper-v4 --algo mpdp --logger none steps=1000000 eval.every=100000 durability.checkpoint_every=0"


def train(args: str, threads: int, out: Path, **popen) -> subprocess.Popen:
    cmd = [sys.executable, str(ROOT / "train.py"), *shlex.split(args), "--out", str(out)]
    if threads:
        cmd.append(f"trainer.num_threads={threads}")
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, **popen)


def timed_run(args: str, threads: int, tmp: Path) -> float:
    out = Path(tempfile.mkdtemp(dir=tmp))
    t0 = time.perf_counter()
    proc = train(args, threads, out)
    _, err = proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(f"training failed (threads={threads}): {err.strip().splitlines()[-1:]}")
    return time.perf_counter() - t0


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pairs", type=int, default=3)
    p.add_argument("--threads", type=int, nargs=2, default=[1, 0], metavar=("A", "B"),
                   help="the two settings compared (0: torch's default)")
    p.add_argument("--beside", type=int, default=0, help="other trainings running meanwhile")
    p.add_argument("--args", default=RUN, help="train.py arguments of the timed run")
    p.add_argument("--beside-args", default=BESIDE)
    args = p.parse_args(argv)
    a, b = args.threads
    name = {0: f"default ({os.cpu_count()} cores)"}
    print(f"timed run: train.py {args.args}\nsettings: A = trainer.num_threads={name.get(a, a)}, "
          f"B = {name.get(b, b)}; {args.pairs} pairs, alternating; beside: {args.beside} x "
          f"train.py {args.beside_args if args.beside else '-'}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        others = [train(args.beside_args, 0, tmp / f"beside{i}") for i in range(args.beside)]
        try:
            if others:
                time.sleep(30)  # past their start-up
            ratios, walls = [], {a: [], b: []}
            for i in range(args.pairs):
                order = (a, b) if i % 2 == 0 else (b, a)
                pair = {t: timed_run(args.args, t, tmp) for t in order}
                for t in order:
                    walls[t].append(pair[t])
                ratios.append(pair[a] / pair[b])
                print(f"pair {i}: A {pair[a]:.1f} s, B {pair[b]:.1f} s, A/B {ratios[-1]:.2f}", flush=True)
        finally:
            for proc in others:
                proc.terminate()
                proc.wait()
    print(f"median wall s: A {statistics.median(walls[a]):.1f}, B {statistics.median(walls[b]):.1f}; "
          f"median A/B {statistics.median(ratios):.2f} (min {min(ratios):.2f}, max {max(ratios):.2f})")


if __name__ == "__main__":
    main()
