"""Helpers for benchmarks: run train.py seeds as parallel subprocesses and read their metrics."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_train(args: list[str], log_path: Path) -> tuple[int, float]:
    """Run ``python train.py ARGS`` with one torch thread; returns (exit code, wall seconds)."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    t0 = time.perf_counter()
    with open(log_path, "w") as log:
        rc = subprocess.call([sys.executable, str(ROOT / "train.py"), *args,
                              "trainer.num_threads=1"], stdout=log, stderr=subprocess.STDOUT,
                             env=env, cwd=ROOT)
    return rc, time.perf_counter() - t0


def run_parallel(jobs: list[tuple[list[str], Path]], workers: int) -> list[tuple[int, float]]:
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(lambda j: run_train(*j), jobs))


def _value(v: str):
    if v == "":
        return float("nan")
    try:
        return float(v)
    except ValueError:
        return v  # e.g. model/elites, "0 2 3 5 6"


def read_metrics(run_dir: Path) -> list[dict]:
    with open(Path(run_dir) / "metrics.csv") as f:
        return [{k: _value(v) for k, v in row.items()} for row in csv.DictReader(f)]


def finished(run_dir: Path, steps: int) -> bool:
    """True when ``run_dir`` holds a completed run of ``steps`` env steps."""
    try:
        rows = read_metrics(run_dir)
    except FileNotFoundError:
        return False
    return bool(rows) and int(rows[-1]["env_steps"]) >= steps


def first_step_reaching(rows: list[dict], threshold: float) -> float | None:
    for r in rows:
        if r["eval/return"] >= threshold:
            return r["env_steps"]
    return None
