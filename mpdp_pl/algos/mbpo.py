"""MBPO (Janner et al. 2019): SAC trained on a mix of real and model-generated transitions.

After every model training (every ``model_train_freq`` env steps), ``rollout_batch_size`` real
states start k-step branched rollouts of pi_0 through the ensemble (k from ``rollout_schedule``),
which go into a model buffer that keeps the last ``model_retain_epochs`` epochs of rollouts. Every
SAC update (critic and actor, ``critic_updates_per_step`` = ``actor_updates_per_step`` = MBPO's
``n_train_repeat``) samples ``real_ratio`` of its batch from the real buffer and the rest from the
model buffer. Everything else (critics, temperature, ensemble, collection) is the shared code.
"""

from __future__ import annotations

import torch

from ..data import make_replay_buffer, newest_transitions
from ..rollouts import branched_rollout, rollout_length
from .model_based import ModelBasedSAC


class MBPO(ModelBasedSAC):
    metric_keys = (*ModelBasedSAC.metric_keys, "train/rollout_length", "train/model_buffer_size")

    def __init__(self, cfg: dict, spec):
        super().__init__(cfg, spec)
        self.model_buffer = None
        self.model_buffer_capacity = 0
        self.real_batch = max(1, round(cfg["real_ratio"] * cfg["batch_size"]))

    def counters(self) -> dict:
        return {**super().counters(), "model_buffer_capacity": self.model_buffer_capacity}

    def load_counters(self, c: dict) -> None:
        super().load_counters(c)
        if c["model_buffer_capacity"]:
            self.resize_model_buffer(c["model_buffer_capacity"])

    def replay_buffers(self) -> dict:
        return {**super().replay_buffers(), "model_buffer": self.model_buffer}

    def model_buffer_size_for(self, length: int) -> int:
        """MBPO's pool size: retain_epochs * rollouts per epoch * rollout length."""
        c = self.cfg
        rollouts_per_epoch = c["rollout_batch_size"] * c["epoch_length"] / c["model_train_freq"]
        return int(c["model_retain_epochs"] * rollouts_per_epoch * length)

    def resize_model_buffer(self, capacity: int) -> None:
        """A buffer of the new capacity, keeping the newest transitions of the old one."""
        if capacity == self.model_buffer_capacity:
            return
        old = self.model_buffer
        self.model_buffer = make_replay_buffer(capacity, self._buffer_device())
        self.model_buffer_capacity = capacity
        if old is not None and len(old) > 0:
            self.model_buffer.extend(newest_transitions(old, capacity))

    def after_model_training(self, holdout) -> None:
        c = self.cfg
        length = rollout_length(self.env_steps, c["rollout_schedule"], c["epoch_length"])
        self.resize_model_buffer(self.model_buffer_size_for(length))
        start = self.replay_buffer.sample(c["rollout_batch_size"])["observation"].to(self.device)
        rollouts = branched_rollout(self.dynamics, lambda s: self.actor.sample(s)[0], start, length)
        if rollouts.numel():
            self.model_buffer.extend(rollouts)
        self.record({"train/rollout_length": float(length),
                     "train/model_buffer_size": float(len(self.model_buffer))})

    def sample_batch(self):
        """real_ratio of the batch from the real buffer, the rest from the model buffer (all real
        until the first rollouts exist)."""
        if self.model_buffer is None or len(self.model_buffer) == 0:
            return super().sample_batch()
        real = self.replay_buffer.sample(self.real_batch)
        model = self.model_buffer.sample(self.cfg["batch_size"] - self.real_batch)
        keys = ["observation", "action", ("next", "observation"), ("next", "reward"),
                ("next", "terminated")]
        return torch.cat([real.select(*keys).to(self.device), model.select(*keys).to(self.device)])
