"""MPDP's parts on DHMBPO's base (``--algo mpdp_dh``): DHMBPO unchanged (:mod:`.dhmbpo`: its
model, critics, bursts, start-state FIFO, and the critics' target from pi_0's H-step rollout),
with its actor's objective made MPDP's farsighted improvement (Algorithm 1, Eq. 9-10) by three
switches, each a delta on DHMBPO:

- heads (``improvement.single_policy=false``): pi_0..pi_{H-1}, head t acting at step t of the
  actor's rollout. The tail action a_H is pi_0's, since the critics value pi_0 (their target
  comes from pi_0's rollout). The critics' rollout stays pi_0's, so the actor gets a rollout
  of its own, from the same start states;
- the cut (``improvement.u_T``): a sample's sum stops at its first step t with
  u(s_t, a_t) >= u_T and ends with the critics' mean Q(s_t, a_t) - alpha log pi_t(a_t|s_t)
  (:func:`~mpdp_pl.lookahead.svg.farsighted_return`); u_T follows MPDP's holdout rule
  (:func:`~mpdp_pl.algos.mpdp.set_threshold`);
- the penalty (``improvement.beta``): beta * u_t subtracted from each counted reward, relative
  to u_ref with ``improvement.beta_relative``.

The critics' target carries none of them: it is DHMBPO's. Every part off
(``improvement.single_policy=true improvement.u_T=inf improvement.beta=0``) is DHMBPO to the bit:
one shared rollout and the same random draws. DHMBPO's hard terminal mask stays
(``improvement.terminal_critic=false``).
"""

from __future__ import annotations

import torch

from ..lookahead.svg import SVGRollout, farsighted_return, svg_rollout
from .dhmbpo import DHMBPO
from .mpdp import cut_threshold, penalty_weight, register_threshold, set_threshold

IMPROVEMENT_KEYS = ("train/J_penalty", "train/realized_horizon", "train/u_mean", "model/u_T", "model/u_ref")


class MPDPOnDHMBPO(DHMBPO):
    metric_keys = (*DHMBPO.metric_keys, *IMPROVEMENT_KEYS)

    def __init__(self, cfg: dict, spec):
        self.heads = not cfg["improvement"]["single_policy"]
        super().__init__(cfg, spec, actor_heads=cfg["improvement"]["horizon"] if self.heads else 1)
        self.horizon = cfg["improvement"]["horizon"]
        register_threshold(self, cfg)
        self.needs_u = cfg["improvement"]["beta"] != 0 or cfg["improvement"]["u_T"] != float("inf")

    def after_model_training(self, holdout) -> None:
        """u_ref (and with ``improvement.u_T=auto`` u_T) from u on the held-out real transitions."""
        set_threshold(self, holdout)
        super().after_model_training(holdout)

    def rollout(self, with_u: bool = False) -> SVGRollout:
        """The pair's rollout of pi_0. With one policy the actor shares it, and then it carries u
        where the cut or the penalty needs it; with heads it serves the critics only, without
        gradient."""
        if self.heads:
            with torch.no_grad():
                return super().rollout(with_u)
        return super().rollout(with_u or self.needs_u)

    def heads_rollout(self, obs: torch.Tensor) -> SVGRollout:
        """The actor's own rollout from ``obs``: head t at step t, pi_0 for the tail action."""
        params = self.actor.head_params()  # one gradient buffer per layer, not one per head
        act = lambda t, s: self.actor.sample(s, t if t < self.horizon else 0, params=params)  # noqa: E731
        return svg_rollout(self.dynamics, act, obs, self.horizon, self.needs_u)

    def actor_objective(self, rollout: SVGRollout) -> tuple[torch.Tensor, torch.Tensor]:
        """-mean J of :func:`~mpdp_pl.lookahead.svg.farsighted_return`, the critics' mean read
        with detached parameters where a sample can end (every step with a cut, else s_H)."""
        if self.heads:
            rollout = self.heads_rollout(rollout.obs[0])
        u_T = cut_threshold(self)
        if u_T is None:
            q = self.critic(rollout.last_obs, rollout.last_action, detach_params=True).mean(0)
            q = torch.cat([q.new_zeros(self.horizon, q.shape[0]), q.unsqueeze(0)])
        else:
            obs = torch.cat([*rollout.obs, rollout.last_obs])
            actions = torch.cat([*rollout.action, rollout.last_action])
            q = self.critic(obs, actions, detach_params=True).mean(0).view(self.horizon + 1, -1)
        beta = penalty_weight(self.cfg, self.u_ref)
        ret, counted = farsighted_return(rollout, q, self.alpha.detach(), self.cfg["critic"]["gamma"],
                                         beta, u_T)
        batch = ret.shape[0]
        diagnostics = {"train/realized_horizon": counted.sum() / batch}
        if rollout.u is not None:
            u = rollout.u.detach()
            diagnostics["train/u_mean"] = (u * counted).sum() / counted.sum().clamp_min(1.0)
            discount = self.cfg["critic"]["gamma"] ** torch.arange(self.horizon, dtype=u.dtype, device=u.device)
            self.record({"train/J_penalty": -(discount.unsqueeze(-1) * counted * beta * u).sum() / batch})
        self.record_mean(diagnostics)
        return -ret.mean(), rollout.log_prob[0]
