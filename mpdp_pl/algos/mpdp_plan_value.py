"""MPDP on MPPVE's plan-value critic (``--algo mpdp_pv``): MPPVE's critic Q(s, a_0..a_{k-1}), its
real and model k-step segments and its update ratio, unchanged; the actor is MPDP's multi-head
pi_0..pi_{Hmax-1}, improved by the farsighted objective scored by that plan value
(:mod:`mpdp_pl.lookahead.plan_improvement`): model rewards minus beta * u for up to Hmax - k
steps, cut where u(s_t, a_t) >= u_T, then the plan value of the heads' next k actions.

Which head makes which action:

- actor objective: head t acts at unroll step t; the plan valued at the end point s_T is made by
  heads T..T+k-1;
- critic target (MPPVE's Eq. 51) and model segments: pi_0 at every step. The critic therefore
  values a plan followed by pi_0, the policy that acts in the environment;
- temperature: the log-probability of the heads' plan from s_0, sum_{m<k} log pi_m(a_m|s_m),
  against k times the target entropy (MPPVE's rule, with heads 0..k-1 in place of pi_0).

MPPVE is this algorithm with every part off (``improvement.single_policy=true improvement.horizon=<k> improvement.u_T=inf improvement.beta=0``:
one head, no reward steps, so no cut and no penalty). u_T and u_ref follow MPDP's holdout rule
(:func:`mpdp_pl.algos.mpdp.set_threshold`), and beta is relative to u_ref with
``improvement.beta_relative``.
"""

from __future__ import annotations

import torch

from ..lookahead.plan_improvement import PlanImprovement, plan_improvement
from .mpdp import cut_threshold, penalty_weight, register_threshold, set_threshold
from .mppve import MPPVE

IMPROVEMENT_KEYS = ("train/J", "train/J_reward", "train/J_entropy", "train/J_penalty",
                    "train/J_plan_value", "train/realized_horizon", "train/u_mean",
                    "model/u_T", "model/u_ref")


class MPDPPlanValue(MPPVE):
    metric_keys = (*MPPVE.metric_keys, *IMPROVEMENT_KEYS)

    def __init__(self, cfg: dict, spec):
        super().__init__(cfg, spec, actor_heads=1 if cfg["improvement"]["single_policy"] else cfg["improvement"]["horizon"])
        self.horizon = cfg["improvement"]["horizon"]
        register_threshold(self, cfg)

    def update(self, critic_updates: int, actor_updates: int) -> None:
        """One round, once base.py stored its env steps: the model training when due, then
        MPPVE's model segments and u_T and u_ref from u (Eq. 8) on the real transitions it was
        not fitted on; then, once a model has trained (as MPPVE), the plan-value critic updates
        (MPPVE's Eq. 50-51) and the actor updates (:meth:`improvement`)."""
        self.refresh_obs_norm()
        holdout = self.train_model()
        if holdout is not None:
            self.model_rollouts()
            set_threshold(self, holdout)
            self.warm_start_after_first_model()
        if self.model_ready:
            self.policy_updates(critic_updates, actor_updates)

    def improvement(self, obs: torch.Tensor) -> PlanImprovement:
        c = self.cfg
        result = plan_improvement(obs, self.actor, self.critic, self.dynamics, self.alpha,
                                  penalty_weight(c, self.u_ref), c["critic"]["gamma"],
                                  cut_threshold(self), self.horizon, self.k,
                                  grad_through_model=c["mppve"]["plan_grad_through_model"])
        means = {k: result.diagnostics[k] for k in ("realized_horizon", "u_mean")}
        self.record({f"train/{k}": v for k, v in result.diagnostics.items() if k not in means})
        self.record_mean({f"train/{k}": v for k, v in means.items()})
        return result
