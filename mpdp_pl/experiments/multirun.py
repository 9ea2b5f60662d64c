"""Grids on Hydra's multirun: ``python train.py -m --out DIR [experiment=NAME] [sweeps] [hydra/launcher=...]``.

    python train.py -m --env Hopper-v4 --out runs/grid algo=mpdp,sac seed=0,1,2 steps=15000
    python train.py -m --env Hopper-v4 --out runs/ablate variant=beta0.2,beta0.7 seed=0,1
    python train.py -m --out runs/fig2 experiment=fig2_quick
    python train.py -m --out runs/grid env=Hopper-v4,Walker2d-v4 algo=mpdp,sac seed=0,1,2 \\
        hydra/launcher=submitit_slurm hydra.launcher.partition=gpu hydra.launcher.timeout_min=1440

Hydra's sweeper grammar (``a,b``, ``range(0,4)``, ``choice(...)``) expands the sweeps into jobs
(their cartesian product). A named configuration is a ``variant`` (``conf/variant/<name>.yaml``:
its algorithm and values). An experiment (``conf/experiment/<name>.yaml``: the paper's figures)
is a short list of sweeps whose jobs run together and the report's settings; ``key=value`` items
on the command line replace the experiment's values of that key in every sweep. A sweep's
``steps=task`` runs each task at its own budget (conf/env/<Task>.yaml's ``steps``, the paper's),
not a first run's shorter one. Hydra's own entry point (``hydra.main``, multirun mode; public
API only) runs the planned jobs through the ``mpdp_grid`` sweeper and a Hydra launcher plugin:

- ``mpdp_pool`` (default; ``hydra_plugins/mpdp_grid``): every job is its own
  ``train.py`` process with one torch thread, ``hydra.launcher.workers`` (default: the core
  count) at a time. Hydra's basic launcher would run them one after another in one process.
- ``submitit_local`` / ``submitit_slurm`` (hydra-submitit-launcher): each job is a submitit job
  (a local subprocess, or a SLURM job) that runs the same per-job function.

Every job is validated (its whole config, as ``train.py`` would resolve it) before any job
starts; a bad one is one line on stderr and exit 2. Each job writes to
``<out>/<env>/<label>/seed<S>`` (its log beside it, ``seed<S>.log``), where the label is the
variant or algorithm followed by ``,key=value`` for every other key the sweep varies
(``mpdp,improvement.beta=0.2``). Running the same grid again resumes it: a finished run is reused, a partial
one continues from its latest checkpoint, and a partial one without a checkpoint is moved aside
and started again; a run started with other values is refused, and so is a second ``-m`` on a
grid in use. Hydra writes nothing of its own: no working-directory change, no ``outputs/``, no
``.hydra/``, no log files (``hydra.output_subdir=null``, job and Hydra logging off); submitit
keeps its job files under ``<out>/.submitit``. ``<out>/grid.yaml`` records every command's
jobs. When jobs have completed, the report of every run under ``<out>``
(:mod:`.report`: ``results.csv``, ``curves.png``, ``table.md`` with rliable's statistics,
``stats.csv``, ``profiles.png``) goes to ``<out>``. ``-m`` with ``trainer.strategy=ddp`` is
refused (Lightning would re-run the whole sweep in every rank): DDP runs are launched one by
one (docs/usage.md, "Grids").
"""

from __future__ import annotations

import fcntl
import itertools
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import yaml

from ..config import CONF_DIR, ConfigError, load_config, parse_overrides, task_budget, variant_algo
from ..config.algorithms import READS, reads
from ..config.migration import FLAT_KEYS
from ..config.schema import RunConfig
from ..errors import FAILED_MARKER
from .results import evaluation_owed, report_settings

TRAIN = Path(__file__).resolve().parents[2] / "train.py"
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
    """The jobs of a sweep, as Hydra's basic sweeper makes them: the cartesian product of every
    key's values (a key given twice keeps its last), parsed by Hydra's override grammar."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    values: dict[str, list[str]] = {}
    try:
        for override in OverridesParser.create().parse_overrides(sweep):
            key = override.get_key_element()
            if not override.is_sweep_override():
                values[key] = [f"{key}={override.get_value_element_as_str()}"]
            elif override.is_discrete_sweep():
                values[key] = [f"{key}={v}" for v in override.sweep_string_iterator()]
            else:
                raise HydraException(f"{key}: only lists of values can be swept (a,b or "
                                     f"range(...)), not {override.value_type.name}")
    except HydraException as e:
        raise ConfigError(" ".join(str(e).split())) from None
    return [list(job) for job in itertools.product(*values.values())]


def job_config(job: list[str]) -> dict:
    """The full config of one job, resolved and checked as ``train.py`` would."""
    overrides = parse_overrides(job)
    cfg = load_config(overrides.pop("env", None), overrides.pop("algo", None), overrides)
    if str(cfg["trainer"]["strategy"]).startswith("ddp"):
        raise ConfigError("-m with trainer.strategy=ddp is not supported: Lightning's DDP launcher "
                          "re-runs the command in every rank, which would run the whole sweep in each")
    return cfg


SWEEP_KEYS_NOT_IN_LABEL = {"env", "algo", "variant", "seed", "steps"}


def label(cfg: dict, job: list[str], swept: set[str]) -> str:
    """A job's name in its grid and in reports: its variant or algorithm, then ``,key=value``
    for each other key its sweep varies (``mpdp,improvement.beta=0.2``: Hydra's ``override_dirname``)."""
    values = dict(o.split("=", 1) for o in job)
    return ",".join([cfg.get("variant") or cfg["algo"],
                     *(f"{k}={values[k]}" for k in sorted(swept - SWEEP_KEYS_NOT_IN_LABEL))])


def run_dir(out: Path, cfg: dict, name: str | None = None) -> Path:
    """A job's run directory: ``<out>/<env>/<label>/seed<S>``."""
    return out / cfg["env"] / (name or cfg.get("variant") or cfg["algo"]) / f"seed{cfg['seed']}"


def check_existing(path: Path, cfg: dict) -> None:
    """A run already in the job's directory must have been started with the job's config
    (``steps`` aside, which may grow): a grid run again with other values would otherwise reuse
    or continue runs of the old ones under the new grid's name."""
    from ..config import differing_keys

    from ..runtime import checkpoint

    if not (path / "config.yaml").exists() or not (
            checkpoint.latest(path) or (path / "metrics.csv").exists()):
        return  # nothing there, or a start that failed before its first row: set aside, not kept
    diff = [k for k in differing_keys(checkpoint.run_config(path), cfg, {"steps", "out", "trainer.num_threads"})
            if reads(cfg["algo"], k)]  # a key the job's algorithm ignores changes nothing of it
    if diff:
        raise ConfigError(f"{path} holds a run with other values of {', '.join(diff[:5])}"
                          f"{' ...' if len(diff) > 5 else ''}; use another --out")


def finished(path: Path, steps: int) -> bool:
    """The run reached ``steps``, or stopped at ``durability.nonfinite_limit`` (``failed.txt``: a result,
    never rerun)."""
    from .results import read_evals

    evals = read_evals(path) if (path / "metrics.csv").exists() else []
    return (path / FAILED_MARKER).exists() or (bool(evals) and evals[-1]["env_steps"] >= steps)


def _resumable(path: Path, steps: int) -> bool:
    from ..runtime import checkpoint

    ckpt = checkpoint.latest(path) if path.exists() else None
    if ckpt is None:
        return False
    try:
        done = checkpoint.read(ckpt)["counters"]["env_steps"]
    except (ConfigError, KeyError):
        return False
    # at the budget: a stop dropped the last evaluation (the job is not finished), which the
    # resume takes
    return done < steps or evaluation_owed(path, done)


def run_job(job: list[str], out: Path) -> int:
    """One job of the grid, in its own ``train.py`` process with one torch thread: reused when
    finished, resumed from its checkpoint when partial, started otherwise. Returns its exit
    code (0 for a reused run)."""
    if RUNNING.stop is not None:  # the grid was stopped: start nothing more
        return 128 + RUNNING.stop
    cfg = job_config(job)
    path = Path(cfg["out"]) if cfg["out"] else run_dir(out, cfg)
    log = path.with_name(path.name + ".log")
    if finished(path, cfg["steps"]):
        return 0
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    if _resumable(path, cfg["steps"]):
        cmd = ["--resume", str(path), "--steps", str(cfg["steps"])]
        mode = "a"
    else:
        if path.exists() and any(path.iterdir()):  # partial, nothing to continue from: keep it
            aside = f"{path.name}.incomplete-{time.strftime('%Y%m%d-%H%M%S')}"
            path.rename(path.with_name(aside))
            if log.exists():  # and the log of why
                log.rename(log.with_name(aside + ".log"))
        path.parent.mkdir(parents=True, exist_ok=True)
        cmd = [*(o for o in job if not o.startswith("out=")), f"out={path}", "trainer.num_threads=1"]
        mode = "w"
    with open(log, mode) as f, RUNNING.lock:
        if RUNNING.stop is not None:  # the grid was stopped before this job started
            return 128 + RUNNING.stop
        proc = subprocess.Popen([sys.executable, str(TRAIN), *cmd], stdout=f,
                                stderr=subprocess.STDOUT, env=env)
        RUNNING.procs.add(proc)
    try:
        return proc.wait()
    finally:
        with RUNNING.lock:
            RUNNING.procs.discard(proc)


class Running:
    """The jobs' ``train.py`` processes this process started (the ``mpdp_pool`` launcher's),
    and the signal that stopped the grid, if one did."""

    def __init__(self):
        self.lock = threading.Lock()
        self.procs: set[subprocess.Popen] = set()
        self.stop: int | None = None

    def forward(self, signum, frame) -> None:
        """SIGTERM or SIGINT (Ctrl-C) to the grid: passed on to every running job, which
        checkpoints and exits (docs/usage.md, "Stopping a local grid"); jobs not started yet are
        not started."""
        with self.lock:
            self.stop = signum
            for proc in self.procs:
                proc.send_signal(signum)


RUNNING = Running()


def task(cfg) -> int:
    """Hydra's task function of one job (what submitit's launchers pickle and run)."""
    from hydra.core.hydra_config import HydraConfig

    hc = HydraConfig.get()
    return run_job(list(hc.overrides.task), Path(hc.sweep.dir))


def hydra_overrides(out: Path, hydra_args: list[str]) -> list[str]:
    """Hydra's settings for a grid: every run under ``out``, nothing else written."""
    launcher = [] if any(a.startswith("hydra/launcher=") for a in hydra_args) else [
        f"hydra/launcher={DEFAULT_LAUNCHER}"]
    return [f"hydra.sweep.dir={out.resolve()}", "hydra.sweep.subdir=${out}",
            "hydra.output_subdir=null", "hydra/job_logging=none", "hydra/hydra_logging=none",
            "hydra.job.chdir=False", *launcher, *hydra_args]


@dataclass
class Grid:
    """The jobs a ``train.py -m`` launches, handed to the ``mpdp_grid`` sweeper
    (hydra_plugins/mpdp_grid), and what came back."""

    jobs: list[list[str]]
    ready: Callable[[], None]
    returns: list = field(default_factory=list)  # Hydra's JobReturn of each job
    error: Exception | None = None               # what stopped the launch before any job ran


PLANNED: list[Grid] = []  # the grid being launched (the sweeper reads the last)


def check_hydra_settings(overrides: list[str]) -> None:
    """The grid's Hydra settings (launcher and its options) composed with Hydra's compose API:
    a bad one is one line before anything starts."""
    from hydra import compose, initialize
    from omegaconf.errors import OmegaConfBaseException

    from ..config import schema

    schema()
    try:
        with initialize(version_base="1.3", config_path=None, job_name="mpdp_pl"):
            compose("schema", overrides=overrides, return_hydra_config=True)
    except Exception as e:  # Hydra's and OmegaConf's composition errors: multi-line reports
        if not isinstance(e, OmegaConfBaseException) and type(e).__module__.split(".")[0] != "hydra":
            raise
        raise ConfigError(" ".join(str(e).split())) from None


def launch_jobs(out: Path, jobs: list[list[str]], hydra_args: list[str] = (), ready=lambda: None) -> list:
    """Run explicit jobs (override lists that may set ``out``) through a Hydra launcher plugin
    (``hydra_args``, e.g. ``hydra/launcher=submitit_slurm``; default mpdp_pool): the jobs of
    one or several sweeps, each with its run directory as ``out``. Hydra's own entry point,
    ``hydra.main`` in multirun mode, runs them with the ``mpdp_grid`` sweeper. ``ready`` runs
    once the launcher is set up (a bad launcher setting is refused before it). Returns each
    job's exit code, or the exception it raised."""
    import hydra
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf.errors import OmegaConfBaseException

    overrides = [*hydra_overrides(out, list(hydra_args)), "hydra/sweeper=mpdp_grid"]
    check_hydra_settings(overrides)
    grid = Grid([list(job) for job in jobs], ready)
    PLANNED.append(grid)
    argv, sys.argv = sys.argv, [str(TRAIN), "--multirun", *overrides]
    RUNNING.stop = None
    previous = {s: signal.signal(s, RUNNING.forward) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        hydra.main(config_path=None, config_name="schema", version_base="1.3")(task)()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        sys.argv = argv
        PLANNED.remove(grid)
        GlobalHydra.instance().clear()
    if isinstance(grid.error, ConfigError):
        raise grid.error
    if isinstance(grid.error, (hydra.errors.HydraException, OmegaConfBaseException)):
        raise ConfigError(" ".join(str(grid.error).split())) from None
    if grid.error is not None:
        raise grid.error
    return [job_result(r) for r in grid.returns]


def job_result(job):
    """A job's exit code, or the exception it raised (Hydra's public ``JobReturn.return_value``
    raises it)."""
    try:
        return job.return_value
    except Exception as e:  # noqa: BLE001 - what the job raised, kept for its log
        return e


def experiment(name: str, cli: list[str]) -> tuple[list[list[str]], dict]:
    """The sweeps of ``conf/experiment/<name>.yaml`` with the command line's items in each (an
    item replaces the experiment's value of its key), and its report settings."""
    path = CONF_DIR / "experiment" / f"{name}.yaml"
    if "/" in name or not path.exists():
        names = sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml"))
        raise ConfigError(f"unknown experiment '{name}' (available: {', '.join(names)})")
    spec = yaml.safe_load(path.read_text()) or {}
    sweeps = spec.get("sweeps")
    if not isinstance(sweeps, list) or not all(isinstance(s, list) and s for s in sweeps):
        raise ConfigError(f"{path}: expected sweeps: a list of lists of key=value items")
    settings = report_settings(path, spec)
    mine = {o.split("=", 1)[0] for o in cli}
    sweeps = [[*(o for o in sweep if o.split("=", 1)[0] not in mine), *cli] for sweep in sweeps]
    return [one for sweep in sweeps for one in task_budgets(sweep)], settings


def task_budgets(sweep: list[str]) -> list[list[str]]:
    """A sweep with ``steps=task`` as one sweep per task, each at its task's budget
    (:func:`..config.task_budget`, conf/env/<Task>.yaml: the paper's); any other sweep as it is.
    A first run's shorter budget in an algo_env file (mpdp_pv on InvertedPendulum) must not cut
    a figure's curve short."""
    if "steps=task" not in sweep:
        return [sweep]
    rest = [o for o in sweep if o != "steps=task" and o.split("=", 1)[0] != "env"]
    envs = [o for o in sweep if o.split("=", 1)[0] == "env"]
    ids = [job[0].split("=", 1)[1] for job in expand(envs)] if envs else [RunConfig().env]
    return [[f"env={e}", f"steps={task_budget(e)}", *rest] for e in ids]


def swept_keys(jobs: list[list[str]]) -> set[str]:
    """The keys whose values differ across a sweep's jobs."""
    values: dict[str, set[str]] = {}
    for job in jobs:
        for o in job:
            key, _, value = o.partition("=")
            values.setdefault(key, set()).add(value)
    return {k for k, v in values.items() if len(v) > 1}


def plan(out: Path, sweeps: list[list[str]]) -> list[list[str]]:
    """Every job of the sweeps, validated and placed (``out=`` its run directory), before any
    job starts: a typo must not cost a grid."""
    from ..run import probe_env_spec

    seen, jobs, probed = {}, [], set()
    given, read, dropped, algos = set(), set(), {}, set()
    for sweep in sweeps:
        if any(o.split("=", 1)[0] == "out" for o in sweep):
            raise ConfigError("a grid's runs go to --out DIR/<env>/<label>/seed<S>; out= cannot be set per job")
        expanded = expand(sweep)
        swept = swept_keys(expanded)
        for job in expanded:
            job, algo, ignored = readable(job)
            algos.add(algo)
            given.update(dotted(o) for o in job + ignored)
            read.update(dotted(o) for o in job)
            if ignored:
                dropped.setdefault(algo, set()).update(dotted(o) for o in ignored)
            repeated = sorted({o.split("=", 1)[0] for o in ignored} & swept)
            if repeated:
                raise ConfigError(f"{', '.join(repeated)} is swept, but {algo} does not read it: its "
                                  f"jobs would repeat one run (sweep it in a command of the "
                                  f"algorithms that read it)")
            try:
                cfg = job_config(job)
                task = (cfg["env"], repr(sorted(cfg["task"].items())))
                if task not in probed:  # built once: an unknown id, a discrete action space
                    probe_env_spec(cfg)
                    probed.add(task)
            except ConfigError as e:
                raise ConfigError(f"job {' '.join(job)}: {e}") from None
            path = run_dir(out, cfg, label(cfg, job, swept))
            check_existing(path, cfg)
            if path in seen:
                raise ConfigError(f"jobs {' '.join(seen[path])} and {' '.join(job)} would share {path}")
            seen[path] = job
            jobs.append([*job, f"out={path.resolve()}"])
    unread = sorted(given - read)
    if unread:
        raise ConfigError(f"{', '.join(unread)}: no job of the grid reads "
                          f"{'these keys' if len(unread) > 1 else 'this key'} (its algorithms: "
                          f"{', '.join(sorted(algos))})")
    for algo, keys in sorted(dropped.items()):
        print(f"note: {algo} does not read {', '.join(sorted(keys))}: its jobs run without "
              f"{'them' if len(keys) > 1 else 'it'}", file=sys.stderr)
    return jobs


def dotted(item: str) -> str:
    """The dotted key of a ``key=value`` item (a flat key of earlier versions at its place)."""
    key = item.split("=", 1)[0]
    return FLAT_KEYS.get(key, key)


def readable(job: list[str]) -> tuple[list[str], str, list[str]]:
    """A job's items less those of keys its algorithm does not read (a grid over algorithms gives
    every job the grid's keys), its algorithm, and the items left out."""
    items = dict(o.split("=", 1) for o in job)
    algo = items.get("algo") or (variant_algo(items["variant"]) if "variant" in items else RunConfig.algo)
    if algo not in READS:  # an unknown algorithm: job_config says so
        return job, algo, []
    kept = [o for o in job if reads(algo, dotted(o))]
    return kept, algo, [o for o in job if o not in kept]


def main(argv: list[str]) -> int:
    """``train.py -m ...``: validate and place every job, then run them through Hydra's launcher
    and report the grid."""
    out, sweep, hydra_args = split_argv(argv)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file, not a directory")
    names = [o.split("=", 1)[1] for o in sweep if o.startswith("experiment=")]
    sweep = [o for o in sweep if not o.startswith("experiment=")]
    if len(names) > 1:
        raise ConfigError("one experiment= per grid")
    sweeps, settings = experiment(names[0], sweep) if names else ([sweep], {})
    jobs = plan(out, sweeps)
    held = []

    def ready() -> None:  # the launcher is valid: take the grid and record the command's jobs
        out.mkdir(parents=True, exist_ok=True)
        held.append(open(out / ".grid.lock", "w"))  # noqa: SIM115 - held until the grid is done
        try:
            fcntl.flock(held[0], fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConfigError(f"another train.py -m is working on {out}; wait for it or use "
                              f"another --out") from None
        with open(out / "grid.yaml", "a") as f:  # every command's jobs, in order
            yaml.safe_dump([{"started": time.strftime("%Y-%m-%d %H:%M:%S"),
                             "experiment": names[0] if names else None, "jobs": jobs}], f, width=1000)

    codes = launch_jobs(out, jobs, hydra_args, ready)
    if RUNNING.stop is not None:
        print(f"stopped by {signal.Signals(RUNNING.stop).name}: every running job checkpointed; "
              f"the same command resumes the grid")
        return 128 + RUNNING.stop
    failed = []
    for job, rc in zip(jobs, codes):
        if rc == 0:
            continue
        path = Path(job[-1].split("=", 1)[1])
        log = path.with_name(path.name + ".log")
        if not isinstance(rc, int):  # the job raised before its train.py started: keep why
            log.parent.mkdir(parents=True, exist_ok=True)
            with open(log, "a") as f:
                f.write(f"the launcher's job failed before train.py started: {rc!r}\n")
        failed.append(f"{path.relative_to(out.resolve())} ({rc if isinstance(rc, int) else type(rc).__name__}), see {log}")
    print(f"{len(jobs)} jobs in {out}; " + (f"failed: {'; '.join(failed)}" if failed else "all done"))
    if len(failed) < len(jobs):
        from .report import report

        try:
            anchors = settings.get("anchors")  # a path relative to the project, as in conf/
            report([out], out, [str(a) for a in settings.get("at", [])], settings.get("metric", "eval/return"),
                   anchors=CONF_DIR.parent / anchors if anchors else None,
                   title=f"train.py -m{' experiment=' + names[0] if names else ''}, {len(jobs)} jobs",
                   finals=settings.get("final", []))
        except ConfigError as e:  # e.g. no job got to its first evaluation
            print(f"no report: {e}")
    return 1 if failed else 0
