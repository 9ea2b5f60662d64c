"""One DDP rank of the distributed tests: ``python tests/ddp_worker.py OUT KEY=VALUE ...``.

Trains MPDP through the real ``run.train_module`` (Lightning's DDP launcher re-runs this script
for every other rank) and has every rank write what the test compares: its module state, its
optimizers' states, its counters and its replay buffer, after the strategy's own setup (initial)
and at the end, as ``OUT/rank<r>-{initial,final}.pt``. With ``--resume`` it continues OUT from
its latest checkpoint (``steps=`` then sets the new budget).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mpdp_pl.algos.mpdp import MPDP  # noqa: E402
from mpdp_pl.runtime.checkpoint import latest  # noqa: E402
from mpdp_pl.config import load_config, parse_overrides  # noqa: E402
from mpdp_pl.environment.data import buffer_contents  # noqa: E402
from mpdp_pl.run import train_module  # noqa: E402


class StateDumpingMPDP(MPDP):
    def dump(self, tag: str) -> None:
        state = {
            "module": {k: v.detach().clone() for k, v in self.state_dict().items()},
            "optimizers": [opt.state_dict() for opt in self.trainer.optimizers],
            "counters": self.counters(),
            "world_size": self.world_size,
            "buffer": buffer_contents(self.replay_buffer).to_dict() if len(self.replay_buffer) else {},
        }
        torch.save(state, Path(self.cfg["out"]) / f"rank{self.global_rank}-{tag}.pt")

    def on_fit_start(self) -> None:
        super().on_fit_start()
        self.dump("initial")

    def on_train_end(self) -> None:
        super().on_train_end()
        self.dump("final")


if __name__ == "__main__":
    out, *items = sys.argv[1:]
    resume = "--resume" in items  # continue OUT from its latest checkpoint
    overrides = parse_overrides([i for i in items if i != "--resume"])
    overrides["out"] = out
    cfg = load_config(overrides.pop("env", "InvertedPendulum-v4"), "mpdp", overrides)
    train_module(StateDumpingMPDP, cfg, resume=latest(Path(out)) if resume else None)
