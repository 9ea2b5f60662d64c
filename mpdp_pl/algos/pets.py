"""PETS (Chua et al. 2018): the shared dynamics ensemble and CEM model-predictive control
(:mod:`mpdp_pl.lookahead.planning`), no actor-critic. The ensemble trains every ``model_train_freq`` env
steps on the real buffer (:class:`~mpdp_pl.algos.model_based.ModelLearning`, as MBPO's and
MPDP's); the planner acts with a new plan at every env step. There are no policy updates: the
loop's update ratios do nothing here."""

from __future__ import annotations

from ..lookahead.planning import CEMPlanner, CEMSettings
from .base import OffPolicyModule
from .model_based import MODEL_METRIC_KEYS, ModelLearning


class PETS(ModelLearning, OffPolicyModule):
    metric_keys = MODEL_METRIC_KEYS

    def __init__(self, cfg: dict, spec):
        super().__init__(cfg, spec)
        self.actor = CEMPlanner(self.dynamics, spec.action_dim, CEMSettings.from_config(cfg))

    def configure_optimizers(self):
        return [self.make_model_optimizer()]

    def update(self, critic_updates: int, actor_updates: int) -> None:
        """Nothing to update: the model trains before the updates (:meth:`before_updates`)."""
