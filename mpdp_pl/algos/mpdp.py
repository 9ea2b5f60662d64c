"""MPDP (Algorithm 2): SAC's critics and temperature on real data, a dynamics ensemble trained
every ``model_train_freq`` env steps, and the farsighted improvement (Algorithm 1,
:mod:`mpdp_pl.lookahead.improvement`) of the multi-head actor pi_0..pi_{Hmax-1}; pi_0 acts.

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

Switches beyond Algorithm 2 as printed (all off by default; ``--algo mpdp_paper`` pins the
paper's choices): ``u_T_rule=first_step`` sets u_T from u at the unroll's own first step (a
running mean, :meth:`MPDP.follow_first_step`) instead of the held-out data; ``critic_target=mve``
trains the critics on value-expansion targets over model steps of pi_0
(:mod:`mpdp_pl.lookahead.value_expansion`) instead of on real transitions only (Alg. 2 line 6), and
``critic_states=model`` trains them at the start-state FIFO's model states instead of real ones;
``start_states=model`` starts the unroll at states of pi_0's model rollouts
(:mod:`mpdp_pl.lookahead.start_states`); ``single_policy`` uses pi_0 at every unroll step instead of the
heads; ``critic_data=branched`` trains the critics on MBPO's real/model mix (branched rollouts of
pi_0 after every model training, :mod:`mpdp_pl.algos.model_data`) while the farsighted
improvement still starts at real states. docs/hopper_probes.md has what they measured on Hopper.
"""

from __future__ import annotations

import torch

from ..runtime.distributed import gather_across_ranks
from ..lookahead.improvement import farsighted_improvement
from ..lookahead.start_states import StartStateFIFO, distribution_rollout
from ..lookahead.value_expansion import expansion_loss, expansion_targets, state_expansion_targets
from .model_based import ModelBasedSAC
from .model_data import MODEL_DATA_KEYS, ModelData

FIRST_STEP_RATE = 0.01  # u_T_rule=first_step: rate of the running mean (about 100 actor updates)

IMPROVEMENT_KEYS = ("train/J", "train/J_reward", "train/J_entropy", "train/J_penalty",
                    "train/J_cut_value", "train/J_tail", "train/realized_horizon", "train/u_mean",
                    "train/live_rows", "train/u_first",
                    "model/u_T", "model/u_ref", "train/imagined_frac",
                    "model/open_loop_error", "model/open_loop_k")
# logged as means over the logging interval, not the last batch's value
INTERVAL_MEAN_KEYS = ("train/realized_horizon", "train/live_rows", "train/u_mean")


def _older_checkpoints(module, state_dict, prefix, *args) -> None:
    """Checkpoints written before u_T_rule existed hold no ``u_first_ref``: it starts unset.
    Those written before the cut threshold had one name everywhere hold it as ``u_threshold``."""
    state_dict.setdefault(prefix + "u_first_ref", torch.zeros(()))
    if prefix + "u_threshold" in state_dict:
        state_dict[prefix + "u_T"] = state_dict.pop(prefix + "u_threshold")


def register_threshold(module: torch.nn.Module, cfg: dict) -> None:
    """The cut threshold u_T (a fixed number, or with ``u_T=auto`` 0 until the first model
    training sets it) and u_ref, as buffers of ``module`` that its checkpoints keep."""
    module.fixed_u_T = cfg["u_T"] != "auto"
    module.register_buffer("u_T", torch.tensor(float(cfg["u_T"]) if module.fixed_u_T else 0.0))
    module.register_buffer("u_ref", torch.tensor(1.0))


@torch.no_grad()
def held_out_u_ref(dynamics, holdout, quantile: float) -> torch.Tensor:
    """u_ref: the ``quantile`` of u(s, a) (Eq. 8) over the held-out real transitions of the
    latest model training; under DDP over every rank's, so every rank gets the same threshold."""
    u = gather_across_ranks(dynamics.ovr_error(holdout["observation"], holdout["action"]))
    return torch.quantile(u, quantile).clamp_min(1e-6)


class MPDP(ModelData, ModelBasedSAC):
    def __init__(self, cfg: dict, spec):
        # single_policy: one policy for every step of the unroll (SVG, DHMBPO) instead of the
        # paper's heads pi_0..pi_{Hmax-1}
        super().__init__(cfg, spec, actor_heads=1 if cfg["single_policy"] else cfg["horizon"])
        self.horizon = cfg["horizon"]
        register_threshold(self, cfg)
        # u_T_rule=first_step: running mean of the quantile of u(s_0, a_0); 0 until the first unroll
        self.register_buffer("u_first_ref", torch.tensor(0.0))
        self.register_load_state_dict_pre_hook(_older_checkpoints)
        # compile=true: one graph for the whole unroll (forward and backward), compiled on the
        # first farsighted update; worth it on GPUs (many small fused ops), not on CPUs
        self.improve = torch.compile(farsighted_improvement) if cfg["compile"] else farsighted_improvement
        self.unroll_form = cfg["unroll_form"]
        self.start_fifo: StartStateFIFO | None = None  # start_states=model (mpdp_pl/lookahead/start_states.py)
        self._start_rollout_in = 0                     # actor updates until the next rollout
        self.metric_keys = (*self.metric_keys, *IMPROVEMENT_KEYS,
                            *(f"train/cut_frac/{t}" for t in range(self.horizon)),
                            *(MODEL_DATA_KEYS if cfg["critic_data"] == "branched" else ()))

    @torch.no_grad()
    def after_model_training(self, holdout) -> None:
        if holdout.shape[0] > 0:
            self.u_ref.copy_(held_out_u_ref(self.dynamics, holdout, self.cfg["u_T_quantile"]))
            scaled = self.cfg["u_T_scale"] * self.u_ref
            if not self.fixed_u_T and self.cfg["u_T_rule"] == "holdout":
                self.u_T.copy_(scaled)
            elif not self.fixed_u_T:  # first_step: the holdout's value until an unroll measured u_0
                self.u_T.copy_(torch.where(self.u_first_ref > 0, self.u_T, scaled))
        self.record({"model/u_T": self.u_T, "model/u_ref": self.u_ref})
        if self.cfg["critic_data"] == "branched":
            self.branched_rollouts()

    def critic_batch(self):
        """``critic_data=branched``: MBPO's real/model mix; real transitions otherwise."""
        return self.mixed_batch() if self.cfg["critic_data"] == "branched" else self.sample_batch()

    def open_loop_horizon(self) -> int:
        """The realized horizon of the updates since the last push (else the last interval's),
        rounded, at least 1 (one host read per model training)."""
        total, count = self.recorder.interval_sums.get("train/realized_horizon", (None, 0))
        value = total / count if count else self.recorder.latest.get("train/realized_horizon", 1.0)
        return max(1, round(float(value)))

    def penalty_weight(self) -> torch.Tensor | float:
        """beta in Eq. (10): beta / u_ref with ``beta_relative``, else beta."""
        beta = self.cfg["beta"]
        return beta / self.u_ref if self.cfg["beta_relative"] else beta

    def form(self) -> str:
        """The unroll's form (:mod:`mpdp_pl.lookahead.improvement`): ``auto`` is ``live`` on a CPU
        without ``compile`` (work in proportion to the alive samples) and ``static`` otherwise
        (fixed shapes, no host sync: CUDA graphs and torch.compile)."""
        if self.unroll_form != "auto":
            return self.unroll_form
        return "live" if self.device.type == "cpu" and not self.cfg["compile"] else "static"

    @torch.no_grad()
    def follow_first_step(self, u_first: torch.Tensor) -> None:
        """u_T_rule=first_step: u_T = u_T_scale * running mean of quantile(u(s_0, a_0)), updated
        on the device (no host sync); the first unroll sets the mean. s_0 are the unroll's start
        states: real ones, or the FIFO's model states with ``start_states=model``."""
        # under DDP, every rank's u: the same threshold on every rank
        ref = torch.quantile(gather_across_ranks(u_first), self.cfg["u_T_quantile"])
        # a non-finite u (a diverged update) leaves the mean where it was
        ref = torch.where(torch.isfinite(ref), ref, self.u_first_ref)
        rate = torch.where(self.u_first_ref > 0, FIRST_STEP_RATE, 1.0)
        self.u_first_ref.lerp_(ref, rate)
        if not self.fixed_u_T:
            self.u_T.copy_(self.cfg["u_T_scale"] * self.u_first_ref)
        self.record({"model/u_T": self.u_T})

    def critic_loss(self, batch):
        """critic_target=mve, once the model exists: value-expansion targets over
        ``mve_horizon`` model steps of pi_0 (:mod:`mpdp_pl.lookahead.value_expansion`) from the real
        ``batch``, or with ``critic_states=model`` from a batch of the start-state FIFO's model
        states (the real batch until the first farsighted update has filled the FIFO); SAC's
        otherwise."""
        c = self.cfg
        if c["critic_target"] != "mve" or not self.model_ready:
            return super().critic_loss(batch)
        args = (self.actor, self.critic_target, self.dynamics, self.alpha, c["gamma"],
                c["mve_horizon"], self.u_T)
        if c["critic_states"] == "model" and self.start_fifo is not None:
            targets = state_expansion_targets(self.start_fifo.sample(c["batch_size"]), *args,
                                              bounded=c["mve_target_bound"])
        else:
            targets = expansion_targets(batch, *args, bounded=c["mve_target_bound"])
        loss, q = expansion_loss(self.critic, targets)
        counted = torch.where(targets.weight > 0, targets.target, -torch.inf)
        self.record({"train/target_max": counted.max(), "train/imagined_frac": targets.imagined_frac})
        return loss, q[:, : batch.shape[0]]

    def actor_start_states(self) -> torch.Tensor:
        """s_0 of the unroll: a real batch, or with ``start_states=model`` a batch of the FIFO of
        pi_0's model-rollout states, refilled every ``start_rollout_every`` updates."""
        c = self.cfg
        if c["start_states"] == "real":
            return self.sample_batch()["observation"]
        if self.start_fifo is None:
            self.start_fifo = StartStateFIFO(c["start_buffer_size"], self.spec.obs_dim, self.device)
        if self._start_rollout_in == 0:
            self.start_fifo.add(distribution_rollout(
                self.dynamics, self.actor, self.sample_batch()["observation"],
                c["start_rollout_length"]))
            self._start_rollout_in = c["start_rollout_every"]
        self._start_rollout_in -= 1
        return self.start_fifo.sample(c["batch_size"])

    def actor_grad_clip(self) -> float:
        return self.cfg["actor_grad_clip"]

    def actor_step(self) -> None:
        if not self.model_ready:
            return super().actor_step()  # SAC's Eq. (4) until the model exists
        c = self.cfg
        obs = self.actor_start_states()
        result = self.improve(
            obs, self.actor, self.critic, self.dynamics, self.alpha, self.penalty_weight(), c["gamma"],
            self.u_T, self.horizon, c["paper_literal_cut"],
            terminal_critic=c["terminal_critic"], form=self.form(),
        )
        # long unrolls can explode (the paper warns of it): clip, and log the norm before clipping
        grad_norm = self.guard.step(self, "actor", self.optimizers()[1], result.loss,
                                    self.actor.parameters(), c["actor_grad_clip"])
        self.temperature_step(result.log_prob0)
        if self.cfg["u_T_rule"] == "first_step":
            self.follow_first_step(result.u_first)
        diag = {f"train/{k}": v for k, v in result.diagnostics.items()}
        cut_frac = diag.pop("train/cut_frac")
        diag["train/u_first"] = result.u_first.mean()
        means = {k: diag.pop(k) for k in INTERVAL_MEAN_KEYS}
        self.record({"train/actor_loss": result.loss, "train/actor_grad_norm": grad_norm})
        self.record(diag)
        self.record_mean({**means, **{f"train/cut_frac/{t}": cut_frac[t] for t in range(self.horizon)}})
