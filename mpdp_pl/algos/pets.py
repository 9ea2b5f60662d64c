"""PETS (Chua et al. 2018): the shared dynamics ensemble and CEM model-predictive control
(:mod:`mpdp_pl.lookahead.planning`), no actor-critic. The ensemble trains every ``model.train_freq`` env
steps on the real buffer (the :class:`~mpdp_pl.algos.model_learner.ModelLearner` member, as
MBPO's and MPDP's); the planner acts with a new plan at every env step. There are no policy updates: the
loop's update ratios do nothing here."""

from __future__ import annotations

from contextlib import contextmanager

from ..lookahead.planning import CEMPlanner, CEMSettings
from .base import OffPolicyModule
from .model_learner import MODEL_METRIC_KEYS, attach_model_learner


class PETS(OffPolicyModule):
    metric_keys = MODEL_METRIC_KEYS

    def __init__(self, cfg: dict, spec):
        super().__init__(cfg, spec)
        attach_model_learner(self, cfg, spec)
        self.actor = self.make_planner(cfg, spec)

    def make_planner(self, cfg: dict, spec) -> CEMPlanner:
        return CEMPlanner(self.dynamics, spec.action_dim, CEMSettings.from_config(cfg))

    @contextmanager
    def evaluating(self, seed: int):
        """The RNG apart (:meth:`~mpdp_pl.algos.env_setup.EnvSetup.evaluating`), and the
        planner's warm start: an evaluation plans from no previous plan, and acting takes its
        own back afterwards."""
        acting, self.actor.warm_start = self.actor.warm_start, {}
        try:
            with super().evaluating(seed):
                yield
        finally:
            self.actor.warm_start = acting

    def configure_optimizers(self):
        return [self.model_learner.make_optimizer()]

    def update(self, critic_updates: int, actor_updates: int) -> None:
        """One round: the model's training when due; no policy updates (the planner acts)."""
        self.train_model()

    def train_model(self):
        """The ensemble's training when due: the held-out transitions after one that
        succeeded, else None."""
        return self.model_learner.train_when_due()
