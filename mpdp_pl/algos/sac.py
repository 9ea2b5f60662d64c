"""SAC (Haarnoja et al. 2018): MPDP without a model, i.e. the one-step improvement of Eq. (4).

Three optimizers, each stepped by its own block: the twin critics (Eq. 2-3, Polyak-averaged
targets), the actor pi_0 (Eq. 4) and the temperature alpha (auto-tuned to ``temperature.target_entropy``).
MPDP subclasses this and replaces :meth:`SAC.actor_step` with the farsighted improvement.
"""

from __future__ import annotations

import math

import torch
from tensordict import TensorDictBase
from torch import nn

from . import losses
from ..runtime.distributed import mean_across_ranks
from ..runtime.guard import adam
from ..models.actor import MultiHeadActor
from ..models.critic import TwinQ, make_target, polyak_update
from ..models.normalization import RunningMoments
from .base import OffPolicyModule


ACTIVATIONS = {"relu": nn.ReLU, "silu": nn.SiLU}  # the activation key's choices


class SAC(OffPolicyModule):
    metric_keys = ("train/critic_loss", "train/q_mean", "train/target_max", "train/actor_loss",
                   "train/actor_grad_norm", "train/entropy", "train/alpha", "train/alpha_loss")
    def __init__(self, cfg: dict, spec, actor_heads: int = 1):
        super().__init__(cfg, spec)
        hidden, act = cfg["networks"]["hidden_sizes"], ACTIVATIONS[cfg["networks"]["activation"]]
        self.actor = MultiHeadActor(spec.obs_dim, spec.action_dim, hidden, actor_heads,
                                    cfg["actor"]["log_std_min"], cfg["actor"]["log_std_max"], obs_norm=cfg["networks"]["obs_norm"],
                                    activation=act, std=cfg["actor"]["std"])
        self.critic = TwinQ(spec.obs_dim, spec.action_dim, hidden, cfg["critic"]["count"],
                            layer_norm=cfg["critic"]["layernorm"], scaled=cfg["critic"]["scale"],
                            obs_norm=cfg["networks"]["obs_norm"], activation=act)
        self.critic_target = make_target(self.critic)
        # obs_norm: the moments of every real observation stored (models/normalization.py)
        self.obs_moments = RunningMoments(spec.obs_dim) if cfg["networks"]["obs_norm"] else None
        self.obs_norm_step = -1  # env step of the last refresh of the networks' statistics
        if cfg["critic"]["scale"]:
            self.metric_keys = (*self.metric_keys, "train/q_lb", "train/q_ub")
        self.log_alpha = nn.Parameter(torch.tensor(math.log(cfg["temperature"]["init"])))
        te = cfg["temperature"]["target_entropy"]
        self.target_entropy = -float(spec.action_dim) if te == "auto" else float(te)

    @property
    def alpha(self) -> torch.Tensor:
        return self.log_alpha.exp()

    def configure_optimizers(self):
        c = self.cfg
        return [adam(self.critic.parameters(), c["critic"]["lr"], self.device),
                adam(self.actor.parameters(), c["actor"]["lr"], self.device),
                adam([self.log_alpha], c["temperature"]["lr"], self.device)]

    # ------------------------------------------------------------------ data
    def store(self, batch: TensorDictBase) -> None:
        if self.obs_moments is not None:
            self.obs_moments.update(batch["observation"].to(self.obs_moments.sum.device))
        super().store(batch)

    def counters(self) -> dict:
        return {**super().counters(), "obs_norm_step": self.obs_norm_step}

    def load_counters(self, c: dict) -> None:
        super().load_counters(c)
        self.obs_norm_step = c.get("obs_norm_step", -1)

    def refresh_obs_norm(self) -> None:
        """obs_norm: the networks take the pooled statistics of the stored observations every
        ``model.train_freq`` env steps (first in a round, before a model training)."""
        freq = self.cfg["model"]["train_freq"]
        if self.obs_moments is not None and self.env_steps // freq > self.obs_norm_step // freq:
            m = self.obs_moments  # pooled over DDP ranks (each rank's moments cover its own data)
            mean, std = RunningMoments.mean_std(*(mean_across_ranks(t) for t in (m.count, m.sum, m.sumsq)))
            for net in (self.actor, self.critic, self.critic_target):
                net.obs_norm.set(mean, std)
            self.obs_norm_step = self.env_steps

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
                next_log_prob, self.alpha.detach(), self.cfg["critic"]["gamma"],
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
        return {**super().fault_parts(), "critic": [self.critic, self.critic_target],
                "actor": [self.actor], "alpha": [self.log_alpha]}

    def critic_batch(self) -> TensorDictBase:
        """The transitions of a critic update (SAC: a real batch)."""
        return self.sample_batch()

    @torch.no_grad()
    def update_critic_bounds(self, batch: TensorDictBase) -> None:
        """critic_scale: the batch's soft reward ``r - alpha log pi_0(a'|s')``, a' drawn afresh,
        moves the critics' bounds (:meth:`TwinQ.update_bounds`; rate: the critic's lr, as DHMBPO)."""
        nxt = batch["next"]
        _, log_prob = self.actor.sample(nxt["observation"])
        soft_reward = nxt["reward"].squeeze(-1) - self.alpha * log_prob
        self.critic.update_bounds(soft_reward, self.cfg["critic"]["gamma"], self.cfg["critic"]["lr"])
        self.record({"train/q_lb": self.critic.q_bounds[0], "train/q_ub": self.critic.q_bounds[1]})

    def critic_step(self) -> None:
        batch = self.critic_batch()
        if self.critic.scaled:
            self.update_critic_bounds(batch)
        loss, q = self.critic_loss(batch)
        self.guard.step(self, "critic", self.optimizers()[0], loss, self.critic.parameters())
        polyak_update(self.critic_target, self.critic, self.cfg["critic"]["tau"])
        self.record({"train/critic_loss": loss, "train/q_mean": q.mean()})

    def actor_states(self) -> torch.Tensor:
        """The states the actor is improved at (SAC and MBPO: those of an update batch)."""
        return self.sample_batch()["observation"]

    def actor_grad_clip(self) -> float | None:
        """Max norm of the actor's gradient (SAC: none; MPDP and MPPVE: ``actor.grad_clip``)."""
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
        """One round of SAC: the networks' observation statistics when due, then the updates."""
        self.refresh_obs_norm()
        self.policy_updates(critic_updates, actor_updates)

    def policy_updates(self, critic_updates: int, actor_updates: int) -> None:
        """The due critic updates (Eq. 2-3), then the due actor updates (:meth:`actor_step`)."""
        for _ in range(critic_updates):
            self.critic_step()
        for _ in range(actor_updates):
            self.actor_step()
        self.updates += critic_updates
