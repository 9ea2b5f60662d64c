"""The dynamics ensemble and its training (Algorithm 2, line 4), a member of every model-based
module: :class:`ModelLearner`.

Every ``model.train_freq`` env steps, once updates have started, the ensemble is trained on the
real buffer by its own optimizer (the module's last), inside Lightning's manual step
(:mod:`mpdp_pl.models.fitting`; ``model.max_steps`` bounds its cost).

``model.holdout=fixed`` (the default): every real transition is assigned to the holdout or not
once, when it is stored (a ``holdout`` flag in the replay buffer, so checkpoints keep it on every
rank), and the ensemble is never fitted on the newest ``model.max_holdout`` flagged ones: early
stopping, the elites and MPDP's u_T are then measured on transitions the ensemble has never
seen (the input and target normalizers are still fitted on every stored transition).
``model.holdout=redrawn`` draws a fresh random split at every training, as MBPO does; since
training continues from the previous weights, most of that "holdout" was fitted before. MPDP,
MBPO and MPPVE all use the same rule (the shared ensemble), by default the fixed split.

Before each training, ``model/error`` measures the current model on the newest
``model.error_window`` real transitions, which it has not been trained on: the mean L2 norm of
the one-step next-state error of the elites' mean prediction, in the env's own units (the
quantity of the paper's Fig. 3).
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Callable

import torch
from tensordict import TensorDictBase

from ..environment.data import buffer_contents, chronological_order, newest_transitions
from ..environment.termination import TERMINATION_FNS
from ..models.dynamics import DynamicsModel, open_loop_error
from ..models.fitting import (TrainSettings, fixed_split, holdout_flags, holdout_split,
                              param_groups, train_dynamics)
from ..runtime import distributed
from .base import Component

MODEL_METRIC_KEYS = ("model/holdout_nll", "model/holdout_mse", "model/elites", "model/epochs",
                     "model/steps", "model/train_seconds", "model/error", "model/holdout_size")


def attach_model_learner(module, cfg: dict, spec) -> "ModelLearner":
    """A :class:`ModelLearner` as ``module.model_learner``, listed in its components, with its
    ensemble registered as ``module.dynamics`` (checkpoints keep ``dynamics.*``)."""
    module.model_learner = ModelLearner(cfg, spec, module)
    module.components.append(module.model_learner)
    module.dynamics = module.model_learner.dynamics
    return module.model_learner


class ModelLearner(Component):
    """The ensemble (``dynamics``, which the host registers so that checkpoints keep it), its
    optimizer (the host's last), the holdout flags it adds to stored transitions, and its
    trainings. ``host`` is the module it serves: its replay buffer, env-step count, stop
    signal, guard and metrics."""

    def __init__(self, cfg: dict, spec, host):
        self.cfg, self.host = cfg, host
        term = cfg["model"]["termination"]
        self.dynamics = DynamicsModel(
            spec.obs_dim, spec.action_dim, cfg["model"]["ensemble_size"], cfg["model"]["elites"],
            cfg["model"]["hidden"], cfg["model"]["layers"],
            termination_fn=None if term == "learned" else TERMINATION_FNS[term],
            noise=cfg["model"]["noise"], layer_norm=cfg["model"]["layernorm"], dropout=cfg["model"]["dropout"],
        )
        self.settings = TrainSettings.from_config(cfg)
        self.trainings = 0
        self.last_train_step = -1

    @property
    def ready(self) -> bool:
        """Whether a model training has succeeded."""
        return self.trainings > 0

    # ---------------------------------------------------------------- Component
    def counters(self) -> dict:
        return {"model_trainings": self.trainings, "last_model_train_step": self.last_train_step}

    def load_counters(self, c: dict) -> None:
        self.trainings, self.last_train_step = c["model_trainings"], c["last_model_train_step"]

    def store(self, batch: TensorDictBase) -> None:
        """Flag the round's holdout transitions (fixed split) before they enter the buffer;
        ``model.weights=exp``: draw each transition's Exp(1) loss weight per member (DHMBPO,
        erl_lib ``util/misc.py`` ``sample_weight``), fixed for the run."""
        host = self.host
        if self.cfg["model"]["holdout"] == "fixed":
            first = host.env_steps // host.world_size  # this rank's transitions stored so far
            batch.set("holdout", holdout_flags(first, batch.numel(), self.cfg["model"]["holdout_ratio"])
                      .to(batch.device).reshape(batch.shape))
        if self.cfg["model"]["weights"] == "exp":
            batch.set("model_weight", torch.empty(*batch.shape, self.dynamics.members,
                                                  device=batch.device).exponential_())

    def fault_parts(self) -> dict:
        return {"model": [self.dynamics]}

    # ---------------------------------------------------------------- the optimizer
    def make_optimizer(self) -> torch.optim.Optimizer:
        c = self.cfg
        if c["model"]["optimizer"] == "adamw":
            return torch.optim.AdamW(param_groups(self.dynamics, c["model"]["lr"], c["model"]["weight_decay"],
                                                  decoupled=True, noise_decay=c["model"]["noise_decay"]))
        return torch.optim.Adam(param_groups(self.dynamics, c["model"]["lr"], c["model"]["weight_decay"]))

    def optimizer(self):
        """The host's last optimizer (Lightning hands back a lone optimizer unlisted)."""
        opts = self.host.optimizers()
        return opts[-1] if isinstance(opts, (list, tuple)) else opts

    # ---------------------------------------------------------------- one training
    def due(self) -> bool:
        """Until a model exists, every round; then every ``model.train_freq`` env steps."""
        freq = self.cfg["model"]["train_freq"]
        return not self.ready or self.host.env_steps // freq > self.last_train_step // freq

    def train_when_due(self, open_loop_k: Callable[[], int] | None = None) -> TensorDictBase | None:
        """Train the ensemble if :meth:`due`. Returns the real transitions it was not fitted on
        after a training that succeeded, else None. ``open_loop_k`` (MPDP: its realized horizon)
        gives k of ``model/open_loop_error``, measured before the training."""
        if not self.due():
            return None
        host = self.host
        if self.ready:
            host.record({"model/error": self.model_error()})
            if open_loop_k is not None:
                k = open_loop_k()
                batch = newest_transitions(host.replay_buffer, self.cfg["model"]["error_window"])
                batch = batch.to(host.device)
                host.record({"model/open_loop_k": float(k), "model/open_loop_error": open_loop_error(
                    self.dynamics, batch["observation"], batch["action"],
                    batch["next", "observation"], k)})
        data = buffer_contents(host.replay_buffer).to(host.device)
        split = self.split(data)
        host.guard.snapshot(host, only="model")
        moments = copy.deepcopy(self.optimizer().optimizer.state_dict())
        metrics = self.fit(data, split, first=not self.ready)
        if host.stop_signal is not None:  # cut short by a stop: back to the weights and moments
            host.guard.restore(host, "model")  # before it, and trained again, whole, when the
            self.optimizer().optimizer.load_state_dict(moments)  # run resumes
            return None
        if not self.is_finite(metrics):
            self.optimizer().optimizer.state.clear()  # moments may hold the NaN
            self.last_train_step = host.env_steps  # retry when due: next round before any model
            host.guard.report(host, "model")  # back to the weights before this training
            return None
        host.guard.streak["model"] = 0
        host.record({**metrics, "model/holdout_size": float(split[1].numel())})
        self.trainings += 1
        self.last_train_step = host.env_steps
        return data[split[1]]

    def split(self, data) -> tuple[torch.Tensor, torch.Tensor]:
        """(train, holdout) rows of ``data`` (the buffer's contents, storage order)."""
        if self.cfg["model"]["holdout"] == "redrawn":
            return holdout_split(data.shape[0], self.settings, self.host.device)
        order = chronological_order(self.host.replay_buffer).to(self.host.device)
        return fixed_split(data["holdout"], order, self.settings)

    def fit(self, data, split, first: bool = False) -> dict:
        """One model training; the ``first`` one ``model.first_fit_scale`` times as long (its
        step and epoch caps and its patience; DHMBPO's first fit is 5 times as long)."""
        nxt = data["next"]
        settings = self.settings
        if first and self.cfg["model"]["first_fit_scale"] > 1:
            k = self.cfg["model"]["first_fit_scale"]
            settings = dataclasses.replace(
                settings, patience=settings.patience * k, max_epochs=settings.max_epochs * k,
                max_steps=None if settings.max_steps is None else settings.max_steps * k)
        if self.cfg["model"]["optimizer"] == "adamw":  # a fresh AdamW per training (erl_lib de_trainer.py:65)
            self.optimizer().optimizer.state.clear()
        return train_dynamics(
            self.dynamics, data["observation"], data["action"], nxt["observation"],
            nxt["reward"].squeeze(-1), nxt["terminated"].squeeze(-1), self.optimizer(),
            settings, backward=self.host.manual_backward, split=split, ranks=distributed.ranks(),
            weights=data.get("model_weight", None) if self.cfg["model"]["weights"] == "exp" else None,
            should_stop=lambda: self.host.stop_signal is not None,
        )

    def is_finite(self, metrics: dict) -> bool:
        """One host sync per model training: weights, normalizers, the optimizer's moments and
        the holdout loss all finite. The verdicts are gathered on the model's device: Adam keeps
        its step counters on the host, and ``stack`` takes no mix of devices."""
        device = self.dynamics.elites.device
        tensors = [*self.dynamics.state_dict().values(),
                   *(v for st in self.optimizer().optimizer.state.values() for v in st.values()
                     if torch.is_tensor(v)),
                   torch.as_tensor(metrics.get("model/holdout_nll", 0.0))]
        return bool(torch.stack([torch.isfinite(t.float()).all().to(device) for t in tensors]).all())

    @torch.no_grad()
    def model_error(self) -> torch.Tensor:
        """Mean ||s'_model - s'_real||_2 on the newest real transitions (env units)."""
        batch = newest_transitions(self.host.replay_buffer, self.cfg["model"]["error_window"])
        batch = batch.to(self.host.device)
        pred, _ = self.dynamics.mean_prediction(batch["observation"], batch["action"])
        return (pred - batch["next", "observation"]).norm(dim=-1).mean()
