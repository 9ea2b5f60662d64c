"""The one model-unroll primitive: a batch of states stepped through the dynamics ensemble for up
to k steps by a policy, with the alive masks of cuts and predicted terminals. MPDP's farsighted
improvement (:mod:`mpdp_pl.lookahead.improvement`, with gradient), DHMBPO's start-state
rollouts (:mod:`mpdp_pl.lookahead.start_states`), MBPO's branched rollouts
(:mod:`mpdp_pl.lookahead.rollouts`) and MPPVE's plans (:mod:`mpdp_pl.lookahead.plan_value`) all
iterate it; each keeps only its objective and what it stores.

At step t, for the samples of the batch alive at t (alive_0: every sample):

    a_t, log pi(a_t|s_t) = act(t, s_t, pick)
    (s_{t+1}, r_t, terminal_t, u_t) = one model step   (every elite with u: ``DynamicsModel.step``;
                                                        the serving one only: ``sample_step``)
    cut_t   = alive_t & (u_t >= u_T)            (never without u_T; a NaN u is not a cut)
    valid_t = alive_t & ~cut_t                  (r_t counts)
    alive_{t+1} = valid_t & ~terminal_t

Two forms (``live``):

- static (``live=False``): every step runs the whole batch; a sample that is no longer alive
  keeps its last state (``freeze=True``; detached with ``detach_dead``, so that nothing it
  computes can send NaN into a gradient through ``torch.where``), or moves on to the model's
  next state regardless (``freeze=False``, MPPVE's plans). Fixed shapes, no host sync.
- live (``live=True``): step t runs only the samples still alive, ``rows`` (their batch indices);
  the unroll stops when none is left. Selecting rows reads their number on the host once per
  step. ``pick(x)`` selects the alive rows of a per-sample tensor ``x`` (e.g. noise).
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import torch

from ..models.dynamics import DynamicsModel, ModelStep


class UnrollStep(NamedTuple):
    t: int
    obs: torch.Tensor              # s_t of the stepped samples [n, obs_dim]
    action: torch.Tensor           # a_t [n, A]
    log_prob: torch.Tensor | None  # log pi(a_t|s_t) [n], if ``act`` returns one
    model: ModelStep               # s_{t+1}, r_t, terminal_t, u_t (None without u), member
    alive: torch.Tensor            # [n] alive before the step (all true in the live form)
    cut: torch.Tensor              # [n] alive and u_t >= u_T
    valid: torch.Tensor            # [n] alive and not cut: r_t counts
    alive_next: torch.Tensor       # [n] valid and not terminal
    rows: torch.Tensor | None      # live form: batch indices of the n samples; None: all B


class Unroll:
    """Iterate for the steps (:class:`UnrollStep`). While step t is handed out, and after the
    last, ``obs``, ``alive`` and ``rows`` already hold the state after it (static: every
    sample's, with its mask; live: the alive samples' and their batch indices); ``steps_run``
    counts the steps run."""

    def __init__(self, dynamics: DynamicsModel, obs: torch.Tensor,
                 act: Callable, steps: int, *,
                 u_T: float | torch.Tensor | None = None, with_u: bool = True,
                 member: torch.Tensor | None = None, noise: torch.Tensor | None = None,
                 params=None, detach_params: bool = False, live: bool = False,
                 freeze: bool = True, detach_dead: bool = False, detach_states: bool = False):
        self.dynamics, self.act, self.steps = dynamics, act, steps
        self.u_T, self.with_u, self.member, self.noise = u_T, with_u, member, noise
        self.params, self.detach_params = params, detach_params
        self.live, self.freeze, self.detach_dead = live, freeze, detach_dead
        self.detach_states = detach_states
        self.batch = obs.shape[0]
        self.obs = obs
        self.alive = torch.ones(self.batch, dtype=torch.bool, device=obs.device)
        self.rows = torch.arange(self.batch, device=obs.device) if live else None
        self.steps_run = 0

    # ---------------------------------------------------------------- the forms, for objectives
    def _rows(self, step: UnrollStep | None) -> torch.Tensor | None:
        return None if not self.live else self.rows if step is None else step.rows

    def pick(self, x: torch.Tensor, step: UnrollStep | None = None) -> torch.Tensor:
        """The rows of a per-sample tensor ``x`` [B, ...] that ``step`` ran (without ``step``:
        the samples alive after the last step); static: all of ``x``."""
        rows = self._rows(step)
        return x if rows is None else x[rows]

    def add(self, total: torch.Tensor, term: torch.Tensor,
            step: UnrollStep | None = None) -> torch.Tensor:
        """``total`` [B] plus ``term``, the per-row values of ``step`` (without ``step``: of
        the samples alive after the last step), at their batch indices."""
        rows = self._rows(step)
        return total + term if rows is None else total.index_add(0, rows, term)

    def masked(self, mask: torch.Tensor, fn: Callable, *xs: torch.Tensor) -> torch.Tensor:
        """``fn(*xs)`` [n] where ``mask`` is true, zero elsewhere. Static: computed for every row
        and selected (fixed shapes); live: computed for the masked rows only (their number is
        read on the host, as the live form does every step)."""
        if not self.live:
            return torch.where(mask, fn(*xs), 0.0)
        out = xs[0].new_zeros(mask.shape[0])
        idx = mask.nonzero().squeeze(-1)
        if idx.numel() == 0:
            return out
        return out.index_add(0, idx, fn(*(x[idx] for x in xs)))

    def _model_step(self, s, a, pick) -> ModelStep:
        t = self.steps_run
        if not self.with_u:
            return self.dynamics.sample_step(s, a, detach_params=self.detach_params)
        member = None if self.member is None else pick(self.member[t])
        noise = None if self.noise is None else pick(self.noise[t])
        return self.dynamics.step(s, a, member=member, noise=noise,
                                  detach_params=self.detach_params, params=self.params)

    def __iter__(self):
        for t in range(self.steps):
            if self.live:
                n = self.rows.numel()
                if n == 0:  # nobody left: the remaining steps contribute nothing
                    return
                rows, everyone = self.rows, n == self.batch and t == 0
                pick = (lambda x: x) if everyone else (lambda x: x[rows])  # noqa: E731
            else:
                pick = lambda x: x  # noqa: E731
            s = self.obs.detach() if self.detach_states else self.obs
            action, log_prob = self.act(t, s, pick)
            step = self._model_step(s, action, pick)
            alive = self.alive
            if self.u_T is None or step.u is None:
                cut = torch.zeros_like(alive)
            else:
                cut = alive & (step.u.detach() >= self.u_T)
            valid = alive & ~cut
            alive_next = valid & ~step.terminated
            record = UnrollStep(t, s, action, log_prob, step, alive, cut, valid, alive_next,
                                self.rows if self.live else None)
            self.steps_run = t + 1  # the state advances before the step is handed out
            if self.live:
                keep = alive_next.nonzero().squeeze(-1)
                self.rows, self.obs = self.rows[keep], step.next_obs[keep]
                self.alive = torch.ones(keep.numel(), dtype=torch.bool, device=keep.device)
            else:
                if not self.freeze:
                    self.obs = step.next_obs
                else:
                    held = s.detach() if self.detach_dead else s
                    self.obs = torch.where(alive_next.unsqueeze(-1), step.next_obs, held)
                self.alive = alive_next
            yield record
