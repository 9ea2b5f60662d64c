"""DHMBPO (Kubo et al. 2025, "Double Horizon Model-Based Policy Optimization"; 4kubo/erl_lib
``agent/svg.py`` with ``config/agent/dhmbpo.yaml``) on the shared loop, ensemble and critics.

What is DHMBPO's own, in the order of one burst (erl_lib ``svg.py`` ``observe``, lines 205-232):
every ``updates.every`` env steps (1000), with the policy frozen in between,

1. the networks' observation statistics are refreshed and the ensemble is trained (the shared
   :class:`~mpdp_pl.algos.model_learner.ModelLearner`, with DHMBPO's options:
   conf/algo/dhmbpo.yaml);
2. the actor's, critics' and temperature's Adam states start afresh (``init_optimizer``, l.211);
3. one "distribution rollout" of pi through the model from ``data.batch_size`` real states fills the
   start-state FIFO (:mod:`mpdp_pl.lookahead.start_states`), and the critics alone take the
   surplus of critic over actor updates (250) on it (``mb_update_critic``);
4. then critic and actor updates in pairs (1000; the first burst adds ``updates.warmup``, 4000,
   for erl_lib's 5000), one FIFO refill every ``dhmbpo.rollout_every`` pairs. A pair shares one
   H-step rollout from FIFO states (:mod:`mpdp_pl.lookahead.svg`): the critics regress on its
   soft return with a REDQ tail, their scale bounds follow its soft rewards, and then the actor
   climbs the same return through the model (SVG), with the updated critics' mean as the tail.

A stop signal ends a burst between two updates; the updates it still owed run first when the run
resumes (``burst_left`` in the checkpoint).
"""

from __future__ import annotations

import torch

from ..lookahead.start_states import StartStateFIFO, distribution_rollout
from ..lookahead.svg import SVGRollout, soft_return, soft_rewards, svg_rollout
from ..models.critic import polyak_update, redq_min
from .model_based import ModelBasedSAC


class DHMBPO(ModelBasedSAC):
    def __init__(self, cfg: dict, spec, actor_heads: int = 1):
        super().__init__(cfg, spec, actor_heads=actor_heads)
        self.start_fifo: StartStateFIFO | None = None  # made on the module's device, at the first burst
        self.warm_pairs = 0             # the warm start's pairs, added to the first burst
        self.burst_left = [0, 0]        # critic-only updates and pairs a stop left undone

    def counters(self) -> dict:
        return {**super().counters(), "warm_pairs": self.warm_pairs, "burst_left": self.burst_left,
                "start_fifo": self.start_fifo.state() if self.start_fifo is not None else None}

    def load_counters(self, c: dict) -> None:
        super().load_counters(c)
        self.warm_pairs, self.burst_left = c["warm_pairs"], list(c["burst_left"])
        if c.get("start_fifo") is not None:  # checkpoints of earlier versions start it empty
            self.start_fifo = StartStateFIFO.from_state(c["start_fifo"], self.cfg["dhmbpo"]["buffer_size"],
                                                        self.device)

    def warm_start_after_first_model(self) -> None:
        """After the first model training: erl_lib multiplies the first burst's pairs by its
        seed iterations (``svg.py:571``)."""
        if self.model_learner.trainings == 1:
            self.warm_pairs = self.cfg["updates"]["warmup"]

    def update(self, critic_updates: int, actor_updates: int) -> None:
        """One round, once base.py stored its env steps: steps 1-4 above. The loop pays the
        updates of ``updates.every`` env steps at once (a burst); other rounds have none."""
        self.refresh_obs_norm()
        holdout = self.train_model()
        if holdout is not None:
            self.after_model_training(holdout)
        if self.model_ready:
            self.burst(critic_updates, actor_updates)
        else:  # no training succeeded yet: the burst's rollouts would come from an untrained
            pairs = min(critic_updates, actor_updates)  # model; it waits, owed, for one that does
            self.burst_left = [self.burst_left[0] + critic_updates - pairs, self.burst_left[1] + pairs]

    def after_model_training(self, holdout) -> None:
        """After each model training (``holdout``: the real transitions it was not fitted on)."""
        self.warm_start_after_first_model()

    # ------------------------------------------------------------------ one burst
    def burst(self, critic_updates: int, actor_updates: int) -> None:
        """Steps 2-4: fresh moments, the critic-only updates, then the pairs."""
        pairs = min(critic_updates, actor_updates)
        critic_only, pairs = critic_updates - pairs, pairs + self.warm_pairs
        self.warm_pairs = 0
        if critic_only or pairs:
            for opt in self.optimizers()[:3]:  # critics, actor, alpha: fresh Adam moments
                opt.optimizer.state.clear()
        critic_only += self.burst_left[0]
        pairs += self.burst_left[1]
        self.burst_left = [0, 0]
        if critic_only or pairs:
            self.refill_start_states()
        for i in range(critic_only):
            if self.stop_signal is not None:
                self.burst_left = [critic_only - i, pairs]
                return
            with torch.no_grad():
                rollout = self.rollout()
            self.critic_step(rollout)
            self.updates += 1
        for i in range(pairs):
            if self.stop_signal is not None:
                self.burst_left = [0, pairs - i]
                return
            if i % self.cfg["dhmbpo"]["rollout_every"] == 0:
                self.refill_start_states()
            rollout = self.rollout()
            self.critic_step(rollout)
            self.actor_step(rollout)
            self.updates += 1

    def refill_start_states(self) -> None:
        """One distribution rollout of pi from ``data.batch_size`` real states into the FIFO."""
        c = self.cfg
        if self.start_fifo is None:
            self.start_fifo = StartStateFIFO(c["dhmbpo"]["buffer_size"], self.spec.obs_dim, self.device)
        self.start_fifo.add(distribution_rollout(self.dynamics, self.actor, self.sample_batch()["observation"],
                                                 c["dhmbpo"]["rollout_length"]))

    def rollout(self, with_u: bool = False) -> SVGRollout:
        """The pair's H-step rollout of pi from a batch of FIFO states (``with_u``: with u, for
        ``mpdp_dh``'s cut and penalty)."""
        return svg_rollout(self.dynamics, lambda t, s: self.actor.sample(s),
                           self.start_fifo.sample(self.cfg["data"]["batch_size"]),
                           self.cfg["improvement"]["horizon"], with_u)

    # ------------------------------------------------------------------ the two updates
    def critic_step(self, rollout: SVGRollout) -> None:
        """Q_j(s_0, a_0) onto the rollout's soft return with the target critics' REDQ tail."""
        c = self.cfg
        alpha = self.alpha.detach()
        with torch.no_grad():
            if self.critic.scaled:
                self.critic.update_bounds(soft_rewards(rollout, alpha), c["critic"]["gamma"], c["critic"]["lr"])
                self.record({"train/q_lb": self.critic.q_bounds[0], "train/q_ub": self.critic.q_bounds[1]})
            tail = redq_min(self.critic_target(rollout.last_obs, rollout.last_action))
            target = soft_return(rollout, tail, alpha, c["critic"]["gamma"], first_entropy=False)
        q = self.critic(rollout.obs[0].detach(), rollout.action[0].detach())
        loss = (q - target).pow(2).mean(-1).sum()
        self.guard.step(self, "critic", self.optimizers()[0], loss, self.critic.parameters())
        polyak_update(self.critic_target, self.critic, c["critic"]["tau"])
        self.record({"train/critic_loss": loss, "train/q_mean": q.mean(), "train/target_max": target.max()})

    def actor_objective(self, rollout: SVGRollout) -> tuple[torch.Tensor, torch.Tensor]:
        """-mean G(s_0, a_0) with the online critics' mean at (s_H, a_H), and log pi(a_0|s_0)
        for the temperature."""
        tail = self.critic(rollout.last_obs, rollout.last_action, detach_params=True).mean(0)
        loss = -soft_return(rollout, tail, self.alpha.detach(), self.cfg["critic"]["gamma"], first_entropy=True).mean()
        return loss, rollout.log_prob[0]

    def actor_step(self, rollout: SVGRollout) -> None:
        """One step on :meth:`actor_objective`; no gradient clipping."""
        loss, log_prob0 = self.actor_objective(rollout)
        norm = self.guard.step(self, "actor", self.optimizers()[1], loss, self.actor.parameters())
        self.temperature_step(log_prob0)
        self.record({"train/actor_loss": loss, "train/actor_grad_norm": norm})
