"""Where metrics go: ``DIR/metrics.csv`` (always, one row per evaluation) and one Lightning logger
(W&B by default, offline when there is no API key or no network; ``csv``; or ``none``)."""

from __future__ import annotations

import csv
import netrc
import os
import secrets
import socket
from pathlib import Path

from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.pytorch.loggers import CSVLogger, Logger, WandbLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.utilities import rank_zero_only

from ..config import wandb_mode_from_env
from ..errors import ConfigError

_USER_WANDB_CACHE = os.environ.get("WANDB_CACHE_DIR")  # as the user started the app


class MetricsCSV:
    """Append-only CSV with a fixed header; one row per env step at most.

    Each row is written and flushed on its own, so a crash never leaves a half-written file
    behind more than the row in flight. Missing values are left empty.

    A resumed run keeps its file's header, whatever this version logs: a column it no longer
    logs stays (empty from then on), and a column the file lacks is added at the end, the rows
    already written padded with empty cells (one atomic rewrite; no value moves).
    """

    def __init__(self, path: Path, columns: list[str]):
        self.path, self.columns = Path(path), list(columns)
        self.last_step: int | None = None
        if not self.path.exists() or self.path.stat().st_size == 0:
            with open(self.path, "w", newline="") as f:
                csv.writer(f).writerow(self.columns)
            return
        with open(self.path, newline="") as f:  # a resumed run appends to its own file
            header, *rows = [r for r in csv.reader(f) if r]  # blank lines (a hand edit) skipped
        self.last_step = int(rows[-1][header.index("env_steps")]) if rows else None
        added = [c for c in self.columns if c not in header]
        self.columns = header + added
        if added:
            tmp = self.path.with_suffix(".csv.tmp")
            with open(tmp, "w", newline="") as f:
                csv.writer(f).writerows([self.columns, *(r + [""] * len(added) for r in rows)])
            tmp.replace(self.path)

    @staticmethod
    def truncate_after(path: Path, step: int) -> None:
        """Drop the rows after env step ``step`` (written after the checkpoint a run resumes
        from: the resumed run writes them again). Earlier rows stay byte for byte."""
        path = Path(path)
        if not path.exists():
            return
        lines = path.read_text().splitlines(keepends=True)
        keep = lines[:1] + [ln for ln in lines[1:] if ln.strip() and _row_step(ln) <= step]
        if len(keep) != len(lines):
            tmp = path.with_suffix(".csv.tmp")
            tmp.write_text("".join(keep))
            tmp.replace(path)

    def write(self, row: dict) -> None:
        unknown = set(row) - set(self.columns)
        if unknown:
            raise KeyError(f"metrics.csv has no column for {sorted(unknown)}")
        step = int(row["env_steps"])
        if self.last_step is not None and step <= self.last_step:
            raise ValueError(f"metrics.csv already has a row for env step {self.last_step} >= {step}")
        self.last_step = step
        with open(self.path, "a", newline="") as f:
            csv.writer(f).writerow([_fmt(row.get(c)) for c in self.columns])


def _row_step(line: str) -> int:
    """The env step of a metrics.csv row (its first cell); a damaged row is one line of error."""
    try:
        return int(line.split(",", 1)[0])
    except ValueError:
        raise ConfigError(f"metrics.csv has a row that does not start with an env step: {line.strip()[:60]!r}") from None


def _fmt(v) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return repr(v)
    return str(v)


def _has_wandb_key() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


def _can_reach(host: str, port: int = 443, timeout: float = 2.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def resolve_wandb_mode(mode: str) -> str:
    """``auto`` -> ``online`` with an API key and a reachable server, else ``offline``.
    A ``WANDB_MODE`` environment variable wins over the config, as in wandb itself."""
    env_mode = wandb_mode_from_env()
    if env_mode is not None:
        return env_mode
    if mode != "auto":
        return mode
    if _has_wandb_key() and _can_reach("api.wandb.ai"):
        return "online"
    return "offline"


def check_logger(cfg: dict) -> None:
    """Before any file of the run: W&B online needs an API key (wandb itself fails at its start
    with a traceback and leaves files behind)."""
    if cfg["logger"] == "wandb" and resolve_wandb_mode(cfg["wandb"]["mode"]) == "online" \
            and not _has_wandb_key():
        raise ConfigError("W&B online needs an API key (WANDB_API_KEY or `wandb login`); "
                          "wandb.mode=offline or auto logs offline without one")


def wandb_run_id(out_dir: Path) -> str:
    """The run's W&B id, kept in ``DIR/wandb_run_id`` so that ``--resume`` reuses it."""
    path = Path(out_dir) / "wandb_run_id"
    if path.exists():
        return path.read_text().strip()
    run_id = secrets.token_hex(4)  # 8 characters of [0-9a-f], as W&B's own ids
    path.write_text(run_id)
    return run_id


class _AppendingWriter(ExperimentWriter):
    """Lightning's CSV writer, except that an existing ``metrics.csv`` (a resumed run's) is
    continued, its header kept, where Lightning's deletes it."""

    def _check_log_dir_exists(self) -> None:
        if os.path.isfile(self.metrics_file_path):
            with open(self.metrics_file_path, newline="") as f:
                self.metrics_keys = next(csv.reader(f), [])


class ResumableCSVLogger(CSVLogger):
    """``--logger csv``: ``DIR/lightning/metrics.csv``, one row per logging step (``step`` is the
    env step), continued by a resume (:meth:`truncate_after` drops the rows after its
    checkpoint first)."""

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _AppendingWriter(log_dir=self.log_dir)
        return self._experiment

    @staticmethod
    def truncate_after(out_dir: Path, step: int) -> None:
        """Drop the rows after env step ``step`` (the resumed run logs them again)."""
        path = Path(out_dir) / "lightning" / ExperimentWriter.NAME_METRICS_FILE
        if not path.exists():
            return
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            rows = list(reader)
        keep = [r for r in rows if r.get("step") and float(r["step"]) <= step]
        if len(keep) != len(rows):
            tmp = path.with_suffix(".csv.tmp")
            with open(tmp, "w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=reader.fieldnames)
                writer.writeheader()
                writer.writerows(keep)
            tmp.replace(path)


def make_logger(cfg: dict, out_dir: Path) -> Logger | None:
    kind = cfg["logger"]
    if kind == "none":
        return None
    if kind == "csv":
        return ResumableCSVLogger(save_dir=str(out_dir), name="lightning", version="")
    w = cfg["wandb"]
    mode = resolve_wandb_mode(w["mode"])
    if mode == "disabled":
        return None
    os.environ.setdefault("WANDB_SILENT", "true")
    # wandb-core writes its debug logs under its cache dir (~/.cache/wandb/logs): keep them with
    # the run, so that a run writes nothing outside its directory (a user's own setting wins)
    if _USER_WANDB_CACHE is None:
        os.environ["WANDB_CACHE_DIR"] = str(Path(out_dir).resolve() / "wandb" / "cache")
    logger = WandbLogger(
        save_dir=str(out_dir), project=w["project"], entity=w["entity"], group=w["group"],
        tags=list(w["tags"]), mode=mode, config=cfg,
        name=out_dir.name, job_type=cfg["algo"],
        # a resumed run continues the same W&B run; only rank 0 logs (other DDP ranks get
        # Lightning's dummy experiment) and keeps the id file
        id=wandb_run_id(out_dir) if rank_zero_only.rank == 0 else None, resume="allow",
    )
    run = logger.experiment
    # env steps are the x-axis of every chart (global_step counts optimizer steps).
    run.define_metric("env_steps")
    for prefix in ("train", "eval", "time", "model"):
        run.define_metric(f"{prefix}/*", step_metric="env_steps")
    return logger
