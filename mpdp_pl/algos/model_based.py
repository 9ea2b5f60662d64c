"""SAC with a dynamics ensemble as a member
(:class:`~mpdp_pl.algos.model_learner.ModelLearner`): :class:`ModelBasedSAC`, the shared base of
MPDP, MBPO, MPPVE, M2AC and DHMBPO. Each of them writes its own round in
:meth:`~mpdp_pl.algos.base.OffPolicyModule.update`, in the order of its algorithm: the
observation statistics, the model training when due (:meth:`ModelBasedSAC.train_model`) and
what follows a training, then the critic and actor updates."""

from __future__ import annotations

from typing import Callable

from tensordict import TensorDictBase

from .model_learner import MODEL_METRIC_KEYS, attach_model_learner
from .sac import SAC


class ModelBasedSAC(SAC):
    """SAC plus ``model_learner`` (its ensemble is ``dynamics``, trained by the last optimizer).
    Its own round (:meth:`update`) trains the model and then takes SAC's updates on real data."""

    metric_keys = SAC.metric_keys + MODEL_METRIC_KEYS

    def __init__(self, cfg: dict, spec, actor_heads: int = 1):
        super().__init__(cfg, spec, actor_heads=actor_heads)
        attach_model_learner(self, cfg, spec)

    def configure_optimizers(self):
        return [*super().configure_optimizers(), self.model_learner.make_optimizer()]

    @property
    def model_ready(self) -> bool:
        return self.model_learner.ready

    def train_model(self, open_loop_k: Callable[[], int] | None = None) -> TensorDictBase | None:
        """Algorithm 2, line 4: the ensemble's training when due. Returns the real transitions it
        was not fitted on after a training that succeeded, else None. ``open_loop_k``: k of
        ``model/open_loop_error`` (MPDP: its realized horizon); None: not measured."""
        return self.model_learner.train_when_due(open_loop_k)

    def warm_start_after_first_model(self) -> None:
        """After a model training that succeeded, and only if it was the first:
        ``updates.warmup`` critic and actor updates, interleaved (DHMBPO's warm start: 5
        iterations' worth of updates at its first model)."""
        if self.model_learner.trainings != 1:
            return
        for _ in range(self.cfg["updates"]["warmup"]):
            if self.stop_signal is not None:  # a stop signal ends the warm start here
                return
            self.policy_updates(1, 1)

    def update(self, critic_updates: int, actor_updates: int) -> None:
        """One round: the observation statistics, the model when due, then SAC's updates on
        real data (no registered algorithm uses this round as it is; the tests of the shared
        model training do)."""
        self.refresh_obs_norm()
        if self.train_model() is not None:
            self.warm_start_after_first_model()
        self.policy_updates(critic_updates, actor_updates)
