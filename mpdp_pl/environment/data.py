"""The data path: env -> TorchRL ``Collector`` -> replay buffer -> batches for the updates.

Lightning's Trainer iterates :class:`CollectorStream`; each item is one round of
``data.frames_per_batch`` transitions collected with the current pi_0 (uniform random actions for the
first ``data.init_random_steps``). The LightningModule adds each round to its replay buffer and then
samples its update batches from the buffer.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from tensordict import TensorDict, TensorDictBase
from tensordict.nn import TensorDictModule
from torch.utils.data import IterableDataset
from torchrl.collectors import Collector
from torchrl.data import LazyTensorStorage, TensorDictReplayBuffer
from torchrl.data.replay_buffers import RandomSampler

# What the algorithms read from a transition; everything else the collector adds is dropped.
TRANSITION_KEYS = [
    "observation",
    "action",
    ("next", "observation"),
    ("next", "reward"),
    ("next", "terminated"),
    ("next", "truncated"),
    ("next", "done"),
]


def make_collector(env, policy: TensorDictModule, frames_per_batch: int,
                   init_random_steps: int, policy_device: torch.device,
                   storing_device: torch.device) -> Collector:
    """A single-process TorchRL collector stepping ``env`` with ``policy``.

    ``policy`` must already live on ``policy_device``: the collector then uses it by reference
    (no copy), so every update of the actor is seen by the next collected step.
    """
    return Collector(
        env,
        policy,
        frames_per_batch=frames_per_batch,
        total_frames=-1,
        init_random_frames=init_random_steps,
        policy_device=policy_device,
        env_device=env.device,
        storing_device=storing_device,
        auto_register_policy_transforms=False,  # pi_0 is a plain MLP: it needs no InitTracker
    )


def make_replay_buffer(capacity: int, device: torch.device | str) -> TensorDictReplayBuffer:
    """Uniform replay over the last ``capacity`` transitions, stored on ``device``; callers give
    the batch size to ``sample(n)``."""
    return TensorDictReplayBuffer(
        storage=LazyTensorStorage(capacity, device=device),
        sampler=RandomSampler(),
    )


SIZES = "sizes.json"  # every storage file's size in bytes, as written


def save_buffer(buffer: TensorDictReplayBuffer, path: Path) -> None:
    """Write the filled part of ``buffer``'s storage (memory-mapped) and its writer's cursor.
    TorchRL's ``dumps`` writes the whole preallocated capacity instead: 3 GB per checkpoint for
    Humanoid's 1M-transition buffer at any fill. ``sizes.json`` lets the load find a damaged
    file."""
    path.mkdir(parents=True)
    buffer.storage._storage[: len(buffer)].memmap(path / "storage")
    torch.save(buffer.writer.state_dict(), path / "writer.pt")
    files = sorted(f for f in (path / "storage").rglob("*") if f.is_file())
    (path / SIZES).write_text(json.dumps({str(f.relative_to(path)): f.stat().st_size for f in files}))


def load_buffer(buffer: TensorDictReplayBuffer, path: Path) -> None:
    """Restore what :func:`save_buffer` wrote into an empty ``buffer`` of the same capacity:
    the same transitions in the same storage slots, and the writer's cursor (checkpoints of
    earlier versions, written by TorchRL's ``dumps``, load through its ``loads``)."""
    if not (path / "writer.pt").exists():
        buffer.loads(path)
        return
    if (path / SIZES).exists():  # a truncated memmap loads as zeros (and is written back) unchecked
        for name, size in json.loads((path / SIZES).read_text()).items():
            if not (path / name).is_file() or (path / name).stat().st_size != size:
                raise ValueError(f"{path / name}: not the {size} bytes written")
    buffer.extend(TensorDict.load_memmap(path / "storage"))
    buffer.writer.load_state_dict(torch.load(path / "writer.pt"))


def buffer_contents(buffer: TensorDictReplayBuffer) -> TensorDictBase:
    """Every stored transition (storage order, not chronological once the buffer has wrapped)."""
    return buffer[:]


def chronological_order(buffer: TensorDictReplayBuffer) -> torch.Tensor:
    """Storage indices of every stored transition, oldest first (the storage is circular)."""
    size = len(buffer)
    if size < buffer.storage.max_size:
        return torch.arange(size)
    return (buffer.writer._cursor + torch.arange(size)) % size


def newest_transitions(buffer: TensorDictReplayBuffer, n: int) -> TensorDictBase:
    """The ``n`` most recently written transitions (fewer if the buffer holds fewer)."""
    size = len(buffer)
    n = min(n, size)
    cursor = buffer.writer._cursor  # next write position; the storage is circular
    idx = (cursor - n + torch.arange(n)) % buffer.storage.max_size
    return buffer.storage.get(idx)


def end_episode_in_flight(buffer: TensorDictReplayBuffer) -> None:
    """A resumed run's env starts a new episode (:mod:`mpdp_pl.algos.env_setup`), so the episode
    in flight at the checkpoint ended there: its newest stored transition, unless terminal, is
    marked ``truncated`` (and ``done``) as a time limit would mark it, so that no window of
    consecutive transitions (the plan-value critic's real segments) runs on into the next
    episode. For one env: the newest transition is its own."""
    if len(buffer) == 0:
        return
    newest = (buffer.writer._cursor - 1) % buffer.storage.max_size
    last = buffer.storage.get(newest)
    if not bool(last["next", "terminated"].any()):
        last["next", "truncated"].fill_(True)
        last["next", "done"].fill_(True)
        buffer.storage[newest] = last  # in place: the length and the cursor stay


def flat_transitions(batch: TensorDictBase) -> TensorDictBase:
    """A collected round, ``[..., T]``, as ``[N]`` transitions holding only TRANSITION_KEYS."""
    return batch.select(*TRANSITION_KEYS).reshape(-1)


class CollectorStream(IterableDataset):
    """Yields collected rounds until ``remaining()`` env steps are left to collect.

    ``make`` builds the collector lazily, on first iteration, when the module is on its device.
    """

    def __init__(self, make: Callable[[], Collector], remaining: Callable[[], int]):
        super().__init__()
        self._make, self._remaining = make, remaining
        self.collector: Collector | None = None

    def __iter__(self) -> Iterator[TensorDictBase]:
        if self.collector is None:
            self.collector = self._make()
        for batch in self.collector:
            if self._remaining() <= 0:
                return
            yield flat_transitions(batch)

    def close(self) -> None:
        if self.collector is not None:
            self.collector.shutdown()
            self.collector = None
