"""MBPO (Janner et al. 2019): SAC trained on a mix of real and model-generated transitions.

After every model training (every ``model_train_freq`` env steps), ``rollout_batch_size`` real
states start k-step branched rollouts of pi_0 through the ensemble (k from ``rollout_schedule``),
which go into a model buffer that keeps the last ``model_retain_epochs`` epochs of rollouts. Every
SAC update (critic and actor, ``critic_updates_per_step`` = ``actor_updates_per_step`` = MBPO's
``n_train_repeat``) samples ``real_ratio`` of its batch from the real buffer and the rest from the
model buffer (:mod:`mpdp_pl.algos.model_data`). Everything else (critics, temperature, ensemble,
collection) is the shared code.
"""

from __future__ import annotations

from .model_based import ModelBasedSAC
from .model_data import MODEL_DATA_KEYS, ModelData


class MBPO(ModelData, ModelBasedSAC):
    metric_keys = (*ModelBasedSAC.metric_keys, *MODEL_DATA_KEYS)

    def after_model_training(self, holdout) -> None:
        self.branched_rollouts()

    def sample_batch(self):
        """Critic and actor batches alike: the real/model mix."""
        return self.mixed_batch()
