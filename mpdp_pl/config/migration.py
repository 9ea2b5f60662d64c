"""Configs of earlier versions in this version's keys.

Keys were one flat namespace before the config groups (``batch_size``, ``model_hidden``): a
stored run config or checkpoint in flat keys is migrated when read (:func:`migrate`), and a flat
key given on the command line or in a grid goes to its place with a one-line warning
(:func:`regroup`). MPDP's switches removed after they measured no gain go too, unless a run used
them with another value than today's behaviour.
"""

from __future__ import annotations

import sys
from typing import Any

from ..errors import ConfigError
from .schema import defaults

# The flat keys of earlier versions -> their dotted place. A stored run or checkpoint written
# with flat keys is migrated through this table; a flat key on the command line or in a grid
# still works, with a one-line warning that names its new key.
FLAT_KEYS = {
    "obs_truncate": "task.obs_truncate", "max_episode_steps": "task.max_episode_steps",
    **{k: f"data.{k}" for k in ("init_random_steps", "num_envs", "env_batching", "frames_per_batch",
                                "buffer_size", "buffer_device", "batch_size")},
    "critic_updates_per_step": "updates.critic_per_step", "actor_updates_per_step": "updates.actor_per_step",
    "warmup_updates": "updates.warmup", "update_every": "updates.every",
    "gamma": "critic.gamma", "tau": "critic.tau", "critic_lr": "critic.lr", "num_critics": "critic.count",
    "critic_layernorm": "critic.layernorm", "critic_scale": "critic.scale",
    "actor_lr": "actor.lr", "actor_std": "actor.std", "log_std_min": "actor.log_std_min",
    "log_std_max": "actor.log_std_max", "actor_grad_clip": "actor.grad_clip",
    "alpha_lr": "temperature.lr", "init_alpha": "temperature.init",
    "target_entropy": "temperature.target_entropy",
    "hidden_sizes": "networks.hidden_sizes", "activation": "networks.activation",
    "obs_norm": "networks.obs_norm",
    "termination": "model.termination", "ensemble_size": "model.ensemble_size", "num_elites": "model.elites",
    **{f"model_{k}": f"model.{k}" for k in (
        "hidden", "layers", "lr", "weight_decay", "batch_size", "train_freq", "holdout", "holdout_ratio",
        "max_holdout", "patience", "max_epochs", "max_steps", "first_fit_scale", "noise", "layernorm",
        "dropout", "optimizer", "noise_decay", "weights", "early_stop", "epoch_batches", "eval_every",
        "error_window")},
    **{k: f"improvement.{k}" for k in ("horizon", "beta", "beta_relative", "u_T", "u_T_quantile",
                                       "single_policy", "paper_literal_cut", "terminal_critic",
                                       "unroll_form", "compile")},
    "start_rollout_length": "dhmbpo.rollout_length", "start_rollout_every": "dhmbpo.rollout_every",
    "start_buffer_size": "dhmbpo.buffer_size",
    "rollout_batch_size": "rollouts.batch_size", "rollout_schedule": "rollouts.schedule",
    "model_retain_epochs": "rollouts.retain_epochs", "real_ratio": "rollouts.real_ratio",
    "epoch_length": "rollouts.epoch_length",
    **{f"m2ac_{k}": f"m2ac.{k}" for k in ("horizon", "keep_h1", "penalty")},
    **{f"pets_{k}": f"pets.{k}" for k in ("horizon", "population", "elites", "iterations", "momentum",
                                          "particles")},
    **{f"poplin_{k}": f"poplin.{k}" for k in ("hidden", "init_var", "bc_epochs", "bc_batch", "bc_lr")},
    "plan_length": "mppve.plan_length", "plan_grad_through_model": "mppve.plan_grad_through_model",
    "exploration_noise": "ddpg.exploration_noise",
    "eval_every": "eval.every", "eval_episodes": "eval.episodes", "video_every": "eval.video_every",
    "checkpoint_every": "durability.checkpoint_every", "nonfinite_limit": "durability.nonfinite_limit",
    "nonfinite_guard": "durability.nonfinite_guard",
    "log_every": "logging.every",
}

# MPDP's switches removed after they measured no gain on Hopper (docs/mpdp.md, "Switches removed"),
# each with the value at which a stored run behaves as this version does (None: any value, the
# key acted only beside another removed one). A stored run with another value ran code that
# LAST_WITH_REMOVED holds and this version does not. Flat keys: they predate the groups.
REMOVED_KEYS = {"u_T_rule": "holdout", "u_T_scale": 1.0, "critic_target": "td", "mve_horizon": None,
                "critic_states": "real", "critic_data": "real", "mve_target_bound": False,
                "start_states": "real"}
LAST_WITH_REMOVED = "a3aa6da"


def migrate(cfg: dict, where: Any) -> dict:
    """A stored run config (``where``: its run directory or checkpoint) in this version's keys:
    flat keys go to their groups (:data:`FLAT_KEYS`) and the removed keys go; one that
    held another value than today's behaviour is a ConfigError that names the commit that can
    still continue the run."""
    if cfg.get("algo") in ("mpdp", "mpdp_paper", "mpdp_pv"):  # the only ones they acted in
        for k, value in REMOVED_KEYS.items():
            if k in cfg and value is not None and cfg[k] != value:
                raise ConfigError(f"{where} ran with {k}={cfg[k]}, a switch this version removed; "
                                  f"continue it from a checkout of {LAST_WITH_REMOVED}")
    out: dict = {}
    for k, v in cfg.items():
        if k in REMOVED_KEYS:
            continue
        if k in FLAT_KEYS:
            group, leaf = FLAT_KEYS[k].split(".")
            out.setdefault(group, {})[leaf] = v
        elif isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = {**v, **out[k]}
        else:
            out[k] = v
    return out


def differing_keys(saved: dict, cfg: dict, ignore=()) -> list[str]:
    """Dotted keys whose values differ between a stored run config and ``cfg``. A key that the
    stored config lacks (the run predates it) counts as at its default: a new switch that
    defaults to the old behaviour leaves earlier runs resumable."""
    default = flatten(defaults())
    saved, cfg = flatten(saved), flatten(cfg)
    return sorted(k for k in saved.keys() | cfg.keys()
                  if k not in ignore and saved.get(k) != cfg.get(k)
                  and not (k not in saved and k in default and cfg.get(k) == default[k]))


_WARNED: set[str] = set()


def regroup(overrides: dict[str, Any]) -> dict[str, Any]:
    """Overrides with every flat key of earlier versions at its place (``batch_size`` ->
    ``data.batch_size``), each one warned once per process in one line on stderr."""
    out = {}
    for k, v in overrides.items():
        if k in FLAT_KEYS:
            if k not in _WARNED:
                _WARNED.add(k)
                print(f"warning: {k} is now {FLAT_KEYS[k]}", file=sys.stderr)
            k = FLAT_KEYS[k]
        out[k] = v
    return out


def flatten(cfg: dict, prefix: str = "") -> dict[str, Any]:
    """Nested dict -> {dotted key: value}."""
    out = {}
    for k, v in cfg.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out
