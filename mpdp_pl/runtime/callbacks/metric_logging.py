"""Training metrics to the logger every ``logging.every`` env steps and at the end of a run."""

from __future__ import annotations

from lightning.pytorch.callbacks import Callback


def training_scalars(module) -> dict[str, float]:
    """The module's recorded metrics and its update and fault counts, as host numbers."""
    return {**module.recorder.scalars(), "train/updates": float(module.updates),
            "train/nonfinite_skips": float(module.guard.skips)}


class MetricLogging(Callback):
    """Pushes the recorded metrics (interval means closed), ``time/elapsed`` and the env-step
    rate since the previous push, with ``env_steps`` as the x-axis. A push with no part in a
    streak of faults also keeps the weights as the guard's last good ones."""

    def __init__(self):
        self.last_step = 0

    def on_train_start(self, trainer, module) -> None:
        self.last_step = module.env_steps

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        if module.env_steps - self.last_step >= module.cfg["logging"]["every"]:
            self.push(module)

    def on_train_end(self, trainer, module) -> None:
        self.push(module)

    def push(self, module) -> None:
        self.last_step = module.last_log_step = module.env_steps
        module.guard.check_deferred(module)
        module.recorder.close_interval()
        metrics = {**training_scalars(module), **module.clock.window("log", module.env_steps),
                   "env_steps": module.env_steps}
        if module.guard.healthy:
            module.guard.snapshot(module)
        if module.logger is not None:
            module.logger.log_metrics(metrics, step=module.env_steps)
