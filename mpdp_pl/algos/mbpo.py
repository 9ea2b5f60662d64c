"""MBPO (Janner et al. 2019): SAC trained on a mix of real and model-generated transitions.

After every model training (every ``model.train_freq`` env steps), ``rollouts.batch_size`` real
states start k-step branched rollouts of pi_0 through the ensemble (k from ``rollouts.schedule``),
which go into a model buffer that keeps the last ``rollouts.retain_epochs`` epochs of rollouts. Every
SAC update (critic and actor, ``updates.critic_per_step`` = ``updates.actor_per_step`` = MBPO's
``n_train_repeat``) samples ``rollouts.real_ratio`` of its batch from the real buffer and the rest from the
model buffer (the ``model_data`` member, :mod:`mpdp_pl.algos.model_data`). Everything else
(critics, temperature, ensemble, collection) is the shared code.
"""

from __future__ import annotations

from .model_based import ModelBasedSAC
from .model_data import MODEL_DATA_KEYS, ModelData


class MBPO(ModelBasedSAC):
    metric_keys = (*ModelBasedSAC.metric_keys, *MODEL_DATA_KEYS)

    def __init__(self, cfg: dict, spec, actor_heads: int = 1):
        super().__init__(cfg, spec, actor_heads=actor_heads)
        self.model_data = ModelData(cfg, self)
        self.components.append(self.model_data)

    def update(self, critic_updates: int, actor_updates: int) -> None:
        """One round of MBPO's Algorithm 2, once base.py stored its env steps (line 5): the
        model training when due (line 3), then new model rollouts into the model buffer (lines
        6-8), then SAC's updates on the real/model mix (lines 9-10)."""
        self.refresh_obs_norm()
        if self.train_model() is not None:
            self.model_rollouts()
            self.warm_start_after_first_model()
        self.policy_updates(critic_updates, actor_updates)

    def model_rollouts(self) -> None:
        """After a model training: branched rollouts of pi_0 from real states."""
        self.model_data.branched_rollouts()

    def sample_batch(self):
        """Critic and actor batches alike: the real/model mix."""
        return self.model_data.mixed_batch()
