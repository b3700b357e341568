"""Training curves from runs' metrics.csv: a PNG through matplotlib, or braille in the terminal."""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cnncli.errors import CnncliError, DataError
from cnncli.files import make_folder
from cnncli.training.metrics import METRIC_COLUMNS, METRICS_FILE

PLOT_HINT = "pip install 'cnncli[plot]'"


@dataclass
class Run:
    """One run's per-epoch metrics; missing values (no validation split) are NaN."""

    name: str
    path: Path
    columns: dict[str, np.ndarray] = field(default_factory=dict)

    def series(self, key: str) -> tuple[np.ndarray, np.ndarray]:
        """(epochs, values) of one column with the NaN rows (missing values) and the points
        that cannot be drawn (``unplottable``) dropped."""
        values, epochs = self.columns[key], self.columns["epoch"]
        keep = _plottable(values) & _plottable(epochs)
        return epochs[keep], values[keep]

    def unplottable(self) -> list[str]:
        """'train_loss at epoch 3' for each inf or huge value (a diverged run), which would
        break the axes; NaN means 'not recorded' and is not counted."""
        return [f"{key} at epoch {epoch:g}" for key in METRIC_COLUMNS[1:] for epoch, value
                in zip(self.columns["epoch"], self.columns[key], strict=True)
                if not np.isnan(value) and not (_plottable(value) and _plottable(epoch))]


#: Larger magnitudes overflow the axis arithmetic (limits, margins, ticks) of either chart.
PLOT_LIMIT = 1e100


def _plottable(values):
    return np.isfinite(values) & (np.abs(values) <= PLOT_LIMIT)


def read_metrics(run_dir) -> Run:
    """Read ``RUN_DIR/metrics.csv`` (or a metrics.csv path); DataError naming file:line if bad."""
    path = Path(run_dir)
    csv_path = path / METRICS_FILE if path.is_dir() else path
    name = (path if path.is_dir() else path.parent).resolve().name or str(path)
    if not csv_path.is_file():
        problem = ("not a file" if csv_path.exists()
                   else "no metrics.csv in this run directory" if path.is_dir()
                   else "no such file")
        raise DataError(f"{csv_path}: {problem}",
                        hint="give a run directory written by 'cnncli train'")
    try:
        with open(csv_path, newline="", encoding="utf-8") as handle:
            rows = list(csv.reader(handle))
    except UnicodeDecodeError:
        raise DataError(f"{csv_path}: not a text metrics.csv",
                        hint="give a run directory written by 'cnncli train' or its "
                             "metrics.csv") from None
    except (OSError, csv.Error) as err:
        raise DataError(f"{csv_path}: cannot read metrics: {err}") from None
    if not rows or not any(cell.strip() for cell in rows[0]):
        raise DataError(f"{csv_path}: empty file, expected a header "
                        f"{','.join(METRIC_COLUMNS)}")
    header = [cell.strip() for cell in rows[0]]
    needed = ("epoch", "train_loss")
    missing = [c for c in needed if c not in header]
    if missing:
        raise DataError(f"{csv_path}:1: header has no {missing[0]!r} column (got "
                        f"{','.join(header)!r}); expected {','.join(METRIC_COLUMNS)}")
    body = [(i, row) for i, row in enumerate(rows[1:], start=2) if any(c.strip() for c in row)]
    if not body:
        raise DataError(f"{csv_path}: no epochs recorded yet", hint="train for an epoch first")
    table = np.full((len(body), len(header)), np.nan)
    for r, (line, row) in enumerate(body):
        if len(row) != len(header):
            raise DataError(f"{csv_path}:{line}: {len(row)} fields, the header has "
                            f"{len(header)}")
        for c, cell in enumerate(row):
            cell = cell.strip()
            if cell in ("", "nan", "NaN", "None", "null"):
                continue
            try:
                table[r, c] = float(cell)
            except ValueError:
                raise DataError(f"{csv_path}:{line}: {header[c]} is not a number: "
                                f"{cell!r}") from None
    columns = {key: table[:, header.index(key)] if key in header
               else np.full(len(body), np.nan) for key in METRIC_COLUMNS}
    if not np.all(np.isfinite(columns["epoch"])):
        raise DataError(f"{csv_path}: every row needs an epoch number")
    return Run(name=name, path=csv_path, columns=columns)


def read_runs(run_dirs) -> list[Run]:
    """Read several runs; runs with the same directory name get their full path as name."""
    runs = [read_metrics(d) for d in run_dirs]
    names = [r.name for r in runs]
    for run, given in zip(runs, run_dirs, strict=True):
        if names.count(run.name) > 1:
            run.name = str(given)
    return runs


PANELS = (("loss", "train_loss", "val_loss"), ("accuracy", "train_accuracy", "val_accuracy"))


# ---------------------------------------------------------------- PNG (matplotlib)

def have_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def plot_png(runs: list[Run], out) -> Path:
    """Loss and accuracy side by side; one colour per run, train solid, validation dashed."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise CnncliError("plotting to PNG needs matplotlib",
                          hint=PLOT_HINT + ", or use terminal=True") from None
    out = Path(out)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), dpi=100)
    try:
        colors = plt.rcParams["axes.prop_cycle"].by_key().get("color", ["C0"])
        for i, run in enumerate(runs):
            color = colors[i % len(colors)]
            for ax, (_, train_key, val_key) in zip(axes, PANELS, strict=True):
                for key, style, part in ((train_key, "-", "train"), (val_key, "--", "val")):
                    x, y = run.series(key)
                    if len(x):
                        ax.plot(x, y, style, color=color, marker="o", markersize=3,
                                label=f"{run.name} {part}")
        for ax, (title, _, _) in zip(axes, PANELS, strict=True):
            ax.set_title(title)
            ax.set_xlabel("epoch")
            ax.grid(True, alpha=0.3)
            if ax.lines:
                ax.legend(fontsize=8)
            ax.xaxis.get_major_locator().set_params(integer=True)
        fig.tight_layout()
        try:
            make_folder(out.parent)
            fig.savefig(out)
        except OSError as err:
            raise CnncliError(f"cannot write {out}: {err.strerror}") from None
        except ValueError as err:  # an extension matplotlib cannot write
            raise CnncliError(f"cannot write {out}: {str(err).splitlines()[0]}",
                              hint="use a .png, .svg or .pdf name") from None
    finally:
        plt.close(fig)
    return out


# ---------------------------------------------------------------- terminal (braille)

# Braille dot bits by (row 0..3, column 0..1) inside one character cell.
_DOTS = np.array([[0x01, 0x08], [0x02, 0x10], [0x04, 0x20], [0x40, 0x80]], dtype=np.int64)
TRAIN_MARKERS = "*+x#$"
VAL_MARKERS = "o@%&="
COLORS = ("cyan", "magenta", "yellow", "green", "blue", "red")


def _nice_range(values: np.ndarray) -> tuple[float, float]:
    low, high = float(np.min(values)), float(np.max(values))
    if high - low < 1e-12:
        pad = abs(high) * 0.05 or 0.5
        return low - pad, high + pad
    pad = (high - low) * 0.04
    return low - pad, high + pad


def braille_chart(series, width: int = 60, height: int = 12, style=None) -> list[str]:
    """Draw series [(label, marker, color, xs, ys), ...] on one braille chart with axes.

    ``style(text, color)`` colours a cell (e.g. click.style); lines connect the points, the
    marker character sits on the data points (on every few when there are many).
    """
    style = style or (lambda text, color: text)
    series = [s for s in series if len(s[3])]
    if not series:
        return ["(no data)"]
    all_x = np.concatenate([np.asarray(s[3], float) for s in series])
    all_y = np.concatenate([np.asarray(s[4], float) for s in series])
    x_lo, x_hi = float(all_x.min()), float(all_x.max())
    if x_hi == x_lo:
        x_lo, x_hi = x_lo - 1, x_hi + 1
    y_lo, y_hi = _nice_range(all_y)
    px_w, px_h = width * 2, height * 4
    bits = np.zeros((height, width), dtype=np.int64)
    owner = np.full((height, width), -1)
    marks = {}

    def to_px(xs, ys):
        px = np.rint((np.asarray(xs, float) - x_lo) / (x_hi - x_lo) * (px_w - 1)).astype(int)
        py = np.rint((y_hi - np.asarray(ys, float)) / (y_hi - y_lo) * (px_h - 1)).astype(int)
        return np.clip(px, 0, px_w - 1), np.clip(py, 0, px_h - 1)

    for k, (_, marker, _, xs, ys) in enumerate(series):
        px, py = to_px(xs, ys)
        if len(px) == 1:
            lx, ly = px, py
        else:
            steps = int(max(np.max(np.abs(np.diff(px))), np.max(np.abs(np.diff(py))), 1)) * 2
            t = np.linspace(0, len(px) - 1, steps * (len(px) - 1) + 1)
            lx = np.rint(np.interp(t, np.arange(len(px)), px)).astype(int)
            ly = np.rint(np.interp(t, np.arange(len(py)), py)).astype(int)
        np.bitwise_or.at(bits, (ly // 4, lx // 2), _DOTS[ly % 4, lx % 2])
        owner[ly // 4, lx // 2] = k
        # Markers name the series; with many points mark only every `step`-th one.
        step = max(1, math.ceil(len(px) / max(1, width // 3)))
        for cx, cy in zip(px[::step] // 2, py[::step] // 4, strict=True):
            marks[(int(cy), int(cx))] = (marker, k)

    y_labels = {0: y_hi, height // 2: (y_lo + y_hi) / 2, height - 1: y_lo}
    label_width = max(len(f"{v:.3g}") for v in y_labels.values())
    lines = []
    for r in range(height):
        cells = []
        for c in range(width):
            if (r, c) in marks:
                marker, k = marks[(r, c)]
                cells.append(style(marker, series[k][2]))
            elif bits[r, c]:
                cells.append(style(chr(0x2800 + int(bits[r, c])), series[owner[r, c]][2]))
            else:
                cells.append(" ")
        label = f"{y_labels[r]:.3g}" if r in y_labels else ""
        lines.append(f"{label:>{label_width}} ┤{''.join(cells)}")
    lines.append(" " * label_width + " └" + "─" * width)
    left, right = f"{x_lo:g}", f"epoch {x_hi:g}"
    lines.append(" " * (label_width + 2) + left + " " * max(1, width - len(left) - len(right))
                 + right)
    return lines


def terminal_plot(runs: list[Run], width: int = 60, height: int = 12, style=None) -> str:
    """Loss and accuracy charts for the terminal, with a legend naming every series."""
    style = style or (lambda text, color: text)
    out = []
    for title, train_key, val_key in PANELS:
        series = []
        for i, run in enumerate(runs):
            color = COLORS[i % len(COLORS)]
            for key, markers, part in ((train_key, TRAIN_MARKERS, "train"),
                                       (val_key, VAL_MARKERS, "val")):
                xs, ys = run.series(key)
                if len(xs):
                    series.append((f"{run.name} {part} {title}", markers[i % len(markers)],
                                   color, xs, ys))
        out.append(title)
        out.extend(braille_chart(series, width, height, style))
        legend = "   ".join(f"{style(marker, color)} {label}"
                            for label, marker, color, _, _ in series)
        out.append("  " + legend if legend else "  (no values in metrics.csv)")
        out.append("")
    return "\n".join(out).rstrip("\n")


def terminal_width(default: int = 60) -> int:
    """Chart width that fits the terminal (with room for labels), at most 100 cells."""
    import shutil

    columns = shutil.get_terminal_size((default + 12, 24)).columns
    return int(max(20, min(100, columns - 12)))


def summary_lines(runs: list[Run]) -> list[str]:
    """One line per run: epochs, final and best validation (or train) accuracy."""
    lines = []
    for run in runs:
        epochs = run.columns["epoch"]
        _, val_acc = run.series("val_accuracy")
        _, train_acc = run.series("train_accuracy")
        acc, which = (val_acc, "val") if len(val_acc) else (train_acc, "train")
        text = f"{run.name}: {len(epochs)} epoch{'s' if len(epochs) != 1 else ''}"
        if len(acc):  # fixed decimals, so the last and best line up ("0.9310", not "0.931")
            text += (f", last {which}_accuracy {acc[-1]:.4f}, best {np.max(acc):.4f}")
        _, val_loss = run.series("val_loss")
        if len(val_loss) and math.isfinite(val_loss[-1]):
            text += f", last val_loss {val_loss[-1]:.4g}"
        lines.append(text)
        skipped = run.unplottable()
        if skipped:
            lines.append(f"{run.name}: {len(skipped)} inf or huge value"
                         f"{'s' if len(skipped) != 1 else ''} not drawn ({', '.join(skipped[:3])}"
                         f"{', ...' if len(skipped) > 3 else ''})")
    return lines
