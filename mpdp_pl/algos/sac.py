"""SAC (Haarnoja et al. 2018): MPDP without a model, i.e. the one-step improvement of Eq. (4).

Three optimizers, each stepped by its own block: the twin critics (Eq. 2-3, Polyak-averaged
targets), the actor pi_0 (Eq. 4) and the temperature alpha (auto-tuned to ``target_entropy``).
MPDP subclasses this and replaces :meth:`actor_step` with the farsighted improvement.
"""

from __future__ import annotations

import math

import torch
from tensordict import TensorDictBase
from torch import nn

from .. import losses
from ..models.actor import MultiHeadActor
from ..models.critic import TwinQ, make_target, polyak_update
from .base import OffPolicyModule


class SAC(OffPolicyModule):
    metric_keys = ("train/critic_loss", "train/q_mean", "train/target_max", "train/actor_loss",
                   "train/actor_grad_norm", "train/entropy", "train/alpha", "train/alpha_loss")
    def __init__(self, cfg: dict, spec, actor_heads: int = 1):
        super().__init__(cfg, spec)
        hidden = cfg["hidden_sizes"]
        self.actor = MultiHeadActor(spec.obs_dim, spec.action_dim, hidden, actor_heads,
                                    cfg["log_std_min"], cfg["log_std_max"])
        self.critic = TwinQ(spec.obs_dim, spec.action_dim, hidden,
                            layer_norm=cfg["critic_layernorm"])
        self.critic_target = make_target(self.critic)
        self.log_alpha = nn.Parameter(torch.tensor(math.log(cfg["init_alpha"])))
        te = cfg["target_entropy"]
        self.target_entropy = -float(spec.action_dim) if te == "auto" else float(te)

    @property
    def alpha(self) -> torch.Tensor:
        return self.log_alpha.exp()

    def configure_optimizers(self):
        c = self.cfg
        return [
            torch.optim.Adam(self.critic.parameters(), lr=c["critic_lr"]),
            torch.optim.Adam(self.actor.parameters(), lr=c["actor_lr"]),
            torch.optim.Adam([self.log_alpha], lr=c["alpha_lr"]),
        ]

    # ------------------------------------------------------------------ losses
    def critic_loss(self, batch: TensorDictBase) -> tuple[torch.Tensor, torch.Tensor]:
        """Eq. (2)-(3): twin-critic regression on the soft TD target of the target critics."""
        obs, action = batch["observation"], batch["action"]
        nxt = batch["next"]
        with torch.no_grad():
            next_action, next_log_prob = self.actor.sample(nxt["observation"])
            next_q = self.critic_target(nxt["observation"], next_action)
            target = losses.soft_td_target(
                nxt["reward"].squeeze(-1), nxt["terminated"].squeeze(-1), next_q,
                next_log_prob, self.alpha.detach(), self.cfg["gamma"],
            )
        q = self.critic(obs, action)
        self.record({"train/target_max": target.max()})
        return losses.critic_loss(q, target), q

    def actor_loss(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Eq. (4) for pi_0. The critics are read with detached parameters: the gradient reaches
        the action (and through it the actor) but never the critics."""
        action, log_prob = self.actor.sample(obs)
        q = self.critic(obs, action, detach_params=True)
        return losses.actor_loss(q, log_prob, self.alpha), log_prob

    @torch.no_grad()
    def q_value(self, obs: torch.Tensor) -> torch.Tensor:
        obs = obs.to(self.device, torch.float32)
        return self.critic(obs, self.actor.deterministic(obs)).min(0).values

    # ------------------------------------------------------------------ optimizer steps
    def fault_parts(self) -> dict:
        return {"critic": [self.critic, self.critic_target], "actor": [self.actor],
                "alpha": [self.log_alpha]}

    def critic_step(self) -> None:
        loss, q = self.critic_loss(self.sample_batch())
        self.guard.step(self, "critic", self.optimizers()[0], loss, self.critic.parameters())
        polyak_update(self.critic_target, self.critic, self.cfg["tau"])
        self.record({"train/critic_loss": loss, "train/q_mean": q.mean()})

    def actor_states(self) -> torch.Tensor:
        """The states the actor is improved at (SAC and MBPO: those of an update batch)."""
        return self.sample_batch()["observation"]

    def actor_grad_clip(self) -> float | None:
        """Max norm of the actor's gradient (SAC: none; MPDP and MPPVE: ``actor_grad_clip``)."""
        return None

    def actor_step(self) -> None:
        loss, log_prob = self.actor_loss(self.actor_states())
        norm = self.guard.step(self, "actor", self.optimizers()[1], loss, self.actor.parameters(),
                               self.actor_grad_clip())
        self.temperature_step(log_prob)
        self.record({"train/actor_loss": loss, "train/actor_grad_norm": norm})

    def temperature_step(self, log_prob: torch.Tensor) -> None:
        """alpha from pi_0's log-probabilities at real states only."""
        loss = losses.alpha_loss(self.log_alpha, log_prob, self.target_entropy)
        self.guard.step(self, "alpha", self.optimizers()[2], loss, [self.log_alpha])
        self.record({"train/alpha_loss": loss, "train/alpha": self.alpha,
                     "train/entropy": -log_prob.mean()})

    def update(self, critic_updates: int, actor_updates: int) -> None:
        for _ in range(critic_updates):
            self.critic_step()
        for _ in range(actor_updates):
            self.actor_step()
        self.updates += critic_updates
