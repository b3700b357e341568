"""The per-epoch metrics of a run: their columns (one definition) and metrics.csv."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from cnncli.training.checkpoint import atomic_write

#: The columns of metrics.csv, in order; every reader and writer of epoch rows uses these.
METRIC_COLUMNS = ("epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr",
                  "seconds")


def write_metrics_csv(path: Path, rows: list[dict]) -> None:
    """All rows so far, written atomically (a crash leaves the previous file)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=METRIC_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if row.get(k) is None else row[k]) for k in METRIC_COLUMNS})
    atomic_write(path, lambda f: f.write(buf.getvalue().encode()))
