"""Training the dynamics ensemble on the real buffer (Algorithm 2 line 4; MBPO's procedure).

Each call refits the normalizers on all real data and trains every member on its own bootstrap
of the training rows with one optimizer (warm-started from the previous weights), evaluating
holdout MSE after each round, keeping each member's best weights, stopping after ``patience``
rounds in which no member improved by more than 1%, restoring the best weights and picking the
``num_elites`` members with the lowest holdout MSE as elites. One deviation: a member's best
starts at its warm-started weights' holdout MSE (MBPO's at 1e10, so that its first round always
counts), so a member that no round improves by more than 1% keeps its previous weights. Two
budgets:

- ``max_steps=None`` (MBPO's rule): a round is one epoch over the whole bootstrap, at most
  ``max_epochs`` rounds; the cost of a training grows with the buffer.
- ``max_steps=N``: a round is ``eval_every`` minibatch steps, each member's rows drawn uniformly
  from its bootstrap, at most N steps per training: the cost is bounded whatever the data.

DHMBPO's procedure (4kubo/erl_lib ``model_train/de_trainer.py``) is the same loop with three
options: ``epoch_batches`` (a round is at most that many batches, drawn without replacement, every
member on the same rows, weighted by fixed per-member ``weights``; at most ``max_epochs``
rounds), ``early_stop="z_test"`` (:class:`PairedZTest`: the whole ensemble's per-row holdout NLL
against the best round's, its best weights kept for every member together) and, in the caller,
a fresh AdamW per training.

The holdout rows are the caller's (``split``): the model-based algorithms pass a fixed split
whose holdout rows are never trained on (:func:`fixed_split`); without ``split`` a fresh random
split is drawn, as MBPO does (its "holdout" then holds rows earlier trainings were fitted on).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from .dynamics import DynamicsModel, ensemble_nll, mixture_nll
from .ranks import ONE_PROCESS, Ranks


@dataclass
class TrainSettings:
    """How a training runs: the config's ``model`` group (its meanings and defaults:
    :class:`mpdp_pl.config.schema.Model`)."""

    batch_size: int
    holdout_ratio: float
    max_holdout: int
    patience: int
    max_epochs: int
    max_steps: int | None  # None: whole-bootstrap epochs; N: at most N minibatch steps
    eval_every: int        # minibatch steps per round (holdout evaluation) when max_steps
    early_stop: str        # improvement (MBPO, per member) | z_test (DHMBPO, the ensemble)
    epoch_batches: int | None  # N: a round is min(N, rows // batch_size) minibatches without
                               # replacement, every member on the same rows (DHMBPO)
    improvement: float = 0.01  # relative holdout improvement that counts (MBPO: 1%, fixed)

    @classmethod
    def from_config(cls, cfg: dict) -> "TrainSettings":
        m = cfg["model"]
        return cls(**{k: m[k] for k in ("batch_size", "holdout_ratio", "max_holdout", "patience",
                                        "max_epochs", "max_steps", "eval_every", "early_stop",
                                        "epoch_batches")})


def param_groups(model: DynamicsModel, lr: float, weight_decay: list[float],
                 decoupled: bool = False, noise_decay: float = 0.0) -> list[dict]:
    """One optimizer group per layer with its own weight decay (MBPO's per-layer decays).
    ``decoupled=False`` (Adam's L2, MBPO): the layers' weights only. ``decoupled=True`` (AdamW,
    DHMBPO, erl_lib ``gaussian_mlp.py`` ``optimized_parameters``): each layer's weight and bias,
    and the noise parameters with ``noise_decay``."""
    layers = model.ensemble.net.layers
    if len(weight_decay) != len(layers):
        raise ValueError(f"{len(weight_decay)} weight decays for {len(layers)} layers")
    groups = [{"params": [layer.weight, layer.bias] if decoupled else [layer.weight],
               "weight_decay": wd, "lr": lr} for layer, wd in zip(layers, weight_decay)]
    grouped = {id(p) for g in groups for p in g["params"]}
    if decoupled:
        noise = model.ensemble.noise_params()
        groups.append({"params": noise, "weight_decay": noise_decay, "lr": lr})
        grouped |= {id(p) for p in noise}
    rest = [p for p in model.parameters() if id(p) not in grouped]
    if rest:
        groups.append({"params": rest, "weight_decay": 0.0, "lr": lr})
    return groups


def _loss(model: DynamicsModel, x, y, done, weight=None):
    mean, log_var, logit = model.ensemble(x)
    loss = ensemble_nll(mean, log_var, y, model.ensemble, weight)
    if model.learned_termination:
        loss = loss + F.binary_cross_entropy_with_logits(
            logit, done.expand_as(logit), reduction="none").mean(1).sum()
    return loss


def holdout_split(n: int, settings: TrainSettings, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Random (train, holdout) indices: ``holdout_ratio`` of n, at most ``max_holdout``."""
    n_hold = min(int(n * settings.holdout_ratio), settings.max_holdout)
    perm = torch.randperm(n, device=device)
    return perm[n_hold:], perm[:n_hold]


def holdout_flags(first: int, n: int, ratio: float) -> torch.Tensor:
    """Which of the transitions numbered ``first .. first + n - 1`` (in the order a rank stored
    them) belong to the fixed holdout: transition i does when floor((i + 1) r) > floor(i r),
    exactly one in every 1/r (every 5th at r = 0.2). Deterministic, so every DDP rank holds as
    many holdout rows as the others, and a flag never changes once drawn."""
    i = torch.arange(first, first + n, dtype=torch.float64)
    return torch.floor((i + 1) * ratio) > torch.floor(i * ratio)


def fixed_split(flags: torch.Tensor, order: torch.Tensor, settings: TrainSettings):
    """(train, holdout) indices from the stored holdout ``flags`` (storage order): the holdout is
    the newest ``max_holdout`` flagged rows (``order``: storage indices oldest first); flagged
    rows older than those are released into the training rows and never return to the holdout,
    so no holdout row was ever fitted on."""
    flagged = order[flags[order]]
    hold = flagged[max(0, flagged.numel() - settings.max_holdout):]
    train = torch.ones_like(flags)
    train[hold] = False
    return train.nonzero().squeeze(-1), hold


@torch.no_grad()
def holdout_scores(model: DynamicsModel, x, y, done,
                   ranks: Ranks = ONE_PROCESS) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-member holdout MSE and Gaussian NLL (normalized units), each ``[K]``; under DDP
    (``ranks``) averaged over ranks (equal holdout sizes), so early stopping and elites agree on
    every rank."""
    k = model.members
    mean, log_var, _ = model.ensemble(x.expand(k, *x.shape))
    mse = (mean - y).pow(2).mean(dim=(1, 2))
    nll = ((mean - y).pow(2) * torch.exp(-log_var) + log_var).mean(dim=(1, 2))
    both = ranks.mean(torch.stack([mse, nll]))
    return both[0], both[1]


class RelativeImprovement:
    """MBPO's rule, per member: a member improves when its holdout MSE falls by more than
    ``improvement`` (relative) below its best; each member keeps its own best weights; stop after
    ``patience`` rounds in which no member improved."""

    def __init__(self, model: DynamicsModel, hold, settings: TrainSettings, ranks: Ranks):
        self.model, self.hold, self.settings, self.ranks = model, hold, settings, ranks
        self.params = list(model.ensemble.parameters())
        self.best = [p.detach().clone() for p in self.params]
        self.best_mse = holdout_scores(model, *hold, ranks)[0]
        self.since = 0

    @torch.no_grad()
    def step(self) -> bool:
        """After a round: keep what improved; True to stop."""
        mse, _ = holdout_scores(self.model, *self.hold, self.ranks)
        improved = (self.best_mse - mse) / self.best_mse.clamp_min(1e-12) > self.settings.improvement
        if improved.any():
            self.best_mse = torch.where(improved, mse, self.best_mse)
            for b, p in zip(self.best, self.params):
                b[improved] = p[improved]
            self.since = 0
            return False
        self.since += 1
        return self.since >= self.settings.patience


# erl_lib config/agent/model_train/deep_ensemble.yaml: improvement_threshold, keep_threshold
Z_IMPROVE_P, Z_CONTINUE_P = 0.1, 0.5


def paired_z_p_value(scores: torch.Tensor, best: torch.Tensor) -> torch.Tensor:
    """One-sided p-value that the per-row ``scores`` are lower than ``best`` on the same rows: the
    paired z statistic z = mean(d) sqrt(n) / std(d), d = scores - best, and p = Phi(z) (erl_lib
    ``de_trainer.py`` ``p_value``; it takes a paired t-test below 1000 rows, which a holdout of
    DHMBPO's 5000 random steps never is)."""
    d = scores - best
    z = d.mean() * d.numel() ** 0.5 / d.std().clamp_min(1e-12)
    return torch.special.ndtr(z)


class ZTestRule:
    """DHMBPO's stopping rule on per-row scores (erl_lib ``de_trainer.py`` ``EarlyStopping``
    ``_step_z_test``): each round's scores are compared with the best round's, row by row
    (:func:`paired_z_p_value`). p < 0.1: a new best; p < 0.5: training may continue; stop after
    more than ``patience`` rounds in a row without p < 0.5."""

    def __init__(self, best_scores: torch.Tensor, patience: int):
        self.best_scores, self.patience, self.since = best_scores, patience, 0

    def step(self, scores: torch.Tensor) -> tuple[bool, bool]:
        """``(new best, stop)`` after a round with these ``scores``."""
        p = float(paired_z_p_value(scores, self.best_scores))  # one host read per round
        if p < Z_CONTINUE_P:
            self.since = 0
            if p < Z_IMPROVE_P:
                self.best_scores = scores
                return True, False
            return False, False
        self.since += 1
        return False, self.since > self.patience


class PairedZTest:
    """:class:`ZTestRule` on the whole ensemble: the scores are the per-row holdout NLL of the
    moment-matched ensemble (:func:`~mpdp_pl.models.dynamics.mixture_nll`); a new best keeps every
    member's weights."""

    def __init__(self, model: DynamicsModel, hold, settings: TrainSettings, ranks: Ranks):
        if ranks.world > 1:
            raise ValueError("model_early_stop=z_test is not built for DDP (per-row scores per rank)")
        self.model, self.hold = model, hold
        self.params = list(model.ensemble.parameters())
        self.best = [p.detach().clone() for p in self.params]
        self.rule = ZTestRule(self.scores(), settings.patience)

    @torch.no_grad()
    def scores(self) -> torch.Tensor:
        x, y, _ = self.hold
        mean, log_var, _ = self.model.ensemble(x.expand(self.model.members, *x.shape))
        return mixture_nll(mean, log_var, y)

    @torch.no_grad()
    def step(self) -> bool:
        improved, stop = self.rule.step(self.scores())
        if improved:
            for b, q in zip(self.best, self.params):
                b.copy_(q)
        return stop


STOPPERS = {"improvement": RelativeImprovement, "z_test": PairedZTest}


def train_dynamics(model: DynamicsModel, obs, action, next_obs, reward, terminated,
                   optimizer: torch.optim.Optimizer, settings: TrainSettings,
                   backward: Callable[[torch.Tensor], None] = torch.Tensor.backward,
                   split: tuple[torch.Tensor, torch.Tensor] | None = None,
                   ranks: Ranks = ONE_PROCESS, weights: torch.Tensor | None = None,
                   should_stop: Callable[[], bool] = lambda: False) -> dict[str, float]:
    """Train ``model`` on real transitions (tensors ``[N, ...]`` on the model's device).

    ``backward`` lets a LightningModule pass ``self.manual_backward``; ``split`` fixes the
    (train, holdout) indices instead of a fresh random split; ``ranks`` (the runtime's, under DDP)
    averages the normalizers' moments, the gradients and the holdout scores over ranks.
    ``weights`` ``[N, K]``: fixed per-row, per-member loss weights (DHMBPO's Exp(1) weights):
    every member then trains on the same rows, weighted, instead of on its own bootstrap.
    ``should_stop`` is read after every round (a stop signal): the training then ends there with
    its best weights so far. Returns the metrics ``model/holdout_mse``, ``model/holdout_nll``
    (elite means), ``model/epochs`` (rounds), ``model/steps`` (minibatch steps),
    ``model/train_seconds`` and ``model/elites`` (as a string of member indices).
    """
    t0 = time.perf_counter()
    device = model.elites.device
    inputs = torch.cat([obs, action], -1).to(device)
    targets = DynamicsModel.targets(obs, next_obs, reward).to(device)
    done = terminated.reshape(-1).float().to(device)
    model.input_norm.fit(inputs, ranks)
    model.target_norm.fit(targets, ranks)
    x_all, y_all = model.input_norm(inputs), model.target_norm(targets)

    train, hold = split if split is not None else holdout_split(x_all.shape[0], settings, device)
    n_hold = hold.numel()
    holdout = (x_all[hold], y_all[hold], done[hold])
    x_tr, y_tr, d_tr = x_all[train], y_all[train], done[train]
    if weights is not None and settings.epoch_batches is None:
        raise ValueError("per-member weights need epoch_batches (every member on the same rows)")
    w_tr = None if weights is None else weights.to(device)[train]
    n_tr, k = x_tr.shape[0], model.members

    params = list(model.ensemble.parameters())
    stopper = STOPPERS[settings.early_stop](model, holdout, settings, ranks) if n_hold else None
    rounds, steps = 0, 0
    boot = torch.randint(n_tr, (k, n_tr), device=device)  # one bootstrap per member
    net = model.ensemble.net
    while True:
        if settings.epoch_batches is not None:  # DHMBPO: a few batches without replacement
            if rounds >= settings.max_epochs:
                break
            n = max(1, min(settings.epoch_batches, n_tr // settings.batch_size))
            rows = torch.randperm(n_tr, device=device)[: n * settings.batch_size]
            batches = rows.view(n, -1).unbind(0)
        elif settings.max_steps is None:  # one epoch over a fresh bootstrap
            if rounds >= settings.max_epochs:
                break
            boot = boot if rounds == 0 else torch.randint(n_tr, (k, n_tr), device=device)
            batches = [boot[:, i: i + settings.batch_size] for i in range(0, n_tr, settings.batch_size)]
        else:  # eval_every minibatches drawn from each member's bootstrap
            if steps >= settings.max_steps:
                break
            n = min(settings.eval_every, settings.max_steps - steps)
            draw = torch.randint(n_tr, (n, k, settings.batch_size), device=device)
            batches = torch.gather(boot.expand(n, k, n_tr), 2, draw).unbind(0)
        net.dropout_active = True
        for idx in batches:
            # idx: [K, b] (a row set per member) or [b] (every member on the same rows, weighted)
            w = None if w_tr is None else w_tr[idx].T
            loss = _loss(model, x_tr[idx], y_tr[idx], d_tr[idx], w)
            optimizer.zero_grad(set_to_none=True)
            backward(loss)
            ranks.average_gradients(params)  # DDP: the mean over ranks (nothing on one device)
            optimizer.step()
        net.dropout_active = False
        rounds, steps = rounds + 1, steps + len(batches)
        if stopper is not None and stopper.step():
            break
        if should_stop():
            break
    if stopper is not None:
        with torch.no_grad():
            for b, p in zip(stopper.best, params):
                p.copy_(b)
    metrics = {"model/epochs": float(rounds), "model/steps": float(steps),
               "model/train_seconds": 0.0}
    if n_hold:
        mse, nll = holdout_scores(model, *holdout, ranks)
        elites = torch.argsort(mse)[: len(model.elites)]
        model.elites.copy_(torch.sort(elites).values)
        metrics["model/holdout_mse"] = mse[model.elites].mean().item()
        metrics["model/holdout_nll"] = nll[model.elites].mean().item()
    metrics["model/elites"] = " ".join(str(i) for i in model.elites.tolist())
    metrics["model/train_seconds"] = time.perf_counter() - t0
    return metrics
