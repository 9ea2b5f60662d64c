"""``hydra/sweeper=mpdp_grid``: launch the jobs that ``train.py -m`` planned
(:func:`mpdp_pl.experiments.multirun.plan`: every job expanded, validated and placed in its run
directory before any starts) through the configured launcher. Hydra's basic sweeper would
expand one sweep's cartesian product itself, and could not run the jobs of an experiment's
several sweeps, each with its own ``out``, as one launch."""

from dataclasses import dataclass
from typing import Any, List

from hydra.core.config_store import ConfigStore
from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper


@dataclass
class GridSweeperConf:
    _target_: str = "hydra_plugins.mpdp_grid.grid_sweeper.GridSweeper"


ConfigStore.instance().store(group="hydra/sweeper", name="mpdp_grid", node=GridSweeperConf,
                             provider="mpdp_pl")


class GridSweeper(Sweeper):
    def __init__(self) -> None:
        self.config = self.launcher = self.hydra_context = None
        self.setup_error = None

    def setup(self, *, hydra_context, task_function, config) -> None:
        self.config, self.hydra_context = config, hydra_context
        try:  # a bad launcher setting: reported by the grid as one line, nothing started
            self.launcher = Plugins.instance().instantiate_launcher(
                hydra_context=hydra_context, task_function=task_function, config=config)
        except Exception as e:  # noqa: BLE001 - handed to the grid, which reports it
            self.setup_error = e

    def sweep(self, arguments: List[str]) -> Any:
        from mpdp_pl.experiments.multirun import PLANNED

        grid = PLANNED[-1]
        try:
            if self.setup_error is not None:
                raise self.setup_error
            grid.ready()
            grid.returns = self.launcher.launch(grid.jobs, initial_job_idx=0)
        except Exception as e:  # noqa: BLE001 - Hydra would print it as a report and exit 1
            grid.error = e
        return grid.returns
