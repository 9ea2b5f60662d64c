"""Replay-buffer checkpoints: a round trip restores the same transitions in the same slots and
the writer's cursor, and the files grow with the fill, not with the capacity."""

from __future__ import annotations

import torch
from tensordict import TensorDict

from mpdp_pl.environment.data import load_buffer, make_replay_buffer, newest_transitions, save_buffer


def transitions(first: int, n: int) -> TensorDict:
    obs = torch.arange(first, first + n, dtype=torch.float32).unsqueeze(-1).expand(n, 11)
    return TensorDict({"observation": obs.clone(), "action": torch.randn(n, 3),
                       "next": {"observation": obs + 1, "reward": torch.randn(n, 1),
                                "terminated": torch.zeros(n, 1, dtype=torch.bool)}},
                      batch_size=[n])


def test_round_trip_of_a_wrapped_buffer(tmp_path):
    buffer = make_replay_buffer(50, "cpu")
    for first in range(0, 130, 13):  # 130 writes into 50 slots: wrapped twice, cursor at 30
        buffer.extend(transitions(first, 13))
    save_buffer(buffer, tmp_path / "rb")
    restored = make_replay_buffer(50, "cpu")
    load_buffer(restored, tmp_path / "rb")
    assert len(restored) == 50 and restored.writer._cursor == buffer.writer._cursor == 30
    assert (restored.storage._storage == buffer.storage._storage).all()
    # both continue identically: the next writes land in the same slots
    more = transitions(1000, 7)
    buffer.extend(more.clone())
    restored.extend(more.clone())
    assert (restored.storage._storage == buffer.storage._storage).all()
    newest = newest_transitions(restored, 8)["observation"][:, 0].tolist()
    assert sorted(newest) == [129.0, *range(1000, 1007)]


def test_files_grow_with_the_fill_not_the_capacity(tmp_path):
    buffer = make_replay_buffer(10**6, "cpu")
    buffer.extend(transitions(0, 100))
    save_buffer(buffer, tmp_path / "rb")
    size = sum(p.stat().st_size for p in (tmp_path / "rb").rglob("*") if p.is_file())
    # 100 transitions of 11 + 3 + 11 + 1 floats and a flag: ~11 kB, not the 1M slots' ~110 MB
    assert size < 200_000, size
    restored = make_replay_buffer(10**6, "cpu")
    load_buffer(restored, tmp_path / "rb")
    assert len(restored) == 100
    assert torch.equal(restored[:]["observation"], buffer[:]["observation"])
