"""MPDP (Algorithm 2): SAC's critics and temperature on real data, a dynamics ensemble trained
every ``model_train_freq`` env steps, and the farsighted improvement (Algorithm 1,
:mod:`mpdp_pl.improvement`) of the multi-head actor pi_0..pi_{Hmax-1}; pi_0 acts.

Before the first model training the actor takes SAC's one-step update (Eq. 4).

After every model training, u_ref is set to the ``u_T_quantile`` of u(s, a) over the held-out
real transitions of that training (the paper gives no value for u_T; training points would
understate u). The cut threshold u_T is u_ref (``u_T=auto``) or a fixed number (``inf`` gives a
fixed horizon).

``beta_relative=true`` (the default) applies the penalty as beta * u / u_ref instead of
beta * u: Eq. (8) sums KL over members and output dims, so raw u is large (5-30 on
InvertedPendulum early in training) and beta * u swamps a reward of 1 per step; the policy then
learns to reach a predicted terminal early, where the penalties stop (measured: eval return 3
to 50 after 2.5k steps, below a random policy's 8, with beta = 0.5 raw). In units of u_ref,
beta is the penalty at a typical held-out model error and transfers across tasks.
``beta_relative=false`` is Eq. (10) literally.
"""

from __future__ import annotations

import torch

from ..distributed import gather_across_ranks
from ..improvement import farsighted_improvement
from .model_based import ModelBasedSAC

IMPROVEMENT_KEYS = ("train/J", "train/J_reward", "train/J_entropy", "train/J_penalty",
                    "train/J_cut_value", "train/J_tail", "train/realized_horizon", "train/u_mean",
                    "train/live_rows",
                    "model/u_T", "model/u_ref")


class MPDP(ModelBasedSAC):
    def __init__(self, cfg: dict, spec):
        super().__init__(cfg, spec, actor_heads=cfg["horizon"])
        self.horizon = cfg["horizon"]
        self.fixed_u_T = cfg["u_T"] != "auto"
        self.register_buffer("u_threshold", torch.tensor(float(cfg["u_T"]) if self.fixed_u_T else 0.0))
        self.register_buffer("u_ref", torch.tensor(1.0))
        # compile=true: one graph for the whole unroll (forward and backward), compiled on the
        # first farsighted update; worth it on GPUs (many small fused ops), not on CPUs
        self.improve = torch.compile(farsighted_improvement) if cfg["compile"] else farsighted_improvement
        self.unroll_form = cfg["unroll_form"]
        self.metric_keys = (*ModelBasedSAC.metric_keys, *IMPROVEMENT_KEYS,
                            *(f"train/cut_frac/{t}" for t in range(self.horizon)))

    @torch.no_grad()
    def after_model_training(self, holdout) -> None:
        if holdout.shape[0] > 0:
            # under DDP, every rank's held-out u: the same threshold on every rank
            u = gather_across_ranks(self.dynamics.ovr_error(holdout["observation"], holdout["action"]))
            self.u_ref.copy_(torch.quantile(u, self.cfg["u_T_quantile"]).clamp_min(1e-6))
            if not self.fixed_u_T:
                self.u_threshold.copy_(self.u_ref)
        self.record_metrics({"model/u_T": self.u_threshold, "model/u_ref": self.u_ref})

    def penalty_weight(self) -> torch.Tensor | float:
        """beta in Eq. (10): beta / u_ref with ``beta_relative``, else beta."""
        beta = self.cfg["beta"]
        return beta / self.u_ref if self.cfg["beta_relative"] else beta

    def form(self) -> str:
        """The unroll's form (:mod:`mpdp_pl.improvement`): ``auto`` is ``live`` on a CPU
        without ``compile`` (work in proportion to the alive samples) and ``static`` otherwise
        (fixed shapes, no host sync: CUDA graphs and torch.compile)."""
        if self.unroll_form != "auto":
            return self.unroll_form
        return "live" if self.device.type == "cpu" and not self.cfg["compile"] else "static"

    def actor_grad_clip(self) -> float:
        return self.cfg["actor_grad_clip"]

    def actor_step(self) -> None:
        if not self.model_ready:
            return super().actor_step()  # SAC's Eq. (4) until the model exists
        c = self.cfg
        obs = self.sample_batch()["observation"]
        result = self.improve(
            obs, self.actor, self.critic, self.dynamics, self.alpha, self.penalty_weight(), c["gamma"],
            self.u_threshold, self.horizon, c["paper_literal_cut"],
            terminal_critic=c["terminal_critic"], form=self.form(),
        )
        # long unrolls can explode (the paper warns of it): clip, and log the norm before clipping
        grad_norm = self.guarded_step("actor", self.optimizers()[1], result.loss,
                                      self.actor.parameters(), c["actor_grad_clip"])
        self.temperature_step(result.log_prob0)
        diag = dict(result.diagnostics)
        cut_frac = diag.pop("cut_frac")
        self.record(actor_loss=result.loss, actor_grad_norm=grad_norm, **diag)
        self.record_metrics({f"train/cut_frac/{t}": cut_frac[t] for t in range(self.horizon)})
