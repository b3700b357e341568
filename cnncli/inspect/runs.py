"""``cnncli runs``: the runs under a folder, one row each, and the settings that differ.

Reads only what a run directory holds as text (config.yaml, metrics.csv, test.json); the
checkpoint is opened only for a run of an earlier version without config.yaml, and then only its
config entry is read, never its weights.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np
import yaml

from cnncli.errors import CnncliError, DataError
from cnncli.training.metrics import METRICS_FILE
from cnncli.training.run_dir import MARKER, RUN_FILES, TEST_FILE

#: ``--sort`` keys: the JSON field each sorts by, and whether the largest comes first.
SORT_KEYS = {"name": ("name", False), "date": ("date", True), "epochs": ("epochs", True),
             "val_accuracy": ("best_val_accuracy", True),
             "test_accuracy": ("test_accuracy", True), "parameters": ("parameters", False),
             "time": ("seconds", False)}


@dataclass
class RunInfo:
    """One run directory as ``cnncli runs`` lists it (None: not recorded)."""

    name: str
    path: Path
    date: str | None = None
    epochs: int | None = None
    best_val_accuracy: float | None = None
    test_accuracy: float | None = None
    parameters: int | None = None
    seconds: float | None = None
    config: dict = field(default_factory=dict)
    problem: str | None = None       # why part of the run could not be read

    def to_json(self, settings=()) -> dict:
        flat = flatten(self.config)
        return {"name": self.name, "path": str(self.path), "date": self.date,
                "epochs": self.epochs, "best_val_accuracy": self.best_val_accuracy,
                "test_accuracy": self.test_accuracy, "parameters": self.parameters,
                "seconds": self.seconds, "settings": {k: flat.get(k) for k in settings},
                "problem": self.problem}


def is_run_dir(path: Path) -> bool:
    return path.is_dir() and any((path / n).exists()
                                 for n in (*RUN_FILES, "config.yaml", MARKER))


def list_runs(folder, sort: str = "name") -> list[RunInfo]:
    """Every run directory directly under ``folder`` (or ``folder`` itself if it is one)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: no such folder" if not folder.exists()
                        else f"{folder} is a file, not a folder of runs",
                        hint="give the folder runs are trained into, e.g. runs/")
    dirs = [folder] if is_run_dir(folder) else sorted(p for p in folder.iterdir()
                                                      if is_run_dir(p))
    runs = [read_run(d) for d in dirs]
    return sort_runs(runs, sort)


def sort_runs(runs: list[RunInfo], sort: str) -> list[RunInfo]:
    if sort not in SORT_KEYS:
        raise CnncliError(f"cannot sort by {sort!r}", hint="one of " + ", ".join(SORT_KEYS))
    key, largest_first = SORT_KEYS[sort]
    known = [r for r in runs if getattr(r, key) is not None]
    unknown = [r for r in runs if getattr(r, key) is None]   # always last
    return sorted(known, key=lambda r: getattr(r, key), reverse=largest_first) + unknown


def read_run(path: Path) -> RunInfo:
    """What one run directory records; a part that cannot be read is named in ``problem``."""
    info = RunInfo(name=path.resolve().name or str(path), path=path)
    problems = []
    for read in (_read_config, _read_metrics, _read_test):
        try:
            read(path, info)
        except (CnncliError, OSError, ValueError, TypeError, KeyError, yaml.YAMLError) as err:
            problems.append(" ".join(str(err).split()))
    stamps = [p.stat().st_mtime for p in (path / n for n in (METRICS_FILE, "last.npz",
                                                              "config.yaml")) if p.exists()]
    if stamps:
        info.date = datetime.fromtimestamp(max(stamps)).strftime("%Y-%m-%d %H:%M")
    info.problem = "; ".join(problems) or None
    return info


def _read_config(path: Path, info: RunInfo) -> None:
    text = None
    if (path / "config.yaml").is_file():
        text = (path / "config.yaml").read_text(encoding="utf-8")
    else:
        for name in ("last.npz", "best.npz"):
            if (path / name).is_file():
                with np.load(path / name, allow_pickle=False) as ckpt:   # reads one entry
                    text = str(ckpt["config"])
                break
    if text is None:
        return
    config = yaml.safe_load(text)
    if not isinstance(config, dict):
        raise ValueError(f"{path}/config.yaml is not a mapping")
    info.config = config
    from cnncli.config import check_data
    from cnncli.inspect.summary import summarize

    checked = check_data(config, file=str(path / "config.yaml"))
    info.config = checked.config   # resolved: a key newer than the run reads as its default
    info.parameters = summarize(checked).total_params


def _read_metrics(path: Path, info: RunInfo) -> None:
    from cnncli.inspect.plot import read_metrics

    if not (path / METRICS_FILE).is_file():
        return
    columns = read_metrics(path).columns
    info.epochs = int(np.nanmax(columns["epoch"]))
    val = columns["val_accuracy"][np.isfinite(columns["val_accuracy"])]
    info.best_val_accuracy = float(val.max()) if len(val) else None
    seconds = columns["seconds"][np.isfinite(columns["seconds"])]
    info.seconds = round(float(seconds.sum()), 3) if len(seconds) else None


def _read_test(path: Path, info: RunInfo) -> None:
    if not (path / TEST_FILE).is_file():
        return
    report = json.loads((path / TEST_FILE).read_text(encoding="utf-8"))
    accuracy = report.get("accuracy") if isinstance(report, dict) else None
    if isinstance(accuracy, (int, float)) and math.isfinite(accuracy):
        info.test_accuracy = float(accuracy)


def flatten(config, prefix: str = "") -> dict:
    """A nested config as {dotted key: value}; list items by index (``model.layers.0.type``)."""
    out = {}
    items = (config.items() if isinstance(config, dict)
             else enumerate(config) if isinstance(config, list) else None)
    if items is None:
        return {prefix: config} if prefix else {}
    for key, value in items:
        dotted = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, (dict, list)) and value and not _is_flat_list(value):
            out.update(flatten(value, dotted))
        else:
            out[dotted] = value
    return out


def _is_flat_list(value) -> bool:
    """Short lists of numbers (input_shape, betas, milestones) read best as one value."""
    return isinstance(value, list) and all(not isinstance(v, (dict, list)) for v in value)


def differing_settings(runs: list[RunInfo]) -> list[str]:
    """The dotted config keys whose values are not the same in every listed run (not name)."""
    flats = [flatten(r.config) for r in runs if r.config]
    if len(flats) < 2:
        return []
    keys = list(dict.fromkeys(k for flat in flats for k in flat))

    def differs(key: str) -> bool:
        return len({json.dumps(f[key], default=str) if key in f else "<unset>"
                    for f in flats}) > 1

    # Where the runs have different layer types at one position, every hyperparameter there
    # differs too; the type alone says it (else runs of two models give dozens of columns).
    retyped = {k.removesuffix("type") for k in keys
               if k.startswith("model.layers.") and k.endswith(".type") and differs(k)}
    return [k for k in keys if k != "name" and differs(k)
            and not any(k.startswith(p) and k != p + "type" for p in retyped)]


def runs_table(runs: list[RunInfo], settings: list[str]):
    """The Rich table ``cnncli runs`` prints: one row per run, then the differing settings."""
    from rich.table import Table

    from cnncli.inspect.render import percent

    table = Table(box=None, pad_edge=False)
    for title in ("run", "date", "epochs", "best val acc", "test acc", "params", "time"):
        table.add_column(title, justify="left" if title in ("run", "date") else "right")
    for key in settings:
        table.add_column(key, justify="right")
    for run in runs:
        flat = flatten(run.config)
        table.add_row(run.name, run.date or "-", _or_dash(run.epochs),
                      percent(run.best_val_accuracy), percent(run.test_accuracy),
                      f"{run.parameters:,}" if run.parameters is not None else "-",
                      format_seconds(run.seconds),
                      *(_setting_text(flat[k]) if k in flat else "-" for k in settings))
    return table


def _or_dash(value) -> str:
    return "-" if value is None else str(value)


def _setting_text(value) -> str:
    if isinstance(value, (dict, list)):
        return json.dumps(value, default=str)
    return "null" if value is None else str(value).lower() if isinstance(value, bool) \
        else str(value)


def format_seconds(seconds: float | None) -> str:
    """``42.1s``, ``3m05s``, ``1h02m``."""
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"
