"""``train(cfg)``: resolved config -> env spec, algorithm module, logger, Lightning Trainer -> fit.

Separate from the CLI so that tests and scripts can call it in-process.
"""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import time
import warnings
from importlib import metadata
from pathlib import Path

import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities import rank_zero_only

import yaml

from .runtime import checkpoint
from .algos import ALGOS
from .runtime.callbacks import loop_callbacks
from .config import ConfigError, to_yaml
from .runtime.distributed import GradientAveragingDDP, make_strategy
from .environment.envs import env_spec, make_env
from .runtime.loggers import MetricsCSV, ResumableCSVLogger, check_logger, make_logger
from .runtime.progress import EnvStepProgressBar

PROJECT_ROOT = Path(__file__).resolve().parent.parent
RUN_DIR_ENV = "MPDP_RUN_DIR"  # set once, so that DDP's re-launched ranks agree on the run dir
COMMIT_FILE = PROJECT_ROOT / "GIT_COMMIT"  # the image's commit (Dockerfile: ARG GIT_COMMIT)
GIT_COMMIT_ENV = "MPDP_GIT_COMMIT"  # a commit given by hand where there is neither

# Lightning's advice for map-style datasets does not apply to a collector stream.
warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
warnings.filterwarnings("ignore", message=r".*IterableDataset.*__len__.*")
warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")  # Lightning's own


def default_out_dir(cfg: dict) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return Path("runs") / cfg["env"] / (cfg.get("variant") or cfg["algo"]) / f"seed{cfg['seed']}-{stamp}"


def out_dir(cfg: dict, resuming: bool = False) -> Path:
    """The run directory (refusing one that already holds a run, which a second run would
    corrupt, unless this is that run resumed); nothing is created yet."""
    other_rank = rank_zero_only.rank != 0  # launched by torchrun/SLURM: rank 0 owns the checks
    # rank 0's run directory, passed to DDP's re-launched ranks; in rank 0, a value left in the
    # environment (a shell, an earlier run in this process), never taken over --out
    inherited = os.environ.get(RUN_DIR_ENV) if other_rank else None
    if other_rank and not inherited and not cfg["out"]:
        raise ConfigError("a multi-process launch needs --out (every rank must write to one run directory)")
    out = Path(inherited or cfg["out"] or default_out_dir(cfg)).resolve()
    if not inherited and not other_rank and not resuming and (
            (out / "config.yaml").exists() or (out / "metrics.csv").exists()):
        raise ConfigError(f"{out} already holds a run; choose another --out")
    return out


def prepare_out_dir(cfg: dict, out: Path):
    """Create the run directory ``out`` (refusing one that cannot be written), take its lock and
    record it. Returns the lock's open file (rank 0's; None on other ranks), held until the run
    ends: a second process writing into the same run, a fresh start or a resume, is refused."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write_test"
        probe.touch()
        probe.unlink()
        lock = open(out / ".run.lock", "w") if rank_zero_only.rank == 0 else None  # noqa: SIM115
    except OSError as e:
        raise ConfigError(f"cannot write to the output directory {out}: {e.strerror}") from None
    if lock is not None:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            raise ConfigError(f"another process is writing the run in {out}; wait for it to "
                              f"end, or choose another --out") from None
    cfg["out"] = str(out)
    os.environ[RUN_DIR_ENV] = str(out)
    return lock


def source_commit() -> str:
    """The commit of the code that runs: ``git rev-parse HEAD`` in a checkout; where there is
    none (the Docker image copies no ``.git``), the commit the image was built from, which the
    Dockerfile's ``GIT_COMMIT`` build argument writes to ``GIT_COMMIT`` beside ``train.py``;
    else ``$MPDP_GIT_COMMIT``; else "unknown"."""
    try:
        commit = subprocess.run(
            ["git", "-C", str(PROJECT_ROOT), "rev-parse", "HEAD"],
            capture_output=True, text=True, timeout=5,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    if not commit and COMMIT_FILE.is_file():
        commit = COMMIT_FILE.read_text().strip()
    return commit or os.environ.get(GIT_COMMIT_ENV, "").strip() or "unknown"


def run_metadata(argv: list[str] | None) -> dict:
    commit = source_commit()
    versions = {"python": sys.version.split()[0]}
    for pkg in ("mpdp_pl", "torch", "torchrl", "tensordict", "lightning", "gymnasium",
                "mujoco", "wandb", "numpy"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    return {"command": list(argv) if argv is not None else sys.argv, "git_commit": commit,
            "versions": versions}


def write_config(cfg: dict, out: Path, argv: list[str] | None, resuming: bool = False) -> None:
    meta = {"run": run_metadata(argv)}
    if resuming:  # keep how the run was started; add how it was resumed
        old = yaml.safe_load((out / "config.yaml").read_text())
        meta = {"run": old["run"], "resumed": [*old.get("resumed", []), run_metadata(argv)]}
    text = to_yaml(cfg) + "\n# Run metadata\n" + to_yaml(meta)
    tmp = out / "config.yaml.tmp"
    tmp.write_text(text)
    tmp.replace(out / "config.yaml")


def probe_env_spec(cfg: dict):
    """Build the env once to read its dimensions (and reject a bad env id before any file
    of the run is written)."""
    probe = make_env(cfg)
    spec = env_spec(probe)
    probe.close()
    return spec


def cluster_plugins() -> list:
    """Inside a submitit SLURM job (a grid of ``train.py -m hydra/launcher=submitit_slurm``),
    submitit requeues a preempted or timed-out job (``hydra.launcher.max_num_timeout``) and the
    requeued job resumes from the run's checkpoint; Lightning's own SLURM auto-requeue is turned
    off there, so that one preemption is not requeued twice. Elsewhere: Lightning's defaults."""
    from lightning.pytorch.plugins.environments import SLURMEnvironment

    if os.environ.get("SUBMITIT_EXECUTOR") == "slurm" and SLURMEnvironment.detect():
        return [SLURMEnvironment(auto_requeue=False)]
    return []


def make_trainer(cfg: dict, out: Path, strategy) -> pl.Trainer:
    """The Lightning Trainer of a run, its logger set afterwards (``trainer.loggers``); settings
    it refuses (``trainer.accelerator=tpuu``, a GPU where there is none, ``trainer.devices=0``,
    ...) are one :class:`ConfigError` line."""
    from lightning.fabric.utilities.exceptions import MisconfigurationException

    t = cfg["trainer"]
    try:
        trainer = pl.Trainer(
            accelerator=t["accelerator"], devices=t["devices"], num_nodes=t["num_nodes"],
            strategy=strategy, precision=t["precision"], max_epochs=1,
            logger=False, enable_checkpointing=False,
            num_sanity_val_steps=0, enable_model_summary=False,
            callbacks=[*loop_callbacks(), EnvStepProgressBar(refresh_rate=50)],
            default_root_dir=str(out), log_every_n_steps=1, plugins=cluster_plugins(),
        )
    except (MisconfigurationException, ValueError, RuntimeError, TypeError, ImportError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(f"the Lightning Trainer refuses trainer.* ({first})") from None
    if trainer.world_size > 1 and not isinstance(trainer.strategy, GradientAveragingDDP):
        if strategy != "auto":
            raise ConfigError(f"trainer.strategy={t['strategy']} cannot run {trainer.world_size} "
                              f"processes: use trainer.strategy=ddp (gradients are averaged per optimizer)")
        # several devices with the strategy left to Lightning: Lightning's own DDP, which
        # cannot wrap these modules; this app's, started as Lightning's would be
        return make_trainer(cfg, out, make_strategy("ddp"))
    return trainer


class RunStopped(Exception):
    """The run stopped on a signal, its checkpoint written (:func:`train` with ``stop_raises``)."""

    def __init__(self, out: Path, signal_name: str):
        super().__init__(f"{out} stopped by {signal_name}")
        self.out, self.signum = out, signal.Signals[signal_name.split()[0]].value


def train(cfg: dict, argv: list[str] | None = None, resume: Path | None = None,
          stop_raises: bool = False) -> Path:
    """Train one run; returns its directory (``config.yaml``, ``metrics.csv``, logger files,
    ``checkpoints/``). ``resume``: a checkpoint of this run to continue from. ``stop_raises``:
    a run stopped by SIGTERM or SIGINT raises :class:`RunStopped` after its checkpoint (the CLI
    then exits with 128 + the signal's number, as a shell reports a killed process)."""
    if cfg["algo"] not in ALGOS:
        raise ConfigError(f"unknown algorithm '{cfg['algo']}' (available: {', '.join(ALGOS)})")
    return train_module(ALGOS[cfg["algo"]], cfg, argv, resume, stop_raises)


def train_module(module_cls: type[pl.LightningModule], cfg: dict,
                 argv: list[str] | None = None, resume: Path | None = None,
                 stop_raises: bool = False) -> Path:
    """:func:`train` with an explicit LightningModule class (tests use parts not yet exposed
    as an ``--algo``, and fault injection)."""
    strategy = make_strategy(cfg["trainer"]["strategy"])
    check_logger(cfg)
    # checked where the run trains: a grid's plan may run on a machine without the run's GPUs
    buffer_device = cfg["data"]["buffer_device"]
    if buffer_device and torch.device(buffer_device).type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"data.buffer_device={buffer_device}: this machine has no CUDA device")
    spec = probe_env_spec(cfg)
    module_cfg = dict(cfg)
    previous_run_dir = os.environ.get(RUN_DIR_ENV)
    state = checkpoint.read(resume) if resume is not None else None
    if state is not None:
        checkpoint.check_compatible(state["config"], module_cfg)
    out = out_dir(module_cfg, resuming=state is not None)
    trainer = make_trainer(module_cfg, out, strategy)  # bad Trainer settings fail before any file
    lock = prepare_out_dir(module_cfg, out)
    try:
        return _train_in(module_cls, module_cfg, out, trainer, spec, state, argv, resume, stop_raises)
    finally:
        if lock is not None:
            lock.close()
        if previous_run_dir is None:  # a run in this process must not leave its directory to
            os.environ.pop(RUN_DIR_ENV, None)  # the next one, even when it failed


def _train_in(module_cls, module_cfg, out, trainer, spec, state, argv, resume, stop_raises) -> Path:
    """:func:`train_module` once its run directory is ready and locked."""
    if module_cfg["trainer"]["num_threads"]:
        torch.set_num_threads(module_cfg["trainer"]["num_threads"])
    pl.seed_everything(module_cfg["seed"], workers=True, verbose=False)
    module = module_cls(module_cfg, spec)
    logger = make_logger(module_cfg, out)
    if logger is not None:
        trainer.loggers = [logger]
    # config.yaml and metrics.csv change only now: a fresh run's once its settings all passed, a
    # resumed run's once its checkpoint is restored (the rows after it are then written again)
    module.resume_state, module.resume_path = state, resume
    if rank_zero_only.rank == 0:  # DDP's re-launched ranks share rank 0's run directory
        if state is None:
            write_config(module_cfg, out, argv)
        else:
            def after_resume(step=state["counters"]["env_steps"]):
                MetricsCSV.truncate_after(out / "metrics.csv", step)
                ResumableCSVLogger.truncate_after(out, step)
                write_config(module_cfg, out, argv, resuming=True)
            module.after_resume = after_resume
    handlers = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        trainer.fit(module)
    finally:
        for sig, handler in handlers.items():  # the module's own, if fit ended by an exception
            signal.signal(sig, handler)
        if logger is not None and module_cfg["logger"] == "wandb":
            logger.experiment.finish()
    if stop_raises and module.stop_signal is not None:
        raise RunStopped(out, module.stop_signal)
    return out
