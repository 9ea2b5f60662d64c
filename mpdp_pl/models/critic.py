"""Twin soft Q-functions Q_1, Q_2 with Polyak-averaged targets (SAC, Haarnoja et al. 2018;
the clipped double-Q of Fujimoto et al. 2018). Both critics are one :class:`BatchedMLP` (E = 2);
``critic.layernorm`` adds LayerNorm to their hidden layers (a stabilizer for critics trained on
model data, as in DHMBPO).

``critic.scale`` (DHMBPO's scaled and bounded critic, 4kubo/erl_lib ``agent/sac.py``
``update_critic_bound`` and ``pred_q_value``): the output is ``Q = out * q_width + q_center``
with ``q_center = (ub + lb) / 2`` and ``q_width = (ub - lb) / 2``, where ``[lb, ub]`` are the
running 1% and 99% quantiles of the soft reward ``r - alpha log pi`` divided by ``1 - critic.gamma``;
the last layer starts at zero (Q = q_center), and the target critics' Q is clipped to
``[lb, ub]``. A raw output in [-1, 1] then spans the returns the rewards allow, so regressing
onto targets of a few hundred takes tens of Adam steps instead of thousands.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from .layers import BatchedMLP
from .normalization import Normalizer

REWARD_QUANTILES = (0.01, 0.99)  # DHMBPO's reward_q_th_lb and 1 - reward_q_th_lb


class TwinQ(nn.Module):
    """``Q(s, a) -> [E, B]``: all critics at once (E = ``critic.count``, 2 by default)."""

    def __init__(self, obs_dim: int, action_dim: int, hidden_sizes: list[int], num_critics: int = 2,
                 layer_norm: bool = False, scaled: bool = False, obs_norm: bool = False,
                 activation: type[nn.Module] = nn.ReLU):
        super().__init__()
        self.net = BatchedMLP(num_critics, obs_dim + action_dim, 1, hidden_sizes,
                              activation=activation, layer_norm=layer_norm)
        self.obs_norm = Normalizer(obs_dim) if obs_norm else None
        self.scaled, self.clip_output = scaled, False  # make_target sets clip_output on the copy
        if scaled:
            last = self.net.layers[-1]
            with torch.no_grad():
                last.weight.zero_()
                last.bias.zero_()
            # [lb, ub] of Q; unset (0, 0) until the first update_bounds
            self.register_buffer("q_bounds", torch.zeros(2))
            self.register_buffer("bounds_set", torch.zeros((), dtype=torch.bool))
            # on the critic's device, so that update_bounds copies nothing from the host
            self.register_buffer("reward_q", torch.tensor(REWARD_QUANTILES), persistent=False)

    def forward(self, obs: torch.Tensor, action: torch.Tensor,
                detach_params: bool = False) -> torch.Tensor:
        if self.obs_norm is not None:
            obs = self.obs_norm(obs)
        q = self.net(torch.cat([obs, action], dim=-1), detach_params).squeeze(-1)
        if not self.scaled:
            return q
        lb, ub = self.q_bounds[0], self.q_bounds[1]
        q = q * (ub - lb) * 0.5 + (ub + lb) * 0.5
        return torch.minimum(torch.maximum(q, lb), ub) if self.clip_output else q

    @torch.no_grad()
    def update_bounds(self, soft_reward: torch.Tensor, gamma: float, rate: float) -> None:
        """``[lb, ub] <- lerp([lb, ub], quantiles(soft_reward) / (1 - gamma), rate)``; the
        first call sets them (DHMBPO: the rate is the critic's learning rate). No host sync."""
        q = torch.quantile(soft_reward.detach().float().flatten(), self.reward_q.float()) / (1.0 - gamma)
        self.q_bounds.copy_(torch.where(self.bounds_set, self.q_bounds.lerp(q, rate), q))
        self.bounds_set.fill_(True)


def redq_min(q: torch.Tensor, pair: torch.Tensor | None = None) -> torch.Tensor:
    """``[E, B] -> [B]``: the min over the critics, over a random pair of them when E > 2 (REDQ,
    Chen et al. 2021; one pair for the whole batch, as erl_lib ``agent/sac.py`` ``_reduce``).
    ``pair``: the two indices instead of drawing them. With 2 critics no random number is drawn:
    the clipped double-Q of SAC."""
    if q.shape[0] > 2 or pair is not None:
        if pair is None:
            pair = torch.randperm(q.shape[0], device=q.device)[:2]
        q = q[pair]
    return q.min(0).values


def make_target(module: nn.Module) -> nn.Module:
    """A frozen copy of ``module``: no gradients, never handed to an optimizer."""
    target = copy.deepcopy(module)
    target.requires_grad_(False)
    if getattr(target, "scaled", False):
        target.clip_output = True  # critic_scale: the target critics' Q stays in [lb, ub]
    return target


@torch.no_grad()
def polyak_update(target: nn.Module, online: nn.Module, tau: float) -> None:
    """``theta_target <- tau * theta + (1 - tau) * theta_target``, in place, for every parameter;
    buffers (critic_scale's bounds, obs_norm's statistics) are copied: the targets use the
    online critics' current ones, as DHMBPO's do."""
    t_params = list(target.parameters())
    torch._foreach_lerp_(t_params, list(online.parameters()), tau)
    for t, o in zip(target.buffers(), online.buffers()):
        t.copy_(o)
