"""Checkpoints: everything a run needs to continue, written atomically under ``DIR/checkpoints/``.

A checkpoint is a directory ``step<N>`` holding ``state.pt`` (the module's state dict: networks,
targets, temperature, ensemble normalizers and elites, u_T; every optimizer; the counters; the
RNG states of torch, numpy and random; the config it was written under) and one folder per
replay buffer in TorchRL's own serialization (``ReplayBuffer.dumps``). It is written into a
temporary directory first and renamed into place, and only then does the ``latest`` file (also
replaced atomically) point at it, so a crash while writing leaves the previous checkpoint
usable. The two newest checkpoints are kept. Under DDP, ranks other than 0 add their own buffers
and RNG states in ``rank<r>/`` (the module's weights are the same on every rank).
"""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path

import numpy as np
import torch

from ..config import ConfigError, migrate
from ..environment.data import load_buffer, save_buffer

FORMAT_VERSION = 1
KEEP = 2
# Keys that may differ between a run and its resumption (the budget can be extended).
# where a run computes, not what it computes: a resume may move it (a CPU checkpoint onto a GPU)
PLACEMENT_KEYS = {"trainer.accelerator", "trainer.num_threads", "data.buffer_device"}
RESUMABLE_KEYS = {"steps", "out", "logger", *PLACEMENT_KEYS}


def checkpoint_root(run_dir: Path) -> Path:
    return Path(run_dir) / "checkpoints"


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(),
             "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():  # as many devices as both machines see
        for device, cuda_state in enumerate(state["cuda"][:torch.cuda.device_count()]):
            torch.cuda.set_rng_state(cuda_state, device)


def save(module, run_dir: Path) -> Path | None:
    """Write a checkpoint of ``module`` (an OffPolicyModule) and return its directory (None on
    ranks other than 0).

    Under DDP every rank calls this: ranks other than 0 write their own replay buffers and RNG
    states into ``rank<r>/`` of the temporary directory (the run directory must be shared by
    all nodes), then rank 0 writes the shared state and renames the whole into place.
    """
    rank, barrier = module.global_rank, module.trainer.strategy.barrier
    root = checkpoint_root(run_dir)
    name = f"step{module.env_steps:09d}"
    tmp = root / (f".tmp-{name}-{os.getpid()}" if module.world_size == 1 else f".tmp-{name}")
    if rank == 0:
        root.mkdir(parents=True, exist_ok=True)
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
    barrier()
    if rank != 0:
        own = tmp / f"rank{rank}"
        own.mkdir()
        _dump_buffers(module, own)
        torch.save(rng_state(), own / "rng.pt")
    barrier()
    if rank != 0:
        barrier()  # until rank 0 has put the checkpoint in place
        return None
    state = {
        "format": FORMAT_VERSION,
        "config": module.cfg,
        "module": module.state_dict(),
        "optimizers": [opt.state_dict() for opt in module.trainer.optimizers],
        "counters": module.counters(),
        "rng": rng_state(),
    }
    torch.save(state, tmp / "state.pt")
    _dump_buffers(module, tmp)
    final = root / name
    if final.exists():  # a checkpoint of the same step (e.g. the end right after a periodic one)
        shutil.rmtree(final)
    os.replace(tmp, final)
    pointer = root / ".latest.tmp"
    pointer.write_text(name)
    os.replace(pointer, root / "latest")
    for old in sorted(p for p in root.glob("step*") if p.is_dir())[:-KEEP]:
        shutil.rmtree(old, ignore_errors=True)
    barrier()
    return final


def _dump_buffers(module, where: Path) -> None:
    for key, buffer in module.replay_buffers().items():
        if buffer is not None and len(buffer) > 0:
            save_buffer(buffer, where / key)


def latest(run_dir: Path) -> Path | None:
    """The newest complete checkpoint of a run directory, or None."""
    pointer = checkpoint_root(run_dir) / "latest"
    if not pointer.exists():
        return None
    path = checkpoint_root(run_dir) / pointer.read_text().strip()
    return path if (path / "state.pt").exists() else None


def read(path: Path) -> dict:
    """Load ``state.pt`` on the CPU, with a one-line error for anything that is not one."""
    try:
        state = torch.load(Path(path) / "state.pt", map_location="cpu", weights_only=False)
    except Exception as e:  # noqa: BLE001 - any unreadable file is the same user error
        raise ConfigError(f"{path} holds no readable checkpoint ({type(e).__name__})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT_VERSION:
        raise ConfigError(f"{path}: checkpoint format {state.get('format') if isinstance(state, dict) else '?'}"
                          f" is not this version's ({FORMAT_VERSION})")
    return state


def _canonical(cfg: dict) -> dict:
    import yaml

    from ..config import to_yaml

    return yaml.safe_load(to_yaml(cfg))  # the form config.yaml holds


def check_compatible(saved: dict, cfg: dict) -> None:
    """A checkpoint continues only the run it came from: same config except the budget and
    where it runs (``PLACEMENT_KEYS``)."""
    from ..config import differing_keys

    diff = differing_keys(_canonical(migrate(saved, "the checkpoint")), _canonical(cfg), RESUMABLE_KEYS)
    if diff:
        raise ConfigError(f"the checkpoint was written under another config (differs in: "
                          f"{', '.join(diff[:5])})")


def restore(module, state: dict, path: Path) -> None:
    """Load a checkpoint into ``module`` once its optimizers and buffers exist."""
    module.load_counters(state["counters"])  # may size buffers (MBPO's model buffer)
    module.load_state_dict(state["module"])
    if len(module.trainer.optimizers) != len(state["optimizers"]):
        raise ConfigError(f"{path} holds {len(state['optimizers'])} optimizers' states; this run "
                          f"has {len(module.trainer.optimizers)}")
    for opt, opt_state in zip(module.trainer.optimizers, state["optimizers"]):
        opt.load_state_dict(opt_state)
    own = Path(path) / f"rank{module.global_rank}" if module.global_rank else Path(path)
    if module.global_rank and not own.exists():
        raise ConfigError(f"{path} was written by fewer ranks than this run has "
                          f"(no rank{module.global_rank}/)")
    try:
        for key, buffer in module.replay_buffers().items():
            if (own / key).exists():
                load_buffer(buffer, own / key)
        set_rng_state(torch.load(own / "rng.pt", weights_only=False) if module.global_rank else state["rng"])
    except Exception as e:  # noqa: BLE001 - a damaged buffer or RNG file is the same user error
        raise ConfigError(f"{path}: the checkpoint's buffers cannot be read ({type(e).__name__}); "
                          "resume from an earlier one") from None


def run_config(run_dir: Path) -> dict:
    """The config a run directory was started with (its ``config.yaml`` without metadata)."""
    import yaml

    path = Path(run_dir) / "config.yaml"
    try:
        cfg = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        raise ConfigError(f"{run_dir} is not a run directory (no readable config.yaml)") from None
    if not isinstance(cfg, dict) or "env" not in cfg:
        raise ConfigError(f"{path} is not a run config")
    cfg.pop("run", None)
    cfg.pop("resumed", None)
    return migrate(cfg, run_dir)


def find_run(cfg: dict, root: Path = Path("runs")) -> Path:
    """``--resume auto``: the run under ``root`` with the newest checkpoint whose config equals
    ``cfg`` (except the budget and the output directory)."""
    from ..config import differing_keys

    want = _canonical(cfg)
    found = []
    for config_file in Path(root).glob("**/config.yaml"):
        run_dir = config_file.parent
        ckpt = latest(run_dir)
        try:
            have = run_config(run_dir)
        except ConfigError:
            continue
        if ckpt is not None and not differing_keys(_canonical(have), want, RESUMABLE_KEYS):
            found.append((ckpt.stat().st_mtime, run_dir))
    if not found:
        raise ConfigError(f"--resume auto: no run under {root}/ with this config has a checkpoint")
    return max(found)[1]
