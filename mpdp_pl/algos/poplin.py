"""POPLIN-A and POPLIN-P (Wang and Ba 2019; facts from WilsonWangTHU/POPLIN): PETS's loop (the
shared ensemble trained every ``model.train_freq`` env steps on the real buffer, a new plan at
every env step, no actor-critic; they subclass :class:`~mpdp_pl.algos.pets.PETS`) with a policy
network that proposes where CEM searches (:mod:`mpdp_pl.lookahead.policy_planning`), and the
policy's update after each model training from the plans made since the previous one. POPLIN
updates once per episode, on that episode; here the shared loop's model trainings set the pace
(every ``model.train_freq`` env steps), and what the planner kept for it is not checkpointed (a
resumed run starts it afresh).

- :class:`POPLINA`, ``BC-AI``: behaviour cloning, by mean squared error, of the executed actions
  and of the elites' first actions at the same real states (real and imagined data); Adam at
  ``poplin.bc_lr``, ``poplin.bc_epochs`` epochs of minibatches of ``poplin.bc_batch``, 20% of
  the rows held out for ``poplin/bc_holdout_mse``. The policy's input whitening is refitted to
  those states first (std at least 0.1, POPLIN's variance floor of 1e-2).
- :class:`POPLINP`, ``AVG``: the policy's weights move by the mean of the executed first-step
  weight noises, ``W <- W + mean_t d_0(s_t)`` (POPLIN-P's weight averaging; no gradient
  training). Its input whitening is fitted once, to the random warm-up's states, so that the
  noise searches a fixed function of the weights.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..environment.data import buffer_contents
from ..lookahead.planning import CEMSettings
from ..lookahead.policy_planning import ActionNoisePlanner, ParameterNoisePlanner
from ..models.actor import ProposalPolicy
from ..runtime.guard import adam
from .model_learner import MODEL_METRIC_KEYS
from .pets import PETS

BC_HOLDOUT = 0.2        # POPLIN's policy network: 20% of the distillation rows held out
MIN_INPUT_STD = 0.1     # its whitening floors the variance at 1e-2


class POPLIN(PETS):
    planner = ActionNoisePlanner

    def make_planner(self, cfg: dict, spec):
        """CEM around a policy network (:attr:`planner`: action or weight noise)."""
        policy = ProposalPolicy(spec.obs_dim, spec.action_dim, cfg["poplin"]["hidden"])
        return self.planner(self.dynamics, policy, CEMSettings.from_config(cfg), cfg["poplin"]["init_var"])

    def update(self, critic_updates: int, actor_updates: int) -> None:
        """One round: the model's training when due, and after it the policy's update from the
        plans made since the previous one; nothing per env step."""
        if self.train_model() is not None:
            self.policy_from_plans()

    def policy_from_plans(self) -> None:
        pending, self.actor.pending = self.actor.pending, []
        if pending:
            self.improve_policy([torch.cat(parts) for parts in zip(*pending)])

    def improve_policy(self, pending: list[torch.Tensor]) -> None:
        raise NotImplementedError


class POPLINA(POPLIN):
    metric_keys = MODEL_METRIC_KEYS + ("poplin/bc_rows", "poplin/bc_loss", "poplin/bc_holdout_mse")

    def configure_optimizers(self):
        policy = adam(self.actor.policy.parameters(), self.cfg["poplin"]["bc_lr"], self.device)
        return [policy, self.model_learner.make_optimizer()]

    def fault_parts(self) -> dict:
        return {**super().fault_parts(), "policy": [self.actor.policy]}

    def improve_policy(self, pending: list[torch.Tensor]) -> None:
        """BC-AI on ``(obs [N, D], executed [N, A], elites' first actions [N, E, A])``."""
        obs, executed, elite = pending
        policy, c = self.actor.policy, self.cfg
        policy.obs_norm.set(obs.mean(0), obs.std(0).nan_to_num(1.0).clamp_min(MIN_INPUT_STD))
        x = torch.cat([obs, obs.repeat_interleave(elite.shape[1], dim=0)])
        y = torch.cat([executed, elite.flatten(0, 1)])
        perm = torch.randperm(x.shape[0], device=x.device)
        held = int(BC_HOLDOUT * x.shape[0])
        hold, train = perm[:held], perm[held:]
        optimizer, batch = self.optimizers()[0], c["poplin"]["bc_batch"]
        for _ in range(c["poplin"]["bc_epochs"]):
            order = train[torch.randperm(train.numel(), device=x.device)]
            for rows in order.split(batch):
                loss = F.mse_loss(policy(x[rows]), y[rows])
                self.guard.step(self, "policy", optimizer, loss, policy.parameters())
        with torch.no_grad():
            held_mse = F.mse_loss(policy(x[hold]), y[hold]) if held else torch.zeros(())
        self.record({"poplin/bc_rows": float(x.shape[0]), "poplin/bc_loss": loss.detach(),
                     "poplin/bc_holdout_mse": held_mse})


class POPLINP(POPLIN):
    planner = ParameterNoisePlanner
    metric_keys = MODEL_METRIC_KEYS + ("poplin/weight_step",)

    def configure_optimizers(self):
        return [self.model_learner.make_optimizer()]

    def policy_from_plans(self) -> None:
        if self.model_learner.trainings == 1:  # the first model: whiten by the random warm-up's states
            obs = buffer_contents(self.replay_buffer)["observation"].to(self.device)
            self.actor.policy.obs_norm.set(obs.mean(0), obs.std(0).clamp_min(MIN_INPUT_STD))
        super().policy_from_plans()

    def improve_policy(self, pending: list[torch.Tensor]) -> None:
        """AVG on the executed first-step weight noises ``[N, W]``."""
        (noise,) = pending
        step = noise.mean(0)
        policy = self.actor.policy
        policy.set_flat_weights(policy.flat_weights() + step)
        self.actor.reset()  # the kept noise means were relative to the old weights
        self.record({"poplin/weight_step": step.norm()})
