"""The dynamics ensemble and its training (Algorithm 2, line 4): :class:`ModelLearning`, with SAC
:class:`ModelBasedSAC`, the shared base of MPDP, MBPO, MPPVE and M2AC; PETS uses the mixin alone.

Every ``model_train_freq`` env steps, once updates have started, the ensemble is trained on the
real buffer by its own (the module's last) optimizer, inside Lightning's manual step
(:mod:`mpdp_pl.models.fitting`; ``model_max_steps`` bounds its cost).

``model_holdout=fixed`` (the default): every real transition is assigned to the holdout or not
once, when it is stored (a ``holdout`` flag in the replay buffer, so checkpoints keep it on every
rank), and the ensemble is never fitted on the newest ``model_max_holdout`` flagged ones: early
stopping, the elites and MPDP's u_T are then measured on transitions the ensemble has never
seen (the input and target normalizers are still fitted on every stored transition).
``model_holdout=redrawn`` draws a fresh random split at every training, as MBPO does; since
training continues from the previous weights, most of that "holdout" was fitted before. MPDP,
MBPO and MPPVE all use the same rule (the shared ensemble), by default the fixed split.

Before each
training, ``model/error`` measures the current model on the newest ``model_error_window`` real
transitions, which it has not been trained on: the mean L2 norm of the one-step next-state error
of the elites' mean prediction, in the env's own units (the quantity of the paper's Fig. 3).
"""

from __future__ import annotations

import dataclasses

import torch

from ..environment.data import buffer_contents, chronological_order, newest_transitions
from ..models.dynamics import DynamicsModel, open_loop_error
from ..models.fitting import (TrainSettings, fixed_split, holdout_flags, holdout_split,
                              param_groups, train_dynamics)
from ..environment.termination import TERMINATION_FNS
from ..runtime import distributed
from .sac import SAC

MODEL_METRIC_KEYS = ("model/holdout_nll", "model/holdout_mse", "model/elites", "model/epochs",
                     "model/steps", "model/train_seconds", "model/error", "model/holdout_size")


class ModelLearning:
    """Mixin for an :class:`~mpdp_pl.algos.base.OffPolicyModule`: the dynamics ensemble, its
    trainings every ``model_train_freq`` env steps by the last of the module's optimizers
    (:meth:`model_optimizer`), and its diagnostics. With SAC it is :class:`ModelBasedSAC`; a
    planner without actor-critic (PETS) uses it alone."""

    def __init__(self, cfg: dict, spec, *args, **kwargs):
        super().__init__(cfg, spec, *args, **kwargs)
        term = cfg["termination"]
        self.dynamics = DynamicsModel(
            spec.obs_dim, spec.action_dim, cfg["ensemble_size"], cfg["num_elites"],
            cfg["model_hidden"], cfg["model_layers"],
            termination_fn=None if term == "learned" else TERMINATION_FNS[term],
            noise=cfg["model_noise"], layer_norm=cfg["model_layernorm"], dropout=cfg["model_dropout"],
        )
        self.model_settings = TrainSettings.from_config(cfg)
        self.model_trainings = 0
        self.last_model_train_step = -1

    @property
    def model_ready(self) -> bool:
        return self.model_trainings > 0

    def counters(self) -> dict:
        return {**super().counters(), "model_trainings": self.model_trainings,
                "last_model_train_step": self.last_model_train_step}

    def load_counters(self, c: dict) -> None:
        super().load_counters(c)
        self.model_trainings, self.last_model_train_step = c["model_trainings"], c["last_model_train_step"]

    def store(self, batch) -> None:
        """Flag the round's holdout transitions (fixed split) before they enter the buffer;
        ``model_weights=exp``: draw each transition's Exp(1) loss weight per member (DHMBPO,
        erl_lib ``util/misc.py`` ``sample_weight``), fixed for the run."""
        if self.cfg["model_holdout"] == "fixed":
            first = self.env_steps // self.world_size  # this rank's transitions stored so far
            batch.set("holdout", holdout_flags(first, batch.numel(), self.cfg["model_holdout_ratio"])
                      .to(batch.device).reshape(batch.shape))
        if self.cfg["model_weights"] == "exp":
            batch.set("model_weight", torch.empty(*batch.shape, self.dynamics.members,
                                                  device=batch.device).exponential_())
        super().store(batch)

    def model_split(self, data) -> tuple[torch.Tensor, torch.Tensor]:
        """(train, holdout) rows of ``data`` (the buffer's contents, storage order)."""
        if self.cfg["model_holdout"] == "redrawn":
            return holdout_split(data.shape[0], self.model_settings, self.device)
        order = chronological_order(self.replay_buffer).to(self.device)
        return fixed_split(data["holdout"], order, self.model_settings)

    def fault_parts(self) -> dict:
        return {**super().fault_parts(), "model": [self.dynamics]}

    def fit_dynamics(self, data, split, first: bool = False) -> dict:
        """One model training; the ``first`` one ``model_first_fit_scale`` times as long (its
        step and epoch caps and its patience; DHMBPO's first fit is 5 times as long)."""
        nxt = data["next"]
        settings = self.model_settings
        if first and self.cfg["model_first_fit_scale"] > 1:
            k = self.cfg["model_first_fit_scale"]
            settings = dataclasses.replace(
                settings, patience=settings.patience * k, max_epochs=settings.max_epochs * k,
                max_steps=None if settings.max_steps is None else settings.max_steps * k)
        if self.cfg["model_optimizer"] == "adamw":  # a fresh AdamW per training (erl_lib de_trainer.py:65)
            self.model_optimizer().optimizer.state.clear()
        return train_dynamics(
            self.dynamics, data["observation"], data["action"], nxt["observation"],
            nxt["reward"].squeeze(-1), nxt["terminated"].squeeze(-1), self.model_optimizer(),
            settings, backward=self.manual_backward, split=split, ranks=distributed.ranks(),
            weights=data.get("model_weight", None) if self.cfg["model_weights"] == "exp" else None,
            should_stop=lambda: self.stop_signal is not None,
        )

    def model_is_finite(self, metrics: dict) -> bool:
        """One host sync per model training: weights, normalizers, the optimizer's moments and
        the holdout loss all finite."""
        tensors = [*self.dynamics.state_dict().values(),
                   *(v for st in self.model_optimizer().optimizer.state.values() for v in st.values()
                     if torch.is_tensor(v)),
                   torch.as_tensor(metrics.get("model/holdout_nll", 0.0))]
        return bool(torch.stack([torch.isfinite(t.float()).all() for t in tensors]).all())

    def make_model_optimizer(self) -> torch.optim.Optimizer:
        c = self.cfg
        if c["model_optimizer"] == "adamw":
            return torch.optim.AdamW(param_groups(self.dynamics, c["model_lr"], c["model_weight_decay"],
                                                  decoupled=True, noise_decay=c["model_noise_decay"]))
        return torch.optim.Adam(param_groups(self.dynamics, c["model_lr"], c["model_weight_decay"]))

    def model_optimizer(self):
        """The model's optimizer: the last one (Lightning hands back a lone optimizer unlisted)."""
        opts = self.optimizers()
        return opts[-1] if isinstance(opts, (list, tuple)) else opts

    def before_updates(self) -> None:
        super().before_updates()
        freq = self.cfg["model_train_freq"]
        if not self.model_ready or self.env_steps // freq > self.last_model_train_step // freq:
            first = not self.model_ready
            self.train_model()
            if first and self.model_ready:
                self.warm_start()

    def warm_start(self) -> None:
        """``warmup_updates`` critic and actor updates, interleaved, right after the first model
        training (DHMBPO's warm start: 5 iterations' worth of updates at its first model)."""
        for _ in range(self.cfg["warmup_updates"]):
            if self.stop_signal is not None:  # a stop signal ends the warm start here
                return
            self.update(1, 1)

    @torch.no_grad()
    def model_error(self) -> torch.Tensor:
        """Mean ||s'_model - s'_real||_2 on the newest real transitions (env units)."""
        batch = newest_transitions(self.replay_buffer, self.cfg["model_error_window"]).to(self.device)
        pred, _ = self.dynamics.mean_prediction(batch["observation"], batch["action"])
        return (pred - batch["next", "observation"]).norm(dim=-1).mean()

    def open_loop_horizon(self) -> int | None:
        """k of ``model/open_loop_error`` (MPDP: its realized horizon); None: not measured."""
        return None

    def train_model(self) -> None:
        if self.model_ready:
            self.record({"model/error": self.model_error()})
            k = self.open_loop_horizon()
            if k is not None:
                batch = newest_transitions(self.replay_buffer, self.cfg["model_error_window"])
                batch = batch.to(self.device)
                self.record({"model/open_loop_k": float(k), "model/open_loop_error": open_loop_error(
                    self.dynamics, batch["observation"], batch["action"],
                    batch["next", "observation"], k)})
        data = buffer_contents(self.replay_buffer).to(self.device)
        split = self.model_split(data)
        self.guard.snapshot(self, only="model")
        metrics = self.fit_dynamics(data, split, first=not self.model_ready)
        if self.stop_signal is not None:  # cut short by a stop: back to the weights before it,
            self.guard.restore(self, "model")  # and trained again, whole, when the run resumes
            return
        if not self.model_is_finite(metrics):
            self.model_optimizer().optimizer.state.clear()  # moments may hold the NaN
            self.last_model_train_step = self.env_steps  # retry at the next training time
            self.guard.report(self, "model")  # back to the weights before this training
            return
        self.guard.streak["model"] = 0
        self.record({**metrics, "model/holdout_size": float(split[1].numel())})
        self.model_trainings += 1
        self.last_model_train_step = self.env_steps
        self.after_model_training(data[split[1]])

    def after_model_training(self, holdout) -> None:
        """Runs after each model training with the real transitions the model was not fitted on
        (MPDP calibrates its cut threshold u_T there)."""


class ModelBasedSAC(ModelLearning, SAC):
    """SAC plus the dynamics ensemble: the shared base of MPDP, MBPO, MPPVE and M2AC."""

    metric_keys = SAC.metric_keys + MODEL_METRIC_KEYS

    def configure_optimizers(self):
        return [*super().configure_optimizers(), self.make_model_optimizer()]
