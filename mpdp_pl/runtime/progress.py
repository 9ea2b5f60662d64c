"""A progress bar counted in env steps (Lightning's counts batches of an endless stream)."""

from __future__ import annotations

from lightning.pytorch.callbacks import TQDMProgressBar


class EnvStepProgressBar(TQDMProgressBar):
    """Shows env steps out of the budget, env steps/s and the last evaluation return."""

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        super().on_train_epoch_start(trainer, pl_module)
        bar = self.train_progress_bar
        bar.reset(total=pl_module.cfg["steps"])
        bar.n = pl_module.env_steps
        bar.unit = "step"
        bar.set_description(f"{pl_module.cfg['algo']} {pl_module.cfg['env']}")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if batch_idx % self.refresh_rate == 0 and not self.train_progress_bar.disable:
            bar = self.train_progress_bar
            bar.set_postfix(self.get_metrics(trainer, pl_module), refresh=False)
            bar.update(pl_module.env_steps - bar.n)  # update(), not n=: tqdm's rate needs it

    def get_metrics(self, trainer, pl_module) -> dict:
        metrics = {"env_steps": pl_module.env_steps}
        ret = pl_module.last_eval.get("eval/return")
        if ret is not None:
            metrics["eval_return"] = f"{ret:.1f}"
        return metrics
