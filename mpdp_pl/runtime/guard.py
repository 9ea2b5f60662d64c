"""The guard against non-finite updates: a NaN or Inf in a loss or gradient skips that optimizer
step, the part (critic, actor, temperature or ensemble) goes back to its last good weights, and
``durability.nonfinite_limit`` faults of one part in a row stop the run with a one-line message and a
``failed.txt`` verdict in the run directory (a grid keeps such a seed as a
failure and never reruns it).

Two ways, chosen by ``durability.nonfinite_guard`` (``auto``: sync on CPU, where a host sync costs nothing,
deferred on accelerators):

- ``sync`` tests finiteness on the host once per step (like AMP's GradScaler) and, on a fault,
  skips the step and restores the part's last good weights;
- ``deferred`` never syncs: it steps, then puts the weights and the optimizer's state back where
  the step was not finite (one copy of each per step), counts faults on the device and checks
  the limit whenever :meth:`NonfiniteGuard.check_deferred` runs (at logging, evaluation and
  checkpoint time).
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from ..errors import FAILED_MARKER
from . import checkpoint
from .distributed import average_gradients


def adam(params, lr: float, device: torch.device) -> torch.optim.Adam:
    """Adam for a part that :meth:`NonfiniteGuard.step` updates. On an accelerator its step
    counter lives on the device (``capturable``): torch keeps it on the host otherwise, and
    putting a faulty step's counter back (the deferred guard) would wait for the device's
    verdict there, a host sync per parameter and update."""
    return torch.optim.Adam(params, lr=lr, capturable=device.type in ("cuda", "xpu"))


class NumericalFault(RuntimeError):
    """Non-finite losses or gradients in one part, ``durability.nonfinite_limit`` updates in a row."""


class NonfiniteGuard:
    """The guard's state (fault counts, last good weights) for one module; the module passes
    itself to each call (its ``fault_parts()``, ``manual_backward``, device and run directory)."""

    def __init__(self, limit: int, mode: str):
        self.limit, self.mode = limit, mode
        self.skips = 0                      # train/nonfinite_skips
        self.streak: dict[str, int] = {}    # faults in a row, per part
        self._device_streak: dict[str, torch.Tensor] = {}      # deferred mode
        self._device_max_streak: dict[str, torch.Tensor] = {}
        self._device_skips: torch.Tensor | None = None
        self._good_weights: dict[str, list] = {}

    def sync(self, device: torch.device) -> bool:
        return self.mode == "sync" or (self.mode == "auto" and device.type == "cpu")

    @property
    def healthy(self) -> bool:
        """No part is in a streak of faults (its weights are worth keeping as good)."""
        return not any(self.streak.values())

    def snapshot(self, module, only: str | None = None) -> None:
        """Copy every part's weights (or ``only`` that part's) as its last known good state."""
        for part, items in module.fault_parts().items():
            if only is not None and part != only:
                continue
            self._good_weights[part] = [
                {k: v.detach().clone() for k, v in m.state_dict().items()}
                if isinstance(m, torch.nn.Module) else m.detach().clone() for m in items]

    @torch.no_grad()
    def restore(self, module, part: str) -> None:
        for m, saved in zip(module.fault_parts()[part], self._good_weights.get(part, [])):
            if isinstance(m, torch.nn.Module):
                m.load_state_dict(saved)
            else:
                m.copy_(saved)

    def step(self, module, part: str, optimizer, loss: torch.Tensor, params,
             clip: float | None = None) -> torch.Tensor:
        """backward, optional gradient clipping, and the optimizer step unless the loss or the
        gradient norm is not finite (module docstring). Returns the gradient norm before
        clipping."""
        params = list(params)
        optimizer.zero_grad(set_to_none=True)
        module.manual_backward(loss)
        loss_flag = average_gradients(params, loss)  # several ranks: every rank's loss counts
        norm = torch.nn.utils.clip_grad_norm_(params, clip if clip is not None else math.inf)
        ok = torch.isfinite(loss_flag) & torch.isfinite(norm)
        if not self.sync(module.device):
            self._deferred_step(part, optimizer, params, ok)
        elif bool(ok):
            optimizer.step()
            self.streak[part] = 0
        else:
            optimizer.zero_grad(set_to_none=True)
            self.report(module, part)
        return norm

    def report(self, module, part: str) -> None:
        """A fault of ``part`` seen on the host: count it, restore the part's last good weights,
        and stop the run at the limit."""
        self.skips += 1
        self.streak[part] = streak = self.streak.get(part, 0) + 1
        self.restore(module, part)
        if streak >= self.limit:
            self._fail(module, part, streak)

    @torch.no_grad()
    def _deferred_step(self, part: str, optimizer, params: list, ok: torch.Tensor) -> None:
        opt = getattr(optimizer, "optimizer", optimizer)
        for p in params:  # a NaN gradient must not reach the moments (nan * 0 is nan: use where)
            if p.grad is not None:
                p.grad.copy_(torch.where(ok, p.grad, torch.zeros_like(p.grad)))
        before = [p.detach().clone() for p in params]
        state = [{k: v.clone() for k, v in opt.state[p].items() if torch.is_tensor(v)}
                 if p in opt.state else {} for p in params]
        optimizer.step()
        for p, old, st in zip(params, before, state):
            p.copy_(torch.where(ok, p, old))
            for k, v in st.items():
                opt.state[p][k].copy_(torch.where(ok, opt.state[p][k], v))
        bad = (~ok).long()
        streak = self._device_streak.get(part, torch.zeros((), dtype=torch.long, device=ok.device))
        streak = (streak + 1) * bad
        self._device_streak[part] = streak
        self._device_max_streak[part] = torch.maximum(
            self._device_max_streak.get(part, torch.zeros_like(streak)), streak)
        self._device_skips = self._device_skips + bad if self._device_skips is not None else bad

    def check_deferred(self, module) -> None:
        """Bring the device-side fault counts to the host (one sync) and stop at the limit."""
        if self._device_skips is None:
            return
        self.skips += int(self._device_skips)
        self._device_skips = None
        for part, worst in self._device_max_streak.items():
            self.streak[part] = int(self._device_streak[part])
            if int(worst) >= self.limit:
                self._fail(module, part, int(worst))
        self._device_max_streak = {}

    @staticmethod
    def _fail(module, part: str, streak: int) -> None:
        out_dir: Path | None = module.out_dir
        message = (f"{streak} non-finite {part} updates in a row by env step {module.env_steps}; "
                   f"the run stopped (last checkpoint: "
                   f"{checkpoint.latest(out_dir) if out_dir else None})")
        if out_dir is not None and module.global_rank == 0:
            # the run's verdict, for grids and reports: a failure, not a run to redo
            (out_dir / FAILED_MARKER).write_text(message + "\n")
        raise NumericalFault(message)
