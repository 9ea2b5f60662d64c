"""Start states from model rollouts (mpdp_pl/lookahead/start_states.py): the FIFO's ring order and the
rollout's terminal handling, checked by hand."""

from __future__ import annotations

import torch

from mpdp_pl.models.actor import MultiHeadActor
from mpdp_pl.models.dynamics import DynamicsModel
from mpdp_pl.lookahead.start_states import StartStateFIFO, distribution_rollout


def test_fifo_keeps_the_newest_states_in_ring_order():
    fifo = StartStateFIFO(5, 1, "cpu")
    fifo.add(torch.arange(3.0).unsqueeze(-1))
    assert fifo.size == 3
    fifo.add(torch.arange(3.0, 7.0).unsqueeze(-1))   # 7 states into 5 slots: 0 and 1 are gone
    assert fifo.size == 5
    assert sorted(fifo.states.squeeze(-1).tolist()) == [2.0, 3.0, 4.0, 5.0, 6.0]
    fifo.add(torch.arange(10.0, 22.0).unsqueeze(-1))  # more than the capacity at once
    assert sorted(fifo.states.squeeze(-1).tolist()) == [17.0, 18.0, 19.0, 20.0, 21.0]
    drawn = fifo.sample(200).squeeze(-1)
    assert set(drawn.tolist()) == {17.0, 18.0, 19.0, 20.0, 21.0}


def test_rollout_states_stop_at_predicted_terminals():
    torch.manual_seed(0)
    model = DynamicsModel(3, 2, members=4, num_elites=2, hidden=8, layers=2,
                          termination_fn=lambda s: s[..., 0] > 0.5)
    with torch.no_grad():
        for p in model.ensemble.parameters():
            p.mul_(3.0)
    actor = MultiHeadActor(3, 2, [8], 2)
    start = torch.randn(64, 3) * 0.2
    states = distribution_rollout(model, actor, start, 6).view(7, 64, 3)
    assert torch.equal(states[0], start)
    # once a state's successor is terminal the sample repeats it, so no stored state is terminal
    # past the start, and a repeated state is never followed by a different one
    terminal = states[1:, :, 0] > 0.5
    assert not terminal.any()
    repeated = (states[1:] == states[:-1]).all(-1)         # [6, 64]
    assert repeated.any() and not repeated.all()
    for b in range(64):
        first = repeated[:, b].nonzero()
        if len(first):
            assert repeated[first[0, 0]:, b].all()


def test_a_restored_fifo_holds_and_samples_what_the_saved_one_would():
    """The checkpoint's FIFO (not yet full, and full after wrapping around) gives back its states
    and write position, and goes on exactly as the one never saved."""
    for added in (3, 7):
        fifo = StartStateFIFO(5, 2, "cpu")
        for i in range(added):
            fifo.add(torch.full((1, 2), float(i)))
        restored = StartStateFIFO.from_state(fifo.state(), 5, "cpu")
        assert (restored.size, restored.pos) == (fifo.size, fifo.pos) == (min(added, 5), added % 5)
        assert torch.equal(restored.states, fifo.states)
        for f in (fifo, restored):
            f.add(torch.full((2, 2), 9.0))
        torch.manual_seed(0)
        a = fifo.sample(16)
        torch.manual_seed(0)
        assert torch.equal(restored.sample(16), a)
