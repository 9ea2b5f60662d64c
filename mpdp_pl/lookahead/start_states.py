"""Start states of DHMBPO's actor and critic updates from model rollouts (its "distribution
rollouts", Kubo et al. 2025; :mod:`mpdp_pl.algos.dhmbpo`).

Every ``dhmbpo.rollout_every`` actor updates, ``data.batch_size`` real states start a gradient-free
rollout of pi_0 through the ensemble of ``dhmbpo.rollout_length`` steps (each step served by one
random elite, :meth:`~mpdp_pl.models.dynamics.DynamicsModel.sample_step`); every state it visits,
the real start included, enters a FIFO of ``dhmbpo.buffer_size`` states, from which the update's
batches are then drawn. The updates so start where pi_0's own imagined trajectories go, not only
at the states the behaviour policies visited.

Shapes stay static (no host sync): a sample that reaches a predicted terminal keeps its last
non-terminal state for the rest of the rollout, so the FIFO holds that state again instead of a
state past the terminal. A checkpoint holds the FIFO (:meth:`StartStateFIFO.state`), so a resumed
run draws its first batches from the same states as a run that was never stopped. A fresh run makes
its first rollout at its first update after the model exists, so its first batches come from that
one rollout's (``dhmbpo.rollout_length`` + 1) x ``data.batch_size`` states until more rollouts fill
the FIFO.

Memory: ``start_buffer_size * obs_dim * 4`` bytes (51200 states: 2.3 MB on Hopper, 9.2 MB on
Humanoid with 45 dims); cost: ``dhmbpo.rollout_length`` one-member model steps of ``data.batch_size``
states every ``dhmbpo.rollout_every`` updates.
"""

from __future__ import annotations

import torch

from ..models.actor import MultiHeadActor
from ..models.dynamics import DynamicsModel
from .unroll import Unroll


class StartStateFIFO:
    """A ring buffer of states on one device; ``size`` and the write position are host ints
    (the number of states added is known without looking at the tensors)."""

    def __init__(self, capacity: int, obs_dim: int, device):
        self.states = torch.zeros(capacity, obs_dim, device=device)
        self.capacity, self.size, self.pos = capacity, 0, 0

    def add(self, states: torch.Tensor) -> None:
        states = states[-self.capacity:]
        n = states.shape[0]
        idx = (self.pos + torch.arange(n, device=self.states.device)) % self.capacity
        self.states[idx] = states
        self.pos = (self.pos + n) % self.capacity
        self.size = min(self.size + n, self.capacity)

    def sample(self, n: int) -> torch.Tensor:
        return self.states[torch.randint(self.size, (n,), device=self.states.device)]

    def state(self) -> dict:
        """What a checkpoint keeps: the states held (on the CPU) and the write position."""
        return {"states": self.states[:self.size].cpu(), "pos": self.pos}

    @classmethod
    def from_state(cls, state: dict, capacity: int, device) -> "StartStateFIFO":
        fifo = cls(capacity, state["states"].shape[1], device)
        fifo.size, fifo.pos = state["states"].shape[0], state["pos"]
        fifo.states[:fifo.size] = state["states"].to(device)
        return fifo


@torch.no_grad()
def distribution_rollout(dynamics: DynamicsModel, actor: MultiHeadActor, start: torch.Tensor,
                         length: int) -> torch.Tensor:
    """The states of a ``length``-step rollout of pi_0 from ``start`` ``[N, obs_dim]``:
    ``[(length + 1) N, obs_dim]``, the start states first; past a predicted terminal a sample
    repeats its last non-terminal state."""
    states = [start]
    unroll = Unroll(dynamics, start, lambda t, s, pick: actor.sample(s, 0), length, with_u=False)
    for _ in unroll:
        states.append(unroll.obs)
    return torch.cat(states)
