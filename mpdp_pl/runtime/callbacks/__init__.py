"""The loop's side jobs as Lightning callbacks, in the order they run after each round of env
steps: training metrics to the logger, evaluation (metrics.csv, videos), checkpoints (periodic,
final, on SIGTERM/SIGINT)."""

from __future__ import annotations

from .durability import Durability
from .periodic_eval import PeriodicEvaluation
from .metric_logging import MetricLogging


def loop_callbacks() -> list:
    return [MetricLogging(), PeriodicEvaluation(), Durability()]


__all__ = ["Durability", "MetricLogging", "PeriodicEvaluation", "loop_callbacks"]
