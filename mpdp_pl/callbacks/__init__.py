"""The loop's side jobs as Lightning callbacks, in the order they run after each round of env
steps: training metrics to the logger, evaluation (metrics.csv, videos), checkpoints (periodic,
final, on SIGTERM/SIGINT)."""

from __future__ import annotations

from .checkpointing import Checkpointing
from .evaluation import Evaluation
from .training_metrics import TrainingMetrics


def loop_callbacks() -> list:
    return [TrainingMetrics(), Evaluation(), Checkpointing()]


__all__ = ["Checkpointing", "Evaluation", "TrainingMetrics", "loop_callbacks"]
