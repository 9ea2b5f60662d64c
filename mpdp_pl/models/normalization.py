"""Observation standardization for the actor and the critics (``networks.obs_norm``; DHMBPO's input
normalizer, 4kubo/erl_lib ``util/misc.py`` ``Normalizer`` with ``normalize_po_input``).

:class:`RunningMoments` pools the exact mean and variance of every real observation stored;
:class:`Normalizer` (also the ensemble's) is the input layer of each network, ``(obs - mean) /
std``, whose statistics
stay fixed between refreshes (DHMBPO refreshes them once per 1000-step iteration, before its
updates; here every ``model.train_freq`` env steps), so that a network is not trained against
inputs that move under it at every step. ``std = sqrt(max(var, eps^2))``, eps = 1e-4; the
output is not clipped.
"""

from __future__ import annotations

import torch
from torch import nn

from .ranks import ONE_PROCESS, Ranks

EPS = 1e-4


class RunningMoments(nn.Module):
    """Count, sum and sum of squares (float64) of every row passed to :meth:`update`."""

    def __init__(self, dim: int):
        super().__init__()
        self.register_buffer("count", torch.zeros((), dtype=torch.float64))
        self.register_buffer("sum", torch.zeros(dim, dtype=torch.float64))
        self.register_buffer("sumsq", torch.zeros(dim, dtype=torch.float64))

    @torch.no_grad()
    def update(self, x: torch.Tensor) -> None:
        x = x.reshape(-1, x.shape[-1]).to(torch.float64)
        self.count += x.shape[0]
        self.sum += x.sum(0)
        self.sumsq += x.pow(2).sum(0)

    @staticmethod
    def mean_std(count, total, sumsq) -> tuple[torch.Tensor, torch.Tensor]:
        """Pooled mean and std (var = E[x^2] - mean^2, floored at eps^2); 0 and 1 before any row."""
        n = count.clamp_min(1.0)
        mean = total / n
        var = (sumsq / n - mean.pow(2)).clamp_min(EPS ** 2)
        seen = count > 0
        return (torch.where(seen, mean, 0.0).float(),
                torch.where(seen, var.sqrt(), 1.0).float())


class Normalizer(nn.Module):
    """``(x - mean) / std`` with statistics fitted to data (:meth:`fit`; the ensemble's inputs and
    targets, std of constant dims set to 1) or given (:meth:`set`; obs_norm's input layer of the
    actor and the critics). Identity until then."""

    def __init__(self, dim: int):
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))

    @torch.no_grad()
    def fit(self, x: torch.Tensor, ranks: Ranks = ONE_PROCESS) -> None:
        """Mean and unbiased std of ``x``; under DDP (``ranks``) of every rank's ``x`` together
        (each rank holds as many rows), so that every rank gets the same statistics."""
        if ranks.world == 1:
            mean, std = x.mean(0), x.std(0)
        else:
            mean = ranks.mean(x.mean(0))
            n = x.shape[0] * ranks.world
            std = (ranks.mean((x - mean).pow(2).mean(0)) * n / max(n - 1, 1)).sqrt()
        self.mean.copy_(mean)
        self.std.copy_(torch.where(std < 1e-6, torch.ones_like(std), std))

    @torch.no_grad()
    def set(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        self.mean.copy_(mean)
        self.std.copy_(std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        return y * self.std + self.mean
