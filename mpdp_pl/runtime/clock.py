"""Wall time of a run, across resumes, and env-step rates over named windows (the logger's
pushes and metrics.csv rows each measure the rate since their own previous one)."""

from __future__ import annotations

import time


class RunClock:
    def __init__(self):
        self.elapsed_before = 0.0  # wall seconds of the run before it was resumed
        self.start_time: float | None = None
        self._windows: dict[str, tuple[float, int]] = {}
        self._start_steps = 0

    def start(self, env_steps: int) -> None:
        self.start_time = time.perf_counter() - self.elapsed_before
        self._windows = {}
        self._start_steps = env_steps

    def elapsed(self) -> float:
        """Wall seconds of the run so far (0 before it started)."""
        return time.perf_counter() - self.start_time if self.start_time is not None else 0.0

    def window(self, name: str, env_steps: int) -> dict[str, float]:
        """``time/elapsed`` and ``time/env_steps_per_s`` of the whole loop since the window's
        previous call (or the start)."""
        now = time.perf_counter()
        t0, s0 = self._windows.get(name, (self.start_time, self._start_steps))
        self._windows[name] = (now, env_steps)
        return {"time/elapsed": now - self.start_time,
                "time/env_steps_per_s": (env_steps - s0) / max(now - t0, 1e-9)}
