"""Evaluation of the deterministic pi_0 every ``eval.every`` env steps and once at the end: a
row of ``metrics.csv`` (eval metrics, time, the training metrics), the logger's ``eval/``
metrics, and every ``eval.video_every`` evaluations a video."""

from __future__ import annotations

from lightning.pytorch.callbacks import Callback

from ...environment.episodes import evaluate
from ...environment.envs import make_env
from ..loggers import MetricsCSV
from .metric_logging import training_scalars

BASE_COLUMNS = ["env_steps", "eval/return", "eval/return_std", "eval/episode_length",
                "eval/q_bias", "time/elapsed", "time/env_steps_per_s", "train/updates",
                "train/nonfinite_skips"]


class PeriodicEvaluation(Callback):
    def __init__(self):
        self.last_step = 0
        self.metrics_csv: MetricsCSV | None = None

    def on_train_start(self, trainer, module) -> None:
        self.last_step = module.last_eval_step  # a resumed run's, from its checkpoint
        self.resumed = module.env_steps > 0
        if trainer.is_global_zero and module.out_dir is not None:
            self.metrics_csv = MetricsCSV(module.out_dir / "metrics.csv",
                                          [*BASE_COLUMNS, *module.metric_keys])
            if self.metrics_csv.last_step is not None:  # checkpoints of versions before 98df1eb
                # marked an evaluation a stop dropped as done: the file's rows say what was taken
                self.last_step = min(self.last_step, self.metrics_csv.last_step)

    def on_train_epoch_start(self, trainer, module) -> None:
        """A run resumed from a round whose evaluation a stop signal dropped takes it now, at
        that round's env step, after the module finished the round (its ``on_train_start``)."""
        if self.resumed and module.stop_signal is None:
            self.on_train_batch_end(trainer, module, None, None, 0)
        self.resumed = False

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        every = module.cfg["eval"]["every"]
        if module.stop_signal is None and module.env_steps // every > self.last_step // every:
            self.evaluate(trainer, module)

    def on_train_end(self, trainer, module) -> None:
        if module.stop_signal is None and module.env_steps != self.last_step:
            self.evaluate(trainer, module)

    def evaluate(self, trainer, module) -> None:
        """One evaluation and its row; a stop signal during the episodes drops both, and the
        resumed run takes the evaluation again."""
        module.guard.check_deferred(module)
        if not trainer.is_global_zero:
            self.last_step = module.last_eval_step = module.env_steps
            return
        cfg = module.cfg
        with module.evaluating(module.eval_seed):
            result = evaluate(module.envs["eval"], module.policy(deterministic=True),
                              cfg["eval"]["episodes"], module.spec.max_episode_steps or 10**6,
                              seed=module.eval_seed, gamma=cfg["critic"]["gamma"],
                              q_value=module.q_value,
                              should_stop=lambda: module.stop_signal is not None)
        if result is None:
            return
        self.last_step = module.last_eval_step = module.env_steps
        module.last_eval = result
        row = {"env_steps": module.env_steps, **result,
               **module.clock.window("eval", module.env_steps), **training_scalars(module)}
        if module.logger is not None:
            module.logger.log_metrics(
                {k: v for k, v in row.items() if k.startswith(("eval/", "env_steps"))},
                step=module.env_steps)
        if self.metrics_csv is not None:
            self.metrics_csv.write(row)
        every = cfg["eval"]["video_every"]
        if every and module.out_dir is not None and (module.env_steps // cfg["eval"]["every"]) % every == 0:
            self.record_video(module)

    @staticmethod
    def record_video(module) -> None:
        """One episode of pi_0 from the evaluation seed, as ``DIR/videos/step<N>.mp4`` and, with
        W&B, as the ``eval/video`` media of that env step."""
        from lightning.pytorch.loggers import WandbLogger

        from ...environment.video import frame_rate, render_episode, write_video

        if "video" not in module.envs:  # created on first use: rendering needs a GL context
            module.envs["video"] = make_env(module.cfg, seed=module.eval_seed, render=True)
        with module.evaluating(module.eval_seed):
            frames, _ = render_episode(module.envs["video"], module.policy(deterministic=True),
                                       module.spec.max_episode_steps or 1000, seed=module.eval_seed)
        path = write_video(frames, module.out_dir / "videos" / f"step{module.env_steps:09d}.mp4",
                           frame_rate(module.envs["video"]))
        if isinstance(module.logger, WandbLogger):
            module.logger.log_video("eval/video", [str(path)], step=module.env_steps,
                                    format=["mp4"])
