"""The per-epoch metrics a run records: the columns of metrics.csv, in order.

The trainer writes them, ``cnncli plot`` reads them and the training summary table shows
them; all three take the names from here.
"""

METRICS_FILE = "metrics.csv"
METRIC_COLUMNS = ("epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr",
                  "seconds")
