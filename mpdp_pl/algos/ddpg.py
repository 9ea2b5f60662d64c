"""DDPG (Lillicrap et al. 2016) as most papers run it: sfujim/TD3's ``OurDDPG.py``.

A deterministic actor mu(s) and one critic Q(s, a), each with a Polyak-averaged target. Per
update: the critic regresses on ``r + gamma (1 - terminated) Q'(s', mu'(s'))``, the actor
minimizes ``-Q(s, mu(s))``, then both targets move by ``critic.tau``. pi_0 acts with Gaussian
exploration noise (``ddpg.exploration_noise`` x max_action) and is evaluated without it. The env
loop, buffers, evaluation, logging and checkpoints are the shared ones.
"""

from __future__ import annotations

import torch
from tensordict import TensorDictBase

from . import losses
from ..models.actor import DeterministicActor
from ..models.critic import TwinQ, make_target, polyak_update
from ..runtime.guard import adam
from .base import OffPolicyModule


def ddpg_target(reward: torch.Tensor, terminated: torch.Tensor, next_q: torch.Tensor,
                gamma: float) -> torch.Tensor:
    """``r + gamma (1 - terminated) Q'(s', mu'(s'))`` (OurDDPG.py, ``train``)."""
    return reward + gamma * (~terminated).to(reward.dtype) * next_q


class DDPG(OffPolicyModule):
    metric_keys = ("train/critic_loss", "train/q_mean", "train/target_max", "train/actor_loss")

    def __init__(self, cfg: dict, spec):
        super().__init__(cfg, spec)
        hidden = cfg["networks"]["hidden_sizes"]
        self.actor = DeterministicActor(spec.obs_dim, spec.action_dim, hidden,
                                        cfg["ddpg"]["exploration_noise"])
        self.actor_target = make_target(self.actor)
        self.critic = TwinQ(spec.obs_dim, spec.action_dim, hidden, num_critics=1)
        self.critic_target = make_target(self.critic)

    def configure_optimizers(self):
        c = self.cfg
        return [adam(self.critic.parameters(), c["critic"]["lr"], self.device),
                adam(self.actor.parameters(), c["actor"]["lr"], self.device)]

    def fault_parts(self) -> dict:
        return {**super().fault_parts(), "critic": [self.critic, self.critic_target],
                "actor": [self.actor, self.actor_target]}

    def critic_loss(self, batch: TensorDictBase) -> tuple[torch.Tensor, torch.Tensor]:
        nxt = batch["next"]
        with torch.no_grad():
            next_obs = nxt["observation"]
            next_q = self.critic_target(next_obs, self.actor_target.deterministic(next_obs))[0]
            target = ddpg_target(nxt["reward"].squeeze(-1), nxt["terminated"].squeeze(-1),
                                 next_q, self.cfg["critic"]["gamma"])
        q = self.critic(batch["observation"], batch["action"])
        self.record({"train/target_max": target.max()})
        return losses.critic_loss(q, target), q

    def actor_loss(self, obs: torch.Tensor) -> torch.Tensor:
        """``-mean_B Q(s, mu(s))``, the critic read with detached parameters."""
        return -self.critic(obs, self.actor.deterministic(obs), detach_params=True)[0].mean()

    @torch.no_grad()
    def q_value(self, obs: torch.Tensor) -> torch.Tensor:
        obs = obs.to(self.device, torch.float32)
        return self.critic(obs, self.actor.deterministic(obs))[0]

    def update(self, critic_updates: int, actor_updates: int) -> None:
        """OurDDPG's ``train``: a critic step, an actor step, then both targets (the ratios of
        the config decide how many of each a round takes)."""
        for i in range(max(critic_updates, actor_updates)):
            if i < critic_updates:
                batch = self.sample_batch()
                loss, q = self.critic_loss(batch)
                self.guard.step(self, "critic", self.optimizers()[0], loss, self.critic.parameters())
                self.record({"train/critic_loss": loss, "train/q_mean": q.mean()})
            if i < actor_updates:
                obs = batch["observation"] if i < critic_updates else self.sample_batch()["observation"]
                loss = self.actor_loss(obs)
                self.guard.step(self, "actor", self.optimizers()[1], loss, self.actor.parameters())
                self.record({"train/actor_loss": loss})
            polyak_update(self.critic_target, self.critic, self.cfg["critic"]["tau"])
            polyak_update(self.actor_target, self.actor, self.cfg["critic"]["tau"])
        self.updates += critic_updates
