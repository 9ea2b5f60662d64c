"""MPPVE's k-step plan value (Lin et al., "Model-based Reinforcement Learning with Multi-step Plan
Value Estimation", Sec. 4.2 and Appendix C; seed ``004_d286448ff1efae77.txt``).

A plan tau^k = (a_0, ..., a_{k-1}) from s_t is made by the policy through the model (Eq. 1-4):
a_m ~ pi(.|s_m), s_{m+1} ~ p_theta(.|s_m, a_m). The plan value Q(s_t, tau^k) is a critic over
the state and the k concatenated actions. Its training data are k-step *segments*
(s_t, tau^k, r_t..r_{t+k-1}, s_{t+k}), cut from the real buffer or rolled out in the model, held
as TensorDicts with the keys

- ``observation`` [B, O]: s_t;  ``plan`` [B, k*A]: the actions, concatenated;
- ``reward`` [B, k]: r_t..r_{t+k-1};  ``alive`` [B, k]: reward m belongs to the episode of s_t
  (no episode end before step m);
- ``bootstrap`` [B]: the episode did not terminate inside the segment, so gamma^k V(s_{t+k})
  enters the target;  ``next_observation`` [B, O]: s_{t+k};
- ``valid`` [B]: the segment can be used (a real one cut short by a time limit before its last
  step cannot: its value beyond the cut is unknown and cannot be bootstrapped with a k-step plan).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from tensordict import TensorDict

from ..models.actor import MultiHeadActor
from ..models.dynamics import DynamicsModel
from .masks import none_before
from .unroll import Unroll


class Plan(NamedTuple):
    actions: torch.Tensor     # [B, k*A]: a_0..a_{k-1} concatenated, zero after a predicted terminal
    log_prob: torch.Tensor    # [B, k]: log pi(a_m | s_m), zero after a predicted terminal
    states: torch.Tensor      # [B, k+1, O]: s_0..s_k
    reward: torch.Tensor      # [B, k]: the model's r_0..r_{k-1}
    terminated: torch.Tensor  # [B, k]: the model predicts s_{m+1} terminal


def make_plan(obs: torch.Tensor, actor: MultiHeadActor, dynamics: DynamicsModel, k: int) -> Plan:
    """The k-step planning policy pi^k_{phi,theta} of Eq. (1)-(4), for the critics' targets
    (Eq. 51) and the model segments (Eq. 46-49), both without gradients; the actor's plans,
    differentiated as Eq. (18), are made by :mod:`~mpdp_pl.lookahead.plan_improvement`. Each
    step of each sample is served by a random elite (MBPO's rule), which alone is evaluated
    (:meth:`~mpdp_pl.models.dynamics.DynamicsModel.sample_step`). Actions and log-probabilities
    after a predicted terminal are zeroed, as in the official code: they cannot change the
    value, and real segments pad them the same way."""
    actions, log_probs, states, rewards, terms = [], [], [obs], [], []
    # the plan continues past a predicted terminal (freeze=False); its steps there are zeroed
    for st in Unroll(dynamics, obs, lambda t, s, pick: actor.sample(s), k, with_u=False,
                     detach_params=True, freeze=False):
        alive = st.alive.to(st.action.dtype)
        actions.append(st.action * alive.unsqueeze(-1))
        log_probs.append(st.log_prob * alive)
        rewards.append(st.model.reward)
        terms.append(st.model.terminated)
        states.append(st.model.next_obs)
    return Plan(torch.cat(actions, -1), torch.stack(log_probs, -1), torch.stack(states, 1),
                torch.stack(rewards, -1), torch.stack(terms, -1))


def plan_value_target(segment: TensorDict, next_q: torch.Tensor, next_log_prob: torch.Tensor,
                      alpha: torch.Tensor, gamma: float) -> torch.Tensor:
    """Eq. (51), the soft k-step TD target:

        y = sum_{m<k} gamma^m r_{t+m} + gamma^k [min_j Q'_j(s_{t+k}, tau') - alpha log pi^k(tau'|s_{t+k})]

    with tau' a fresh plan from s_{t+k} and log pi^k the sum of its k per-step log-probabilities
    (Appendix B, Eq. 32). Rewards after an episode end are dropped (``alive``), and the bootstrap
    only enters when the segment did not terminate. ``next_q``: [n_critics, B]; ``next_log_prob``:
    [B, k]."""
    reward, alive = segment["reward"], segment["alive"]
    k = reward.shape[-1]
    discount = gamma ** torch.arange(k, device=reward.device, dtype=reward.dtype)
    ret = (discount * reward * alive).sum(-1)
    next_v = next_q.min(dim=0).values - alpha * next_log_prob.sum(-1)
    return ret + gamma**k * segment["bootstrap"].to(ret.dtype) * next_v


def segment_masks(terminated: torch.Tensor, truncated: torch.Tensor):
    """``alive`` [B, k], ``bootstrap`` [B] and ``valid`` [B] of segments from their per-step
    ``terminated`` and ``truncated`` flags ([B, k]); see the module docstring."""
    done = terminated | truncated
    alive = none_before(done, -1)
    terminated_inside = (terminated & alive).any(-1)
    cut_by_time_limit = (truncated & ~terminated & alive)[:, :-1].any(-1)
    return alive, ~terminated_inside, ~cut_by_time_limit


def real_windows(buffer, n: int, length: int) -> TensorDict:
    """``n`` windows of ``length`` consecutive real transitions ([n, length]), uniform over the
    start positions that have ``length - 1`` newer transitions. The real buffer is written in
    collection order by one env, so consecutive slots are consecutive env steps (circularly,
    once it has wrapped)."""
    size, capacity = len(buffer), buffer.storage.max_size
    cursor = buffer.writer._cursor  # next write position
    device = buffer.storage._storage.device
    age = torch.randint(length - 1, size, (n,), device=device)  # newer transitions after the start
    start = (cursor - 1 - age) % capacity
    idx = (start.unsqueeze(-1) + torch.arange(length, device=device)) % capacity
    return buffer.storage.get(idx.reshape(-1)).reshape(n, length)


def segment(obs, actions, reward, alive, bootstrap, valid, next_obs) -> TensorDict:
    """A batch of segments with the keys of the module docstring; actions ``[B, k, A]`` are
    zeroed after an episode end and concatenated."""
    n = obs.shape[0]
    return TensorDict({
        "observation": obs, "plan": (actions * alive.unsqueeze(-1)).reshape(n, -1),
        "reward": reward, "alive": alive, "bootstrap": bootstrap, "valid": valid,
        "next_observation": next_obs,
    }, batch_size=[n])


def real_segments(buffer, n: int, k: int) -> TensorDict:
    """``n`` k-step segments of real transitions (Eq. 46's D_env part)."""
    data = real_windows(buffer, n, k)
    nxt = data["next"]
    alive, bootstrap, valid = segment_masks(nxt["terminated"].squeeze(-1),
                                            nxt["truncated"].squeeze(-1))
    return segment(data["observation"][:, 0], data["action"], nxt["reward"].squeeze(-1),
                   alive, bootstrap, valid, nxt["observation"][:, -1])


@torch.no_grad()
def model_segments(buffer, dynamics: DynamicsModel, actor: MultiHeadActor, n: int,
                   length: int, k: int) -> TensorDict:
    """Model data for the plan-value critic (Algorithm 1, lines 6-8), as the official code makes
    it: take ``n`` real windows of k - 1 transitions without an episode end, roll pi out for
    ``length`` model steps from the window's last next-state (random elite per step), and store
    the k-step segment that ends at each model step (the first ones start in the real prefix,
    whose actions are the stale behaviour actions: Q(s, tau) takes tau as input, so that is
    fine). A sample stops at a predicted terminal, which is therefore always the last step of
    its segment. (Dropping stopped samples syncs with the host: this runs once per model
    training, not per update.)"""
    if k > 1:
        prefix = real_windows(buffer, n, k - 1)
        nxt = prefix["next"]
        keep = ~nxt["done"].squeeze(-1).any(-1)
        prefix = prefix[keep]
        start = prefix["next", "observation"][:, -1]
    else:
        start = buffer.sample(n)["observation"]
    start = start.to(next(dynamics.parameters()).device)
    plan = make_plan(start, actor, dynamics, length)
    m = start.shape[0]
    act_dim = plan.actions.shape[-1] // length
    states, actions = plan.states, plan.actions.reshape(m, length, act_dim)
    rewards, terms = plan.reward, plan.terminated
    if k > 1:
        p = prefix.to(start.device)
        states = torch.cat([p["observation"], states], 1)
        actions = torch.cat([p["action"], actions], 1)
        rewards = torch.cat([p["next", "reward"].squeeze(-1), rewards], 1)
        terms = torch.cat([torch.zeros_like(rewards[:, : k - 1], dtype=torch.bool), terms], 1)
    ones = torch.ones(m, k, dtype=torch.bool, device=start.device)
    out = []
    for j in range(length):
        ended_before = terms[:, : j + k - 1].any(-1)
        seg = segment(states[:, j], actions[:, j:j + k], rewards[:, j:j + k], ones,
                      ~terms[:, j + k - 1], ones[:, 0], states[:, j + k])
        out.append(seg[~ended_before])
    return torch.cat(out)
