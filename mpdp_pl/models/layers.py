"""Batched MLP: E independent networks evaluated as one op (``torch.baddbmm``), E x B x D shapes.

Used for the twin critics (E = 2), the multi-head actor (E = Hmax) and the dynamics ensemble
(E = K). Weights are stored as ``(E, in, out)``; each member is initialised like ``nn.Linear``.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class BatchedLinear(nn.Module):
    """``y[e] = x[e] @ W[e] + b[e]`` for e in 0..E-1. ``x``: ``[E, B, in]`` -> ``[E, B, out]``."""

    def __init__(self, members: int, in_features: int, out_features: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(members, in_features, out_features))
        self.bias = nn.Parameter(torch.empty(members, 1, out_features))
        bound = 1.0 / math.sqrt(in_features)  # nn.Linear's default init, per member
        nn.init.uniform_(self.weight, -bound, bound)
        nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: torch.Tensor, detach_params: bool = False,
                members: torch.Tensor | None = None) -> torch.Tensor:
        """``members``: evaluate only these members (x is then ``[len(members), B, in]``)."""
        w, b = (self.weight.detach(), self.bias.detach()) if detach_params else (self.weight, self.bias)
        if members is not None:
            w, b = w[members], b[members]
        return torch.baddbmm(b, x, w)

    def member(self, x: torch.Tensor, e: int, detach_params: bool = False) -> torch.Tensor:
        """Member ``e`` alone on ``x``: ``[B, in]`` -> ``[B, out]``."""
        w, b = self.weight[e], self.bias[e, 0]
        if detach_params:
            w, b = w.detach(), b.detach()
        return torch.addmm(b, x, w)


class BatchedMLP(nn.Module):
    """E MLPs ``in -> hidden... -> out`` with one activation, evaluated together.

    ``detach_params=True`` evaluates with detached weights: gradients still flow to the input but
    never reach these parameters (how the actor loss reads the critics without touching them).
    """

    def __init__(self, members: int, in_features: int, out_features: int,
                 hidden_sizes: list[int], activation: type[nn.Module] = nn.ReLU):
        super().__init__()
        sizes = [in_features, *hidden_sizes, out_features]
        self.members = members
        self.layers = nn.ModuleList(
            BatchedLinear(members, i, o) for i, o in zip(sizes[:-1], sizes[1:])
        )
        self.activation = activation()

    def forward(self, x: torch.Tensor, detach_params: bool = False,
                members: torch.Tensor | None = None) -> torch.Tensor:
        """``x``: ``[E, B, in]`` (or ``[B, in]``, shared by all members) -> ``[E, B, out]``.
        ``members`` restricts the evaluation to a subset (e.g. the elites): E = len(members)."""
        if x.dim() == 2:
            x = x.expand(self.members if members is None else len(members), *x.shape)
        for i, layer in enumerate(self.layers):
            x = layer(x, detach_params, members)
            if i < len(self.layers) - 1:
                x = self.activation(x)
        return x

    def member(self, x: torch.Tensor, e: int, detach_params: bool = False) -> torch.Tensor:
        """Member ``e`` alone: ``[B, in]`` -> ``[B, out]`` (e.g. pi_0 acting in the env)."""
        for i, layer in enumerate(self.layers):
            x = layer.member(x, e, detach_params)
            if i < len(self.layers) - 1:
                x = self.activation(x)
        return x
