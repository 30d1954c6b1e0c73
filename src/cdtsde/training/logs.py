"""Training logs through Fabric's logger interface: `metrics.csv` always, TensorBoard events (under
`tensorboard/`) when tensorboard or tensorboardX is installed.

The CSV logger is ours rather than Fabric's CSVLogger because a resumed run must continue the same file:
rows after the resumed step are dropped (the uninterrupted run would not have logged them twice), and
the file is rewritten atomically with every checkpoint, so a kill never leaves half a row. Validation rows
(`val/...` columns) join the training row of their step; the cells of steps without validation stay empty.
"""

from __future__ import annotations

import csv
import importlib.util
import math
from pathlib import Path

from lightning.fabric.loggers import Logger

from ..atomic import atomic_path

LOG_FILE = "metrics.csv"


class ResumableCSVLogger(Logger):
    def __init__(self, path: Path, resume_step: int = 0):
        self.path = Path(path)
        self.rows = read_log(self.path, upto=resume_step) if resume_step else []

    @property
    def name(self) -> str:
        return "csv"

    @property
    def version(self) -> str:
        return ""

    @property
    def root_dir(self) -> str:
        return str(self.path.parent)

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        """A row for `step`; values logged again for the same step (a validation after the step's training
        row) join its row."""
        values = {k: float(v) for k, v in metrics.items()}
        if self.rows and self.rows[-1]["step"] == step:
            self.rows[-1].update(values)
        else:
            self.rows.append({"step": step, **values})

    def log_hyperparams(self, params, *args, **kwargs) -> None:
        """The run's configuration is saved as config.yaml beside the log."""

    def save(self) -> None:
        columns = list(dict.fromkeys(key for row in self.rows for key in row))
        # the validation columns after the training ones, whichever row came first; empty where not validated
        columns = [key for key in columns if not key.startswith("val/")] + [k for k in columns if k.startswith("val/")]
        with atomic_path(self.path) as tmp, open(tmp, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns)
            writer.writeheader()
            for row in self.rows:
                writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) and math.isfinite(v) else v)
                                 for k, v in row.items()})


def read_log(path: Path, upto: int) -> list[dict]:
    """The rows of a metrics.csv up to step `upto` (none if the file does not exist)."""
    if not path.is_file():
        return []
    with open(path, newline="") as handle:
        rows = [{k: float(v) for k, v in row.items() if v != ""} for row in csv.DictReader(handle)]
    return [{**row, "step": int(row["step"])} for row in rows if row["step"] <= upto]


def make_loggers(run_dir: Path, resume_step: int) -> list[Logger]:
    loggers: list[Logger] = [ResumableCSVLogger(run_dir / LOG_FILE, resume_step)]
    if importlib.util.find_spec("tensorboard") or importlib.util.find_spec("tensorboardX"):
        from lightning.fabric.loggers import TensorBoardLogger

        loggers.append(TensorBoardLogger(root_dir=str(run_dir), name="tensorboard", version=""))
    return loggers
