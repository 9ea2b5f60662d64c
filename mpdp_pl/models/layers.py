"""Batched MLP: E independent networks evaluated as one op (``torch.baddbmm``), E x B x D shapes.

Used for the twin critics (E = 2), the multi-head actor (E = Hmax) and the dynamics ensemble
(E = K). Weights are stored as ``(E, in, out)``; each member is initialised like ``nn.Linear``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
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

    def params(self, members: torch.Tensor | None = None, detach: bool = False):
        """``(weight, bias)``, optionally detached and gathered at ``members``."""
        w, b = (self.weight.detach(), self.bias.detach()) if detach else (self.weight, self.bias)
        if members is not None:
            w, b = w[members], b[members]
        return w, b

    def forward(self, x: torch.Tensor, detach_params: bool = False,
                members: torch.Tensor | None = None, params=None) -> torch.Tensor:
        """``members``: evaluate only these members (x is then ``[len(members), B, in]``).
        ``params``: ``(weight, bias)`` from :meth:`params`, gathered once for many calls."""
        w, b = params if params is not None else self.params(members, detach_params)
        return torch.baddbmm(b, x, w)

    def member_params(self, detach: bool = False) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Every member's ``(weight [in, out], bias [out])`` as views: one ``unbind`` per tensor,
        so that using several members costs one gradient buffer, not one per member."""
        w, b = self.params(detach=detach)
        return list(zip(w.unbind(0), b[:, 0].unbind(0)))

    def member(self, x: torch.Tensor, e: int, detach_params: bool = False, params=None) -> torch.Tensor:
        """Member ``e`` alone on ``x``: ``[B, in]`` -> ``[B, out]`` (``params``: member e's
        ``(weight, bias)`` from :meth:`member_params`)."""
        if params is None:
            w, b = self.weight[e], self.bias[e, 0]
            if detach_params:
                w, b = w.detach(), b.detach()
        else:
            w, b = params
        return torch.addmm(b, x, w)


class BatchedMLP(nn.Module):
    """E MLPs ``in -> hidden... -> out`` with one activation, evaluated together.

    ``detach_params=True`` evaluates with detached weights: gradients still flow to the input but
    never reach these parameters (how the actor loss reads the critics without touching them).
    ``layer_norm=True`` normalizes every hidden layer's activations (LayerNorm without affine
    parameters, before each linear layer but the first, as DHMBPO's critics).
    """

    def __init__(self, members: int, in_features: int, out_features: int,
                 hidden_sizes: list[int], activation: type[nn.Module] = nn.ReLU,
                 layer_norm: bool = False):
        super().__init__()
        self.layer_norm = layer_norm
        sizes = [in_features, *hidden_sizes, out_features]
        self.members = members
        self.layers = nn.ModuleList(
            BatchedLinear(members, i, o) for i, o in zip(sizes[:-1], sizes[1:])
        )
        self.activation = activation()

    def params(self, members: torch.Tensor | None = None, detach: bool = False) -> list:
        """Every layer's ``(weight, bias)``, gathered at ``members`` once (the farsighted unroll
        reuses the elites' weights at every step instead of gathering them per step)."""
        return [layer.params(members, detach) for layer in self.layers]

    def member_params(self, detach: bool = False) -> list[list]:
        """``[member][layer] -> (weight, bias)`` views (see :meth:`BatchedLinear.member_params`)."""
        per_layer = [layer.member_params(detach) for layer in self.layers]
        return [list(p) for p in zip(*per_layer)]

    def forward(self, x: torch.Tensor, detach_params: bool = False,
                members: torch.Tensor | None = None, params: list | None = None) -> torch.Tensor:
        """``x``: ``[E, B, in]`` (or ``[B, in]``, shared by all members) -> ``[E, B, out]``.
        ``members`` restricts the evaluation to a subset (e.g. the elites): E = len(members);
        ``params`` (from :meth:`params`) replaces ``detach_params`` and ``members``."""
        if x.dim() == 2:
            e = params[0][0].shape[0] if params is not None else (
                self.members if members is None else len(members))
            x = x.expand(e, *x.shape)
        for i, layer in enumerate(self.layers):
            x = layer(x, detach_params, members, params[i] if params is not None else None)
            if i < len(self.layers) - 1:
                x = self._hidden(x)
        return x

    def _hidden(self, x: torch.Tensor) -> torch.Tensor:
        x = self.activation(x)
        return F.layer_norm(x, x.shape[-1:]) if self.layer_norm else x

    def member(self, x: torch.Tensor, e: int, detach_params: bool = False,
               params: list | None = None) -> torch.Tensor:
        """Member ``e`` alone: ``[B, in]`` -> ``[B, out]`` (e.g. pi_0 acting in the env);
        ``params``: member e's layers from :meth:`member_params`."""
        for i, layer in enumerate(self.layers):
            x = layer.member(x, e, detach_params, params[i] if params is not None else None)
            if i < len(self.layers) - 1:
                x = self._hidden(x)
        return x
