"""MPPVE (Lin et al., seed ``004_d286448ff1efae77.txt``, Algorithm 1 in its soft form, Appendix C):
MBPO's ensemble, rollouts and real/model mix, with the critic replaced by a k-step plan value
Q(s, a_1..a_k) and the actor improved through plans made in the model.

- Critic (Eq. 46-51): twin plan-value critics on k-step segments, ``rollouts.real_ratio`` real
  (:func:`~mpdp_pl.lookahead.plan_value.real_segments`) and the rest from the model buffer, which after
  every model training is refilled with :func:`~mpdp_pl.lookahead.plan_value.model_segments` rollouts of
  the rollout schedule's length and sized by MBPO's pool formula (shared with :class:`MBPO`).
- Actor (Eq. 52-54): at real states only, minimize alpha log pi^k(tau|s) - min_j Q_j(s, tau)
  with tau a reparameterized k-step plan through the model; gradient norm clipped at
  ``actor.grad_clip``.
- Temperature: the sum of the plan's k log-probabilities against k * ``temperature.target_entropy``.

pi (one head) acts in the environment one step at a time, as in the official code.
"""

from __future__ import annotations

import torch

from ..models.critic import TwinQ, make_target
from ..lookahead.plan_improvement import PlanImprovement, plan_improvement
from ..lookahead.plan_value import make_plan, model_segments, plan_value_target, real_segments
from .mbpo import MBPO
from .sac import ACTIVATIONS


class MPPVE(MBPO):
    metric_keys = (*MBPO.metric_keys, "train/valid_frac")

    def __init__(self, cfg: dict, spec, actor_heads: int = 1):
        super().__init__(cfg, spec, actor_heads=actor_heads)
        self.k = cfg["mppve"]["plan_length"]
        self.critic = TwinQ(spec.obs_dim, self.k * spec.action_dim, cfg["networks"]["hidden_sizes"],
                            layer_norm=cfg["critic"]["layernorm"],
                            activation=ACTIVATIONS[cfg["networks"]["activation"]])
        self.critic_target = make_target(self.critic)
        self.target_entropy *= self.k  # log pi^k sums k per-step log-probabilities

    def update(self, critic_updates: int, actor_updates: int) -> None:
        """MBPO's round, except that the policy updates wait for a model that trained: the
        critics' targets (Eq. 51) and the actor's plans (Eq. 53) run through it. The first
        training runs at the first round, so this waits only where it diverged or a stop cut it
        (it is tried again every round until it succeeds)."""
        self.refresh_obs_norm()
        if self.train_model() is not None:
            self.model_rollouts()
            self.warm_start_after_first_model()
        if self.model_ready:
            self.policy_updates(critic_updates, actor_updates)

    # ------------------------------------------------------------------ data
    def model_rollouts(self) -> None:
        """After a model training: k-step segments of pi's plans from real states (Eq. 46-49)."""
        length = self.model_data.rollout_length()
        self.model_data.refill(model_segments(self.replay_buffer, self.dynamics, self.actor,
                                              self.cfg["rollouts"]["batch_size"], length, self.k),
                               length)

    def sample_batch(self):
        """k-step segments: ``rollouts.real_ratio`` of the batch real, the rest from the model buffer."""
        n, data = self.cfg["data"]["batch_size"], self.model_data
        if data.empty():
            return real_segments(self.replay_buffer, n, self.k).to(self.device)
        real = real_segments(self.replay_buffer, data.real_batch, self.k)
        model = data.buffer.sample(n - data.real_batch)
        return torch.cat([real.to(self.device), model.select(*real.keys()).to(self.device)])

    def actor_states(self) -> torch.Tensor:
        """Real states only (the official code: the actor never sees model data)."""
        return self.replay_buffer.sample(self.cfg["data"]["batch_size"])["observation"].to(self.device)

    # ------------------------------------------------------------------ losses
    def critic_loss(self, batch):
        """Eq. (50)-(51): both critics regress on the soft k-step target; segments that cannot
        be used (``valid`` false) are masked out."""
        nxt = batch["next_observation"]
        with torch.no_grad():
            plan = make_plan(nxt, self.actor, self.dynamics, self.k)
            next_q = self.critic_target(nxt, plan.actions)
            target = plan_value_target(batch, next_q, plan.log_prob, self.alpha.detach(),
                                       self.cfg["critic"]["gamma"])
        q = self.critic(batch["observation"], batch["plan"])
        w = batch["valid"].to(q.dtype)
        loss = ((q - target).pow(2) * w).sum(-1).sum(0) / w.sum().clamp_min(1.0)
        self.record({"train/valid_frac": w.mean(),
                     "train/target_max": torch.where(w > 0, target, -torch.inf).max()})
        return loss, q

    def improvement(self, obs: torch.Tensor) -> PlanImprovement:
        """Eq. (53): J = min_j Q_j(s, tau) - alpha log pi^k(tau|s), tau ~ pi^k_{phi,theta}(s)
        reparameterized (Eq. 54): :func:`~mpdp_pl.lookahead.plan_improvement.plan_improvement`
        with one head, Hmax = k, no cut and no penalty. The critics' and the model's parameters
        are not differentiated."""
        return plan_improvement(obs, self.actor, self.critic, self.dynamics, self.alpha, 0.0,
                                self.cfg["critic"]["gamma"], None, self.k, self.k,
                                grad_through_model=self.cfg["mppve"]["plan_grad_through_model"])

    def actor_loss(self, obs: torch.Tensor):
        """-mean_B J; alpha's update sees the sum of the plan's k log-probabilities."""
        result = self.improvement(obs)
        return result.loss, result.log_prob

    def q_value(self, obs):
        """No eval/q_bias: MPPVE's critic values k-step plans, not actions."""
        return None

    def actor_grad_clip(self) -> float:
        return self.cfg["actor"]["grad_clip"]
