"""What every algorithm shares: the env-step loop of Algorithm 2 around algorithm-specific updates.

One Lightning "batch" is one round of ``frames_per_batch`` env steps from the collector. The
module adds it to the replay buffer, advances its env-step counter (the budget, schedules,
evaluation and the logging x-axis all count env steps; ``trainer.global_step`` counts optimizer
steps), runs the due number of updates (``critic_updates_per_step``, ``actor_updates_per_step``,
fractions allowed), and evaluates pi_0 every ``eval_every`` env steps and once at the end.

Subclasses implement :meth:`update` and :meth:`configure_optimizers`, declare the metrics they
record in ``metric_keys`` (columns of metrics.csv), expose ``actor``, and may override
:meth:`before_updates` (model-based algorithms train their model there).
"""

from __future__ import annotations

import math
import signal
import time
from pathlib import Path

import lightning.pytorch as pl
import torch
from tensordict import TensorDictBase
from tensordict.nn import TensorDictModule
from torch.utils.data import DataLoader

from .. import checkpoint
from ..distributed import average_gradients
from ..data import CollectorStream, make_collector, make_replay_buffer
from ..envs import EnvSpec, make_env
from ..episodes import evaluate
from ..loggers import MetricsCSV
from ..models.actor import ActorPolicy

FAILED_MARKER = "failed.txt"  # written into the run directory when a run stops at nonfinite_limit
EVAL_SEED_OFFSET = 10_000  # the eval env's seed is seed + this, so it never replays training episodes


class NumericalFault(RuntimeError):
    """Non-finite losses or gradients in one part, ``nonfinite_limit`` updates in a row."""


def _identity(batch):
    """The collector's TensorDict as is (DataLoader's default_convert would unpack it)."""
    return batch


class UpdateSchedule:
    """Turns a per-env-step update ratio (0.25, 1, 20, ...) into whole updates per round.

    Fractions accumulate: at 0.25, one update is due every 4 env steps.
    """

    def __init__(self, per_step: float):
        self.per_step, self.credit = per_step, 0.0

    def due(self, env_steps: int) -> int:
        self.credit += env_steps * self.per_step
        n = math.floor(self.credit + 1e-9)
        self.credit -= n
        return n


class OffPolicyModule(pl.LightningModule):
    metric_keys: tuple[str, ...] = ()

    def __init__(self, cfg: dict, spec: EnvSpec):
        super().__init__()
        self.automatic_optimization = False
        self.cfg, self.spec = cfg, spec
        self.env_steps = 0
        self.updates = 0
        self.critic_schedule = UpdateSchedule(cfg["critic_updates_per_step"])
        self.actor_schedule = UpdateSchedule(cfg["actor_updates_per_step"])
        self.update_after = max(cfg["init_random_steps"], cfg["batch_size"])
        self.last_metrics: dict[str, torch.Tensor | float] = {}
        self._interval_sums: dict[str, tuple] = {}  # record_mean: (sum, count) per metric
        self.last_eval: dict[str, float] = {}
        self.out_dir = Path(cfg["out"]) if cfg.get("out") else None
        self.replay_buffer = None
        self._stream: CollectorStream | None = None
        self.last_checkpoint_step = 0
        self.resume_state: dict | None = None  # set by run.train_module before fit
        self.resume_path: Path | None = None
        self.stop_signal: str | None = None
        self.nonfinite_skips = 0
        self._last_eval_step = self._last_log_step = 0
        self._elapsed_before = 0.0  # wall seconds of the run before it was resumed
        self._fault_streak: dict[str, int] = {}
        self._device_streak: dict[str, torch.Tensor] = {}      # nonfinite_guard=deferred
        self._device_max_streak: dict[str, torch.Tensor] = {}
        self._device_skips: torch.Tensor | None = None
        self._good_weights: dict[str, dict] = {}

    # ----------------------------------------------------------------- algorithm interface
    actor: torch.nn.Module

    def update(self, critic_updates: int, actor_updates: int) -> None:
        raise NotImplementedError

    def q_value(self, obs: torch.Tensor) -> torch.Tensor | None:
        """The critic's Q(s, pi_0(s)) with the deterministic pi_0 at ``obs`` (for
        ``eval/q_bias``); None where there is no such critic."""
        return None

    def before_updates(self) -> None:
        """Runs in every round once updates have started, before :meth:`update`."""

    def record_mean(self, metrics: dict) -> None:
        """Accumulate fully named metrics whose logged value is their mean over the logging
        interval (``log_every`` env steps) rather than the latest batch's; sums stay on the
        device until the interval ends."""
        for k, v in metrics.items():
            total, count = self._interval_sums.get(k, (0.0, 0))
            self._interval_sums[k] = (total + (v.detach() if torch.is_tensor(v) else v), count + 1)

    def close_interval(self) -> None:
        """The interval's means become the metrics' values (a metrics.csv row shows the mean
        since the last push, or the last complete interval's right after a push)."""
        for k, (total, count) in self._interval_sums.items():
            self.last_metrics[k] = total / count
        self._interval_sums = {}

    def record(self, metrics: dict) -> None:
        """Keep the latest value of fully named metrics (tensors detached, numbers, strings;
        read only when logged). :meth:`record_mean` keeps interval means instead."""
        for k, v in metrics.items():
            self.last_metrics[k] = v.detach() if torch.is_tensor(v) else v

    def store(self, batch: TensorDictBase) -> None:
        """Add a collected round to the replay buffer (before ``env_steps`` counts it)."""
        self.replay_buffer.extend(batch)

    def sample_batch(self) -> TensorDictBase:
        return self.replay_buffer.sample(self.cfg["batch_size"]).to(self.device, non_blocking=True)

    # ----------------------------------------------------------------- checkpoint state
    def counters(self) -> dict:
        """Everything a resumed run needs besides tensors (subclasses add theirs)."""
        return {"env_steps": self.env_steps, "updates": self.updates,
                "critic_credit": self.critic_schedule.credit,
                "actor_credit": self.actor_schedule.credit,
                "last_eval_step": self._last_eval_step, "last_log_step": self._last_log_step,
                "last_checkpoint_step": self.last_checkpoint_step,
                "nonfinite_skips": self.nonfinite_skips,
                "elapsed": time.perf_counter() - self.start_time if hasattr(self, "start_time") else 0.0}

    def load_counters(self, c: dict) -> None:
        self.env_steps, self.updates = c["env_steps"], c["updates"]
        self.critic_schedule.credit, self.actor_schedule.credit = c["critic_credit"], c["actor_credit"]
        self._last_eval_step, self._last_log_step = c["last_eval_step"], c["last_log_step"]
        self.last_checkpoint_step = c["last_checkpoint_step"]
        self.nonfinite_skips = c["nonfinite_skips"]
        self._elapsed_before = c["elapsed"]

    def replay_buffers(self) -> dict:
        """The buffers a checkpoint saves, by name (MBPO and MPPVE add their model buffer)."""
        return {"replay_buffer": self.replay_buffer}

    def save_checkpoint(self) -> Path | None:
        self.check_deferred_faults()
        if self.out_dir is None:
            return None
        self.last_checkpoint_step = self.env_steps
        self.snapshot_good_weights()
        return checkpoint.save(self, self.out_dir)  # every rank takes part; rank 0 returns the path

    # ----------------------------------------------------------------- numerical faults
    def fault_parts(self) -> dict[str, list[torch.nn.Module | torch.nn.Parameter]]:
        """What a fault in each optimized part restores (subclasses declare theirs)."""
        return {}

    def snapshot_good_weights(self) -> None:
        """Copy every part's weights as its last known good state (at checkpoints, and every
        ``log_every`` env steps without a fault)."""
        for part, items in self.fault_parts().items():
            self._good_weights[part] = [
                {k: v.detach().clone() for k, v in m.state_dict().items()}
                if isinstance(m, torch.nn.Module) else m.detach().clone() for m in items]

    @torch.no_grad()
    def restore_good_weights(self, part: str) -> None:
        for m, saved in zip(self.fault_parts()[part], self._good_weights.get(part, [])):
            if isinstance(m, torch.nn.Module):
                m.load_state_dict(saved)
            else:
                m.copy_(saved)

    def guarded_step(self, part: str, optimizer, loss: torch.Tensor, params,
                     clip: float | None = None) -> torch.Tensor:
        """backward, optional gradient clipping, and the optimizer step, unless the loss or the
        gradient norm is not finite: then the step does not happen, ``train/nonfinite_skips``
        counts it, and ``nonfinite_limit`` faults of one part in a row stop the run.

        Two ways, chosen by ``nonfinite_guard`` (``auto``: sync on CPU, where a host sync costs
        nothing, deferred on accelerators): ``sync`` tests finiteness on the host once per step
        (like AMP's GradScaler) and, on a fault, skips the step and restores the part's last good
        weights; ``deferred`` never syncs: it steps, then puts the weights and the optimizer's
        state back where the step was not finite (one copy of each per step), counts faults on
        the device and checks the limit whenever metrics are logged. Returns the gradient norm
        before clipping."""
        params = list(params)
        optimizer.zero_grad(set_to_none=True)
        self.manual_backward(loss)
        loss_flag = average_gradients(params, loss)  # several ranks: every rank's loss counts
        norm = torch.nn.utils.clip_grad_norm_(params, clip if clip is not None else math.inf)
        ok = torch.isfinite(loss_flag) & torch.isfinite(norm)
        if not self.sync_guard:
            self._deferred_step(part, optimizer, params, ok)
        elif bool(ok):
            optimizer.step()
            self._fault_streak[part] = 0
        else:
            optimizer.zero_grad(set_to_none=True)
            self.report_fault(part)
        return norm

    @property
    def sync_guard(self) -> bool:
        mode = self.cfg["nonfinite_guard"]
        return mode == "sync" or (mode == "auto" and self.device.type == "cpu")

    @torch.no_grad()
    def _deferred_step(self, part: str, optimizer, params: list, ok: torch.Tensor) -> None:
        opt = getattr(optimizer, "optimizer", optimizer)
        for p in params:  # a NaN gradient must not reach the moments (nan * 0 is nan: use where)
            if p.grad is not None:
                p.grad.copy_(torch.where(ok, p.grad, torch.zeros_like(p.grad)))
        before = [p.detach().clone() for p in params]
        state = [{k: v.clone() for k, v in opt.state[p].items() if torch.is_tensor(v)}
                 if p in opt.state else {} for p in params]
        optimizer.step()
        for p, old, st in zip(params, before, state):
            p.copy_(torch.where(ok, p, old))
            for k, v in st.items():
                opt.state[p][k].copy_(torch.where(ok, opt.state[p][k], v))
        bad = (~ok).long()
        streak = self._device_streak.get(part, torch.zeros((), dtype=torch.long, device=ok.device))
        streak = (streak + 1) * bad
        self._device_streak[part] = streak
        self._device_max_streak[part] = torch.maximum(
            self._device_max_streak.get(part, torch.zeros_like(streak)), streak)
        self._device_skips = self._device_skips + bad if self._device_skips is not None else bad

    def check_deferred_faults(self) -> None:
        """Bring the device-side fault counts to the host (one sync; at logging time)."""
        if self._device_skips is None:
            return
        self.nonfinite_skips += int(self._device_skips)
        self._device_skips = None
        for part, worst in self._device_max_streak.items():
            self._fault_streak[part] = int(self._device_streak[part])
            if int(worst) >= self.cfg["nonfinite_limit"]:
                self._raise_fault(part, int(worst))
        self._device_max_streak = {}

    def report_fault(self, part: str) -> None:
        self.nonfinite_skips += 1
        self._fault_streak[part] = streak = self._fault_streak.get(part, 0) + 1
        self.restore_good_weights(part)
        if streak >= self.cfg["nonfinite_limit"]:
            self._raise_fault(part, streak)

    def _raise_fault(self, part: str, streak: int) -> None:
        message = (f"{streak} non-finite {part} updates in a row by env step {self.env_steps}; the "
                   f"run stopped (last checkpoint: "
                   f"{checkpoint.latest(self.out_dir) if self.out_dir else None})")
        if self.out_dir is not None and self.global_rank == 0:
            # the run's verdict, for the comparison runner: a failure, not a run to redo
            (self.out_dir / FAILED_MARKER).write_text(message + "\n")
        raise NumericalFault(message)

    # ----------------------------------------------------------------- data path
    @property
    def world_size(self) -> int:
        """Ranks stepping environments (1 without DDP); env-step counts are summed over them."""
        return self.trainer.world_size if self._trainer is not None else 1

    def setup(self, stage: str) -> None:
        seed = self.cfg["seed"] + 1000 * self.global_rank
        if self.world_size > 1:  # own exploration noise and batches per rank (weights: rank 0's)
            torch.manual_seed(seed)
        if self.resume_state is not None:  # fresh episodes, not a replay of the first ones
            seed += 7919 * self.resume_state["counters"]["env_steps"]
        # A dict, not attributes: TorchRL envs are nn.Modules, and as submodules they would be
        # moved to the GPU and saved with the weights.
        # every evaluation re-seeds its env with this: the same initial states each time
        self.eval_seed = self.cfg["seed"] + 1000 * self.global_rank + EVAL_SEED_OFFSET
        self.envs = {"train": make_env(self.cfg, seed=seed, num_envs=self.cfg["num_envs"]),
                     "eval": make_env(self.cfg, seed=self.eval_seed)}

    def policy(self, deterministic: bool) -> TensorDictModule:
        return TensorDictModule(ActorPolicy(self.actor, deterministic),
                                in_keys=["observation"], out_keys=["action"])

    def _buffer_device(self) -> torch.device:
        return torch.device(self.cfg["buffer_device"]) if self.cfg["buffer_device"] else self.device

    def on_fit_start(self) -> None:
        # here, not in setup(): the module is on its device now, and the buffer lives there too
        self.replay_buffer = make_replay_buffer(self.cfg["buffer_size"], self._buffer_device())
        if self.resume_state is not None:
            checkpoint.restore(self, self.resume_state, self.resume_path)
            self.resume_state = None
        self.snapshot_good_weights()

    def _make_collector(self):
        return make_collector(
            self.envs["train"], self.policy(deterministic=False),
            self.cfg["frames_per_batch"] * self.cfg["num_envs"],
            max(0, -(-(self.cfg["init_random_steps"] - self.env_steps) // self.world_size)), self.device,
            self._buffer_device(),
        )

    def remaining_steps(self) -> int:
        return self.cfg["steps"] - self.env_steps

    def train_dataloader(self) -> DataLoader:
        self._stream = CollectorStream(self._make_collector, self.remaining_steps)
        return DataLoader(self._stream, batch_size=None, num_workers=0, collate_fn=_identity)

    # ----------------------------------------------------------------- the loop
    def _on_signal(self, signum, frame) -> None:
        self.stop_signal = signal.Signals(signum).name  # acted on at the next env step

    def on_train_start(self) -> None:
        # after Lightning's own handlers: SIGTERM/SIGINT checkpoint and stop cleanly
        self._previous_handlers = {s: signal.signal(s, self._on_signal)
                                   for s in (signal.SIGTERM, signal.SIGINT)}
        self.start_time = time.perf_counter() - self._elapsed_before
        # (time, env steps) at the previous logger push and at the previous metrics.csv row
        self._windows = {"log": (self.start_time, self.env_steps),
                         "eval": (self.start_time, self.env_steps)}
        self._last_eval_step = self.env_steps
        self._last_log_step = self.env_steps
        if self.trainer.is_global_zero and self.out_dir is not None:
            # a run resumed by hand after a fault tries again: the old verdict no longer holds
            (self.out_dir / FAILED_MARKER).unlink(missing_ok=True)
            columns = ["env_steps", "eval/return", "eval/return_std", "eval/episode_length",
                       "eval/q_bias",
                       "time/elapsed", "time/env_steps_per_s", "train/updates",
                       "train/nonfinite_skips",
                       *self.metric_keys]
            self.metrics_csv = MetricsCSV(self.out_dir / "metrics.csv", columns)

    def training_step(self, batch: TensorDictBase, batch_idx: int) -> None:
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
        self.env_steps += n * self.world_size
        # update ratios count each rank's own env steps: N ranks take the same number of updates
        # per round as one, each averaged over N batches
        critic_updates = self.critic_schedule.due(n)
        actor_updates = self.actor_schedule.due(n)
        if self.env_steps >= max(self.update_after, self.cfg["batch_size"] * self.world_size):
            self.before_updates()
            self.update(critic_updates, actor_updates)
        if self.env_steps - self._last_log_step >= self.cfg["log_every"]:
            self.log_training_metrics()
        if self.env_steps // self.cfg["eval_every"] > self._last_eval_step // self.cfg["eval_every"]:
            self.run_evaluation()
        every = self.cfg["checkpoint_every"]
        if every and self.env_steps // every > self.last_checkpoint_step // every:
            self.save_checkpoint()

    def on_train_end(self) -> None:
        for sig, handler in self._previous_handlers.items():
            signal.signal(sig, handler)
        if self.stop_signal is None and self.env_steps != self._last_eval_step:
            self.run_evaluation()
        self.log_training_metrics()
        if self.env_steps > 0:
            path = self.save_checkpoint()
            if self.stop_signal is not None and path is not None:
                print(f"stopped by {self.stop_signal} at env step {self.env_steps}; checkpoint "
                      f"{path}; continue with: python train.py --resume {self.out_dir}")
        if self._stream is not None:
            self._stream.close()
        for env in self.envs.values():
            if not env.is_closed:
                env.close()

    # ----------------------------------------------------------------- metrics
    def _scalars(self) -> dict[str, float]:
        # interval means: the open interval's so far, else the last complete one's
        current = {**self.last_metrics, **{k: t / n for k, (t, n) in self._interval_sums.items()}}
        out = {k: (v.item() if torch.is_tensor(v) else v) for k, v in current.items()}
        out["train/updates"] = float(self.updates)
        out["train/nonfinite_skips"] = float(self.nonfinite_skips)
        return out

    def _time_metrics(self, window: str) -> dict[str, float]:
        """Elapsed seconds, and env steps/s of the whole loop since the window's last call."""
        now = time.perf_counter()
        t0, s0 = self._windows[window]
        rate = (self.env_steps - s0) / max(now - t0, 1e-9)
        self._windows[window] = (now, self.env_steps)
        return {"time/elapsed": now - self.start_time, "time/env_steps_per_s": rate}

    def log_training_metrics(self) -> None:
        self._last_log_step = self.env_steps
        self.check_deferred_faults()
        self.close_interval()
        metrics = {**self._scalars(), **self._time_metrics("log"), "env_steps": self.env_steps}
        if not any(self._fault_streak.values()):
            self.snapshot_good_weights()
        if self.logger is not None:
            self.logger.log_metrics(metrics, step=self.env_steps)

    def run_evaluation(self) -> None:
        self._last_eval_step = self.env_steps
        self.check_deferred_faults()
        if not self.trainer.is_global_zero:
            return
        result = evaluate(self.envs["eval"], self.policy(deterministic=True),
                          self.cfg["eval_episodes"], self.spec.max_episode_steps or 10**6,
                          seed=self.eval_seed, gamma=self.cfg["gamma"], q_value=self.q_value)
        self.last_eval = result
        row = {"env_steps": self.env_steps, **result, **self._time_metrics("eval"), **self._scalars()}
        if self.logger is not None:
            self.logger.log_metrics({k: v for k, v in row.items() if k.startswith(("eval/", "env_steps"))},
                                    step=self.env_steps)
        if self.out_dir is not None:
            self.metrics_csv.write(row)
        every = self.cfg["video_every"]
        if every and self.out_dir is not None and (self.env_steps // self.cfg["eval_every"]) % every == 0:
            self.record_video()

    def record_video(self) -> None:
        """One episode of pi_0 from the evaluation seed, as ``DIR/videos/step<N>.mp4`` and, with
        W&B, as the ``eval/video`` media of that env step."""
        from lightning.pytorch.loggers import WandbLogger

        from ..video import render_episode, write_video

        if "video" not in self.envs:  # created on first use: rendering needs a GL context
            self.envs["video"] = make_env(self.cfg, seed=self.eval_seed, render=True)
        frames, _ = render_episode(self.envs["video"], self.policy(deterministic=True),
                                   self.spec.max_episode_steps or 1000, seed=self.eval_seed)
        path = write_video(frames, self.out_dir / "videos" / f"step{self.env_steps:09d}.mp4")
        if isinstance(self.logger, WandbLogger):
            self.logger.log_video("eval/video", [str(path)], step=self.env_steps, format=["mp4"])
