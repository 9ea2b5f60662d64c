"""MBPO's model data (Janner et al. 2019, Sec. 4.2 and Algorithm 2, lines 6-10), a member of
MBPO, MPPVE, M2AC and mpdp_pv: :class:`ModelData`.

After every model training, ``rollouts.batch_size`` real states start k-step branched rollouts
through the ensemble (k from ``rollouts.schedule``); the rollouts go into a model buffer sized by
MBPO's pool formula, which keeps the last ``rollouts.retain_epochs`` epochs of them; an update's
batch takes ``rollouts.real_ratio`` of its rows from the real buffer and the rest from the model buffer.
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
from .base import Component

MODEL_DATA_KEYS = ("train/rollout_length", "train/model_buffer_size", "train/model_data_age")
TRANSITION_KEYS = ("observation", "action", ("next", "observation"), ("next", "reward"),
                   ("next", "terminated"))


class ModelData(Component):
    """The model buffer, its refills and the real/model mix of a module (``host``: its replay
    buffer, env-step count, device and metrics)."""

    def __init__(self, cfg: dict, host):
        self.cfg, self.host = cfg, host
        self.buffer = None
        self.capacity = 0
        self.rounds: list[list[int]] = []  # [env step, rows] of each refill still held
        self.real_batch = max(1, round(cfg["rollouts"]["real_ratio"] * cfg["data"]["batch_size"]))

    # ---------------------------------------------------------------- Component
    def counters(self) -> dict:
        return {"model_buffer_capacity": self.capacity, "model_rounds": self.rounds}

    def load_counters(self, c: dict) -> None:
        self.rounds = [list(r) for r in c.get("model_rounds", [])]
        if c.get("model_buffer_capacity", 0):
            self.resize(c["model_buffer_capacity"])

    def replay_buffers(self) -> dict:
        return {"model_buffer": self.buffer}

    # ---------------------------------------------------------------- the buffer
    def size_for(self, length: int) -> int:
        """MBPO's pool size: retain_epochs * rollouts per epoch * rollout length."""
        c = self.cfg
        rollouts_per_epoch = c["rollouts"]["batch_size"] * c["rollouts"]["epoch_length"] / c["model"]["train_freq"]
        return int(c["rollouts"]["retain_epochs"] * rollouts_per_epoch * length)

    def resize(self, capacity: int) -> None:
        """A buffer of the new capacity, keeping the newest transitions of the old one."""
        if capacity == self.capacity:
            return
        old = self.buffer
        self.buffer = make_replay_buffer(capacity, self.host._buffer_device())
        self.capacity = capacity
        if old is not None and len(old) > 0:
            self.buffer.extend(newest_transitions(old, capacity))

    def age(self) -> float:
        """Mean age in env steps of the rows the buffer holds (host arithmetic, no sync)."""
        held, total, age = len(self.buffer) if self.buffer is not None else 0, 0, 0.0
        for step, rows in reversed(self.rounds):  # newest first: the FIFO keeps those
            rows = min(rows, held - total)
            total += rows
            age += rows * (self.host.env_steps - step)
        return age / total if total else 0.0

    def rollout_length(self) -> int:
        c = self.cfg
        return rollout_length(self.host.env_steps, c["rollouts"]["schedule"], c["rollouts"]["epoch_length"])

    def refill(self, rows: TensorDictBase, length: int) -> None:
        """Add one refill's rollouts of ``length`` steps (after a model training); log the age
        the rows already held had reached."""
        host = self.host
        host.record({"train/model_data_age": self.age()})
        self.resize(self.size_for(length))
        if rows.numel():
            self.buffer.extend(rows.to(host._buffer_device()))
        self.rounds.append([host.env_steps, rows.numel()])
        held, kept = len(self.buffer), 0  # drop the rounds the FIFO no longer holds
        for i in range(len(self.rounds) - 1, -1, -1):
            kept += self.rounds[i][1]
            if kept >= held:
                self.rounds = self.rounds[i:]
                break
        host.record({"train/rollout_length": float(length),
                     "train/model_buffer_size": float(len(self.buffer))})

    def branched_rollouts(self) -> None:
        """MBPO's refill: rollouts of pi_0's sampled actions from real states."""
        host, length = self.host, self.rollout_length()
        start = host.replay_buffer.sample(self.cfg["rollouts"]["batch_size"])["observation"]
        rows = branched_rollout(host.dynamics, lambda s: host.actor.sample(s)[0],
                                start.to(host.device), length)
        self.refill(rows, length)

    def empty(self) -> bool:
        return self.buffer is None or len(self.buffer) == 0

    def mixed_batch(self) -> TensorDictBase:
        """``rollouts.real_ratio`` of the batch from the real buffer, the rest from the model buffer (all
        real until the first rollouts exist)."""
        host, n = self.host, self.cfg["data"]["batch_size"]
        if self.empty():
            return host.replay_buffer.sample(n).to(host.device, non_blocking=True)
        real = host.replay_buffer.sample(self.real_batch)
        model = self.buffer.sample(n - self.real_batch)
        return torch.cat([real.select(*TRANSITION_KEYS).to(host.device),
                          model.select(*TRANSITION_KEYS).to(host.device)])
