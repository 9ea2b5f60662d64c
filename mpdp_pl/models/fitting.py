"""Training the dynamics ensemble on the real buffer (Algorithm 2 line 4; MBPO's procedure).

Each call refits the normalizers on all real data and trains every member on its own bootstrap
of the training rows with one optimizer (warm-started from the previous weights), evaluating
holdout MSE after each round, keeping each member's best weights, stopping after ``patience``
rounds in which no member improved by more than 1%, restoring the best weights and picking the
``num_elites`` members with the lowest holdout MSE as elites. Two budgets:

- ``max_steps=None`` (MBPO's rule): a round is one epoch over the whole bootstrap, at most
  ``max_epochs`` rounds; the cost of a training grows with the buffer.
- ``max_steps=N``: a round is ``eval_every`` minibatch steps, each member's rows drawn uniformly
  from its bootstrap, at most N steps per training: the cost is bounded whatever the data.

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

from .dynamics import DynamicsModel, ensemble_nll
from .ranks import ONE_PROCESS, Ranks


@dataclass
class TrainSettings:
    batch_size: int = 256
    holdout_ratio: float = 0.2
    max_holdout: int = 5000
    patience: int = 5
    max_epochs: int = 50
    improvement: float = 0.01  # relative holdout improvement that counts (MBPO: 1%)
    max_steps: int | None = None  # None: whole-bootstrap epochs; N: at most N minibatch steps
    eval_every: int = 250         # minibatch steps per round (holdout evaluation) when max_steps

    @classmethod
    def from_config(cls, cfg: dict) -> "TrainSettings":
        return cls(cfg["model_batch_size"], cfg["model_holdout_ratio"], cfg["model_max_holdout"],
                   cfg["model_patience"], cfg["model_max_epochs"],
                   max_steps=cfg["model_max_steps"], eval_every=cfg["model_eval_every"])


def param_groups(model: DynamicsModel, lr: float, weight_decay: list[float]) -> list[dict]:
    """One Adam group per layer with its own L2 weight decay (MBPO's per-layer decays); biases
    and log-variance bounds are not decayed."""
    layers = model.ensemble.net.layers
    if len(weight_decay) != len(layers):
        raise ValueError(f"{len(weight_decay)} weight decays for {len(layers)} layers")
    groups = [{"params": [layer.weight], "weight_decay": wd, "lr": lr}
              for layer, wd in zip(layers, weight_decay)]
    decayed = {id(layer.weight) for layer in layers}
    rest = [p for p in model.parameters() if id(p) not in decayed]
    groups.append({"params": rest, "weight_decay": 0.0, "lr": lr})
    return groups


def _loss(model: DynamicsModel, x, y, done):
    mean, log_var, logit = model.ensemble(x)
    loss = ensemble_nll(mean, log_var, y, model.ensemble)
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


def train_dynamics(model: DynamicsModel, obs, action, next_obs, reward, terminated,
                   optimizer: torch.optim.Optimizer, settings: TrainSettings,
                   backward: Callable[[torch.Tensor], None] = torch.Tensor.backward,
                   split: tuple[torch.Tensor, torch.Tensor] | None = None,
                   ranks: Ranks = ONE_PROCESS) -> dict[str, float]:
    """Train ``model`` on real transitions (tensors ``[N, ...]`` on the model's device).

    ``backward`` lets a LightningModule pass ``self.manual_backward``; ``split`` fixes the
    (train, holdout) indices instead of a fresh random split; ``ranks`` (the runtime's, under DDP)
    averages the normalizers' moments, the gradients and the holdout scores over ranks. Returns the metrics
    ``model/holdout_mse``, ``model/holdout_nll`` (elite means), ``model/epochs`` (rounds),
    ``model/steps`` (minibatch steps), ``model/train_seconds`` and ``model/elites`` (as a string of member indices).
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
    x_hold, y_hold, d_hold = x_all[hold], y_all[hold], done[hold]
    x_tr, y_tr, d_tr = x_all[train], y_all[train], done[train]
    n_tr, k = x_tr.shape[0], model.members

    params = [p for p in model.ensemble.parameters()]
    best = [p.detach().clone() for p in params]
    best_mse, _ = holdout_scores(model, x_hold, y_hold, d_hold, ranks) if n_hold else (None, None)
    since_update, rounds, steps = 0, 0, 0
    boot = torch.randint(n_tr, (k, n_tr), device=device)  # one bootstrap per member
    while True:
        if settings.max_steps is None:  # one epoch over a fresh bootstrap
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
        for idx in batches:
            loss = _loss(model, x_tr[idx], y_tr[idx], d_tr[idx])
            optimizer.zero_grad(set_to_none=True)
            backward(loss)
            ranks.average_gradients(params)  # DDP: the mean over ranks (nothing on one device)
            optimizer.step()
        rounds, steps = rounds + 1, steps + len(batches)
        if not n_hold:
            continue
        mse, _ = holdout_scores(model, x_hold, y_hold, d_hold, ranks)
        improved = (best_mse - mse) / best_mse.clamp_min(1e-12) > settings.improvement
        if improved.any():
            best_mse = torch.where(improved, mse, best_mse)
            with torch.no_grad():
                for b, p in zip(best, params):
                    b[improved] = p[improved]
            since_update = 0
        else:
            since_update += 1
            if since_update >= settings.patience:
                break
    with torch.no_grad():
        for b, p in zip(best, params):
            p.copy_(b)
    metrics = {"model/epochs": float(rounds), "model/steps": float(steps),
               "model/train_seconds": 0.0}
    if n_hold:
        mse, nll = holdout_scores(model, x_hold, y_hold, d_hold, ranks)
        elites = torch.argsort(mse)[: len(model.elites)]
        model.elites.copy_(torch.sort(elites).values)
        metrics["model/holdout_mse"] = mse[model.elites].mean().item()
        metrics["model/holdout_nll"] = nll[model.elites].mean().item()
    metrics["model/elites"] = " ".join(str(i) for i in model.elites.tolist())
    metrics["model/train_seconds"] = time.perf_counter() - t0
    return metrics
