"""Resolved run configuration, composed by Hydra (Compose API) from the config groups of conf/:
:class:`.schema.RunConfig` <- conf/algo/<algo>.yaml <- conf/env/<Task>.yaml
<- conf/algo_env/<algo>_<Task>.yaml <- conf/variant/<name>.yaml <- ``key=value`` overrides.

Every key lives in :mod:`.schema`, in a group by what it configures (``model.hidden``,
``critic.gamma``), with its type, default and meaning. A file or an override that names an
unknown key or gives a value of the wrong type fails; ranges that a type cannot express are the
schema's ``RANGES`` and its groups' checks, and what an algorithm refuses is :mod:`.algorithms`.
Values that depend on both the task and the algorithm (MPDP's Hmax, MBPO's rollout schedule)
live in the optional group ``algo_env``; a preset (``--algo mpdp_paper``) is an algorithm file
whose defaults list starts with its algorithm's file.

A flat key of earlier versions (``batch_size``) still works as an override, with a one-line
warning that names its place (``data.batch_size``); a stored run config or checkpoint in flat
keys is migrated (:mod:`.migration`). Every failure is a :class:`ConfigError`: one line, exit 2.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import os
import re
import threading
from pathlib import Path
from typing import Any

import yaml

from ..errors import ConfigError
from . import algorithms
from . import schema as groups
from .migration import (LAST_WITH_REMOVED, REMOVED_KEYS, differing_keys, flatten,  # noqa: F401
                        migrate, regroup)

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"

def _read_yaml(path: Path) -> dict:
    with open(path) as f:
        data = yaml.safe_load(f) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at top level")
    return data


def task_name(env_id: str) -> str:
    """``Hopper-v4`` -> ``Hopper``: the task file name shared by all versions of an env."""
    return re.sub(r"-v\d+$", "", env_id.split("/")[-1])


def task_budget(env_id: str) -> int:
    """The env-step budget of a task: ``steps`` of conf/env/<Task>.yaml (the MPDP paper's Fig. 1
    budget), else the schema's default. An algo_env file may set a shorter first run (``python
    train.py``: mpdp_pv on InvertedPendulum, 6k); an experiment's ``steps=task`` gives it back."""
    path = CONF_DIR / "env" / f"{task_name(env_id)}.yaml"
    steps = _read_yaml(path).get("steps") if path.exists() else None
    return steps if steps is not None else groups.RunConfig().steps


def available_algos() -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / "algo").glob("*.yaml"))


def available_variants() -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / "variant").glob("*.yaml"))


def variant_algo(name: Any) -> str:
    """The algorithm a variant (conf/variant/<name>.yaml) names; a one-line error otherwise."""
    path = CONF_DIR / "variant" / f"{name}.yaml"
    if not isinstance(name, str) or "/" in name or not path.exists():
        raise ConfigError(f"unknown variant '{name}' (available: {', '.join(available_variants())})")
    algo = _read_yaml(path).get("algo")
    if not isinstance(algo, str):
        raise ConfigError(f"{path}: a variant names its algorithm (algo: <name>)")
    return algo


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``["batch_size=128", "wandb.project=x"]`` -> ``{"batch_size": 128, ...}`` (YAML values)."""
    out = {}
    for item in items:
        if "=" not in item or item.startswith("="):
            raise ConfigError(f"'{item}': overrides are written key=value")
        key, raw = item.split("=", 1)
        try:
            out[key.strip()] = yaml.safe_load(raw) if raw != "" else None
        except yaml.YAMLError:
            raise ConfigError(f"'{item}': cannot parse the value") from None
    return out


@functools.cache
def schema():
    """:class:`.schema.RunConfig`, registered in Hydra's ConfigStore as ``schema``, the first
    entry of conf/config.yaml's defaults list."""
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name="schema", node=groups.RunConfig)
    return groups.RunConfig


# Hydra's GlobalHydra is one per process: a grid's launcher threads (mpdp_pool) resolve their
# jobs' configs side by side, and two compositions at once fail ("GlobalHydra is already
# initialized"), which made a fixed-seed run of a grid fail now and then under load.
_COMPOSE_LOCK = threading.Lock()


def _compose(algo: str, task: str, variant: str | None = None):
    """conf/config.yaml's defaults list for this algorithm, task and variant, typed by the
    schema (one composition at a time in a process)."""
    with _COMPOSE_LOCK:
        return _compose_unlocked(algo, task, variant)


def _compose_unlocked(algo: str, task: str, variant: str | None):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.initialize import get_gh_backup, restore_gh_from_backup
    from omegaconf.errors import OmegaConfBaseException

    schema()
    overrides = [f"algo={algo}"]
    if (CONF_DIR / "env" / f"{task}.yaml").exists():
        overrides.append(f"env={task}")
    if variant is not None:
        overrides.append(f"variant={variant}")
    backup = get_gh_backup()  # a running Hydra app (a grid's job) gets its state back after
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(str(CONF_DIR), version_base="1.3", job_name="mpdp_pl"):
            cfg = compose("config", overrides=overrides)
    except Exception as e:  # Hydra's and OmegaConf's composition errors: multi-line reports
        if not isinstance(e, OmegaConfBaseException) and type(e).__module__.split(".")[0] != "hydra":
            raise
        raise ConfigError(" ".join(str(e).split())) from None
    finally:
        restore_gh_from_backup(backup)
    return cfg


def load_config(
    env: str | None = None, algo: str | None = None, overrides: dict[str, Any] | None = None,
    stored: bool = False,
) -> dict:
    """Resolve the config of one run, as a plain nested dict. ``env``/``algo`` select the task
    and algorithm files; ``overrides`` are dotted keys (CLI flags and ``key=value`` items),
    applied last. An override that changes a key the algorithm does not read is refused
    (:func:`.algorithms.check_read`), unless ``stored``: the overrides are then a config a run
    stored, every key of it, written by a version whose defaults may differ."""
    from omegaconf import OmegaConf

    overrides = regroup(flatten(dict(overrides or {})))  # {"trainer": {"devices": 2}} = trainer.devices
    variant = overrides.pop("variant", None)
    for key, given in (("algo", algo), ("env", env)):  # --algo A with algo=B: which files?
        if given is not None and key in overrides and overrides[key] != given:
            raise ConfigError(f"{key} is given twice: {given} and {key}={overrides[key]}")
    algo = algo or overrides.pop("algo", None)
    overrides.pop("algo", None)
    if variant is not None:
        named = variant_algo(variant)
        if algo is not None and algo != named:
            raise ConfigError(f"variant {variant} is a configuration of {named}, not of {algo}")
        algo = named
    algo = algo or groups.RunConfig.algo
    env = env or overrides.pop("env", None) or groups.RunConfig.env
    overrides.pop("env", None)
    if not isinstance(algo, str) or not (CONF_DIR / "algo" / f"{algo}.yaml").exists():
        raise ConfigError(
            f"unknown algorithm '{algo}' (available: {', '.join(available_algos())})"
        )
    if not isinstance(env, str):
        raise ConfigError(f"env={env!r}: expected a gymnasium id (str)")
    cfg = _compose(algo, task_name(env), variant)
    cfg.env, cfg.algo, cfg.variant = env, algo, variant
    changed = []  # the overrides that change what the files composed
    for key, value in overrides.items():
        before = OmegaConf.select(cfg, key, throw_on_missing=False)
        _override(cfg, key, value)
        if OmegaConf.select(cfg, key) != before:
            changed.append(key)
    cfg = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    for dotted in groups.AUTO_OR_NUMBER:
        group, leaf = dotted.split(".")
        cfg[group][leaf] = groups.auto_or_number(cfg[group][leaf])
    validate(cfg)
    if not stored:
        algorithms.check_read(cfg, changed)
    return cfg


def stored_config(saved: dict, where: Any) -> dict:
    """A config a run stored (``where``: its directory or checkpoint), as this version resolves
    it: migrated, every key it predates at its default, and checked."""
    flat = flatten(migrate(saved, where))
    return load_config(flat.pop("env"), flat.pop("algo"), flat, stored=True)


def _override(cfg, key: str, value: Any) -> None:
    """Set one dotted key of the composed config; the schema checks the key and the type."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    kind = _kind(key)
    if key in groups.groups():
        raise ConfigError(f"{key}={value!r}: {key} is a group; set its keys ({key}.<key>=...)")
    if kind is None:
        raise ConfigError(f"override: unknown key '{key}'{_suggest(key, groups.flatten_keys())}")
    if kind in ("bool", "Optional[bool]") and not isinstance(value, bool) and value is not None:
        raise ConfigError(f"{key}={value!r}: {_expected(kind)}")  # OmegaConf would read 3 as true
    if kind in ("int", "Optional[int]") and isinstance(value, (float, str)):
        try:  # 1e4 and 3.0 name ints (PyYAML reads 1e4, without a dot, as a string)
            number = float(value)
            value = int(number) if number.is_integer() else value
        except ValueError:
            pass
    try:
        OmegaConf.update(cfg, key, value, merge=False)
    except OmegaConfBaseException:
        raise ConfigError(f"{key}={value!r}: {_expected(kind)}") from None


def _expected(kind: str) -> str:
    """``"Optional[int]"`` -> "expected int or null"; a Choice -> "must be one of a, b"."""
    optional = kind.startswith("Optional[")
    kind = kind[len("Optional["):-1] if optional else kind
    choice = getattr(groups, kind, None)
    if isinstance(choice, type) and issubclass(choice, groups.Choice):
        return f"must be one of {', '.join(c.value for c in choice)}" + (" or null" if optional else "")
    return f"expected {kind}" + (" or null" if optional else "")


def _kind(dotted: str) -> str | None:
    """The schema's type of a dotted key, as written there (``"int"``); None if no such key."""
    cls, parts = groups.RunConfig, dotted.split(".")
    for i, part in enumerate(parts):
        found = {f.name: f for f in dataclasses.fields(cls)}.get(part)
        if found is None:
            return None
        if dataclasses.is_dataclass(found.default_factory):
            cls = found.default_factory
            continue
        return found.type if i == len(parts) - 1 else None
    return None


def _suggest(key: str, known) -> str:
    close = difflib.get_close_matches(key, list(known), n=3)
    return f" (did you mean {', '.join(close)}?)" if close else ""


def validate(cfg: dict) -> None:
    """Ranges and cross-key checks that a type cannot express: the schema's, then the
    algorithm's own."""
    groups.check(cfg)
    algorithms.check(cfg)
    if cfg["logger"] == "wandb":  # the environment is input too: checked before anything is written
        wandb_mode_from_env()


# The modes wandb itself accepts in WANDB_MODE (wandb/sdk/wandb_settings.py, ``mode``).
WANDB_ENV_MODES = ("online", "offline", "disabled", "dryrun", "run", "shared")


def wandb_mode_from_env() -> str | None:
    """``WANDB_MODE`` as a mode, None when unset. Set but empty counts as unset and is removed
    from the environment (wandb itself would fail on it with a pydantic traceback); an unknown
    mode is a ConfigError (one line, exit 2)."""
    value = os.environ.get("WANDB_MODE")
    if value is None or value.strip() == "":
        os.environ.pop("WANDB_MODE", None)
        return None
    if value not in WANDB_ENV_MODES:
        raise ConfigError(f"WANDB_MODE={value!r}: must be one of {', '.join(WANDB_ENV_MODES)} "
                          f"(or unset)")
    return {"dryrun": "offline", "run": "online"}.get(value, value)


class _Dumper(yaml.SafeDumper):
    """Groups as blocks, one key a line; lists on their key's line."""


_Dumper.add_representer(list, lambda d, v: d.represent_sequence("tag:yaml.org,2002:seq", v, flow_style=True))


def to_yaml(cfg: dict) -> str:
    return yaml.dump(cfg, Dumper=_Dumper, sort_keys=False, default_flow_style=False)
