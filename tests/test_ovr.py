"""OvR model error (Eq. 8) against a brute-force loop over members and closed forms."""

from __future__ import annotations

import pytest
import torch

from mpdp_pl.models.ovr import ovr_model_error


def kl_diag(m1, v1, m2, v2):
    """KL(N(m1, v1) || N(m2, v2)) for diagonal Gaussians, summed over the last dim, float64."""
    return 0.5 * (torch.log(v2 / v1) + (v1 + (m1 - m2) ** 2) / v2 - 1).sum(-1)


def brute_force(mean, var):
    """Loop over members i: moment-match the rest as a mixture of the others, then KL."""
    e = mean.shape[0]
    total = torch.zeros(mean.shape[1], dtype=torch.float64)
    for i in range(e):
        rest = [j for j in range(e) if j != i]
        m_rest = sum(mean[j].double() for j in rest) / len(rest)
        # variance of the equal-weight mixture of the others: E[var] + E[(mu - E mu)^2]
        v_rest = sum(var[j].double() + (mean[j].double() - m_rest) ** 2 for j in rest) / len(rest)
        total += kl_diag(mean[i].double(), var[i].double(), m_rest, v_rest)
    return total


@pytest.mark.parametrize("e", [2, 3, 5, 7])
def test_matches_brute_force(e):
    g = torch.Generator().manual_seed(e)
    mean = torch.randn(e, 64, 12, generator=g)
    var = torch.rand(e, 64, 12, generator=g) + 0.05
    torch.testing.assert_close(ovr_model_error(mean, var).double(), brute_force(mean, var),
                               rtol=1e-4, atol=1e-4)


def test_identical_members_give_zero():
    mean = torch.randn(1, 32, 6).expand(5, 32, 6)
    var = (torch.rand(1, 32, 6) + 0.1).expand(5, 32, 6)
    assert torch.allclose(ovr_model_error(mean, var), torch.zeros(32), atol=1e-6)


def test_two_members_give_symmetric_kl_sum():
    import math

    def kl(m1, v1, m2, v2):  # closed form, one dim
        return 0.5 * (math.log(v2 / v1) + (v1 + (m1 - m2) ** 2) / v2 - 1)

    # member 1: N([0, 1], diag[1, .5]); member 2: N([2, -1], diag[4, 2])
    expected = (kl(0, 1, 2, 4) + kl(1, .5, -1, 2)) + (kl(2, 4, 0, 1) + kl(-1, 2, 1, .5))
    mean = torch.tensor([[[0.0, 1.0]], [[2.0, -1.0]]])
    var = torch.tensor([[[1.0, 0.5]], [[4.0, 2.0]]])
    assert ovr_model_error(mean, var).item() == pytest.approx(expected, rel=1e-5)


def test_invariant_to_affine_rescaling_and_precise_at_large_offsets():
    g = torch.Generator().manual_seed(0)
    mean, var = torch.randn(5, 16, 4, generator=g), torch.rand(5, 16, 4, generator=g) + 0.1
    scale, shift = torch.tensor([10.0, 0.1, 3.0, 1.0]), torch.tensor([1e4, -5.0, 0.0, 2.0])
    u = ovr_model_error(mean, var)
    u_scaled = ovr_model_error(mean * scale + shift, var * scale**2)
    torch.testing.assert_close(u, u_scaled, rtol=1e-3, atol=1e-3)


def test_differentiable_and_nonnegative():
    mean = torch.randn(5, 8, 3, requires_grad=True)
    var = (torch.rand(5, 8, 3) + 0.1).requires_grad_()
    u = ovr_model_error(mean, var)
    assert (u >= 0).all()
    u.sum().backward()
    assert torch.isfinite(mean.grad).all() and mean.grad.abs().sum() > 0
