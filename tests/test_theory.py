"""MPDP's theory (Lemma 1, Lemma 2, Theorem 1, Theorem 2) on random finite MDPs with exact
dynamics and beta = 0, for the H-step distillation as printed (Eq. 6 with gamma^H V_old, as the
proofs need) and for this project's cut variant (Q_k <- Q_old on pairs the model distrusts).

Exact planner, the reference these tests hold the theory against: V_old = (I - gamma P^pi)^{-1} r^pi; W_0 = V_old;
Q_k = r + gamma P W_{k-1} (Q_old on cut pairs), W_k = alpha logsumexp(Q_k / alpha),
pi*_k = exp((Q_k - W_k) / alpha); pi_new = pi*_H and J^H = W_H.
"""

from __future__ import annotations

import numpy as np
import pytest

TOL = 1e-9


def logsumexp(x, axis):
    m = x.max(axis=axis, keepdims=True)
    return (m + np.log(np.exp(x - m).sum(axis=axis, keepdims=True))).squeeze(axis)


def random_mdp(seed, n_s=6, n_a=3):
    rng = np.random.default_rng(seed)
    p = rng.dirichlet(np.full(n_s, 0.5), size=(n_s, n_a))          # [S, A, S]
    r = rng.normal(size=(n_s, n_a))
    pi = rng.dirichlet(np.ones(n_a), size=n_s)                       # [S, A]
    gamma = rng.uniform(0.5, 0.95)
    alpha = rng.uniform(0.05, 1.0)
    cut = rng.random((n_s, n_a)) < 0.3
    return p, r, pi, gamma, alpha, cut


def evaluate(p, r, pi, gamma, alpha):
    """Exact soft value of pi: (I - gamma P^pi)^{-1} r^pi."""
    r_pi = (pi * (r - alpha * np.log(pi))).sum(1)
    p_pi = np.einsum("sa,sat->st", pi, p)
    return np.linalg.solve(np.eye(len(r)) - gamma * p_pi, r_pi)


def plan(p, r, v_old, gamma, alpha, horizon, cut=None):
    """W_0..W_H and pi_new = pi*_H."""
    q_old = r + gamma * p @ v_old
    ws, q = [v_old], None
    for _ in range(horizon):
        q = r + gamma * p @ ws[-1]
        if cut is not None:
            q = np.where(cut, q_old, q)
        ws.append(alpha * logsumexp(q / alpha, axis=1))
    return ws, np.exp((q - ws[-1][:, None]) / alpha)


def optimal(p, r, gamma, alpha, iters=5000):
    v = np.zeros(len(r))
    for _ in range(iters):
        v = alpha * logsumexp((r + gamma * p @ v) / alpha, axis=1)
    return v


CASES = [(seed, h, variant) for seed in range(40) for h in (1, 2, 5) for variant in ("printed", "cut")]


@pytest.mark.parametrize("seed,horizon,variant", CASES)
def test_lemma1_lemma2_theorem2(seed, horizon, variant):
    p, r, pi, gamma, alpha, cut = random_mdp(seed)
    cut = cut if variant == "cut" else None
    v_old = evaluate(p, r, pi, gamma, alpha)
    ws, pi_new = plan(p, r, v_old, gamma, alpha, horizon, cut)
    v_new = evaluate(p, r, pi_new, gamma, alpha)
    # Lemma 1: V^{pi_new} >= W_H >= ... >= W_0 = V^{pi_old}
    assert (v_new >= ws[-1] - TOL).all()
    for lo, hi in zip(ws[:-1], ws[1:]):
        assert (hi >= lo - TOL).all()
    # Lemma 2: W_{H+1} >= W_H (one more planning step never lowers the objective)
    ws_more, _ = plan(p, r, v_old, gamma, alpha, horizon + 1, cut)
    assert (ws_more[-1] >= ws[-1] - TOL).all()
    # Theorem 2 (with gamma^H ||V* - V_old||, the corrected bound): only for the uncut planner
    v_star = optimal(p, r, gamma, alpha)
    assert (v_star >= v_new - 1e-7).all()
    if cut is None:
        assert (ws[-1] >= v_star - gamma ** horizon * np.abs(v_star - v_old).max() - 1e-7).all()


@pytest.mark.parametrize("seed", range(10))
@pytest.mark.parametrize("horizon", [1, 3])
def test_theorem1_policy_iteration_with_h_step_improvement(seed, horizon):
    p, r, pi, gamma, alpha, _ = random_mdp(seed)
    v_star = optimal(p, r, gamma, alpha)
    v = evaluate(p, r, pi, gamma, alpha)
    for _ in range(60):
        _, pi = plan(p, r, v, gamma, alpha, horizon)
        v_next = evaluate(p, r, pi, gamma, alpha)
        assert (v_next >= v - TOL).all()                                   # never lowers V
        gap, gap_next = np.abs(v_star - v).max(), np.abs(v_star - v_next).max()
        assert gap_next <= gamma ** horizon * gap + 1e-9                   # contracts by gamma^H
        v = v_next
    q_star = r + gamma * p @ v_star
    np.testing.assert_allclose(pi, np.exp((q_star - v_star[:, None]) / alpha), atol=1e-6)
