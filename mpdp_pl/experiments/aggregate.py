"""Statistics of a grid's final returns with rliable (Agarwal et al., "Deep Reinforcement Learning
at the Edge of the Statistical Precipice", NeurIPS 2021).

A run's score is its return at its task's last table step (the budget, :func:`.results.value_at`).

- Per task and algorithm: the interquartile mean (IQM: the mean of the middle 50% of runs,
  ``scipy.stats.trim_mean(x, 0.25)``) and the mean, each with a 95% stratified-bootstrap
  percentile interval over seeds.
- Across tasks: IQM and mean of normalized scores, score / reference, where the reference is
  :data:`REFERENCE` (published SAC at 200k env steps). Tasks without a reference stay out of
  the aggregates, and the report names them.
- The probability of improvement P(X > Y) of MPDP over each other row: the Mann-Whitney U
  statistic / (n_X n_Y) per task, averaged over the tasks both ran (it ranks runs within a task,
  so it needs no normalization), with its stratified-bootstrap interval.
- Performance profiles: the fraction of runs whose score exceeds tau, per task on returns and
  across tasks on normalized scores (``profiles.png``).

With 3 seeds or fewer the IQM trims no run (trim_mean cuts int(0.25 n) = 0 runs at each end), so
it equals the mean, and a bootstrap over so few seeds gives intervals that say little; the
report says so on every such row.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

CONFIDENCE = 0.95
# Normalization of the aggregates: published SAC returns at 200k env steps (the last step of the
# shared anchors: the DHMBPO authors' result CSVs, 4kubo/erl_lib 024b0b5, 8 seeds, v4 tasks);
# InvertedPendulum: its maximum return (1 per step for 1000 steps).
REFERENCE = {"Hopper": 2973.3, "Walker2d": 3748.6, "HalfCheetah": 8314.6, "Ant": 3248.1,
             "Humanoid": 585.7, "InvertedPendulum": 1000.0}
REFERENCE_SOURCE = ("score / reference, reference = published SAC at 200k env steps "
                    "(docs/anchors.md; 4kubo/erl_lib 024b0b5, 8 seeds), InvertedPendulum: 1000 "
                    "(its maximum)")
FEW_SEEDS = 3


def iqm(scores: np.ndarray) -> float:
    """Interquartile mean over all entries (runs x tasks), as rliable's ``aggregate_iqm``."""
    from rliable import metrics

    return float(metrics.aggregate_iqm(scores))


def final_scores(results, at: dict[str, list[int]]) -> dict[str, dict[str, np.ndarray]]:
    """{env: {algo: returns of its seeds at the env's last ``at`` step}}, in seed order; runs
    that have not reached that step are left out."""
    from .results import value_at

    out: dict[str, dict[str, np.ndarray]] = {}
    for (env, algo, seed), evals in sorted(results.items(), key=lambda kv: kv[0][2]):
        if not evals or not at.get(env):
            continue
        v = value_at(evals, max(at[env]))
        if v is not None:
            out.setdefault(env, {}).setdefault(algo, []).append(v)
    return {env: {a: np.asarray(v, dtype=float) for a, v in by.items()} for env, by in out.items()}


def _one_run(scores) -> bool:
    """Every task holds one run (of each side of a pair): each stratified-bootstrap resample is
    the data itself, so the interval is the point estimate."""
    return all(m.shape[0] == 1 for m in (scores if isinstance(scores, tuple) else (scores,)))


def _intervals(score_dict: dict, func, reps: int, seed: int):
    """rliable's ``get_interval_estimates``, without resampling where :func:`_one_run` (the
    interval it would return is [point, point]; a grid of single seeds is reported at once).
    rliable draws its resamples from NumPy's global generator whatever ``random_state`` it is
    given, so that generator is seeded with ``seed`` for the call (and restored after): the same
    runs give the same intervals."""
    from rliable import library as rly

    point, ci = {}, {}
    for key, scores in score_dict.items():
        if _one_run(scores):
            point[key] = func(*scores) if isinstance(scores, tuple) else func(scores)
            ci[key] = np.stack([point[key], point[key]])
    rest = {k: v for k, v in score_dict.items() if k not in point}
    if rest:
        state = np.random.get_state()
        np.random.seed(seed)
        try:
            p, c = rly.get_interval_estimates(rest, func, reps=reps,
                                              confidence_interval_size=CONFIDENCE)
        finally:
            np.random.set_state(state)
        point.update(p)
        ci.update(c)
    return {k: point[k] for k in score_dict}, {k: ci[k] for k in score_dict}


def _iqm_and_mean(x: np.ndarray) -> np.ndarray:
    from rliable import metrics

    return np.array([metrics.aggregate_iqm(x), metrics.aggregate_mean(x)])


def _matrix(per_task: list[np.ndarray]) -> np.ndarray:
    """runs x tasks from per-task score vectors: the first n seeds of each, n the fewest."""
    n = min(len(v) for v in per_task)
    return np.stack([v[:n] for v in per_task], axis=1)


def summarize(scores: dict[str, dict[str, np.ndarray]], target: str | None = None, reps: int = 2000,
              seed: int = 0) -> list[dict]:
    """Rows of ``stats.csv``: scope (a task, ``normalized`` or ``P(target > other)``), algo,
    metric, value, ci_low, ci_high, seeds (runs per task), tasks. ``target``: by default MPDP's
    default form (``mpdp_pv``) where the report holds it, else the one-step ``mpdp``."""
    from rliable import metrics

    from ..config import task_name

    rows = []
    for env, by_algo in scores.items():
        point, ci = _intervals({a: v[:, None] for a, v in by_algo.items()}, _iqm_and_mean, reps, seed)
        for algo, v in by_algo.items():
            for i, metric in enumerate(("IQM", "mean")):
                rows.append(dict(scope=env, algo=algo, metric=metric, value=point[algo][i],
                                 ci_low=ci[algo][0, i], ci_high=ci[algo][1, i], seeds=len(v),
                                 tasks=1))
    normed = {env: by for env, by in scores.items() if task_name(env) in REFERENCE}
    algos = list(dict.fromkeys(a for by in scores.values() for a in by))
    for algo in algos:  # an algorithm enters the aggregate if it ran every normalized task
        if normed and all(algo in by for by in normed.values()):
            m = _matrix([by[algo] / REFERENCE[task_name(env)] for env, by in normed.items()])
            point, ci = _intervals({algo: m}, _iqm_and_mean, reps, seed)
            for i, metric in enumerate(("IQM", "mean")):
                rows.append(dict(scope="normalized", algo=algo, metric=metric,
                                 value=point[algo][i], ci_low=ci[algo][0, i],
                                 ci_high=ci[algo][1, i], seeds=m.shape[0], tasks=m.shape[1]))
    if target is None:
        target = next((a for a in ("mpdp_pv", "mpdp") if a in algos), None)
    if target in algos:
        for other in (a for a in algos if a != target):
            envs = [env for env, by in scores.items() if target in by and other in by]
            x = _matrix([scores[env][target] for env in envs])
            y = _matrix([scores[env][other] for env in envs])
            point, ci = _intervals({"p": (x, y)},
                                   lambda a, b: np.array([metrics.probability_of_improvement(a, b)]),
                                   reps, seed)
            rows.append(dict(scope=f"P({target} > {other})", algo=other, metric="P",
                             value=point["p"][0], ci_low=ci["p"][0, 0], ci_high=ci["p"][1, 0],
                             seeds=min(x.shape[0], y.shape[0]), tasks=len(envs)))
    return rows


def _few(n: int, iqm_too: bool = True) -> str:
    """A seed count, with the warning of the module docstring where it applies."""
    if n > FEW_SEEDS:
        return str(n)
    return f"{n} (≤{FEW_SEEDS}: {'IQM = mean; ' if iqm_too else ''}the CI says little)"


def _cell(rows: list[dict], scope: str, algo: str, metric: str, fmt: str) -> str:
    r = next((r for r in rows if (r["scope"], r["algo"], r["metric"]) == (scope, algo, metric)), None)
    if r is None:
        return "-"
    return f"{r['value']:{fmt}} [{r['ci_low']:{fmt}}, {r['ci_high']:{fmt}}]"


def markdown(rows: list[dict], scores: dict[str, dict[str, np.ndarray]], at: dict[str, list[int]],
             reps: int) -> str:
    """The statistics section of ``table.md``."""
    from ..config import task_name

    lines = ["", "## Statistics (rliable)", "",
             f"Score: a run's return at its task's last step above. Intervals: {CONFIDENCE:.0%} "
             f"stratified-bootstrap percentile intervals over seeds ({reps} resamples).", "",
             "| task | algo | seeds | IQM [95% CI] | mean [95% CI] |", "|---|---|---|---|---|"]
    for env, by in scores.items():
        for algo, v in by.items():
            lines.append(f"| {env} @ {max(at[env]):,} | {algo} | {_few(len(v))} | "
                         f"{_cell(rows, env, algo, 'IQM', '.0f')} | {_cell(rows, env, algo, 'mean', '.0f')} |")
    agg = [r for r in rows if r["scope"] == "normalized" and r["metric"] == "IQM"]
    left_out = [env for env in scores if task_name(env) not in REFERENCE]
    lines += ["", f"Across tasks, normalized: {REFERENCE_SOURCE}."
              + (f" Not normalized, so left out: {', '.join(left_out)}." if left_out else ""), ""]
    if agg:
        lines += ["| algo | tasks | seeds per task | IQM [95% CI] | mean [95% CI] |",
                  "|---|---|---|---|---|"]
        for r in agg:
            lines.append(f"| {r['algo']} | {r['tasks']} | {_few(r['seeds'])} | "
                         f"{_cell(rows, 'normalized', r['algo'], 'IQM', '.2f')} | "
                         f"{_cell(rows, 'normalized', r['algo'], 'mean', '.2f')} |")
    else:
        lines.append("(no algorithm ran every normalized task)")
    probs = [r for r in rows if r["metric"] == "P"]
    if probs:
        lines += ["", "Probability of improvement (per task over runs, averaged over tasks):", "",
                  "| comparison | tasks | seeds | P [95% CI] |", "|---|---|---|---|"]
        for r in probs:
            lines.append(f"| {r['scope']} | {r['tasks']} | {_few(r['seeds'], iqm_too=False)} | "
                         f"{r['value']:.2f} [{r['ci_low']:.2f}, {r['ci_high']:.2f}] |")
    return "\n".join(lines) + "\n"


def write_csv(rows: list[dict], path: Path) -> None:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, ["scope", "algo", "metric", "value", "ci_low", "ci_high", "seeds", "tasks"])
        w.writeheader()
        for r in rows:
            w.writerow({**r, **{k: f"{r[k]:.6g}" for k in ("value", "ci_low", "ci_high")}})


def plot_profiles(scores: dict[str, dict[str, np.ndarray]], path: Path, reps: int = 2000) -> None:
    """Performance profiles with their bootstrap bands: one panel per task (returns), and one
    across the normalized tasks (for the algorithms that ran them all)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from rliable import library as rly, plot_utils

    from ..config import task_name

    panels = [(env, {a: v[:, None] for a, v in by.items()}, "return (τ)") for env, by in scores.items()]
    normed = {env: by for env, by in scores.items() if task_name(env) in REFERENCE}
    common = [a for a in dict.fromkeys(a for by in normed.values() for a in by)
              if all(a in by for by in normed.values())]
    if normed and common:
        panels.append((f"normalized, {len(normed)} task(s)",
                       {a: _matrix([by[a] / REFERENCE[task_name(env)] for env, by in normed.items()])
                        for a in common}, "normalized score (τ)"))
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.8), squeeze=False)
    for ax, (title, score_dict, xlabel) in zip(axes[0], panels):
        lo = min(float(m.min()) for m in score_dict.values())
        hi = max(float(m.max()) for m in score_dict.values())
        taus = np.linspace(lo - 0.05 * (hi - lo + 1e-9), hi + 0.05 * (hi - lo + 1e-9), 101)
        # rliable's create_performance_profile: the score distribution with its bootstrap band
        profiles, cis = _intervals(score_dict, lambda x: rly.score_distributions(x, taus), reps, 0)
        plot_utils.plot_performance_profiles(profiles, taus, performance_profile_cis=cis, ax=ax,
                                             colors=dict(zip(score_dict, plt.cm.tab10.colors)),
                                             xlabel=xlabel, ylabel="fraction of runs > τ")
        ax.set_title(title)
        ax.legend([plt.Line2D([], [], color=c) for c in plt.cm.tab10.colors[: len(score_dict)]],
                  list(score_dict), fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
