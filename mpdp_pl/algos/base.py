"""What every algorithm shares: the env-step loop of Algorithm 2 around algorithm-specific updates.

One Lightning "batch" is one round of ``data.frames_per_batch`` env steps from the collector. The
module adds it to the replay buffer, advances its env-step counter (the budget, schedules,
evaluation and the logging x-axis all count env steps; ``trainer.global_step`` counts optimizer
steps), hands the round's due updates (``updates.critic_per_step``, ``updates.actor_per_step``,
fractions allowed) to :meth:`OffPolicyModule.update`, and evaluates pi_0 every ``eval.every`` env
steps and once at the end.

Subclasses implement :meth:`OffPolicyModule.update` (the rest of their round, in order: a
model-based one refreshes its observation statistics and trains its model there first) and
:meth:`OffPolicyModule.configure_optimizers`, declare the metrics they record in
``metric_keys`` (columns of metrics.csv) and expose ``actor``. What they own besides networks (the model learner, the model data) are
:class:`Component` members listed in ``components``: the loop saves and restores their counters,
lets them mark each stored round, and restores their parts after a fault. Optimizer steps go
through ``self.guard.step`` (:mod:`mpdp_pl.runtime.guard`), which restores the ``fault_parts``.
The side jobs of the loop (logging, evaluation, checkpoints and signals) are the callbacks of
:mod:`mpdp_pl.runtime.callbacks`.
"""

from __future__ import annotations

import math
from pathlib import Path

import lightning.pytorch as pl
import torch
from tensordict import TensorDictBase

from ..runtime import checkpoint
from ..runtime.clock import RunClock
from ..environment.data import CollectorStream, end_episode_in_flight, make_replay_buffer
from ..environment.envs import EnvSpec
from ..runtime.guard import NonfiniteGuard
from ..runtime.recorder import MetricsRecorder
from .env_setup import EnvSetup


class UpdateSchedule:
    """Turns a per-env-step update ratio (0.25, 1, 20, ...) into whole updates per round.

    Fractions accumulate: at 0.25, one update is due every 4 env steps. A round that is not
    ``paid`` keeps its credit for a later one (``updates.every``: the updates of N env steps come
    as one burst, DHMBPO's 1000-step iterations).
    """

    def __init__(self, per_step: float):
        self.per_step, self.credit = per_step, 0.0

    def due(self, env_steps: int, paid: bool = True) -> int:
        self.credit += env_steps * self.per_step
        if not paid:
            return 0
        n = math.floor(self.credit + 1e-9)
        self.credit -= n
        return n


def burst_due(before: int, after: int, every: int) -> bool:
    """Whether the env-step count, going from ``before`` to ``after``, reached a multiple of
    ``every`` (every round when ``every`` is 1)."""
    return after // every > before // every


class Component:
    """A member of a module that owns state besides its networks (the model learner, the model
    data). The loop calls each of these for every member in the module's ``components``."""

    def counters(self) -> dict:
        """What a resumed run needs of it besides tensors (merged into the module's counters)."""
        return {}

    def load_counters(self, c: dict) -> None:
        """Set from the module's saved counters."""

    def store(self, batch: TensorDictBase) -> None:
        """Mark a collected round before it enters the replay buffer."""

    def fault_parts(self) -> dict:
        """What a fault in each of its optimized parts restores."""
        return {}

    def replay_buffers(self) -> dict:
        """The buffers it holds, by name (checkpoints save them)."""
        return {}


class OffPolicyModule(EnvSetup, pl.LightningModule):
    metric_keys: tuple[str, ...] = ()

    def __init__(self, cfg: dict, spec: EnvSpec):
        super().__init__()
        self.automatic_optimization = False
        self.cfg, self.spec = cfg, spec
        self.env_steps = self.updates = 0
        self.critic_schedule = UpdateSchedule(cfg["updates"]["critic_per_step"])
        self.actor_schedule = UpdateSchedule(cfg["updates"]["actor_per_step"])
        self.update_after = max(cfg["data"]["init_random_steps"], cfg["data"]["batch_size"])
        self.recorder = MetricsRecorder()
        self.guard = NonfiniteGuard(cfg["durability"]["nonfinite_limit"], cfg["durability"]["nonfinite_guard"])
        self.clock = RunClock()
        self.last_eval: dict[str, float] = {}  # the latest evaluation (callbacks.PeriodicEvaluation)
        self.out_dir = Path(cfg["out"]) if cfg.get("out") else None
        self.replay_buffer = None
        self._stream: CollectorStream | None = None
        # env steps of the latest push, evaluation and checkpoint (the callbacks keep them)
        self.last_log_step = self.last_eval_step = self.last_checkpoint_step = 0
        self.resume_state: dict | None = None  # set by run.train_module before fit
        self.resume_path: Path | None = None
        self.after_resume = None  # run.train_module's: the run's files, once the restore succeeded
        self.stop_signal: str | None = None    # set by callbacks.Durability handlers
        self.components: list[Component] = []  # members with state of their own (Component)

    # ----------------------------------------------------------------- algorithm interface
    actor: torch.nn.Module

    def update(self, critic_updates: int, actor_updates: int) -> None:
        """The round's work after its env steps were stored: whatever comes first (a model
        training when due), then the due critic and actor updates."""
        raise NotImplementedError

    def q_value(self, obs: torch.Tensor) -> torch.Tensor | None:
        """The critic's Q(s, pi_0(s)) with the deterministic pi_0 at ``obs`` (for
        ``eval/q_bias``); None where there is no such critic."""
        return None

    def record(self, metrics: dict) -> None:
        """Keep the latest value of fully named metrics (read only when logged)."""
        self.recorder.record(metrics)

    def record_mean(self, metrics: dict) -> None:
        """Keep fully named metrics as their mean over the logging interval."""
        self.recorder.record_mean(metrics)

    def fault_parts(self) -> dict[str, list[torch.nn.Module | torch.nn.Parameter]]:
        """What a fault in each optimized part restores (subclasses declare their own; the
        components' are added)."""
        return {k: v for part in self.components for k, v in part.fault_parts().items()}

    def store(self, batch: TensorDictBase) -> None:
        """Add a collected round to the replay buffer (before ``env_steps`` counts it), after
        the components marked it."""
        for part in self.components:
            part.store(batch)
        self.replay_buffer.extend(batch)

    def sample_batch(self) -> TensorDictBase:
        return self.replay_buffer.sample(self.cfg["data"]["batch_size"]).to(self.device, non_blocking=True)

    # ----------------------------------------------------------------- checkpoint state
    def counters(self) -> dict:
        """Everything a resumed run needs besides tensors (subclasses add theirs)."""
        return {"env_steps": self.env_steps, "updates": self.updates,
                "critic_credit": self.critic_schedule.credit,
                "actor_credit": self.actor_schedule.credit,
                "last_eval_step": self.last_eval_step, "last_log_step": self.last_log_step,
                "last_checkpoint_step": self.last_checkpoint_step,
                "nonfinite_skips": self.guard.skips, "elapsed": self.clock.elapsed(),
                **{k: v for part in self.components for k, v in part.counters().items()}}

    def load_counters(self, c: dict) -> None:
        self.env_steps, self.updates = c["env_steps"], c["updates"]
        self.critic_schedule.credit, self.actor_schedule.credit = c["critic_credit"], c["actor_credit"]
        self.last_eval_step, self.last_log_step = c["last_eval_step"], c["last_log_step"]
        self.last_checkpoint_step = c["last_checkpoint_step"]
        self.guard.skips = c["nonfinite_skips"]
        self.clock.elapsed_before = c["elapsed"]
        for part in self.components:
            part.load_counters(c)

    def replay_buffers(self) -> dict:
        """The buffers a checkpoint saves, by name (the model data adds its model buffer)."""
        return {"replay_buffer": self.replay_buffer,
                **{k: v for part in self.components for k, v in part.replay_buffers().items()}}

    def save_checkpoint(self) -> Path | None:
        self.guard.check_deferred(self)
        if self.out_dir is None:
            return None
        self.last_checkpoint_step = self.env_steps
        self.guard.snapshot(self)
        return checkpoint.save(self, self.out_dir)  # every rank takes part; rank 0 returns the path

    def on_fit_start(self) -> None:
        # here, not in setup(): the module is on its device now, and the buffer lives there too
        self.replay_buffer = make_replay_buffer(self.cfg["data"]["buffer_size"], self._buffer_device())
        if self.resume_state is not None:
            checkpoint.restore(self, self.resume_state, self.resume_path)
            if self.cfg["data"]["num_envs"] == 1:  # several envs: their slots interleave
                end_episode_in_flight(self.replay_buffer)
            self.resume_state = None
            if self.after_resume is not None:
                self.after_resume()
        self.guard.snapshot(self)

    # ----------------------------------------------------------------- the loop
    def on_train_start(self) -> None:
        self.clock.start(self.env_steps)
        if self.env_steps > 0:
            self.finish_round()

    def finish_round(self) -> None:
        """At a resume, the work a stop signal left undone in the round the checkpoint ends
        (a model training cut short, the rest of a burst), before the evaluation that round
        owes and before any new env step; nothing where the round was complete."""
        if self.env_steps >= max(self.update_after, self.cfg["data"]["batch_size"] * self.world_size):
            self.update(0, 0)

    def training_step(self, batch: TensorDictBase, batch_idx: int) -> None:
        """One round of Algorithm 2: store the collected steps, then the due updates; the
        callbacks log, evaluate and checkpoint after it (``on_train_batch_end``)."""
        if self.world_size > 1:  # a signal may reach the ranks at different rounds: stop together
            stop = self.trainer.strategy.reduce_boolean_decision(self.stop_signal is not None, all=False)
            if stop and self.stop_signal is None:
                self.stop_signal = "SIGTERM (another rank)"
        if self.stop_signal is not None:
            self.trainer.should_stop = True
            return
        if self.remaining_steps() <= 0:  # Lightning prefetches one round past the budget
            return
        # every rank collects the same number of steps per round: the budget (counted over all
        # ranks) may end up to world_size - 1 steps over
        batch = batch[: -(-self.remaining_steps() // self.world_size)]
        self.store(batch)
        n = batch.numel()
        before, self.env_steps = self.env_steps, self.env_steps + n * self.world_size
        # update ratios count each rank's own env steps: N ranks take the same number of updates
        # per round as one, each averaged over N batches
        paid = burst_due(before, self.env_steps, self.cfg["updates"]["every"])
        critic_updates = self.critic_schedule.due(n, paid)
        actor_updates = self.actor_schedule.due(n, paid)
        if self.env_steps >= max(self.update_after, self.cfg["data"]["batch_size"] * self.world_size):
            self.update(critic_updates, actor_updates)

    def on_train_end(self) -> None:
        # after the callbacks' (final evaluation, push and checkpoint)
        if self._stream is not None:
            self._stream.close()
        for env in self.envs.values():
            if not env.is_closed:
                env.close()
