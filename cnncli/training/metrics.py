"""The per-epoch metrics a run records: the columns of metrics.csv, in order, and the file.

The trainer writes them, ``cnncli plot`` reads them and the training summary table shows
them; all three take the names from here.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from cnncli.files import atomic_write

METRICS_FILE = "metrics.csv"
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
