"""Resolved run configuration, composed by Hydra (Compose API) from the config groups of conf/:
conf/config.yaml <- conf/algo/<algo>.yaml <- conf/env/<Task>.yaml <- conf/algo_env/<algo>_<Task>.yaml
<- command-line ``key=value`` overrides.

Values that depend on both the task and the algorithm (MPDP's Hmax, MBPO's rollout schedule)
live in the optional group ``algo_env``: one visible file per algorithm and task. A preset
(``--algo mpdp_paper``) is an algorithm file whose defaults list starts with its algorithm's
file (``defaults: [mpdp, _self_]``); its per-task files start with that algorithm's.

The config is typed by an OmegaConf structured config (:func:`schema`: a dataclass whose fields
are the keys of conf/config.yaml with the types of their defaults), so a group file with an
unknown key or a wrong type fails composition. Keys form one flat namespace in which nested keys
are written with dots (``wandb.project=foo``). An override must name a key that the base config
defines and must keep its type (an int key accepts ``3``, a float key ``3`` or ``3e-4``, a list
key ``[256,256]``); a key whose default is ``null`` accepts anything YAML can parse. Range
checks that a type cannot express are :func:`validate`'s. Every failure is a
:class:`ConfigError`: one line, exit code 2.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import functools
import os
import re
import threading
from pathlib import Path
from typing import Any, Optional

import yaml

from .errors import ConfigError

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"


# MPDP and its presets (conf/algo/*.yaml whose defaults list starts with mpdp)
MPDP_ALGOS = ("mpdp", "mpdp_paper")
# MPDP on MPPVE's plan-value critic (conf/algo/mpdp_pv.yaml, a preset of mppve)
PLAN_VALUE_ALGOS = ("mppve", "mpdp_pv")
PLANNERS = ("pets", "poplin_a", "poplin_p")  # model-predictive control, no actor-critic

# Keys whose default is the string "auto" and that also take a number (inf and -inf included).
AUTO_OR_NUMBER = {"target_entropy", "u_T"}

# MPDP's switches removed after they measured no gain on Hopper (docs/mpdp.md, "Switches removed"),
# each with the value at which a stored run behaves as this version does (None: any value, the
# key acted only beside another removed one). A stored run with another value ran code that
# LAST_WITH_REMOVED holds and this version does not.
REMOVED_KEYS = {"u_T_rule": "holdout", "u_T_scale": 1.0, "critic_target": "td", "mve_horizon": None,
                "critic_states": "real", "critic_data": "real", "mve_target_bound": False,
                "start_states": "real"}
LAST_WITH_REMOVED = "a3aa6da"




def _read_yaml(path: Path) -> dict:
    with open(path) as f:
        data = yaml.safe_load(f) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at top level")
    return data


def task_name(env_id: str) -> str:
    """``Hopper-v4`` -> ``Hopper``: the task file name shared by all versions of an env."""
    return re.sub(r"-v\d+$", "", env_id.split("/")[-1])


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


def migrate(cfg: dict, where: Any) -> dict:
    """A stored run config (``where``: its run directory or checkpoint) in this version's keys:
    the removed keys go; one that held another value than today's behaviour is a ConfigError
    that names the commit that can still continue the run."""
    kept = {k: v for k, v in cfg.items() if k not in REMOVED_KEYS}
    if cfg.get("algo") not in (*MPDP_ALGOS, "mpdp_pv"):  # where they never acted
        return kept
    for k, value in REMOVED_KEYS.items():
        if k in cfg and value is not None and cfg[k] != value:
            raise ConfigError(f"{where} ran with {k}={cfg[k]}, a switch this version removed; "
                              f"continue it from a checkout of {LAST_WITH_REMOVED}")
    return kept


def differing_keys(saved: dict, cfg: dict, ignore=()) -> list[str]:
    """Dotted keys whose values differ between a stored run config and ``cfg``. A key that the
    stored config lacks (the run predates it) counts as at its default: a new switch that
    defaults to the old behaviour leaves earlier runs resumable."""
    _, base = schema()
    defaults = flatten(yaml.safe_load(to_yaml(base)))
    saved, cfg = flatten(saved), flatten(cfg)
    return sorted(k for k in saved.keys() | cfg.keys()
                  if k not in ignore and saved.get(k) != cfg.get(k)
                  and not (k not in saved and k in defaults and cfg.get(k) == defaults[k]))


def _set(cfg: dict, dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    node = cfg
    for p in parents:
        node = node[p]
    node[leaf] = value


def _coerce(key: str, value: Any, default: Any) -> Any:
    """Check ``value`` against the type of ``default`` (the base config's value)."""
    if default is None or value is None:
        return value
    numeric = isinstance(default, (int, float)) and not isinstance(default, bool)
    if isinstance(value, str) and (numeric or (key in AUTO_OR_NUMBER and value != "auto")):
        try:  # PyYAML reads 1e-2 (no dot) as a string
            value = float(value)
        except ValueError:
            pass
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
    elif isinstance(default, int):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif isinstance(default, float):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif isinstance(default, str):
        if isinstance(value, str):
            return value
        if key in AUTO_OR_NUMBER and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif isinstance(default, list):
        if isinstance(value, list):
            return value
    elif isinstance(default, dict):
        if isinstance(value, dict):
            return value
    raise ConfigError(
        f"{key}={value!r}: expected {type(default).__name__} (default {default!r})"
    )


def _merge(cfg: dict, layer: dict, known: dict[str, Any], source: str) -> None:
    for key, value in flatten(layer).items():
        if key not in known:
            raise ConfigError(f"{source}: unknown key '{key}'{_suggest(key, known)}")
        _set(cfg, key, _coerce(key, value, known[key]))


def _suggest(key: str, known) -> str:
    close = difflib.get_close_matches(key, list(known), n=3)
    return f" (did you mean {', '.join(close)}?)" if close else ""


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


def _field_type(key: str, default: Any):
    """The structured-config type of a key from its default (nested mappings: their own dataclass)."""
    if default is None or key in AUTO_OR_NUMBER:
        return Any
    if isinstance(default, bool):
        return Optional[bool]
    if isinstance(default, int):
        return Optional[int]
    if isinstance(default, float):
        return Optional[float]
    if isinstance(default, str):
        return Optional[str]
    if isinstance(default, list):
        return Optional[list[Any]]
    return Any


def _dataclass(name: str, values: dict, prefix: str = ""):
    fields = []
    for key, default in values.items():
        if isinstance(default, dict) and default:
            sub = _dataclass(f"{name}_{key}", default, f"{prefix}{key}.")
            fields.append((key, sub, dataclasses.field(default_factory=sub)))
        else:
            kind = _field_type(prefix + key, default)
            fields.append((key, kind, dataclasses.field(default_factory=lambda d=default: copy.deepcopy(d))))
    return dataclasses.make_dataclass(name, fields)


@functools.cache
def schema():
    """The structured config: a dataclass with every key of conf/config.yaml, typed by its
    default (``null`` defaults and ``auto``-or-number keys are ``Any``; every key takes null).
    Registered in Hydra's ConfigStore as ``schema``, the first entry of the defaults list."""
    from hydra.core.config_store import ConfigStore

    base = {k: v for k, v in _read_yaml(CONF_DIR / "config.yaml").items() if k != "defaults"}
    cls = _dataclass("RunConfig", base)
    ConfigStore.instance().store(name="schema", node=cls)
    return cls, base


# Hydra's GlobalHydra is one per process: a grid's launcher threads (mpdp_pool) resolve their
# jobs' configs side by side, and two compositions at once fail ("GlobalHydra is already
# initialized"), which made a fixed-seed run of a grid fail now and then under load.
_COMPOSE_LOCK = threading.Lock()


def _compose(algo: str, task: str, variant: str | None = None) -> dict:
    """conf/config.yaml's defaults list for this algorithm, task and variant, as a plain dict
    (one composition at a time in a process)."""
    with _COMPOSE_LOCK:
        return _compose_unlocked(algo, task, variant)


def _compose_unlocked(algo: str, task: str, variant: str | None) -> dict:
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.initialize import get_gh_backup, restore_gh_from_backup
    from omegaconf import OmegaConf
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
    return OmegaConf.to_container(cfg, resolve=True)


def load_config(
    env: str | None = None, algo: str | None = None, overrides: dict[str, Any] | None = None
) -> dict:
    """Resolve the config of one run. ``env``/``algo`` select the task and algorithm files;
    ``overrides`` are dotted keys (CLI flags and ``key=value`` items), applied last."""
    _, base = schema()
    known = flatten(base)
    overrides = dict(overrides or {})
    variant = overrides.pop("variant", None)
    algo = algo or overrides.pop("algo", None)
    if variant is not None:
        named = variant_algo(variant)
        if algo is not None and algo != named:
            raise ConfigError(f"variant {variant} is a configuration of {named}, not of {algo}")
        algo = named
    algo = algo or base["algo"]
    env = env or overrides.pop("env", None) or base["env"]
    if not isinstance(algo, str) or not (CONF_DIR / "algo" / f"{algo}.yaml").exists():
        raise ConfigError(
            f"unknown algorithm '{algo}' (available: {', '.join(available_algos())})"
        )
    if not isinstance(env, str):
        raise ConfigError(f"env={env!r}: expected a gymnasium id (str)")
    cfg = _compose(algo, task_name(env), variant)
    cfg["env"], cfg["algo"], cfg["variant"] = env, algo, variant
    _merge(cfg, overrides, known, "override")
    validate(cfg)
    return cfg


def validate(cfg: dict) -> None:
    """Range checks that a type check cannot express."""
    positive = ["steps", "batch_size", "buffer_size", "frames_per_batch", "num_envs", "eval_every",
                "eval_episodes", "log_every"]
    for k in positive:
        if cfg[k] <= 0:
            raise ConfigError(f"{k}={cfg[k]}: must be > 0")
    for k in ["init_random_steps", "critic_updates_per_step", "actor_updates_per_step",
              "actor_lr", "critic_lr", "alpha_lr", "tau"]:
        if cfg[k] < 0:
            raise ConfigError(f"{k}={cfg[k]}: must be >= 0")
    if not 0 < cfg["gamma"] <= 1:
        raise ConfigError(f"gamma={cfg['gamma']}: must be in (0, 1]")
    if not 0 <= cfg["tau"] <= 1:
        raise ConfigError(f"tau={cfg['tau']}: must be in [0, 1]")
    if cfg["init_alpha"] <= 0:
        raise ConfigError(f"init_alpha={cfg['init_alpha']}: must be > 0")
    for k in AUTO_OR_NUMBER:
        if isinstance(cfg[k], str) and cfg[k] != "auto":
            raise ConfigError(f"{k}={cfg[k]!r}: must be 'auto' or a number")
    if cfg["env_batching"] not in ("serial", "parallel"):
        raise ConfigError(f"env_batching={cfg['env_batching']!r}: must be serial or parallel")
    if cfg["algo"] in PLAN_VALUE_ALGOS and cfg["num_envs"] > 1:
        raise ConfigError(f"num_envs > 1 is not supported by {cfg['algo']} (its plan segments are "
                          "read from one env's consecutive transitions)")
    if cfg["unroll_form"] not in ("auto", "static", "live"):
        raise ConfigError(f"unroll_form={cfg['unroll_form']!r}: must be auto, static or live")
    if cfg["compile"] and cfg["unroll_form"] == "live":
        raise ConfigError("unroll_form=live cannot be compiled (its shapes change every step); "
                          "use unroll_form=static or auto with compile=true")
    if cfg["compile"] not in (True, False):
        raise ConfigError(f"compile={cfg['compile']!r}: must be true or false")
    if cfg["horizon"] < 1:
        raise ConfigError(f"horizon={cfg['horizon']}: Hmax must be >= 1")
    if cfg["video_every"] < 0:
        raise ConfigError(f"video_every={cfg['video_every']}: must be >= 0")
    if cfg["nonfinite_guard"] not in ("auto", "sync", "deferred"):
        raise ConfigError(f"nonfinite_guard={cfg['nonfinite_guard']!r}: must be auto, sync or deferred")
    if cfg["checkpoint_every"] < 0:
        raise ConfigError(f"checkpoint_every={cfg['checkpoint_every']}: must be >= 0")
    if cfg["nonfinite_limit"] < 1:
        raise ConfigError(f"nonfinite_limit={cfg['nonfinite_limit']}: must be >= 1")
    if cfg["plan_length"] < 1:
        raise ConfigError(f"plan_length={cfg['plan_length']}: k must be >= 1")
    if cfg["beta"] < 0:
        raise ConfigError(f"beta={cfg['beta']}: must be >= 0")
    if not 0 < cfg["u_T_quantile"] <= 1:
        raise ConfigError(f"u_T_quantile={cfg['u_T_quantile']}: must be in (0, 1]")
    if cfg["algo"] in (*PLAN_VALUE_ALGOS, "ddpg", *PLANNERS) and (cfg["critic_scale"] or cfg["obs_norm"]):
        raise ConfigError(f"critic_scale and obs_norm are not built for {cfg['algo']}'s critic")
    if cfg["algo"] in ("sac", "ddpg", *PLANNERS) and cfg["warmup_updates"]:
        raise ConfigError(f"warmup_updates: {cfg['algo']} has no policy updates to warm start")
    if cfg["algo"] in ("sac", "ddpg") and cfg["model_first_fit_scale"] != 1:
        raise ConfigError(f"model_first_fit_scale acts at the first model training: "
                          f"{cfg['algo']} has no model")
    if cfg["m2ac_horizon"] < 1 or not 0 < cfg["m2ac_keep_h1"] <= 1 or cfg["m2ac_penalty"] < 0:
        raise ConfigError("m2ac_horizon must be >= 1, m2ac_keep_h1 in (0, 1] and m2ac_penalty >= 0")
    if cfg["algo"] == "pets" and cfg["pets_particles"] % cfg["num_elites"]:
        raise ConfigError(f"pets_particles={cfg['pets_particles']}: must be a multiple of "
                          f"num_elites ({cfg['num_elites']}), one member per particle")
    if cfg["algo"] in PLANNERS:
        if not 1 <= cfg["pets_elites"] <= cfg["pets_population"] or cfg["pets_horizon"] < 1 \
                or cfg["pets_iterations"] < 1 or not 0 <= cfg["pets_momentum"] < 1:
            raise ConfigError("pets: need 1 <= pets_elites <= pets_population, pets_horizon >= 1, "
                              "pets_iterations >= 1 and 0 <= pets_momentum < 1")
    if cfg["algo"] in ("poplin_a", "poplin_p") and (
            cfg["poplin_init_var"] <= 0 or cfg["poplin_bc_epochs"] < 1 or cfg["poplin_bc_batch"] < 1
            or cfg["poplin_bc_lr"] <= 0 or not cfg["poplin_hidden"]):
        raise ConfigError("poplin: need poplin_init_var > 0, poplin_bc_epochs >= 1, "
                          "poplin_bc_batch >= 1, poplin_bc_lr > 0 and a hidden layer")
    if cfg["exploration_noise"] < 0:
        raise ConfigError(f"exploration_noise={cfg['exploration_noise']}: must be >= 0")
    if cfg["warmup_updates"] < 0 or cfg["model_first_fit_scale"] < 1:
        raise ConfigError("warmup_updates must be >= 0 and model_first_fit_scale >= 1")
    if cfg["critic_scale"] and cfg["gamma"] >= 1:
        raise ConfigError("critic_scale needs gamma < 1 (its bounds are r / (1 - gamma))")
    for k in ("start_rollout_length", "start_rollout_every"):
        if cfg[k] < 1:
            raise ConfigError(f"{k}={cfg[k]}: must be >= 1")
    if cfg["start_buffer_size"] < cfg["batch_size"]:
        raise ConfigError(f"start_buffer_size={cfg['start_buffer_size']}: must be >= batch_size "
                          f"({cfg['batch_size']})")
    if cfg["algo"] not in MPDP_ALGOS:
        for k, default in (("single_policy", False), ("paper_literal_cut", False)):
            if cfg[k] != default and not (k == "single_policy" and cfg["algo"] == "mpdp_pv"):
                raise ConfigError(f"{k}={cfg[k]!r} is MPDP's (algo={cfg['algo']} does not use it)")
    if cfg["algo"] == "mpdp_pv" and cfg["horizon"] < cfg["plan_length"]:
        raise ConfigError(f"horizon={cfg['horizon']}: mpdp_pv's Hmax must be >= plan_length "
                          f"({cfg['plan_length']}), the actions of one plan")
    if cfg["actor_grad_clip"] <= 0:
        raise ConfigError(f"actor_grad_clip={cfg['actor_grad_clip']}: must be > 0")
    if not cfg["hidden_sizes"] or any(
        not isinstance(h, int) or isinstance(h, bool) or h <= 0 for h in cfg["hidden_sizes"]
    ):
        raise ConfigError(f"hidden_sizes={cfg['hidden_sizes']}: must be a list of positive ints")
    if cfg["logger"] not in ("wandb", "csv", "none"):
        raise ConfigError(f"logger={cfg['logger']!r}: must be wandb, csv or none")
    if cfg["wandb"]["mode"] not in ("auto", "online", "offline", "disabled"):
        raise ConfigError(
            f"wandb.mode={cfg['wandb']['mode']!r}: must be auto, online, offline or disabled"
        )
    if cfg["logger"] == "wandb":  # the environment is input too: checked before anything is written
        wandb_mode_from_env()
    if cfg["ensemble_size"] < 2:
        raise ConfigError(f"ensemble_size={cfg['ensemble_size']}: must be >= 2 (Eq. 8 compares members)")
    if not 2 <= cfg["num_elites"] <= cfg["ensemble_size"]:
        raise ConfigError(
            f"num_elites={cfg['num_elites']}: must be in [2, ensemble_size={cfg['ensemble_size']}]"
        )
    for k in ["model_hidden", "model_layers", "model_batch_size", "model_train_freq",
              "model_max_holdout", "model_patience", "model_max_epochs", "model_error_window"]:
        if cfg[k] <= 0:
            raise ConfigError(f"{k}={cfg[k]}: must be > 0")
    if cfg["model_holdout"] not in ("fixed", "redrawn"):
        raise ConfigError(f"model_holdout={cfg['model_holdout']!r}: must be fixed or redrawn")
    if cfg["model_max_steps"] is not None and (
        not isinstance(cfg["model_max_steps"], int) or isinstance(cfg["model_max_steps"], bool)
        or cfg["model_max_steps"] <= 0
    ):
        raise ConfigError(f"model_max_steps={cfg['model_max_steps']!r}: must be a positive int or null")
    choices = {"activation": ("relu", "silu"), "actor_std": ("bounded", "softplus"),
               "model_noise": ("input", "member"), "model_optimizer": ("adam", "adamw"),
               "model_weights": ("bootstrap", "exp"), "model_early_stop": ("improvement", "z_test")}
    for k, allowed in choices.items():
        if cfg[k] not in allowed:
            raise ConfigError(f"{k}={cfg[k]!r}: must be one of {', '.join(allowed)}")
    t = cfg["trainer"]
    if cfg["model_early_stop"] == "z_test" and (str(t["strategy"]).startswith("ddp")
                                                or (isinstance(t["devices"], int) and t["devices"] * t["num_nodes"] > 1)):
        raise ConfigError("model_early_stop=z_test compares per-row holdout scores on one process: "
                          "not built for DDP")
    if cfg["algo"] == "dhmbpo" and cfg["actor_updates_per_step"] > cfg["critic_updates_per_step"]:
        raise ConfigError("dhmbpo pairs every actor update with a critic update: "
                          "actor_updates_per_step must be <= critic_updates_per_step")
    if cfg["model_weights"] == "exp" and cfg["model_epoch_batches"] is None:
        raise ConfigError("model_weights=exp trains every member on the same rows: set model_epoch_batches")
    for k in ("model_layernorm", "model_dropout"):
        if cfg[k] and len(cfg[k]) != cfg["model_layers"] + (0 if k == "model_layernorm" else 1):
            raise ConfigError(f"{k} has {len(cfg[k])} values for model_layers={cfg['model_layers']}")
    if cfg["num_critics"] < 2 or cfg["update_every"] < 1 or (
            cfg["model_epoch_batches"] is not None and cfg["model_epoch_batches"] < 1):
        raise ConfigError("need num_critics >= 2, update_every >= 1 and model_epoch_batches >= 1")
    if cfg["model_eval_every"] <= 0:
        raise ConfigError(f"model_eval_every={cfg['model_eval_every']}: must be > 0")
    if not 0 < cfg["model_holdout_ratio"] < 1:
        raise ConfigError(f"model_holdout_ratio={cfg['model_holdout_ratio']}: must be in (0, 1)")
    if len(cfg["model_weight_decay"]) != cfg["model_layers"] + 1:
        raise ConfigError(
            f"model_weight_decay has {len(cfg['model_weight_decay'])} values; "
            f"model_layers={cfg['model_layers']} needs {cfg['model_layers'] + 1}"
        )
    if not 0 < cfg["real_ratio"] <= 1:
        raise ConfigError(f"real_ratio={cfg['real_ratio']}: must be in (0, 1]")
    sched = cfg["rollout_schedule"]
    if len(sched) != 4 or sched[2] < 1 or sched[3] < sched[2] or sched[1] < sched[0]:
        raise ConfigError(f"rollout_schedule={sched}: must be [epoch_start, epoch_end, len_min >= 1, "
                          f"len_max >= len_min] with epoch_end >= epoch_start")
    for k in ("rollout_batch_size", "model_retain_epochs", "epoch_length"):
        if cfg[k] <= 0:
            raise ConfigError(f"{k}={cfg[k]}: must be > 0")
    from .environment.termination import TERMINATION_CHOICES
    if cfg["termination"] not in TERMINATION_CHOICES:
        raise ConfigError(
            f"termination={cfg['termination']!r}: must be one of {', '.join(TERMINATION_CHOICES)}"
        )
    if cfg["obs_truncate"] is not None and (
        not isinstance(cfg["obs_truncate"], int) or cfg["obs_truncate"] <= 0
    ):
        raise ConfigError(f"obs_truncate={cfg['obs_truncate']!r}: must be a positive int or null")


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


def to_yaml(cfg: dict) -> str:
    return yaml.safe_dump(cfg, sort_keys=False, default_flow_style=None)
