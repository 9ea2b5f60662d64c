"""MPDP (Algorithm 2): SAC's critics and temperature on real data, a dynamics ensemble trained
every ``model.train_freq`` env steps, and the farsighted improvement (Algorithm 1,
:mod:`mpdp_pl.lookahead.improvement`) of the multi-head actor pi_0..pi_{Hmax-1}; pi_0 acts.

Before the first model training the actor takes SAC's one-step update (Eq. 4).

After every model training, u_ref is set to the ``improvement.u_T_quantile`` of u(s, a) over the held-out
real transitions of that training (the paper gives no value for u_T; training points would
understate u). The cut threshold u_T is u_ref (``improvement.u_T=auto``) or a fixed number (``inf`` gives a
fixed horizon).

``improvement.beta_relative=true`` (the default) applies the penalty as beta * u / u_ref instead of
beta * u: Eq. (8) sums KL over members and output dims, so raw u is large (5-30 on
InvertedPendulum early in training) and beta * u swamps a reward of 1 per step; the policy then
learns to reach a predicted terminal early, where the penalties stop (measured: eval return 3
to 50 after 2.5k steps, below a random policy's 8, with beta = 0.5 raw). In units of u_ref,
beta is the penalty at a typical held-out model error and transfers across tasks.
``improvement.beta_relative=false`` is Eq. (10) literally.

Switches beyond Algorithm 2 as printed (``--algo mpdp_paper`` pins the paper's choices):
``improvement.single_policy`` (off) uses pi_0 at every unroll step instead of the heads;
``improvement.paper_literal_cut`` (off) and ``improvement.terminal_critic`` (on; the paper
preset turns it off) choose how a cut and a predicted terminal end a sample
(:mod:`mpdp_pl.lookahead.improvement`). docs/mpdp.md has what each switch measured, and
the switches that measured no gain and were removed.
"""

from __future__ import annotations

import torch

from ..runtime.distributed import gather_across_ranks
from ..lookahead.improvement import farsighted_improvement
from .model_based import ModelBasedSAC

IMPROVEMENT_KEYS = ("train/J", "train/J_reward", "train/J_entropy", "train/J_penalty",
                    "train/J_cut_value", "train/J_tail", "train/realized_horizon", "train/u_mean",
                    "train/live_rows", "train/u_first",
                    "model/u_T", "model/u_ref",
                    "model/open_loop_error", "model/open_loop_k")
# logged as means over the logging interval, not the last batch's value
INTERVAL_MEAN_KEYS = ("train/realized_horizon", "train/live_rows", "train/u_mean")


def _older_checkpoints(module, state_dict, prefix, *args) -> None:
    """Checkpoints written while ``u_T_rule`` existed hold its running mean ``u_first_ref``,
    which nothing reads now. Those written before the cut threshold had one name everywhere hold
    it as ``u_threshold``."""
    state_dict.pop(prefix + "u_first_ref", None)
    if prefix + "u_threshold" in state_dict:
        state_dict[prefix + "u_T"] = state_dict.pop(prefix + "u_threshold")


def register_threshold(module: torch.nn.Module, cfg: dict) -> None:
    """The cut threshold u_T (a fixed number, or with ``improvement.u_T=auto`` inf, no cut, until a
    model training with held-out transitions sets it) and u_ref, as buffers of ``module`` that its
    checkpoints keep."""
    module.fixed_u_T = cfg["improvement"]["u_T"] != "auto"
    module.register_buffer("u_T", torch.tensor(float(cfg["improvement"]["u_T"]) if module.fixed_u_T else float("inf")))
    module.register_buffer("u_ref", torch.tensor(1.0))


@torch.no_grad()
def set_threshold(module, holdout) -> None:
    """After a model training: u_ref is the ``improvement.u_T_quantile`` of u(s, a) (Eq. 8) over its
    held-out real transitions (under DDP over every rank's, so every rank gets the same
    threshold), and with ``improvement.u_T=auto`` the cut threshold u_T is u_ref."""
    if holdout.shape[0] > 0:
        u = gather_across_ranks(module.dynamics.ovr_error(holdout["observation"], holdout["action"]))
        module.u_ref.copy_(torch.quantile(u, module.cfg["improvement"]["u_T_quantile"]).clamp_min(1e-6))
        if not module.fixed_u_T:
            module.u_T.copy_(module.u_ref)
    module.record({"model/u_T": module.u_T, "model/u_ref": module.u_ref})


def penalty_weight(cfg: dict, u_ref: torch.Tensor) -> torch.Tensor | float:
    """beta in Eq. (10): beta / u_ref with ``improvement.beta_relative``, else beta (beta = 0 is
    the number 0, so that nothing needs u for it)."""
    beta = cfg["improvement"]["beta"]
    return beta / u_ref if cfg["improvement"]["beta_relative"] and beta != 0 else beta


def cut_threshold(module) -> torch.Tensor | None:
    """The cut threshold u_T, or None where ``improvement.u_T=inf`` fixes the horizon."""
    fixed_inf = module.fixed_u_T and float(module.cfg["improvement"]["u_T"]) == float("inf")
    return None if fixed_inf else module.u_T


class MPDP(ModelBasedSAC):
    def __init__(self, cfg: dict, spec):
        # single_policy: one policy for every step of the unroll (SVG, DHMBPO) instead of the
        # paper's heads pi_0..pi_{Hmax-1}
        super().__init__(cfg, spec, actor_heads=1 if cfg["improvement"]["single_policy"] else cfg["improvement"]["horizon"])
        self.horizon = cfg["improvement"]["horizon"]
        register_threshold(self, cfg)
        self.register_load_state_dict_pre_hook(_older_checkpoints)
        # compile=true: one graph for the whole unroll (forward and backward), compiled on the
        # first farsighted update; worth it on GPUs (many small fused ops), not on CPUs
        self.improve = torch.compile(farsighted_improvement) if cfg["improvement"]["compile"] else farsighted_improvement
        self.unroll_form = cfg["improvement"]["unroll_form"]
        self.metric_keys = (*self.metric_keys, *IMPROVEMENT_KEYS,
                            *(f"train/cut_frac/{t}" for t in range(self.horizon)))

    def update(self, critic_updates: int, actor_updates: int) -> None:
        """One round of Algorithm 2, once base.py stored its env steps (line 3):

        - the networks' observation statistics, when due (``networks.obs_norm``);
        - line 4: the ensemble's training, every ``model.train_freq`` env steps (before it,
          ``model/error`` and ``model/open_loop_error`` at the realized horizon); after it,
          u_T and u_ref from u (Eq. 8) on the real transitions it was not fitted on, and after
          the first one ``updates.warmup`` interleaved updates (0 by default);
        - lines 5-6: the critic updates on real data (Eq. 2-3, :meth:`critic_step`);
        - line 7: the actor updates, the farsighted improvement of pi_0..pi_{Hmax-1}
          (Algorithm 1, :meth:`actor_step`).
        """
        self.refresh_obs_norm()
        holdout = self.train_model(open_loop_k=self.realized_horizon)
        if holdout is not None:
            set_threshold(self, holdout)
            self.warm_start_after_first_model()
        self.policy_updates(critic_updates, actor_updates)

    def realized_horizon(self) -> int:
        """The realized horizon of the updates since the last push (else the last interval's),
        rounded, at least 1 (one host read per model training)."""
        total, count = self.recorder.interval_sums.get("train/realized_horizon", (None, 0))
        value = total / count if count else self.recorder.latest.get("train/realized_horizon", 1.0)
        return max(1, round(float(value)))

    def penalty_weight(self) -> torch.Tensor | float:
        return penalty_weight(self.cfg, self.u_ref)

    def form(self) -> str:
        """The unroll's form (:mod:`mpdp_pl.lookahead.improvement`): ``auto`` is ``live`` on a CPU
        without ``improvement.compile`` (work in proportion to the alive samples) and ``static`` otherwise
        (fixed shapes, no host sync: CUDA graphs and torch.compile)."""
        if self.unroll_form != "auto":
            return self.unroll_form
        return "live" if self.device.type == "cpu" and not self.cfg["improvement"]["compile"] else "static"

    def actor_grad_clip(self) -> float:
        return self.cfg["actor"]["grad_clip"]

    def actor_step(self) -> None:
        if not self.model_ready:
            return super().actor_step()  # SAC's Eq. (4) until the model exists
        c = self.cfg
        obs = self.sample_batch()["observation"]
        result = self.improve(
            obs, self.actor, self.critic, self.dynamics, self.alpha, self.penalty_weight(), c["critic"]["gamma"],
            self.u_T, self.horizon, c["improvement"]["paper_literal_cut"],
            terminal_critic=c["improvement"]["terminal_critic"], form=self.form(),
        )
        # long unrolls can explode (the paper warns of it): clip, and log the norm before clipping
        grad_norm = self.guard.step(self, "actor", self.optimizers()[1], result.loss,
                                    self.actor.parameters(), c["actor"]["grad_clip"])
        self.temperature_step(result.log_prob0)
        diag = {f"train/{k}": v for k, v in result.diagnostics.items()}
        cut_frac = diag.pop("train/cut_frac")
        diag["train/u_first"] = result.u_first.mean()
        means = {k: diag.pop(k) for k in INTERVAL_MEAN_KEYS}
        self.record({"train/actor_loss": result.loss, "train/actor_grad_norm": grad_norm})
        self.record(diag)
        self.record_mean({**means, **{f"train/cut_frac/{t}": cut_frac[t] for t in range(self.horizon)}})
