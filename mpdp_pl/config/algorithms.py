"""What each algorithm refuses of a config that the groups' own checks (:mod:`.schema`) accept:
``CHECKS`` gives every algorithm its list, one line each, from the rules below."""

from __future__ import annotations

from .schema import need


def one_env(cfg: dict) -> None:
    need(cfg["data"]["num_envs"] == 1,
         f"data.num_envs > 1 is not supported by {cfg['algo']} (its plan segments are read from "
         f"one env's consecutive transitions)")


def plain_critic(cfg: dict) -> None:
    need(not (cfg["critic"]["scale"] or cfg["networks"]["obs_norm"]),
         f"critic.scale and networks.obs_norm are not built for {cfg['algo']}'s critic")
    need(cfg["critic"]["count"] == 2,
         f"critic.count={cfg['critic']['count']}: {cfg['algo']} builds a fixed number of critics")


def no_critic_layernorm(cfg: dict) -> None:
    need(not cfg["critic"]["layernorm"],
         f"critic.layernorm is not built for {cfg['algo']}'s critic")


def relu_networks(cfg: dict) -> None:
    need(cfg["networks"]["activation"] == "relu",
         f"networks.activation={cfg['networks']['activation']}: {cfg['algo']}'s networks are ReLU")


def no_warm_start(cfg: dict) -> None:
    need(not cfg["updates"]["warmup"],
         f"updates.warmup: {cfg['algo']} has no policy updates to warm start")


def no_model(cfg: dict) -> None:
    need(cfg["model"]["first_fit_scale"] == 1,
         f"model.first_fit_scale acts at the first model training: {cfg['algo']} has no model")


def no_heads(cfg: dict) -> None:
    """MPDP's two switches, ``single_policy`` and ``paper_literal_cut``, are refused rather than
    ignored by an algorithm without heads. Its other ``improvement`` keys (beta, u_T, ...) are not
    checked: an algorithm that does not read one ignores it."""
    for k in ("single_policy", "paper_literal_cut"):
        need(not cfg["improvement"][k],
             f"improvement.{k}={cfg['improvement'][k]!r} is MPDP's (algo={cfg['algo']} does not use it)")


def no_literal_cut(cfg: dict) -> None:
    need(not cfg["improvement"]["paper_literal_cut"],
         f"improvement.paper_literal_cut=True is MPDP's (algo={cfg['algo']} does not use it)")


def heads_cover_a_plan(cfg: dict) -> None:
    need(cfg["improvement"]["horizon"] >= cfg["mppve"]["plan_length"],
         f"improvement.horizon={cfg['improvement']['horizon']}: mpdp_pv's Hmax must be >= "
         f"mppve.plan_length ({cfg['mppve']['plan_length']}), the actions of one plan")


def no_compile(cfg: dict) -> None:
    need(not cfg["improvement"]["compile"],
         f"improvement.compile=True compiles mpdp's farsighted unroll: {cfg['algo']} does not use it")


def hard_terminal_mask(cfg: dict) -> None:
    need(not cfg["improvement"]["terminal_critic"],
         f"improvement.terminal_critic=True is MPDP's: {cfg['algo']} keeps DHMBPO's hard terminal mask")


def plan_value_at_terminals(cfg: dict) -> None:
    need(cfg["improvement"]["terminal_critic"],
         f"improvement.terminal_critic=False: {cfg['algo']} always ends the sum at a predicted "
         "terminal with the plan value (its critic learned terminal plans)")


def one_unroll_form(cfg: dict) -> None:
    need(cfg["improvement"]["unroll_form"] == "auto",
         f"improvement.unroll_form={cfg['improvement']['unroll_form']}: the live and static forms "
         f"are mpdp's; {cfg['algo']} has one")


def paired_updates(cfg: dict) -> None:
    need(cfg["updates"]["actor_per_step"] <= cfg["updates"]["critic_per_step"],
         "dhmbpo pairs every actor update with a critic update: updates.actor_per_step must be "
         "<= updates.critic_per_step")


def a_member_per_particle(cfg: dict) -> None:
    need(cfg["pets"]["particles"] % cfg["model"]["elites"] == 0,
         f"pets.particles={cfg['pets']['particles']}: must be a multiple of model.elites "
         f"({cfg['model']['elites']}), one member per particle")


PLANNERS = ("pets", "poplin_a", "poplin_p")  # model-predictive control: no actor-critic
PLANNER = (no_warm_start, no_heads, plain_critic, no_critic_layernorm, relu_networks)
CHECKS = {
    "sac": (no_warm_start, no_model, no_heads, no_compile),
    "ddpg": (no_warm_start, no_model, no_heads, plain_critic, no_critic_layernorm, relu_networks,
             no_compile),
    "mbpo": (no_heads, no_compile),
    "m2ac": (no_heads, no_compile),
    "mppve": (no_heads, one_env, plain_critic, no_compile),
    "mpdp": (),
    "mpdp_paper": (),
    "mpdp_pv": (no_literal_cut, one_env, plain_critic, heads_cover_a_plan, plan_value_at_terminals,
                one_unroll_form, no_compile),
    "dhmbpo": (no_heads, paired_updates, no_compile),
    "mpdp_dh": (no_literal_cut, hard_terminal_mask, paired_updates, one_unroll_form, no_compile),
    "pets": (*PLANNER, a_member_per_particle, no_compile),
    "poplin_a": (*PLANNER, no_compile),
    "poplin_p": (*PLANNER, no_compile),
}


def check(cfg: dict) -> None:
    """``cfg['algo']``'s rules (an algorithm file without an entry has none)."""
    for rule in CHECKS.get(cfg["algo"], ()):
        rule(cfg)


# What each algorithm reads of the groups that belong to some algorithms and not others: a group
# read whole, or "group.key" where it reads that key alone. An override that changes any other
# key of these groups would be ignored by the run, so it is refused (check_read).
# tests/test_config_reads.py records the keys each algorithm reads in a real run and checks this
# table against them.
ALGORITHM_GROUPS = ("critic", "actor", "temperature", "networks", "model", "improvement",
                    "rollouts", "m2ac", "mppve", "dhmbpo", "pets", "poplin", "ddpg")
ACTOR_CRITIC = ("critic", "actor", "temperature", "networks")
MBPO_DATA = (*ACTOR_CRITIC, "model", "rollouts")
PLANNING = ("critic.gamma", "model", "pets")
READS = {
    "sac": (*ACTOR_CRITIC, "model.train_freq"),  # when the observation statistics are refreshed
    "ddpg": ("critic", "actor", "networks", "ddpg"),
    "mbpo": MBPO_DATA,
    "m2ac": (*ACTOR_CRITIC, "model", "m2ac", "rollouts.batch_size", "rollouts.epoch_length",
             "rollouts.real_ratio", "rollouts.retain_epochs"),  # its own rollout lengths (m2ac.*)
    "mppve": (*MBPO_DATA, "mppve"),
    "mpdp": (*ACTOR_CRITIC, "model", "improvement"),
    "mpdp_paper": (*ACTOR_CRITIC, "model", "improvement"),
    "mpdp_pv": (*MBPO_DATA, "mppve", "improvement"),
    "dhmbpo": (*ACTOR_CRITIC, "model", "dhmbpo", "improvement.horizon"),  # the SVG unroll's length
    "mpdp_dh": (*ACTOR_CRITIC, "model", "dhmbpo", "improvement"),
    "pets": PLANNING,
    "poplin_a": (*PLANNING, "poplin"),
    "poplin_p": (*PLANNING, "poplin.hidden", "poplin.init_var"),  # no behaviour cloning
}


def reads(algo: str, dotted: str) -> bool:
    """Whether ``algo`` reads the key ``group.key`` (every key outside ALGORITHM_GROUPS)."""
    group = dotted.split(".")[0]
    return group not in ALGORITHM_GROUPS or group in READS[algo] or dotted in READS[algo]


def check_read(cfg: dict, changed: list[str]) -> None:
    """Refuse a given key that changes the config where ``cfg['algo']`` does not read it: the run
    would ignore it."""
    ignored = [k for k in changed if not reads(cfg["algo"], k)]
    need(not ignored,
         f"{', '.join(ignored)}: {cfg['algo']} does not read "
         f"{'these keys' if len(ignored) > 1 else 'this key'}, so the run would ignore "
         f"{'them' if len(ignored) > 1 else 'it'} (in a grid over algorithms, give them in a "
         f"command of the algorithms that read them)")
