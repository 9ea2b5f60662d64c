"""The environments and the data path of a run: the training env (seeded per rank, and anew on
a resume so that it does not replay the first episodes), the evaluation env, pi_0 as a TorchRL
policy, and the TorchRL collector stream that Lightning iterates (one batch per round of
``data.frames_per_batch`` env steps per env)."""

from __future__ import annotations

from contextlib import contextmanager

import torch
from tensordict.nn import TensorDictModule
from torch.utils.data import DataLoader

from ..environment.data import CollectorStream, make_collector
from ..environment.envs import make_env
from ..models.actor import ActorPolicy

EVAL_SEED_OFFSET = 10_000  # the eval env's seed is seed + this, so it never replays training episodes


def _identity(batch):
    """The collector's TensorDict as is (DataLoader's default_convert would unpack it)."""
    return batch


class EnvSetup:
    """The Lightning hooks and helpers of the data path, mixed into ``OffPolicyModule``."""

    @property
    def world_size(self) -> int:
        """Ranks stepping environments (1 without DDP); env-step counts are summed over them."""
        return self.trainer.world_size if self._trainer is not None else 1

    def setup(self, stage: str) -> None:
        seed = self.cfg["seed"] + 1000 * self.global_rank
        if self.world_size > 1:  # own exploration noise and batches per rank (weights: rank 0's)
            torch.manual_seed(seed)
        if self.resume_state is not None:  # fresh episodes, not a replay of the first ones
            seed += 7919 * self.resume_state["counters"]["env_steps"]
        # A dict, not attributes: TorchRL envs are nn.Modules, and as submodules they would be
        # moved to the GPU and saved with the weights.
        # every evaluation re-seeds its env with this: the same initial states each time
        self.eval_seed = self.cfg["seed"] + 1000 * self.global_rank + EVAL_SEED_OFFSET
        self.envs = {"train": make_env(self.cfg, seed=seed, num_envs=self.cfg["data"]["num_envs"]),
                     "eval": make_env(self.cfg, seed=self.eval_seed)}

    @contextmanager
    def evaluating(self, seed: int):
        """An evaluation's randomness apart from training's: torch's RNG forked and seeded with
        ``seed`` for its episodes (a planner's CEM and a stochastic policy draw from it), so
        that a checkpoint and a seed give one evaluation, and training's random stream does not
        depend on how often it was evaluated."""
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            torch.manual_seed(seed)
            yield

    def policy(self, deterministic: bool) -> TensorDictModule:
        return TensorDictModule(ActorPolicy(self.actor, deterministic),
                                in_keys=["observation"], out_keys=["action"])

    def _buffer_device(self) -> torch.device:
        return torch.device(self.cfg["data"]["buffer_device"]) if self.cfg["data"]["buffer_device"] else self.device

    def _make_collector(self):
        return make_collector(
            self.envs["train"], self.policy(deterministic=False),
            self.cfg["data"]["frames_per_batch"] * self.cfg["data"]["num_envs"],
            max(0, -(-(self.cfg["data"]["init_random_steps"] - self.env_steps) // self.world_size)), self.device,
            self._buffer_device(),
        )

    def remaining_steps(self) -> int:
        return self.cfg["steps"] - self.env_steps

    def train_dataloader(self) -> DataLoader:
        self._stream = CollectorStream(self._make_collector, self.remaining_steps)
        return DataLoader(self._stream, batch_size=None, num_workers=0, collate_fn=_identity)
