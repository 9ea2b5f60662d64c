"""Masks of "before the first event" along a time axis, shared by every sum that a cut, a
predicted terminal or an episode end stops: the model unrolls' objectives
(:mod:`~mpdp_pl.lookahead.svg`, :mod:`~mpdp_pl.lookahead.plan_improvement`) and the plan-value
critic's real segments (:mod:`~mpdp_pl.lookahead.plan_value`).

For boolean flags e_0..e_{n-1} along ``dim``:

    none_through(e)_t = not (e_0 or ... or e_t)        (the step of the first event excluded)
    none_before(e)_t  = not (e_0 or ... or e_{t-1})    (the step of the first event included)
"""

from __future__ import annotations

import torch


def none_through(flags: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """True at t where no flag is set at any step <= t along ``dim``."""
    return flags.cumsum(dim) == 0


def none_before(flags: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """True at t where no flag is set at any step < t along ``dim``."""
    return flags.cumsum(dim) - flags.long() == 0
