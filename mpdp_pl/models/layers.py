"""Batched MLP: E independent networks evaluated as one op (``torch.baddbmm``), E x B x D shapes.

Used for the twin critics (E = 2), the multi-head actor (E = Hmax) and the dynamics ensemble
(E = K). Weights are stored as ``(E, in, out)``; each member is initialised like ``nn.Linear``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def dropout(x: torch.Tensor, p: float, training: bool, chunk: int | None = None) -> torch.Tensor:
    """Dropout: each element zeroed with probability ``p``, independently, the others scaled by
    1 / (1 - p); the identity unless ``training``. On a CPU, where drawing one uniform number per
    element is most of the cost (DHMBPO's model drops 0.25-0.75% of 4M activations per layer and
    step), the dropped positions are drawn directly: in a sequence of independent Bernoulli(p)
    trials the gaps between successes are independent Geometric(p), so about n p draws give the
    same distribution as n (:func:`torch.nn.functional.dropout`). On other devices, torch's own
    fused kernel. ``chunk``: gaps drawn at a time (default: enough for all but ~1e-15 of calls)."""
    if not training or p == 0.0:
        return x
    if x.device.type != "cpu" or p >= 0.1:
        return F.dropout(x, p, training=True)
    n = x.numel()
    chunk = chunk or int(n * p + 8.0 * math.sqrt(n * p) + 16)
    def gaps():
        return torch.empty(chunk, dtype=torch.float64, device=x.device).geometric_(p).cumsum(0)
    ends = [gaps() - 1]  # the first drop at G_1 - 1: position 0 with probability p
    while ends[-1][-1] < n:  # the next chunk of gaps goes on from the last position
        ends.append(ends[-1][-1] + gaps())
    pos = torch.cat(ends)
    keep = torch.full((n,), 1.0 / (1.0 - p), dtype=x.dtype, device=x.device)
    keep[pos[pos < n].long()] = 0.0
    return x * keep.view_as(x)


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
        if members is not None:  # index_select: the same copy as w[members], several times faster
            w, b = w.index_select(0, members), b.index_select(0, members)
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
    ``layer_norm`` normalizes the input of every linear layer but the first (LayerNorm without
    affine parameters, after the activation, as DHMBPO's critics and model): ``True`` with
    torch's eps 1e-5, or a list of one eps per normalized layer (DHMBPO's model: 1.0, 0.1, 0.01).
    ``dropout``: one rate per layer, applied to its output before the activation
    (:func:`dropout`), and only while ``dropout_active`` is set (the model's trainings set it;
    rollouts and holdout scores run without, as erl_lib's ``train()``/``eval()``).
    """

    def __init__(self, members: int, in_features: int, out_features: int,
                 hidden_sizes: list[int], activation: type[nn.Module] = nn.ReLU,
                 layer_norm: bool | list[float] = False, dropout: list[float] | None = None):
        super().__init__()
        sizes = [in_features, *hidden_sizes, out_features]
        n = len(sizes) - 1
        if layer_norm is True:
            layer_norm = [1e-5] * (n - 1)
        self.norm_eps = list(layer_norm) if layer_norm else []
        if self.norm_eps and len(self.norm_eps) != n - 1:
            raise ValueError(f"{len(self.norm_eps)} LayerNorm eps for {n - 1} normalized layers")
        self.dropout = list(dropout) if dropout else []
        if self.dropout and len(self.dropout) != n:
            raise ValueError(f"{len(self.dropout)} dropout rates for {n} layers")
        self.dropout_active = False
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
            x = self._between(i, layer(x, detach_params, members, params[i] if params is not None else None))
        return x

    def _between(self, i: int, x: torch.Tensor) -> torch.Tensor:
        """What follows linear layer i: dropout, then (hidden layers) the activation and the
        next layer's LayerNorm."""
        if self.dropout and self.dropout[i] > 0:
            x = dropout(x, self.dropout[i], self.dropout_active)
        if i == len(self.layers) - 1:
            return x
        x = self.activation(x)
        return F.layer_norm(x, x.shape[-1:], eps=self.norm_eps[i]) if self.norm_eps else x

    def member(self, x: torch.Tensor, e: int, detach_params: bool = False,
               params: list | None = None) -> torch.Tensor:
        """Member ``e`` alone: ``[B, in]`` -> ``[B, out]`` (e.g. pi_0 acting in the env);
        ``params``: member e's layers from :meth:`member_params`."""
        for i, layer in enumerate(self.layers):
            x = self._between(i, layer.member(x, e, detach_params,
                                              params[i] if params is not None else None))
        return x
