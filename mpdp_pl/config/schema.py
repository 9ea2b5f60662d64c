"""Every key a run can set, in groups by what it configures: its type, its default and its
one-line meaning live here and nowhere else. ``conf/`` holds only the values that algorithms,
tasks and variants change; Hydra composes them onto this structured config
(:func:`mpdp_pl.config.load_config`), which refuses an unknown key or a value of the wrong type.
A choice is an Enum.

The run keys (env, algo, variant, seed, steps, out, logger) stay at the top. Ranges that a type
cannot express are ``RANGES``; each group's cross-key checks are its ``check``; what each
algorithm refuses is :mod:`mpdp_pl.config.algorithms`; the flat keys of earlier versions
(``batch_size``) and their places are :mod:`mpdp_pl.config.migration`'s.
"""

from __future__ import annotations

import copy
import math
from dataclasses import MISSING, dataclass, field, fields, is_dataclass
from enum import Enum
from typing import Any, Optional

from ..errors import ConfigError


def key(default: Any, meaning: str):
    """A key: its default and its one-line meaning (``train.py --help``)."""
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: copy.deepcopy(default), metadata={"meaning": meaning})
    return field(default=default, metadata={"meaning": meaning})


def need(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


class Choice(str, Enum):
    """A choice among named values; it reads and prints as its name."""

    def __str__(self) -> str:
        return self.value


def choice(name: str, values: str) -> type[Choice]:
    return Choice(name, [(v, v) for v in values.split()])


Logger = choice("Logger", "wandb csv none")
EnvBatching = choice("EnvBatching", "serial parallel")
Activation = choice("Activation", "relu silu")
ActorStd = choice("ActorStd", "bounded softplus")
Holdout = choice("Holdout", "fixed redrawn")
ModelNoise = choice("ModelNoise", "input member")
ModelOptimizer = choice("ModelOptimizer", "adam adamw")
ModelWeights = choice("ModelWeights", "bootstrap exp")
EarlyStop = choice("EarlyStop", "improvement z_test")
UnrollForm = choice("UnrollForm", "auto static live")
NonfiniteGuard = choice("NonfiniteGuard", "auto sync deferred")
WandbMode = choice("WandbMode", "auto online offline disabled")


@dataclass
class Task:
    """The environment."""

    obs_truncate: Optional[int] = key(None, "keep only the first N observation dims (Humanoid: 45)")
    max_episode_steps: Optional[int] = key(None, "null = the env's own time limit")


@dataclass
class Data:
    """The data path: TorchRL collector -> replay buffer -> batches."""

    init_random_steps: int = key(5000, "uniform random actions for the first N env steps")
    num_envs: int = key(1, "environments stepped side by side per rank (TorchRL batched env)")
    env_batching: EnvBatching = key("serial", "serial (one process) | parallel (one process per env)")
    frames_per_batch: int = key(1, "env steps per environment between two rounds of updates")
    buffer_size: int = key(1000000, "real transitions the replay buffer keeps")
    buffer_device: Optional[str] = key(None, "null = where the module lives (cuda when training on cuda)")
    batch_size: int = key(256, "transitions per critic and actor update")

    @staticmethod
    def check(d: dict, cfg: dict) -> None:
        import torch

        try:
            d["buffer_device"] is None or torch.device(d["buffer_device"])
        except (RuntimeError, TypeError):
            raise ConfigError(f"data.buffer_device={d['buffer_device']!r}: not a torch device "
                              "(cpu, cuda, cuda:1, ...)") from None


@dataclass
class Updates:
    """How many updates run, and when (fractions allowed: 0.25 = one every 4 env steps)."""

    critic_per_step: float = key(1.0, "critic updates per env step")
    actor_per_step: float = key(1.0, "actor (and temperature) updates per env step")
    warmup: int = key(0, "model-based: critic and actor updates, interleaved, right after the first "
                         "model training (DHMBPO's warm start)")
    every: int = key(1, "env steps between two rounds of updates: the ratios accumulate and run "
                        "every N env steps as one burst while the policy is frozen (DHMBPO: 1000)")


@dataclass
class Critic:
    """The Q-functions and their TD targets (SAC; defaults as CleanRL and MBPO)."""

    gamma: float = key(0.99, "discount")
    tau: float = key(0.005, "Polyak rate of the target critics")
    lr: float = key(0.0003, "critic learning rate")
    count: int = key(2, "Q-functions; the target takes the min of a random pair when more than 2 (REDQ)")
    layernorm: bool = key(False, "LayerNorm (no affine) on the hidden layers (DHMBPO)")
    scale: bool = key(False, "Q = out * width + center over running 1%/99% quantiles of the soft "
                             "reward / (1 - gamma); last layer zero-initialized, target clipped (DHMBPO)")

    @staticmethod
    def check(g: dict, cfg: dict) -> None:
        need(not g["scale"] or g["gamma"] < 1, "critic.scale needs critic.gamma < 1 (its bounds are r / (1 - gamma))")


@dataclass
class Actor:
    """The policy: a tanh-squashed Gaussian (pi_0..pi_{Hmax-1} for MPDP)."""

    lr: float = key(0.0003, "actor learning rate")
    std: ActorStd = key("bounded", "bounded: log_std squashed into [log_std_min, log_std_max] by a "
                                   "tanh (CleanRL); softplus: softplus(out) + 1e-5 (DHMBPO)")
    log_std_min: float = key(-5.0, "lower bound of log_std (std=bounded)")
    log_std_max: float = key(2.0, "upper bound of log_std (std=bounded)")
    grad_clip: float = key(10.0, "max L2 norm of the actor's gradient (MPDP's farsighted step, MPPVE)")


@dataclass
class Temperature:
    """SAC's entropy temperature alpha, tuned to a target entropy."""

    lr: float = key(0.0003, "temperature learning rate")
    init: float = key(1.0, "initial alpha")
    target_entropy: Any = key("auto", "auto = -dim(A); a number otherwise")


@dataclass
class Networks:
    """The actor's and critics' MLPs."""

    hidden_sizes: list[int] = key([256, 256], "hidden layer widths")
    activation: Activation = key("relu", "hidden activation (DHMBPO: silu)")
    obs_norm: bool = key(False, "standardize observations by the stored real ones' moments, "
                                "refreshed at every model training (DHMBPO)")


@dataclass
class Model:
    """The dynamics ensemble (shared by every model-based algorithm; defaults of MBPO's configs)."""

    termination: str = key("learned", "a rule of mpdp_pl/environment/termination.py, none, or "
                                      "learned (a head of the model)")
    ensemble_size: int = key(7, "K members")
    elites: int = key(5, "best members by holdout MSE; the model samples and u uses only these")
    hidden: int = key(200, "units in each hidden layer (Humanoid: 400)")
    layers: int = key(4, "hidden layers")
    lr: float = key(0.001, "model learning rate")
    weight_decay: list[float] = key([0.000025, 0.00005, 0.000075, 0.000075, 0.0001],
                                    "per layer, input to output (layers + 1 values)")
    batch_size: int = key(256, "transitions per model step")
    train_freq: int = key(250, "env steps between model trainings")
    holdout: Holdout = key("fixed", "fixed: a transition's holdout flag is drawn once, when stored "
                                    "(the newest max_holdout flagged are never trained on); "
                                    "redrawn: a fresh random split per training (MBPO)")
    holdout_ratio: float = key(0.2, "share of transitions held out")
    max_holdout: int = key(5000, "held-out transitions at most")
    patience: int = key(5, "stop after this many rounds without > 1% holdout improvement")
    max_epochs: int = key(50, "cap on whole-buffer epochs per training, when max_steps is null")
    max_steps: Optional[int] = key(500, "at most N minibatch steps per training, whatever the buffer "
                                        "holds (docs/cost.md); null: epochs over the whole buffer (MBPO)")
    first_fit_scale: int = key(1, "the first training: this many times the caps and patience (DHMBPO: 5)")
    noise: ModelNoise = key("input", "input: the log-variance is an output, soft-bounded (PETS, MBPO); "
                                     "member: one learned noise level per member and output (DHMBPO)")
    layernorm: list[float] = key([], "LayerNorm eps before each hidden-to-hidden and the output layer; [] = none")
    dropout: list[float] = key([], "dropout rate after each layer while the model trains; [] = none")
    optimizer: ModelOptimizer = key("adam", "adam: L2 decay, one optimizer for the run (MBPO); adamw: "
                                            "decoupled decay, a fresh optimizer per training (DHMBPO)")
    noise_decay: float = key(0.0, "adamw: decoupled weight decay of the noise levels (DHMBPO: 0.01)")
    weights: ModelWeights = key("bootstrap", "bootstrap: each member its own resample per training "
                                             "(MBPO); exp: fixed Exp(1) weights per transition and member (DHMBPO)")
    early_stop: EarlyStop = key("improvement", "improvement: per member, > 1% holdout MSE within "
                                               "patience rounds (MBPO); z_test: paired z-test on the NLL (DHMBPO)")
    epoch_batches: Optional[int] = key(None, "N: a round is min(N, rows // batch_size) batches "
                                             "(DHMBPO: 6); null: whole epochs or eval_every steps")
    eval_every: int = key(250, "with max_steps: minibatch steps per round (one holdout evaluation)")
    error_window: int = key(250, "newest real transitions on which model/error is measured")

    @staticmethod
    def check(m: dict, cfg: dict) -> None:
        from ..environment.termination import TERMINATION_CHOICES

        need(m["termination"] in TERMINATION_CHOICES,
             f"model.termination={m['termination']!r}: must be one of {', '.join(TERMINATION_CHOICES)}")
        need(2 <= m["elites"] <= m["ensemble_size"],
             f"model.elites={m['elites']}: must be in [2, model.ensemble_size={m['ensemble_size']}]")
        need(len(m["weight_decay"]) == m["layers"] + 1,
             f"model.weight_decay has {len(m['weight_decay'])} values; model.layers={m['layers']} "
             f"needs {m['layers'] + 1}")
        for k, extra in (("layernorm", 0), ("dropout", 1)):
            need(not m[k] or len(m[k]) == m["layers"] + extra,
                 f"model.{k} has {len(m[k])} values for model.layers={m['layers']}")
        need(m["weights"] != "exp" or m["epoch_batches"] is not None,
             "model.weights=exp trains every member on the same rows: set model.epoch_batches")
        t = cfg["trainer"]
        distributed = str(t["strategy"]).startswith("ddp") or (
            isinstance(t["devices"], int) and t["devices"] * t["num_nodes"] > 1)
        need(m["early_stop"] != "z_test" or not distributed,
             "model.early_stop=z_test compares per-row holdout scores on one process: not built for DDP")


@dataclass
class Improvement:
    """MPDP's farsighted improvement (Algorithm 1), also DHMBPO's SVG unroll."""

    horizon: int = key(10, "Hmax: actor heads pi_0..pi_{Hmax-1}, max model steps per sample")
    beta: float = key(0.5, "weight of the OvR model error u in the reward, Eq. (10)")
    beta_relative: bool = key(True, "penalty beta * u / u_ref; false = beta * u literally")
    u_T: Any = key("auto", "cut threshold on u; auto = u_ref; a number fixes it (inf: no cut)")
    u_T_quantile: float = key(0.5, "u_ref = this quantile of u on the held-out real data of each model training")
    single_policy: bool = key(False, "true: pi_0 acts at every unroll step (SVG, DHMBPO); false: heads")
    paper_literal_cut: bool = key(False, "true: Algorithm 1 lines 6-7 as printed (lookahead/improvement.py)")
    terminal_critic: bool = key(True, "a predicted terminal ends with Q(s_t, a_t), like a cut; false: with r_t")
    unroll_form: UnrollForm = key("auto", "static (whole batch, masks: CUDA graphs, compile) | live "
                                          "(alive samples only); auto = live on CPU without compile")
    compile: bool = key(False, "torch.compile the farsighted improvement as one graph (no gain on a CPU)")

    @staticmethod
    def check(g: dict, cfg: dict) -> None:
        need(not (g["compile"] and g["unroll_form"] == "live"),
             "improvement.unroll_form=live cannot be compiled (its shapes change every step); "
             "use unroll_form=static or auto with compile=true")


@dataclass
class Dhmbpo:
    """DHMBPO's start states for the critic's rows (lookahead/start_states.py)."""

    rollout_length: int = key(20, "model steps per start-state rollout")
    rollout_every: int = key(20, "actor updates between two rollouts of batch_size real states")
    buffer_size: int = key(51200, "states in the FIFO (DHMBPO's 5120 x 10)")

    @staticmethod
    def check(g: dict, cfg: dict) -> None:
        need(cfg["algo"] not in ("dhmbpo", "mpdp_dh") or g["buffer_size"] >= cfg["data"]["batch_size"],
             f"dhmbpo.buffer_size={g['buffer_size']}: must be >= data.batch_size ({cfg['data']['batch_size']})")


@dataclass
class Rollouts:
    """MBPO's branched model rollouts: the model data of MBPO, M2AC, MPPVE and mpdp_pv."""

    batch_size: int = key(100000, "real start states per round of rollouts (one round per model training)")
    schedule: list[int] = key([20, 100, 1, 1], "[epoch_start, epoch_end, len_min, len_max], epochs of epoch_length")
    retain_epochs: int = key(1, "the model buffer keeps this many epochs of rollouts")
    real_ratio: float = key(0.05, "share of real transitions in each batch")
    epoch_length: int = key(1000, "env steps per MBPO epoch (the schedule's unit)")

    @staticmethod
    def check(g: dict, cfg: dict) -> None:
        s = g["schedule"]
        need(len(s) == 4 and s[2] >= 1 and s[3] >= s[2] and s[1] >= s[0],
             f"rollouts.schedule={s}: must be [epoch_start, epoch_end, len_min >= 1, "
             f"len_max >= len_min] with epoch_end >= epoch_start")


@dataclass
class M2ac:
    """M2AC's masked rollouts (the rollouts group for the rest)."""

    horizon: int = key(10, "H: model steps per rollout")
    keep_h1: float = key(0.5, "share of rollouts stored when H = 1; w_h = (H - h) / (2 (H + 1)) otherwise")
    penalty: float = key(0.001, "the stored reward is r - penalty * u (u: the serving member's OvR KL)")


@dataclass
class Pets:
    """PETS's CEM model-predictive control (POPLIN's CEM too)."""

    horizon: int = key(30, "actions per plan")
    population: int = key(500, "candidate plans per CEM iteration")
    elites: int = key(50, "best candidates that refit the sampling distribution")
    iterations: int = key(5, "CEM iterations per plan")
    momentum: float = key(0.1, "mean <- momentum * mean + (1 - momentum) * elites' mean (same for the variance)")
    particles: int = key(20, "TS-infinity particles per candidate, a multiple of model.elites")

    @staticmethod
    def check(g: dict, cfg: dict) -> None:
        need(g["elites"] <= g["population"],
             f"pets.elites={g['elites']}: must be <= pets.population ({g['population']})")


@dataclass
class Poplin:
    """POPLIN's policy network and its CEM noise (pets group for the CEM)."""

    hidden: list[int] = key([64, 64], "the policy network's tanh hidden layers")
    init_var: float = key(0.25, "the CEM noise's initial variance at every plan (A: actions; P: weights)")
    bc_epochs: int = key(100, "POPLIN-A's behaviour cloning after each model training")
    bc_batch: int = key(64, "behaviour cloning batch size")
    bc_lr: float = key(0.003, "behaviour cloning learning rate")


@dataclass
class Mppve:
    """MPPVE's plan-value critic Q(s, a_1..a_k) (mpdp_pv's too)."""

    plan_length: int = key(3, "k: the critic is Q(s, a_1..a_k)")
    plan_grad_through_model: bool = key(True, "Eq. (18) differentiates through model states; false: "
                                              "detach them (official code)")


@dataclass
class Ddpg:
    """DDPG's exploration."""

    exploration_noise: float = key(0.1, "std of the Gaussian noise added to mu(s), in units of max_action")


@dataclass
class Eval:
    """Evaluation: the deterministic pi_0 = tanh(mean)."""

    every: int = key(5000, "env steps between evaluations; one more runs at the end")
    episodes: int = key(5, "episodes per evaluation")
    video_every: int = key(0, "render one episode every N evaluations to DIR/videos/ and W&B (0: off)")


@dataclass
class Durability:
    """Checkpoints (DIR/checkpoints/; python train.py --resume DIR) and the non-finite guard."""

    checkpoint_every: int = key(10000, "env steps between checkpoints (0: only at the end and on SIGTERM/SIGINT)")
    nonfinite_limit: int = key(20, "non-finite updates of one part in a row before the run stops")
    nonfinite_guard: NonfiniteGuard = key("auto", "sync (host test per step), deferred (no host "
                                                  "sync), auto: sync on CPU only")


@dataclass
class Logging:
    """Training metrics."""

    every: int = key(1000, "env steps between pushes of training metrics to the logger")


@dataclass
class Wandb:
    """Weights & Biases (offline without an API key)."""

    project: str = key("mpdp_pl", "W&B project")
    entity: Optional[str] = key(None, "W&B entity")
    mode: WandbMode = key("auto", "auto = online with an API key, offline otherwise")
    group: Optional[str] = key(None, "W&B group")
    tags: list[str] = key([], "W&B tags")


@dataclass
class Trainer:
    """The Lightning Trainer."""

    accelerator: str = key("auto", "cpu | gpu | auto")
    devices: Any = key(1, "per node; with strategy ddp each device is a rank with its own envs")
    num_nodes: int = key(1, "nodes")
    strategy: str = key("auto", "ddp: data-parallel ranks; the env-step budget and metrics count "
                                "all ranks, update ratios each rank's steps")
    precision: str = key("32-true", "Lightning precision")
    num_threads: Optional[int] = key(1, "torch.set_num_threads; null = torch's default (all cores)")


@dataclass
class RunConfig:
    """One run: the run keys, then the groups."""

    env: str = key("InvertedPendulum-v4", "gymnasium id (--env)")
    algo: str = key("mpdp_pv", "--algo (MPDP's default: mpdp_pv, docs/mpdp.md)")
    variant: Optional[str] = key(None, "a named configuration, conf/variant/<name>.yaml")
    seed: int = key(0, "--seed")
    steps: int = key(15000, "env-step budget (--steps)")
    out: Optional[str] = key(None, "run directory (--out); null = runs/<env>/<algo>/seed<seed>-<time>")
    logger: Logger = key("wandb", "wandb | csv | none (--logger)")
    task: Task = field(default_factory=Task)
    data: Data = field(default_factory=Data)
    updates: Updates = field(default_factory=Updates)
    critic: Critic = field(default_factory=Critic)
    actor: Actor = field(default_factory=Actor)
    temperature: Temperature = field(default_factory=Temperature)
    networks: Networks = field(default_factory=Networks)
    model: Model = field(default_factory=Model)
    improvement: Improvement = field(default_factory=Improvement)
    dhmbpo: Dhmbpo = field(default_factory=Dhmbpo)
    rollouts: Rollouts = field(default_factory=Rollouts)
    m2ac: M2ac = field(default_factory=M2ac)
    pets: Pets = field(default_factory=Pets)
    poplin: Poplin = field(default_factory=Poplin)
    mppve: Mppve = field(default_factory=Mppve)
    ddpg: Ddpg = field(default_factory=Ddpg)
    eval: Eval = field(default_factory=Eval)
    durability: Durability = field(default_factory=Durability)
    logging: Logging = field(default_factory=Logging)
    wandb: Wandb = field(default_factory=Wandb)
    trainer: Trainer = field(default_factory=Trainer)


def groups() -> dict[str, type]:
    """The groups of :class:`RunConfig`, by name."""
    return {f.name: f.default_factory for f in fields(RunConfig) if is_dataclass(f.default_factory)}


def defaults() -> dict:
    """Every key at its default, as a plain nested dict."""
    def plain(obj):
        if is_dataclass(obj):
            return {f.name: plain(getattr(obj, f.name)) for f in fields(obj)}
        return obj.value if isinstance(obj, Enum) else copy.deepcopy(obj)
    return plain(RunConfig())


# Ranges that a type cannot express: dotted key -> rule. Rules: "> 0", ">= 0", ">= 1",
# "(0, 1]", "[0, 1]", "(0, 1)", "[0, 1)", "positive list", "rates" (each in [0, 1)), "eps list"
# (each > 0), "seed" (numpy's range); a null value passes.
RANGES = {
    "steps": "> 0",
    **dict.fromkeys(["data.batch_size", "data.buffer_size", "data.frames_per_batch", "data.num_envs",
                     "eval.every", "eval.episodes", "logging.every", "task.obs_truncate",
                     "model.hidden", "model.layers", "model.batch_size", "model.train_freq",
                     "model.max_holdout", "model.patience", "model.max_epochs", "model.max_steps",
                     "model.error_window", "model.eval_every", "actor.grad_clip",
                     "temperature.init", "rollouts.batch_size", "rollouts.retain_epochs",
                     "rollouts.epoch_length", "poplin.init_var", "poplin.bc_lr"], "> 0"),
    **dict.fromkeys(["updates.critic_per_step", "updates.actor_per_step", "actor.lr", "critic.lr",
                     "temperature.lr", "model.lr"], "finite >= 0"),
    **dict.fromkeys(["data.init_random_steps",
                     "updates.warmup", "eval.video_every",
                     "durability.checkpoint_every", "improvement.beta", "m2ac.penalty",
                     "ddpg.exploration_noise"], ">= 0"),
    **dict.fromkeys(["updates.every", "durability.nonfinite_limit", "improvement.horizon",
                     "mppve.plan_length", "dhmbpo.rollout_length", "dhmbpo.rollout_every",
                     "model.first_fit_scale", "model.epoch_batches", "m2ac.horizon", "pets.horizon",
                     "pets.elites", "pets.iterations", "pets.population", "pets.particles",
                     "poplin.bc_epochs", "poplin.bc_batch", "task.max_episode_steps"], ">= 1"),
    **dict.fromkeys(["critic.count", "model.ensemble_size"], ">= 2"),
    "critic.gamma": "(0, 1]", "critic.tau": "[0, 1]", "improvement.u_T_quantile": "(0, 1]",
    "m2ac.keep_h1": "(0, 1]", "rollouts.real_ratio": "(0, 1]", "model.holdout_ratio": "(0, 1)",
    "pets.momentum": "[0, 1)",
    "networks.hidden_sizes": "positive list", "poplin.hidden": "positive list",
    "model.dropout": "rates", "model.layernorm": "eps list",
    "seed": "seed", "trainer.num_threads": ">= 1", "trainer.num_nodes": ">= 1",
}

_RULES = {
    "> 0": lambda v: v > 0, ">= 0": lambda v: v >= 0, "finite >= 0": lambda v: 0 <= v < math.inf,
    ">= 1": lambda v: v >= 1, ">= 2": lambda v: v >= 2,
    "(0, 1]": lambda v: 0 < v <= 1, "[0, 1]": lambda v: 0 <= v <= 1, "(0, 1)": lambda v: 0 < v < 1,
    "[0, 1)": lambda v: 0 <= v < 1, "positive list": lambda v: len(v) > 0 and all(h > 0 for h in v),
    "rates": lambda v: all(0 <= p < 1 for p in v), "eps list": lambda v: all(e > 0 for e in v),
    "seed": lambda v: 0 <= v < 2**32,
}

# Keys whose value is "auto" or a number (inf and -inf included).
AUTO_OR_NUMBER = ("temperature.target_entropy", "improvement.u_T")


def get(cfg: dict, dotted: str) -> Any:
    node = cfg
    for part in dotted.split("."):
        node = node[part]
    return node


def check(cfg: dict) -> None:
    """The ranges, the auto-or-number keys and every group's own ``check``."""
    for dotted, rule in RANGES.items():
        value = get(cfg, dotted)
        need(value is None or _RULES[rule](value), f"{dotted}={value}: must be {_text(rule)}")
    for dotted in AUTO_OR_NUMBER:
        value = get(cfg, dotted)
        need(value == "auto" or (isinstance(value, (int, float)) and not isinstance(value, bool)),
             f"{dotted}={value!r}: must be 'auto' or a number")
    for name, group in groups().items():
        if hasattr(group, "check"):
            group.check(cfg[name], cfg)


def _text(rule: str) -> str:
    if rule.startswith(("(", "[")):
        return f"in {rule}"
    return {"finite >= 0": "a finite number >= 0",
            "positive list": "a non-empty list of positive ints", "rates": "a list of rates in [0, 1)",
            "eps list": "a list of positive numbers", "seed": "in [0, 2^32)"}.get(rule, rule)


def auto_or_number(value: Any) -> Any:
    """``"inf"``, ``"-1"`` (strings, as a command line gives them) -> floats; others unchanged."""
    if isinstance(value, str) and value != "auto":
        try:
            return float(value)
        except ValueError:
            return value
    return value



def flatten_keys() -> list[str]:
    """Every dotted key of the schema."""
    return [k for k in _dotted(defaults())]


def _dotted(tree: dict, prefix: str = ""):
    for k, v in tree.items():
        if isinstance(v, dict) and v:
            yield from _dotted(v, f"{prefix}{k}.")
        else:
            yield prefix + k


def describe(only: str | None = None) -> str:
    """Every key of every group (or of group ``only``): dotted name, type, default, meaning."""
    rows = []
    run = [f for f in fields(RunConfig) if not is_dataclass(f.default_factory)]
    sections = [("run keys", "", run)] + [(name, f"{name}.", fields(cls)) for name, cls in groups().items()]
    for title, prefix, members in sections:
        if only is not None and title != only:
            continue
        cls = groups().get(title)
        rows.append(f"{title}: {cls.__doc__.splitlines()[0]}" if cls else f"{title}:")
        for f in members:
            default = f.default_factory() if f.default_factory is not MISSING else f.default
            kind = globals().get(f.type)
            kind = " | ".join(c.value for c in kind) if isinstance(kind, type) and issubclass(kind, Choice) else f.type
            default = default.value if isinstance(default, Choice) else default
            rows.append(f"  {prefix}{f.name}: {kind} = {default!r}  # {f.metadata.get('meaning', '')}")
    if not rows:
        raise ConfigError(f"unknown group '{only}' (groups: {', '.join(groups())})")
    return "\n".join(rows)
