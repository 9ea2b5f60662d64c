"""Multi-head tanh-Gaussian actor pi_0..pi_{H-1} (MPDP Sec. 5.3; SAC's actor when H = 1).

Each head is a separate MLP ``obs -> (mean, log_std)``. The heads are stacked in one
:class:`BatchedMLP` rather than sharing a trunk, so that the imagined-state terms of later heads
cannot reshape pi_0 (docs/design.md). Actions are ``a = tanh(mean + std * eps)`` in the normalized box
[-1, 1]^d; the log-density is SAC's change of variables (Haarnoja et al. 2018, Appendix C, Eq. 21).
pi_0 acts in the environment and in evaluation.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .layers import BatchedMLP
from .normalization import Normalizer

_LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)
_LOG_2 = math.log(2.0)


def tanh_gaussian_sample(mean: torch.Tensor, log_std: torch.Tensor, eps: torch.Tensor):
    """Reparameterized sample ``a = tanh(mean + std * eps)`` and ``log pi(a)`` summed over dims.

    log pi(a) = log N(u; mean, std) - sum_i log(1 - tanh(u_i)^2), with the Jacobian term written
    as 2 (log 2 - u - softplus(-2u)) so it stays finite where tanh(u) rounds to +-1.
    Returns ``(action [..., A], log_prob [...])``.
    """
    u = mean + log_std.exp() * eps
    gauss = (-0.5 * eps.pow(2) - log_std - _LOG_SQRT_2PI).sum(-1)
    jacobian = (2.0 * (_LOG_2 - u - F.softplus(-2.0 * u))).sum(-1)
    return torch.tanh(u), gauss - jacobian


class MultiHeadActor(nn.Module):
    """pi_0..pi_{num_heads-1}, each ``obs [B, obs_dim] -> tanh-Gaussian over [-1, 1]^action_dim``.

    ``std="bounded"``: ``log_std`` is soft-bounded to ``[log_std_min, log_std_max]`` with a tanh
    (as CleanRL's SAC); ``std="softplus"``: ``std = softplus(out) + 1e-5`` (DHMBPO, erl_lib
    ``module/actor/diag_gaussian.py``).
    """

    def __init__(self, obs_dim: int, action_dim: int, hidden_sizes: list[int],
                 num_heads: int = 1, log_std_min: float = -5.0, log_std_max: float = 2.0,
                 obs_norm: bool = False, activation: type[nn.Module] = nn.ReLU,
                 std: str = "bounded"):
        super().__init__()
        self.num_heads, self.action_dim = num_heads, action_dim
        self.log_std_min, self.log_std_max = log_std_min, log_std_max
        self.std = std
        self.net = BatchedMLP(num_heads, obs_dim, 2 * action_dim, hidden_sizes, activation=activation)
        self.obs_norm = Normalizer(obs_dim) if obs_norm else None  # obs_norm (normalization.py)

    def head_params(self) -> list[list]:
        """Every head's layers as views, for :meth:`sample` ``params=``: an unroll that uses
        several heads then accumulates one gradient buffer per layer instead of one per head."""
        return self.net.member_params()

    def distribution(self, obs: torch.Tensor, head: int = 0, detach_params: bool = False,
                     params: list | None = None):
        """``(mean, log_std)`` of head ``head`` at ``obs`` (``[B, obs_dim]``), each ``[B, A]``."""
        if self.obs_norm is not None:
            obs = self.obs_norm(obs)
        mean, raw = self.net.member(obs, head, detach_params,
                                    params[head] if params is not None else None).chunk(2, dim=-1)
        if self.std == "softplus":
            return mean, (F.softplus(raw) + 1e-5).log()
        log_std = self.log_std_min + 0.5 * (self.log_std_max - self.log_std_min) * (
            torch.tanh(raw) + 1.0
        )
        return mean, log_std

    def sample(self, obs: torch.Tensor, head: int = 0, eps: torch.Tensor | None = None,
               detach_params: bool = False, params: list | None = None):
        """Reparameterized ``(action [B, A], log_prob [B])`` from pi_head; ``eps`` ~ N(0, I) is
        drawn here unless given (tests pass it to share noise with a hand computation);
        ``params``: from :meth:`head_params`."""
        mean, log_std = self.distribution(obs, head, detach_params, params)
        if eps is None:
            eps = torch.randn_like(mean)
        return tanh_gaussian_sample(mean, log_std, eps)

    def deterministic(self, obs: torch.Tensor, head: int = 0) -> torch.Tensor:
        """The mode-like action ``tanh(mean)`` used in evaluation."""
        return torch.tanh(self.distribution(obs, head)[0])


class ActorPolicy(nn.Module):
    """pi_0 as an ``observation -> action`` module for TorchRL collectors and evaluation."""

    def __init__(self, actor: MultiHeadActor, deterministic: bool):
        super().__init__()
        self.actor, self.is_deterministic = actor, deterministic

    def forward(self, observation: torch.Tensor) -> torch.Tensor:
        batch_shape = observation.shape[:-1]
        obs = observation.reshape(-1, observation.shape[-1])
        if self.is_deterministic:
            action = self.actor.deterministic(obs)
        else:
            action = self.actor.sample(obs)[0]
        return action.reshape(*batch_shape, action.shape[-1])


class DeterministicActor(nn.Module):
    """DDPG's actor mu(s) = tanh(MLP(s)) in [-1, 1]^action_dim (sfujim/TD3 ``OurDDPG.py``), with
    the interface the loop and the evaluation use: :meth:`deterministic` is mu, :meth:`sample`
    adds DDPG's Gaussian exploration noise N(0, ``noise``^2) and clips to [-1, 1] (actions are
    in the normalized box, so the noise is ``noise`` x max_action in the env's units)."""

    def __init__(self, obs_dim: int, action_dim: int, hidden_sizes: list[int], noise: float):
        super().__init__()
        self.net = BatchedMLP(1, obs_dim, action_dim, hidden_sizes)
        self.noise = noise

    def deterministic(self, obs: torch.Tensor, head: int = 0) -> torch.Tensor:
        return torch.tanh(self.net.member(obs, 0))

    def sample(self, obs: torch.Tensor, head: int = 0):
        """``(mu(s) + N(0, noise^2) clipped to [-1, 1], None)``: there is no log-probability."""
        mu = self.deterministic(obs)
        return (mu + self.noise * torch.randn_like(mu)).clamp(-1.0, 1.0), None


class ProposalPolicy(nn.Module):
    """POPLIN's policy network (Wang and Ba 2019; WilsonWangTHU/POPLIN ``dmbrl/misc/optimizers/
    policy_network``): whitened observation -> tanh hidden layers -> a linear output hard-clipped
    to [-1, 1]^action_dim. Deterministic: its exploration is the planner's noise.

    :meth:`with_weights` evaluates one flat weight vector per row (POPLIN-P's planner perturbs
    the weights, one candidate per row) in one batched forward."""

    def __init__(self, obs_dim: int, action_dim: int, hidden_sizes: list[int]):
        super().__init__()
        self.net = BatchedMLP(1, obs_dim, action_dim, hidden_sizes, activation=nn.Tanh)
        self.obs_norm = Normalizer(obs_dim)
        self.shapes = [(layer.weight.shape[1:], layer.bias.shape[1:]) for layer in self.net.layers]

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.net.member(self.obs_norm(obs), 0).clamp(-1.0, 1.0)

    def flat_weights(self) -> torch.Tensor:
        """Every weight and bias as one vector ``[W]`` (the layout :meth:`with_weights` reads)."""
        return torch.cat([p[0].flatten() for layer in self.net.layers
                          for p in (layer.weight, layer.bias)])

    @torch.no_grad()
    def set_flat_weights(self, flat: torch.Tensor) -> None:
        offset = 0
        for layer in self.net.layers:
            for p in (layer.weight, layer.bias):
                n = p[0].numel()
                p[0].copy_(flat[offset: offset + n].view_as(p[0]))
                offset += n

    def with_weights(self, flat: torch.Tensor, obs: torch.Tensor) -> torch.Tensor:
        """Row i's action under the weights ``flat[i]``: ``flat`` ``[C, W]``, ``obs`` ``[C, D]``
        -> ``[C, A]``."""
        params, offset = [], 0
        for w_shape, b_shape in self.shapes:
            nw, nb = w_shape.numel(), b_shape.numel()
            w = flat[:, offset: offset + nw].view(-1, *w_shape)
            b = flat[:, offset + nw: offset + nw + nb].view(-1, *b_shape)
            params.append((w, b))
            offset += nw + nb
        out = self.net(self.obs_norm(obs).unsqueeze(1), params=params)
        return out.squeeze(1).clamp(-1.0, 1.0)
