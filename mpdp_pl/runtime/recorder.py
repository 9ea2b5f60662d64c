"""The training metrics an algorithm records between two logger pushes: the latest value of
each (:meth:`MetricsRecorder.record`), or its mean over the logging interval
(:meth:`MetricsRecorder.record_mean`). Tensors stay on their device until they are read."""

from __future__ import annotations

import torch


class MetricsRecorder:
    def __init__(self):
        self.latest: dict[str, torch.Tensor | float] = {}
        self.interval_sums: dict[str, tuple] = {}  # record_mean: (sum, count) per metric

    def record(self, metrics: dict) -> None:
        """Keep the latest value of fully named metrics (tensors detached, numbers, strings)."""
        for k, v in metrics.items():
            self.latest[k] = v.detach() if torch.is_tensor(v) else v

    def record_mean(self, metrics: dict) -> None:
        """Accumulate fully named metrics whose logged value is their mean over the logging
        interval (``logging.every`` env steps) rather than the latest batch's."""
        for k, v in metrics.items():
            total, count = self.interval_sums.get(k, (0.0, 0))
            self.interval_sums[k] = (total + (v.detach() if torch.is_tensor(v) else v), count + 1)

    def close_interval(self) -> None:
        """The interval's means become the metrics' values (a metrics.csv row shows the mean
        since the last push, or the last complete interval's right after a push)."""
        for k, (total, count) in self.interval_sums.items():
            self.latest[k] = total / count
        self.interval_sums = {}

    def scalars(self) -> dict[str, float]:
        """Every metric as a host number (one read each); interval means: the open interval's
        so far, else the last complete one's."""
        current = {**self.latest, **{k: t / n for k, (t, n) in self.interval_sums.items()}}
        return {k: (v.item() if torch.is_tensor(v) else v) for k, v in current.items()}
