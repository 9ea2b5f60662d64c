"""Probabilistic dynamics ensemble p_1..p_K (PETS/MBPO style), shared by MPDP, MBPO and MPPVE.

Each member is a Gaussian MLP ``(s, a) -> N(mu, diag(sigma^2))`` over the normalized target
``(s' - s, r)``; all members run as one batched op (``[K, B, D]``). The wrapper
:class:`DynamicsModel` owns the input/target normalizers (statistics of the real buffer), the
elite set, and the termination rule (a known function of the next state, or a learned logit
head), so callers see plain states:

- :meth:`DynamicsModel.gaussians`: every member's Gaussian (normalized target units);
- :meth:`DynamicsModel.step`: one model step for a batch, each sample served by one elite member
  drawn at random, reparameterized (gradients reach ``s`` and ``a``), plus the OvR error ``u``
  (Eq. 8) of the elites at ``(s, a)``;
- :meth:`DynamicsModel.mean_prediction`: the elites' mean next state (for ``model/error``).
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from .layers import BatchedMLP
from .normalization import Normalizer
from .ovr import ovr_member_kl, ovr_model_error


NOISE_KINDS = ("input", "member")


class GaussianEnsemble(nn.Module):
    """K Gaussian MLPs with SiLU, ``[K, B, in] -> (mean, log_var)`` each ``[K, B, out]`` (plus an
    optional termination logit ``[K, B]``).

    ``noise="input"`` (PETS, MBPO): the log-variance is an output, soft-bounded between learned
    per-member ``min_log_var`` and ``max_log_var`` (Chua et al. 2018, Appendix A.1; the bounds'
    regularizer is in :func:`ensemble_nll`). ``noise="member"`` (DHMBPO, 4kubo/erl_lib
    ``gaussian_mlp.py`` ``_log_noise``): one learned noise level per member and output,
    ``log_var = 2 log_noise``, whatever the input. ``layer_norm`` and ``dropout``: see
    :class:`BatchedMLP` (DHMBPO's model: LayerNorm eps 1.0, 0.1, 0.01 before layers 2-4 and
    dropout 0.0075, 0.005, 0.0025, 0).
    """

    def __init__(self, members: int, in_dim: int, out_dim: int, hidden: int, layers: int,
                 termination_head: bool = False, noise: str = "input",
                 layer_norm: bool | list[float] = False, dropout: list[float] | None = None):
        super().__init__()
        if noise not in NOISE_KINDS:
            raise ValueError(f"noise={noise!r}: must be one of {NOISE_KINDS}")
        self.members, self.out_dim, self.termination_head = members, out_dim, termination_head
        self.noise = noise
        heads = out_dim * (2 if noise == "input" else 1)
        self.net = BatchedMLP(members, in_dim, heads + int(termination_head),
                              [hidden] * layers, activation=nn.SiLU, layer_norm=layer_norm,
                              dropout=dropout)
        if noise == "input":
            self.max_log_var = nn.Parameter(torch.full((members, 1, out_dim), 0.5))
            self.min_log_var = nn.Parameter(torch.full((members, 1, out_dim), -10.0))
        else:  # erl_lib starts it at zeros: unit noise in normalized target units
            self.log_noise = nn.Parameter(torch.zeros(members, 1, out_dim))

    def noise_params(self) -> list[nn.Parameter]:
        return [self.max_log_var, self.min_log_var] if self.noise == "input" else [self.log_noise]

    def params(self, members: torch.Tensor | None = None, detach: bool = False):
        """Everything :meth:`forward` reads, gathered at ``members`` once: pass it as
        ``params=`` to evaluate those members many times without gathering again."""
        extra = self.noise_params()
        if members is not None:
            extra = [p.index_select(0, members) for p in extra]
        if detach:
            extra = [p.detach() for p in extra]
        return self.net.params(members, detach), *extra

    def forward(self, x: torch.Tensor, detach_params: bool = False,
                members: torch.Tensor | None = None, params=None):
        """``members``: evaluate only these members (the elites), in their order. ``params``
        (from :meth:`params`) replaces ``detach_params`` and ``members``."""
        net_params, *extra = params if params is not None else self.params(members, detach_params)
        out = self.net(x, params=net_params)
        mean = out[..., : self.out_dim]
        if self.noise == "input":
            hi, lo = extra
            raw = out[..., self.out_dim: 2 * self.out_dim]
            log_var = hi - F.softplus(hi - raw)
            log_var = lo + F.softplus(log_var - lo)
        else:
            log_var = (2.0 * extra[0]).expand_as(mean)
        logit = out[..., -1] if self.termination_head else None
        return mean, log_var, logit


def ensemble_nll(mean: torch.Tensor, log_var: torch.Tensor, target: torch.Tensor,
                 ensemble: GaussianEnsemble, weight: torch.Tensor | None = None) -> torch.Tensor:
    """Gaussian NLL (up to constants) of each member's rows, **summed over members**.

    Without ``weight``: the mean over batch and dims per member, plus 0.01 * (sum max_log_var -
    sum min_log_var) to keep the bounds tight (MBPO; each member's rows are its bootstrap).
    With ``weight`` ``[K, B]`` (DHMBPO's fixed Exp(1) weights, erl_lib ``gaussian_mlp.py``
    ``nll_loss``, every member on the same rows): ``mean_b sum_k w_kb sum_d 1/2 [(mu - y)^2 /
    var + log var]``."""
    sq = (mean - target).pow(2) * torch.exp(-log_var) + log_var
    if weight is not None:
        return (0.5 * sq.sum(-1) * weight).sum(0).mean()
    nll = sq.mean(dim=(1, 2)).sum()
    if ensemble.noise != "input":
        return nll
    return nll + 0.01 * (ensemble.max_log_var.sum() - ensemble.min_log_var.sum())


def mixture_nll(mean: torch.Tensor, log_var: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-row NLL (up to a constant) of the whole ensemble's moment-matched Gaussian, ``[B]``:
    mean mu = mean_k mu_k, variance = var_k(mu_k) (unbiased) + exp(mean_k log var_k), summed
    over dims: 1/2 (y - mu)^2 / var + 1/2 log var (erl_lib ``gaussian_mlp.py`` ``eval_score``
    with ``moment_dist``; the score of DHMBPO's early stopping)."""
    mu = mean.mean(0)
    var = mean.var(0) + log_var.mean(0).exp()
    return (0.5 * (target - mu).pow(2) / var + 0.5 * var.log()).sum(-1)


class ModelStep(NamedTuple):
    """One model step for a batch of B samples (see :meth:`DynamicsModel.step`)."""

    next_obs: torch.Tensor    # [B, obs_dim]
    reward: torch.Tensor      # [B]
    terminated: torch.Tensor  # [B] bool
    u: torch.Tensor | None    # [B] OvR model error of the elites at (s, a), Eq. (8)
    member: torch.Tensor      # [B] index of the member that served each sample
    u_member: torch.Tensor | None = None  # [B] that member's One-vs-Rest KL (M2AC's uncertainty)


class DynamicsModel(nn.Module):
    """The ensemble plus what turns it into an environment model (see the module docstring)."""

    def __init__(self, obs_dim: int, action_dim: int, members: int = 7, num_elites: int = 5,
                 hidden: int = 200, layers: int = 4,
                 termination_fn: Callable[[torch.Tensor], torch.Tensor] | None = None,
                 noise: str = "input", layer_norm: bool | list[float] = False,
                 dropout: list[float] | None = None):
        super().__init__()
        self.obs_dim, self.action_dim = obs_dim, action_dim
        self.learned_termination = termination_fn is None
        self.termination_fn = termination_fn
        self.ensemble = GaussianEnsemble(members, obs_dim + action_dim, obs_dim + 1, hidden,
                                         layers, termination_head=self.learned_termination,
                                         noise=noise, layer_norm=layer_norm, dropout=dropout)
        # which target dims a sample adds noise to: all, or (noise="member", as erl_lib's
        # ``sample``) the state only, the reward being the serving member's mean
        mask = torch.ones(obs_dim + 1)
        if noise == "member":
            mask[-1] = 0.0
        self.register_buffer("noise_mask", mask, persistent=False)
        self.input_norm = Normalizer(obs_dim + action_dim)
        self.target_norm = Normalizer(obs_dim + 1)
        self.register_buffer("elites", torch.arange(num_elites))

    @property
    def members(self) -> int:
        return self.ensemble.members

    @staticmethod
    def targets(obs, next_obs, reward) -> torch.Tensor:
        """The regression target ``(s' - s, r)``, ``[B, obs_dim + 1]``."""
        return torch.cat([next_obs - obs, reward.unsqueeze(-1)], dim=-1)

    def forward_normalized(self, obs: torch.Tensor, action: torch.Tensor,
                           detach_params: bool = False, members: torch.Tensor | None = None,
                           params=None):
        """Members (all, or ``members``) on normalized inputs -> normalized
        ``(mean, log_var, logit)``. ``detach_params``: gradients reach ``obs`` and ``action``
        but not the ensemble. ``params``: from :meth:`elite_params`."""
        x = self.input_norm(torch.cat([obs, action], dim=-1))
        return self.ensemble(x, detach_params, members, params)

    def elite_params(self, detach: bool = False):
        """The elites' weights gathered once, for :meth:`step` ``params=`` (an H-step unroll
        then gathers them once instead of H times)."""
        return self.ensemble.params(self.elites, detach)

    def gaussians(self, obs: torch.Tensor, action: torch.Tensor):
        """Every member's Gaussian over the normalized target: ``(mean, var)``, ``[K, B, D]``."""
        mean, log_var, _ = self.forward_normalized(obs, action)
        return mean, log_var.exp()

    def step(self, obs: torch.Tensor, action: torch.Tensor,
             member: torch.Tensor | None = None, noise: torch.Tensor | None = None,
             detach_params: bool = False, params=None) -> ModelStep:
        """Sample ``(s', r)`` for each sample from one elite member (drawn uniformly unless
        ``member`` gives the indices, which must be elites), reparameterized:
        ``y = mu_m + sigma_m * noise``.

        Also returns the OvR error u(s, a) over the elites (Eq. 8) and the predicted termination
        (the task's rule on s', or the serving member's learned logit > 0). ``params``: the
        elites' weights from :meth:`elite_params` (then ``detach_params`` is theirs).
        """
        elites = self.elites
        # only the elites are evaluated: they serve every sample and define u
        mean, log_var, logit = self.forward_normalized(obs, action, detach_params, elites, params)
        batch = obs.shape[0]
        if member is None:
            pos = torch.randint(len(elites), (batch,), device=obs.device)
            member = elites[pos]
        else:  # position of each requested member among the elites
            pos = (member.unsqueeze(-1) == elites).float().argmax(-1)
        rows = torch.arange(batch, device=obs.device)
        mu, lv = mean[pos, rows], log_var[pos, rows]                            # [B, D]
        if noise is None:
            noise = torch.randn_like(mu)
        y = self.target_norm.inverse(mu + (0.5 * lv).exp() * noise * self.noise_mask)
        next_obs, reward = obs + y[:, :-1], y[:, -1]
        if self.learned_termination:
            terminated = logit[pos, rows] > 0
        else:
            terminated = self.termination_fn(next_obs)
        kl = ovr_member_kl(mean, log_var.exp())  # [E, B]
        return ModelStep(next_obs, reward, terminated, kl.sum(0).clamp_min(0.0), member,
                         kl[pos, rows])

    def sample_step(self, obs: torch.Tensor, action: torch.Tensor, detach_params: bool = False,
                    noise: torch.Tensor | None = None,
                    assignment: tuple[torch.Tensor, torch.Tensor] | None = None) -> ModelStep:
        """:meth:`step` without the OvR error, at the cost of one member per sample instead of
        every elite (MBPO's and MPPVE's rollouts need no u). A random permutation splits the
        batch into E groups of ceil(B/E) (padded with repeated samples whose outputs are
        dropped) and group g is served by elite (g + r) mod E, r uniform: every sample gets
        a uniformly random elite, as in mbrl-lib's ``random_model`` propagation, with static
        shapes (no host sync). ``noise``: [B, obs_dim + 1] in sample order; ``assignment``:
        ``(perm [B], r [1])`` instead of drawing them (tests share them across devices). ``u`` is
        None."""
        batch, e = obs.shape[0], len(self.elites)
        group = -(-batch // e)
        if assignment is None:
            assignment = (torch.randperm(batch, device=obs.device),
                          torch.randint(e, (1,), device=obs.device))
        perm, shift = assignment
        idx = perm.repeat(-(-e * group // max(batch, 1)))[: e * group].view(e, group)
        turn = (torch.arange(e, device=obs.device) + shift) % e
        served_by = self.elites[turn]                                      # elite of each group
        x = self.input_norm(torch.cat([obs, action], dim=-1))[idx]          # [E, G, in]
        mean, log_var, logit = self.ensemble(x, detach_params, served_by)
        inverse = torch.empty_like(perm)
        inverse[perm] = torch.arange(batch, device=obs.device)             # sample -> flat row
        mu = mean.flatten(0, 1)[inverse]
        lv = log_var.flatten(0, 1)[inverse]
        member = served_by.repeat_interleave(group)[inverse]
        if noise is None:
            noise = torch.randn_like(mu)
        y = self.target_norm.inverse(mu + (0.5 * lv).exp() * noise * self.noise_mask)
        next_obs, reward = obs + y[:, :-1], y[:, -1]
        if self.learned_termination:
            terminated = logit.flatten(0, 1)[inverse] > 0
        else:
            terminated = self.termination_fn(next_obs)
        return ModelStep(next_obs, reward, terminated, None, member)

    def grouped_step(self, obs: torch.Tensor, action: torch.Tensor,
                     noise: torch.Tensor | None = None) -> ModelStep:
        """One sampled model step for rows already grouped by member: ``obs`` ``[E, G, obs_dim]``
        and ``action`` ``[E, G, A]``, group e served by the e-th elite, in one batched forward
        (the fixed member of each particle in TS-infinity propagation, PETS). Returns
        ``next_obs`` ``[E, G, obs_dim]``, ``reward`` and ``terminated`` ``[E, G]``; u is None."""
        e, g, _ = obs.shape
        x = self.input_norm(torch.cat([obs, action], dim=-1))
        mean, log_var, logit = self.ensemble(x, members=self.elites)
        if noise is None:
            noise = torch.randn_like(mean)
        y = self.target_norm.inverse(mean + (0.5 * log_var).exp() * noise * self.noise_mask)
        next_obs, reward = obs + y[..., :-1], y[..., -1]
        if self.learned_termination:
            terminated = logit > 0
        else:
            terminated = self.termination_fn(next_obs.reshape(e * g, -1)).reshape(e, g)
        member = self.elites.unsqueeze(-1).expand(e, g)
        return ModelStep(next_obs, reward, terminated, None, member)

    def ovr_error(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """u(s, a) of Eq. (8) over the elites, ``[B]``."""
        mean, log_var, _ = self.forward_normalized(obs, action, members=self.elites)
        return ovr_model_error(mean, log_var.exp())

    def mean_step(self, obs: torch.Tensor, action: torch.Tensor) -> ModelStep:
        """The elites' average mean prediction as one deterministic step (PETS's and POPLIN's
        ``E`` propagation): ``(s', r)`` in env units, and the termination of s' (the task's rule,
        or the elites' mean learned logit > 0). u and member are None."""
        mean, _, logit = self.forward_normalized(obs, action, members=self.elites)
        y = self.target_norm.inverse(mean.mean(0))
        next_obs, reward = obs + y[:, :-1], y[:, -1]
        terminated = logit.mean(0) > 0 if self.learned_termination else self.termination_fn(next_obs)
        return ModelStep(next_obs, reward, terminated, None, None)

    @torch.no_grad()
    def mean_prediction(self, obs: torch.Tensor, action: torch.Tensor):
        """The elites' average mean prediction ``(s', r)`` in env units."""
        st = self.mean_step(obs, action)
        return st.next_obs, st.reward


@torch.no_grad()
def open_loop_error(dynamics: DynamicsModel, obs: torch.Tensor, action: torch.Tensor,
                    next_obs: torch.Tensor, k: int) -> torch.Tensor:
    """Mean ||s_hat_k - s_{i+k}||_2 of the elites' mean prediction run open loop for ``k`` steps
    on the real actions, from every row i of consecutive real transitions (``[N, ...]``, in the
    order they were collected) whose next k - 1 rows continue it (row j + 1 starts where row j
    ended, so episode ends and interleaved envs break a window). NaN if no window fits."""
    n = obs.shape[0] - k + 1
    if n <= 0:
        return obs.new_tensor(float("nan"))
    linked = (obs[1:] == next_obs[:-1]).all(-1)
    ok = torch.ones(n, dtype=torch.bool, device=obs.device)
    for j in range(k - 1):
        ok = ok & linked[j: j + n]
    s = obs[:n]
    for j in range(k):
        s, _ = dynamics.mean_prediction(s, action[j: j + n])
    err = (s - next_obs[k - 1: k - 1 + n]).norm(dim=-1)
    count = ok.sum()
    total = torch.where(ok, err, 0.0).sum()
    return torch.where(count > 0, total / count.clamp_min(1), torch.nan)
