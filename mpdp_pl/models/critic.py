"""Twin soft Q-functions Q_1, Q_2 with Polyak-averaged targets (SAC, Haarnoja et al. 2018;
the clipped double-Q of Fujimoto et al. 2018). Both critics are one :class:`BatchedMLP` (E = 2);
``critic_layernorm`` adds LayerNorm to their hidden layers (a stabilizer for critics trained on
model data, as in DHMBPO).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from .layers import BatchedMLP


class TwinQ(nn.Module):
    """``Q(s, a) -> [2, B]``: both critics at once."""

    def __init__(self, obs_dim: int, action_dim: int, hidden_sizes: list[int], num_critics: int = 2,
                 layer_norm: bool = False):
        super().__init__()
        self.net = BatchedMLP(num_critics, obs_dim + action_dim, 1, hidden_sizes,
                              layer_norm=layer_norm)

    def forward(self, obs: torch.Tensor, action: torch.Tensor,
                detach_params: bool = False) -> torch.Tensor:
        return self.net(torch.cat([obs, action], dim=-1), detach_params).squeeze(-1)


def make_target(module: nn.Module) -> nn.Module:
    """A frozen copy of ``module``: no gradients, never handed to an optimizer."""
    target = copy.deepcopy(module)
    target.requires_grad_(False)
    return target


@torch.no_grad()
def polyak_update(target: nn.Module, online: nn.Module, tau: float) -> None:
    """``theta_target <- tau * theta + (1 - tau) * theta_target``, in place, for every parameter."""
    t_params = list(target.parameters())
    torch._foreach_lerp_(t_params, list(online.parameters()), tau)
