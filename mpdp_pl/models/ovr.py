"""One-vs-Rest model error u(s, a) of MPDP Eq. (8) (after M2AC, Pan et al. 2020).

    u(s, a) = sum_i KL( N(mu_i, S_i) || N(mu_-i, S_-i) )

over the (elite) members i, where the "rest" is the moment-matched Gaussian of the other members:
mu_-i = mean_{j != i} mu_j and S_-i = mean_{j != i} S_j + mean_{j != i} (mu_j - mu_-i)^2
(diagonal). The spread term is computed as a mean of squared deviations, not as
E[x^2] - E[x]^2, which loses everything to cancellation in float32. KL is summed over the output
dims and is invariant to a per-dim affine rescaling, so normalized units give the same u.
"""

from __future__ import annotations

import torch


def ovr_model_error(mean: torch.Tensor, var: torch.Tensor) -> torch.Tensor:
    """Eq. (8). ``mean``, ``var``: ``[E, B, D]`` member Gaussians (E >= 2) -> ``u``: ``[B]``, >= 0.

    Vectorized over members: the rest-of-i moments come from leave-one-out sums.
    Differentiable in ``mean`` and ``var`` (MPDP's beta * u regularizer steers actions with it).
    """
    return ovr_member_kl(mean, var).sum(0).clamp_min(0.0)


def ovr_member_kl(mean: torch.Tensor, var: torch.Tensor) -> torch.Tensor:
    """``KL(N(mu_i, S_i) || N(mu_-i, S_-i))`` of each member i, summed over the output dims:
    ``[E, B]`` (M2AC's uncertainty of the member that served a sample is its row)."""
    e = mean.shape[0]
    if e < 2:
        raise ValueError("the One-vs-Rest error needs at least two members")
    mean_rest = (mean.sum(0, keepdim=True) - mean) / (e - 1)                     # [E, B, D]
    var_rest = (var.sum(0, keepdim=True) - var) / (e - 1)
    # With d_j = mu_j - mean_j mu_j and S = sum_j d_j^2 (both centred, so no cancellation):
    # mean_{j != i} (mu_j - mu_-i)^2 = [S - E / (E - 1) d_i^2] / (E - 1), the leave-one-out
    # update of S; no [E, E, B, D] tensor of every pair.
    d = mean - mean.mean(0, keepdim=True)
    spread = (d.pow(2).sum(0, keepdim=True) - e / (e - 1) * d.pow(2)) / (e - 1)
    var_rest = var_rest + spread
    kl = 0.5 * (torch.log(var_rest / var) + (var + (mean - mean_rest).pow(2)) / var_rest - 1.0)
    return kl.sum(-1)
