"""``hydra/launcher=mpdp_pool``: the jobs of a grid side by side, each its own ``train.py``
process with one torch thread, ``workers`` at a time (default: the core count).

Why not a maintained launcher: Hydra's basic launcher runs jobs one after another in its own
process; submitit's local launcher starts them all at once; hydra-joblib-launcher would run each
job's function in a worker process of its own, whose only work is to wait on the job's
``train.py`` process, and it names its limit ``n_jobs``, so every committed grid command with
``hydra.launcher.workers`` would break. A thread per running job that waits on its process is
the lightest launcher that keeps them."""

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

from hydra.core.config_store import ConfigStore
from hydra.core.utils import JobReturn, JobStatus
from hydra.plugins.launcher import Launcher


@dataclass
class PoolLauncherConf:
    _target_: str = "hydra_plugins.mpdp_grid.pool_launcher.PoolLauncher"
    workers: Optional[int] = field(default=None)  # null: os.cpu_count()


ConfigStore.instance().store(group="hydra/launcher", name="mpdp_pool", node=PoolLauncherConf,
                             provider="mpdp_pl")


class PoolLauncher(Launcher):
    def __init__(self, workers: Optional[int] = None) -> None:
        self.workers = workers or os.cpu_count() or 1
        self.config = None

    def setup(self, *, hydra_context, task_function, config) -> None:
        self.config = config

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from mpdp_pl.experiments.multirun import run_job

        out = Path(str(self.config.hydra.sweep.dir))

        def one(overrides) -> JobReturn:
            try:
                rc, status = run_job(list(overrides), out), JobStatus.COMPLETED
            except Exception as e:  # noqa: BLE001 - reported with the job's overrides
                rc, status = e, JobStatus.FAILED
            return JobReturn(overrides=list(overrides), status=status, _return_value=rc,
                             task_name="mpdp_pl")

        with ThreadPoolExecutor(max_workers=self.workers) as pool:
            return list(pool.map(one, job_overrides))
