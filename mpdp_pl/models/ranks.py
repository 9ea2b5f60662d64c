"""What the models need from data-parallel training, handed to them by the runtime
(:func:`mpdp_pl.runtime.distributed.ranks`) so that no model imports the runtime: the number of
ranks, a mean over ranks and an in-place gradient average. :data:`ONE_PROCESS` (the default of
every function that takes one) is the single-process case: identity and nothing."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


def _nothing(params, loss=None):
    return loss


@dataclass(frozen=True)
class Ranks:
    world: int = 1
    mean: Callable[[torch.Tensor], torch.Tensor] = _identity  # the mean of a tensor over ranks
    average_gradients: Callable = _nothing  # (params, loss=None): gradients averaged in place


ONE_PROCESS = Ranks()
