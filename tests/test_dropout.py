"""The model's dropout (:func:`mpdp_pl.models.layers.dropout`), which on a CPU draws the dropped
positions as Geometric gaps, against the Bernoulli process it must equal: each element dropped
with probability p, independently, the rest scaled by 1 / (1 - p); its gradient is the same
mask."""

from __future__ import annotations

import math

import pytest
import torch

from mpdp_pl.models.layers import dropout

SHAPE = (8, 2048, 256)  # DHMBPO's model: 8 members, batch 2048, 256 units


def check_bernoulli(y: torch.Tensor, p: float) -> None:
    """``y`` = dropout of ones: its values, its count of drops, their spread over blocks and their
    independence at lag 1 against Bernoulli(p) theory (bounds of 6 standard deviations)."""
    scale = 1.0 / (1.0 - p)
    dropped = y.flatten() == 0
    assert torch.all(dropped | (y.flatten() == torch.tensor(scale, dtype=y.dtype)))
    n = dropped.numel()
    count = dropped.sum().item()
    assert abs(count - n * p) < 6 * math.sqrt(n * p * (1 - p)), (count, n * p)
    blocks = dropped.view(-1, 1024).sum(1).double()  # Binomial(1024, p) each, independent
    ratio = blocks.var().item() / (1024 * p * (1 - p))
    assert abs(ratio - 1) < 6 * math.sqrt(2 / (blocks.numel() - 1)), ratio
    pairs = (dropped[1:] & dropped[:-1]).sum().item()  # adjacent drops: (n - 1) p^2 expected
    expected = (n - 1) * p * p
    assert abs(pairs - expected) < 6 * math.sqrt(expected) + 1, (pairs, expected)


@pytest.mark.parametrize("p", [0.0075, 0.005, 0.0025, 0.05])
def test_the_drops_are_a_bernoulli_process(p):
    torch.manual_seed(0)
    check_bernoulli(dropout(torch.ones(SHAPE), p, True), p)


def test_gaps_drawn_one_at_a_time_continue_the_same_process():
    """One gap per chunk: every drop continues from the last position (an extra step at a chunk's
    boundary would leave no two drops adjacent)."""
    torch.manual_seed(1)
    check_bernoulli(dropout(torch.ones(64, 1024), 0.05, True, chunk=1), 0.05)


@pytest.mark.parametrize("chunk", [None, 1])
def test_every_position_the_first_included_is_dropped_with_probability_p(chunk):
    torch.manual_seed(4)
    p, calls = 0.09, 6000
    drops = sum((dropout(torch.ones(5), p, True, chunk=chunk) == 0).double() for _ in range(calls))
    assert torch.all((drops / calls - p).abs() < 6 * math.sqrt(p * (1 - p) / calls)), drops / calls


def test_the_gradient_is_the_same_mask_and_off_means_the_identity():
    torch.manual_seed(2)
    x = torch.randn(4, 512, 64, requires_grad=True)
    g = torch.randn_like(x)
    y = dropout(x, 0.01, True)
    (y * g).sum().backward()
    scale = torch.tensor(1 / 0.99)  # float32, as the kept elements' factor
    mask = torch.where(y != 0, scale, 0.0).detach()
    assert 0 < (mask == 0).sum() < 0.02 * x.numel()
    assert torch.equal(y, x * mask) and torch.equal(x.grad, g * mask)
    assert dropout(x, 0.01, False) is x and dropout(x, 0.0, True) is x


def test_the_same_seed_drops_the_same_elements():
    torch.manual_seed(3)
    a = dropout(torch.ones(SHAPE), 0.005, True)
    torch.manual_seed(3)
    assert torch.equal(a, dropout(torch.ones(SHAPE), 0.005, True))
