"""Checkpoints every ``durability.checkpoint_every`` env steps and at the end of a run, and a clean stop
on SIGTERM or SIGINT: the handlers (installed after Lightning's own) set the module's
``stop_signal``, the env-step loop stops at its next round, and the final checkpoint is
written with a line that says how to continue."""

from __future__ import annotations

import signal

from lightning.pytorch.callbacks import Callback

from ...errors import FAILED_MARKER

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Durability(Callback):
    def __init__(self):
        self._previous_handlers: dict = {}

    def on_train_start(self, trainer, module) -> None:
        def on_signal(signum, frame) -> None:
            module.stop_signal = signal.Signals(signum).name  # acted on at the next round

        self._previous_handlers = {s: signal.signal(s, on_signal) for s in SIGNALS}
        if trainer.is_global_zero and module.out_dir is not None:
            # a run resumed by hand after a fault tries again: the old verdict no longer holds
            (module.out_dir / FAILED_MARKER).unlink(missing_ok=True)

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        every = module.cfg["durability"]["checkpoint_every"]
        if every and module.env_steps // every > module.last_checkpoint_step // every:
            module.save_checkpoint()

    def on_train_end(self, trainer, module) -> None:
        for sig, handler in self._previous_handlers.items():
            signal.signal(sig, handler)
        if module.env_steps > 0:
            path = module.save_checkpoint()
            if module.stop_signal is not None and path is not None:
                print(f"stopped by {module.stop_signal} at env step {module.env_steps}; "
                      f"checkpoint {path}; continue with: python train.py --resume {module.out_dir}")
