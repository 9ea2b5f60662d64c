"""M2AC (Pan et al., NeurIPS 2020, "Trust the Model When It Is Confident: Masked Model-based
Actor-Critic"): MBPO whose model rollouts keep only the transitions the ensemble agrees on.

No official code is public; this follows the reimplementation in
Data-Science-in-Mechanical-Engineering/macura (``mbrl/algorithms/m2ac.py``,
``rollout_model_and_populate_sac_buffer``):

- after every model training, ``rollouts.batch_size`` real states start rollouts of pi_0's
  sampled actions of ``m2ac.horizon`` (H) model steps, each row served by a random elite;
- at step h (0-based) the uncertainty of row b is u_b = KL(N_m || N_-m), the serving member m's
  Gaussian over (s', r) against the moment-matched Gaussian of the other elites: MPDP's Eq. (8)
  before its sum over members (:func:`~mpdp_pl.models.ovr.ovr_member_kl`);
- of the N rows, only the floor(N w_h) of lowest u are stored, w_h = (H - h) / (2 (H + 1))
  (``m2ac.keep_h1`` when H = 1), and never a row that a predicted terminal already ended; every
  row goes on stepping, stored or not;
- the stored reward is r - ``m2ac.penalty`` * u.

The model buffer (MBPO's pool size with rollout length H), the real/model mix and SAC's updates
are MBPO's (:mod:`mpdp_pl.algos.model_data`).
"""

from __future__ import annotations

from typing import Callable

import torch
from tensordict import TensorDict

from ..models.dynamics import DynamicsModel
from .mbpo import MBPO


def keep_fraction(h: int, horizon: int, keep_h1: float) -> float:
    """w_h: the share of the N rollouts stored at step h (macura's ``get_masking_rate``)."""
    return keep_h1 if horizon == 1 else (horizon - h) / (2 * (horizon + 1))


@torch.no_grad()
def masked_rollout(dynamics: DynamicsModel, act: Callable[[torch.Tensor], torch.Tensor],
                   start_obs: torch.Tensor, horizon: int, penalty: float, keep_h1: float,
                   trace: list | None = None) -> TensorDict:
    """M2AC's rollouts from ``start_obs`` ``[N, obs_dim]``: the stored transitions, with the
    penalized reward, as a flat TensorDict of the replay buffer's keys. ``trace`` (tests)
    receives ``(obs, action, ModelStep, stored mask)`` per step."""
    n = start_obs.shape[0]
    obs, ended, parts = start_obs, torch.zeros(n, dtype=torch.bool, device=start_obs.device), []
    for h in range(horizon):
        action = act(obs)
        st = dynamics.step(obs, action)
        certain = torch.zeros(n, dtype=torch.bool, device=obs.device)
        certain[torch.argsort(st.u_member)[: int(n * keep_fraction(h, horizon, keep_h1))]] = True
        stored = certain & ~ended
        if trace is not None:
            trace.append((obs, action, st, stored))
        term = st.terminated.unsqueeze(-1)
        parts.append(TensorDict({
            "observation": obs, "action": action,
            "next": {"observation": st.next_obs,
                     "reward": (st.reward - penalty * st.u_member).unsqueeze(-1),
                     "terminated": term, "truncated": torch.zeros_like(term), "done": term},
        }, batch_size=[n])[stored])
        obs, ended = st.next_obs, ended | st.terminated
    return torch.cat(parts) if parts else TensorDict({}, batch_size=[0])


class M2AC(MBPO):
    def model_rollouts(self) -> None:
        """After a model training: masked rollouts (:func:`masked_rollout`)."""
        c = self.cfg
        start = self.replay_buffer.sample(c["rollouts"]["batch_size"])["observation"].to(self.device)
        rows = masked_rollout(self.dynamics, lambda s: self.actor.sample(s)[0], start,
                              c["m2ac"]["horizon"], c["m2ac"]["penalty"], c["m2ac"]["keep_h1"])
        self.model_data.refill(rows, c["m2ac"]["horizon"])
