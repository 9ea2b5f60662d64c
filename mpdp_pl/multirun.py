"""Experiment grids on Hydra's multirun: ``python train.py -m --out DIR [sweeps] [hydra/launcher=...]``.

    python train.py -m --env Hopper-v4 --out runs/grid algo=mpdp,sac seed=0,1,2 steps=15000
    python train.py -m --out runs/grid env=Hopper-v4,Walker2d-v4 algo=mpdp,sac seed=0,1,2 \\
        hydra/launcher=submitit_slurm hydra.launcher.partition=gpu hydra.launcher.timeout_min=1440

Hydra's sweeper expands the sweeps (``a,b``, ``range(0,4)``, ``choice(...)``: its override
grammar) into jobs, and a Hydra launcher plugin runs them:

- ``mpdp_pool`` (default; ``hydra_plugins/mpdp_pool_launcher``): every job is its own
  ``train.py`` process with one torch thread, ``hydra.launcher.workers`` (default: the core
  count) at a time. Hydra's basic launcher would run them one after another in one process.
- ``submitit_local`` / ``submitit_slurm`` (hydra-submitit-launcher): each job is a submitit job
  (a local subprocess, or a SLURM job) that runs the same per-job function.

Every job is validated (its whole config, as ``train.py`` would resolve it) before any job
starts; a bad one is one line on stderr and exit 2. Each job writes to
``<out>/<env>/<algo>/seed<S>`` (its log beside it, ``seed<S>.log``), so running the same grid
again resumes it: a finished run is reused, a partial one continues from its latest checkpoint,
and a partial one without a checkpoint is moved aside and started again. Hydra writes nothing
of its own: no working-directory change, no ``outputs/``, no ``.hydra/``, no log files
(``hydra.output_subdir=null``, job and Hydra logging off); submitit keeps its job files under
``<out>/.submitit``. When jobs have completed, the comparison runner's report of the grid
(``results.csv``, ``curves.png``, ``table.md`` with rliable's statistics, ``stats.csv``,
``profiles.png``) goes to ``<out>``. ``-m`` with ``trainer.strategy=ddp`` is refused (Lightning would re-run the
whole sweep in every rank); a DDP grid on SLURM gives each job ``tasks_per_node`` =
``trainer.devices`` (docs/usage.md, "Grids").
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import time
from pathlib import Path

from .config import ConfigError, load_config, parse_overrides

TRAIN = Path(__file__).resolve().parent.parent / "train.py"
FLAGS = {"--env": "env", "--algo": "algo", "--steps": "steps", "--seed": "seed",
         "--logger": "logger"}
DEFAULT_LAUNCHER = "mpdp_pool"


def split_argv(argv: list[str]) -> tuple[Path, list[str], list[str]]:
    """(out, sweep overrides, hydra overrides) of ``-m``'s arguments; flags become overrides
    (``--env A,B`` = ``env=A,B``)."""
    out, sweep, hydra_args = None, [], []
    it = iter(argv)
    for arg in it:
        if arg in ("-m", "--multirun"):
            continue
        flag, eq, value = arg.partition("=")
        if flag in (*FLAGS, "--out") and flag.startswith("--"):
            if not eq:
                value = next(it, None)
                if value is None:
                    raise ConfigError(f"{flag} expects a value")
            if flag == "--out":
                out = Path(value)
            else:
                sweep.append(f"{FLAGS[flag]}={value}")
        elif arg.startswith("-"):
            raise ConfigError(f"{arg} cannot be combined with -m (a grid takes --env, --algo, "
                              f"--steps, --seed, --logger, --out and key=value sweeps)")
        elif arg.startswith(("hydra/", "hydra.")):
            hydra_args.append(arg)
        elif "=" not in arg:
            raise ConfigError(f"'{arg}': overrides are written key=value")
        else:
            sweep.append(arg)
    if out is None:
        raise ConfigError("-m needs --out DIR (the grid's runs go to DIR/<env>/<algo>/seed<S>)")
    return out, sweep, hydra_args


def expand(sweep: list[str]) -> list[list[str]]:
    """The jobs of a sweep, as Hydra's basic sweeper makes them (its cartesian product)."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    try:
        parsed = OverridesParser.create().parse_overrides(sweep)
        batches = BasicSweeper.split_arguments(parsed, max_batch_size=None)
    except HydraException as e:
        raise ConfigError(" ".join(str(e).split())) from None
    return [list(job) for batch in batches for job in batch]


def job_config(job: list[str]) -> dict:
    """The full config of one job, resolved and checked as ``train.py`` would."""
    overrides = parse_overrides(job)
    cfg = load_config(overrides.pop("env", None), overrides.pop("algo", None), overrides)
    if str(cfg["trainer"]["strategy"]).startswith("ddp"):
        raise ConfigError("-m with trainer.strategy=ddp is not supported: Lightning's DDP launcher "
                          "re-runs the command in every rank, which would run the whole sweep in each")
    return cfg


def run_dir(out: Path, cfg: dict) -> Path:
    """A job's run directory: its ``out`` where the job sets one (the comparison runner's
    layout), else ``<out>/<env>/<algo>/seed<S>``."""
    if cfg["out"]:
        return Path(cfg["out"])
    return out / cfg["env"] / cfg["algo"] / f"seed{cfg['seed']}"


def check_existing(path: Path, cfg: dict) -> None:
    """A run already in the job's directory must have been started with the job's config
    (``steps`` aside, which may grow): a grid run again with other values would otherwise reuse
    or continue runs of the old ones under the new grid's name."""
    from .config import differing_keys

    if not (path / "config.yaml").exists():
        return
    from . import checkpoint

    diff = differing_keys(checkpoint.run_config(path), cfg, {"steps", "out", "trainer.num_threads"})
    if diff:
        raise ConfigError(f"{path} holds a run with other values of {', '.join(diff[:5])}"
                          f"{' ...' if len(diff) > 5 else ''}; use another --out")


def finished(path: Path, steps: int) -> bool:
    """The run reached ``steps``, or stopped at ``nonfinite_limit`` (``failed.txt``: a result,
    never rerun)."""
    from .compare import read_evals

    evals = read_evals(path) if (path / "metrics.csv").exists() else []
    return (path / "failed.txt").exists() or (bool(evals) and evals[-1]["env_steps"] >= steps)


def _resumable(path: Path, steps: int) -> bool:
    from . import checkpoint

    ckpt = checkpoint.latest(path) if path.exists() else None
    if ckpt is None:
        return False
    try:
        return checkpoint.read(ckpt)["counters"]["env_steps"] < steps
    except (ConfigError, KeyError):
        return False


def run_job(job: list[str], out: Path) -> int:
    """One job of the grid, in its own ``train.py`` process with one torch thread: reused when
    finished, resumed from its checkpoint when partial, started otherwise. Returns its exit
    code (0 for a reused run)."""
    cfg = job_config(job)
    path = run_dir(out, cfg)
    log = path.with_name(path.name + ".log")
    if finished(path, cfg["steps"]):
        return 0
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    if _resumable(path, cfg["steps"]):
        cmd = ["--resume", str(path), "--steps", str(cfg["steps"])]
        mode = "a"
    else:
        if path.exists() and any(path.iterdir()):  # partial, nothing to continue from: keep it
            path.rename(path.with_name(f"{path.name}.incomplete-{time.strftime('%Y%m%d-%H%M%S')}"))
        path.parent.mkdir(parents=True, exist_ok=True)
        cmd = [*job, f"out={path}", "trainer.num_threads=1"]
        mode = "w"
    with open(log, mode) as f:
        return subprocess.call([sys.executable, str(TRAIN), *cmd], stdout=f,
                               stderr=subprocess.STDOUT, env=env)


def task(cfg) -> int:
    """Hydra's task function of one job (what submitit's launchers pickle and run)."""
    from hydra.core.hydra_config import HydraConfig

    hc = HydraConfig.get()
    return run_job(list(hc.overrides.task), Path(hc.sweep.dir))


def hydra_overrides(out: Path, hydra_args: list[str]) -> list[str]:
    """Hydra's settings for a grid: every run under ``out``, nothing else written."""
    launcher = [] if any(a.startswith("hydra/launcher=") for a in hydra_args) else [
        f"hydra/launcher={DEFAULT_LAUNCHER}"]
    return [f"hydra.sweep.dir={out.resolve()}", "hydra.sweep.subdir=${env}/${algo}/seed${seed}",
            "hydra.output_subdir=null", "hydra/job_logging=none", "hydra/hydra_logging=none",
            "hydra.job.chdir=False", *launcher, *hydra_args]


def _hydra():
    from hydra._internal.hydra import Hydra
    from hydra._internal.utils import create_config_search_path
    from hydra.core.global_hydra import GlobalHydra

    from .config import schema

    schema()  # the grid's Hydra config: the structured schema (algo and env as plain keys)
    GlobalHydra.instance().clear()
    return Hydra.create_main_hydra2(task_name="mpdp_pl", config_search_path=create_config_search_path(None))


def launch_jobs(out: Path, jobs: list[list[str]], hydra_args: list[str] = ()) -> list:
    """Run explicit jobs (override lists that may set ``out``) through a Hydra launcher plugin
    (``hydra_args``, e.g. ``hydra/launcher=submitit_slurm``; default mpdp_pool), without a
    sweep: the comparison runner's grids, which are not one cartesian product. Returns each
    job's exit code, or the exception it raised."""
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from hydra.core.plugins import Plugins
    from hydra.errors import HydraException
    from hydra.types import HydraContext, RunMode
    from hydra._internal.callbacks import Callbacks
    from omegaconf.errors import OmegaConfBaseException

    hydra = _hydra()
    try:
        cfg = hydra.compose_config("schema", overrides=hydra_overrides(out, list(hydra_args)),
                                   run_mode=RunMode.MULTIRUN, with_log_configuration=False)
        HydraConfig.instance().set_config(cfg)
        launcher = Plugins.instance().instantiate_launcher(
            hydra_context=HydraContext(config_loader=hydra.config_loader, callbacks=Callbacks(cfg)),
            task_function=task, config=cfg)
        returns = launcher.launch(jobs, initial_job_idx=0)
    except (HydraException, OmegaConfBaseException) as e:
        raise ConfigError(" ".join(str(e).split())) from None
    finally:
        GlobalHydra.instance().clear()
    return [r._return_value for r in returns]  # an exit code, or what a failed job raised


def main(argv: list[str]) -> int:
    """``train.py -m ...``: validate every job, then run the grid through Hydra."""
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    out, sweep, hydra_args = split_argv(argv)
    if any(o.split("=", 1)[0] == "out" for o in sweep):
        raise ConfigError("a grid's runs go to --out DIR/<env>/<algo>/seed<S>; out= cannot be set per job")
    jobs = expand(sweep)
    seen, cfgs = {}, []
    for job in jobs:  # every job's config, before any job starts: a typo must not cost a grid
        try:
            cfgs.append(job_config(job))
        except ConfigError as e:
            raise ConfigError(f"job {' '.join(job)}: {e}") from None
        path = run_dir(out, cfgs[-1])
        check_existing(path, cfgs[-1])
        if path in seen:
            raise ConfigError(f"jobs {' '.join(seen[path])} and {' '.join(job)} would share {path}")
        seen[path] = job
    hydra = _hydra()
    try:
        results = hydra.multirun(config_name="schema", task_function=task,
                                 overrides=[*sweep, *hydra_overrides(out, hydra_args)],
                                 with_log_configuration=False)
    except (HydraException, OmegaConfBaseException) as e:
        raise ConfigError(" ".join(str(e).split())) from None
    except Exception as e:  # noqa: BLE001 - Hydra's sweeper re-raises what a job raised
        print(f"error: a job of the grid raised {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    finally:
        GlobalHydra.instance().clear()
    failed = []
    for r in itertools.chain.from_iterable(results):
        try:
            rc = r.return_value
        except Exception as e:  # noqa: BLE001 - a job that raised: report it, keep the others
            rc = f"{type(e).__name__}: {e}"
        if rc != 0:
            failed.append(f"{' '.join(r.overrides)} ({rc})")
    n = sum(len(batch) for batch in results)
    print(f"{n} jobs in {out}; " + (f"failed: {'; '.join(failed)}" if failed else "all done"))
    if any(r.status.name == "COMPLETED" for r in itertools.chain.from_iterable(results)):
        report(out, cfgs)
    return 1 if failed else 0


def report(out: Path, cfgs: list[dict]) -> None:
    """The comparison runner's report of the grid's runs, written to ``out``: ``results.csv``,
    ``curves.png``, ``table.md`` (returns at half the budget and at the budget, then rliable's
    statistics), ``stats.csv`` and ``profiles.png``."""
    from .compare import read_evals, write_report

    results = {(c["env"], c["algo"], c["seed"]): read_evals(run_dir(out, c)) for c in cfgs
               if (run_dir(out, c) / "metrics.csv").exists()}
    if not any(results.values()):
        return
    at: dict[str, list[int]] = {}
    for c in cfgs:
        at[c["env"]] = sorted({*at.get(c["env"], []), c["steps"] // 2, c["steps"]})
    write_report(out, results, at, f"train.py -m, {len(cfgs)} jobs")
