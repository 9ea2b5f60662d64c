"""MBPO's model data (Janner et al. 2019, Sec. 4.2 and Algorithm 2, lines 7-10), one part shared
by MBPO and MPPVE.

After every model training, ``rollout_batch_size`` real states start k-step branched rollouts
through the ensemble (k from ``rollout_schedule``); the rollouts go into a model buffer sized by
MBPO's pool formula, which keeps the last ``model_retain_epochs`` epochs of them; an update's
batch takes ``real_ratio`` of its rows from the real buffer and the rest from the model buffer.
The rollouts use pi_0's sampled actions (MBPO's ``act`` with the stochastic policy) and store
the model's reward: no beta * u penalty enters it.

``train/model_data_age``: the mean age, in env steps, of the model buffer's rows just before
each refill, the stalest the critic's model data gets (a guard at high update ratios).
"""

from __future__ import annotations

import torch
from tensordict import TensorDictBase

from ..environment.data import make_replay_buffer, newest_transitions
from ..lookahead.rollouts import branched_rollout, rollout_length

MODEL_DATA_KEYS = ("train/rollout_length", "train/model_buffer_size", "train/model_data_age")
TRANSITION_KEYS = ("observation", "action", ("next", "observation"), ("next", "reward"),
                   ("next", "terminated"))


class ModelData:
    """Mixin for :class:`~mpdp_pl.algos.model_based.ModelBasedSAC` subclasses: the model buffer,
    its refills and the real/model mix."""

    def __init__(self, cfg: dict, spec, *args, **kwargs):
        super().__init__(cfg, spec, *args, **kwargs)
        self.model_buffer = None
        self.model_buffer_capacity = 0
        self.model_rounds: list[list[int]] = []  # [env step, rows] of each refill still held
        self.real_batch = max(1, round(cfg["real_ratio"] * cfg["batch_size"]))

    # ---------------------------------------------------------------- checkpoint state
    def counters(self) -> dict:
        return {**super().counters(), "model_buffer_capacity": self.model_buffer_capacity,
                "model_rounds": self.model_rounds}

    def load_counters(self, c: dict) -> None:
        super().load_counters(c)
        self.model_rounds = [list(r) for r in c.get("model_rounds", [])]
        if c.get("model_buffer_capacity", 0):
            self.resize_model_buffer(c["model_buffer_capacity"])

    def replay_buffers(self) -> dict:
        return {**super().replay_buffers(), "model_buffer": self.model_buffer}

    # ---------------------------------------------------------------- the buffer
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

    def model_data_age(self) -> float:
        """Mean age in env steps of the rows the buffer holds (host arithmetic, no sync)."""
        held, total, age = len(self.model_buffer) if self.model_buffer is not None else 0, 0, 0.0
        for step, rows in reversed(self.model_rounds):  # newest first: the FIFO keeps those
            rows = min(rows, held - total)
            total += rows
            age += rows * (self.env_steps - step)
        return age / total if total else 0.0

    def rollout_length(self) -> int:
        c = self.cfg
        return rollout_length(self.env_steps, c["rollout_schedule"], c["epoch_length"])

    def refill_model_buffer(self, rows: TensorDictBase, length: int) -> None:
        """Add one refill's rollouts of ``length`` steps (after a model training); log the age
        the rows already held had reached."""
        self.record({"train/model_data_age": self.model_data_age()})
        self.resize_model_buffer(self.model_buffer_size_for(length))
        if rows.numel():
            self.model_buffer.extend(rows.to(self._buffer_device()))
        self.model_rounds.append([self.env_steps, rows.numel()])
        held, kept = len(self.model_buffer), 0  # drop the rounds the FIFO no longer holds
        for i in range(len(self.model_rounds) - 1, -1, -1):
            kept += self.model_rounds[i][1]
            if kept >= held:
                self.model_rounds = self.model_rounds[i:]
                break
        self.record({"train/rollout_length": float(length),
                     "train/model_buffer_size": float(len(self.model_buffer))})

    def branched_rollouts(self) -> None:
        """MBPO's refill: rollouts of pi_0's sampled actions from real states."""
        length = self.rollout_length()
        start = self.replay_buffer.sample(self.cfg["rollout_batch_size"])["observation"]
        rows = branched_rollout(self.dynamics, lambda s: self.actor.sample(s)[0],
                                start.to(self.device), length)
        self.refill_model_buffer(rows, length)

    def mixed_batch(self) -> TensorDictBase:
        """``real_ratio`` of the batch from the real buffer, the rest from the model buffer (all
        real until the first rollouts exist)."""
        if self.model_buffer is None or len(self.model_buffer) == 0:
            return self.replay_buffer.sample(self.cfg["batch_size"]).to(self.device, non_blocking=True)
        real = self.replay_buffer.sample(self.real_batch)
        model = self.model_buffer.sample(self.cfg["batch_size"] - self.real_batch)
        return torch.cat([real.select(*TRANSITION_KEYS).to(self.device),
                          model.select(*TRANSITION_KEYS).to(self.device)])
