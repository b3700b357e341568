"""Drawing results for the terminal: Rich tables, CSV and Markdown text.

Functions here only format; the numbers come from the library (summary.py etc.).
Other command families may append their renderers at the end of this file.
"""

from __future__ import annotations

import csv
import inspect
import io

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from cnncli.errors import printable
from cnncli.inspect.summary import Summary, format_bytes, format_count
from cnncli.training.metrics import METRIC_COLUMNS

SUMMARY_COLUMNS = ("name", "type", "description", "output_shape", "params", "macs",
                   "receptive_field", "jump", "activation_bytes")


def _shape(shape) -> str:
    return "x".join(str(s) for s in shape)


def _entry_numbers(summary: Summary) -> list[str]:
    """The # column: the config entry's number, as errors give it (``layer 3 'pool'``); blank
    on a row that an ``activation:`` shorthand added to the entry above it."""
    numbers, previous = [], None
    for row in summary.layers:
        numbers.append("" if row.entry == previous else str(row.entry))
        previous = row.entry
    return numbers


def summary_table(summary: Summary, title: str | None = None) -> Table:
    """The layer table with a totals caption."""
    table = Table(title=title, title_justify="left", header_style="bold")
    table.add_column("#", justify="right", style="dim")
    table.add_column("layer")
    table.add_column("type")
    if summary.branching:
        table.add_column("from")
    table.add_column("kernel")
    table.add_column("output", justify="right")
    table.add_column("params", justify="right")
    table.add_column("MACs", justify="right")
    table.add_column("RF", justify="right")
    table.add_column("jump", justify="right")
    table.add_column("act/sample", justify="right")
    branch = [""] if summary.branching else []
    table.add_row("", "input", "", *branch, "", _shape(summary.input_shape), "", "", "1x1",
                  "1x1", "")
    for number, row, source in zip(_entry_numbers(summary), summary.layers,
                                   _from_cells(summary), strict=True):
        branch = [escape(source)] if summary.branching else []
        table.add_row(number, escape(row.name), row.type, *branch, escape(row.description),
                      _shape(row.output_shape),
                      format_count(row.params), format_count(row.macs),
                      _shape(row.receptive_field), _shape(row.jump),
                      format_bytes(row.activation_bytes))
    return table


def _from_cell(row) -> str:
    return ", ".join(row.inputs)


def _from_cells(summary: Summary) -> list[str]:
    """The table's ``from`` column: blank where a layer reads just the row above it, so the
    branch points stand out (the CSV and JSON always list the inputs)."""
    names = ["input"] + [row.name for row in summary.layers]
    return ["" if row.inputs == [above] else _from_cell(row)
            for row, above in zip(summary.layers, names, strict=False)]


def graph_lines(summary: Summary) -> list[str]:
    """The network as a text drawing, one line per layer: a lane per output that a later layer
    still reads, ``●`` where a layer sits, and a connector line where lanes fork or join."""
    consumers: dict[str, int] = {}
    for row in summary.layers:
        for name in row.inputs:
            consumers[name] = consumers.get(name, 0) + 1
    lanes: list[str | None] = ["input"]
    lines = [f"● input  {_shape(summary.input_shape)}"]
    previous = "input"
    for row in summary.layers:
        used = list(dict.fromkeys(row.inputs))
        for name in row.inputs:
            consumers[name] -= 1
        columns = [lanes.index(name) for name in used]
        ending = [c for c, name in zip(columns, used, strict=True) if consumers[name] == 0]
        if ending:
            column = min(ending)
        else:
            column = lanes.index(None) if None in lanes else len(lanes)
            lanes.append(None) if column == len(lanes) else None
        if set(columns) != {column}:
            lines.append(_connector(lanes, set(columns) | {column}, ending, column))
        for c in ending:
            lanes[c] = None
        lanes[column] = row.name
        while lanes[-1] is None:
            lanes.pop()
        text = f"{row.name}  {row.type}"
        text += f" {row.description}" if row.description else ""
        text += f"  {_shape(row.output_shape)}"
        if row.inputs != [previous]:
            text += "  <- " + ", ".join(row.inputs)
        lines.append(_lane_text(lanes, column) + text)
        if consumers.get(row.name, 0) == 0:
            lanes[column] = None
        while lanes and lanes[-1] is None:
            lanes.pop()
        previous = row.name
    return lines


def _lane_text(lanes, column) -> str:
    return "".join("● " if c == column else ("│ " if name is not None else "  ")
                   for c, name in enumerate(lanes))


def _connector(lanes, joined: set, ending: list, column: int) -> str:
    """The line above a layer whose inputs sit in other lanes: ``├─┘`` (join), ``├─┐`` (fork)."""
    lo, hi = min(joined), max(joined)
    out = []
    for c in range(len(lanes)):
        alive = lanes[c] is not None
        if c < lo or c > hi:
            out.append("│ " if alive else "  ")
        elif c == lo:
            out.append("├─" if alive and (c not in ending or c == column) else "┌─")
        elif c == hi:
            out.append("┘ " if c in ending and c != column else "┐ ")
        elif c in joined:
            out.append("┴─" if c in ending and c != column else "┬─")
        else:
            out.append("┼─" if alive else "──")
    return "".join(out).rstrip()


def summary_totals(summary: Summary) -> list[str]:
    """Plain lines with totals and the memory estimate."""
    mem = summary.memory
    lines = [
        f"total params: {format_count(summary.total_params)} "
        f"({summary.params_mb:.3f} MiB as {summary.dtype})",
        f"trainable params: {format_count(summary.trainable_params)}   "
        f"non-trainable params: {format_count(summary.non_trainable_params)}   "
        f"buffers (running stats): {format_count(summary.buffers)}",
        f"total MACs per sample: {format_count(summary.total_macs)}",
        f"memory at batch size {summary.batch_size} ({summary.optimizer}): "
        f"params {format_bytes(mem['params_bytes'])} + grads {format_bytes(mem['grads_bytes'])}"
        f" + optimizer {format_bytes(mem['optimizer_bytes'])} + activations "
        f"{format_bytes(mem['forward_activations_bytes'])} + backward "
        f"{format_bytes(mem['backward_peak_bytes'])} + im2col {format_bytes(mem['im2col_bytes'])}"
        f" = {format_bytes(mem['total_bytes'])}",
    ]
    return lines


def print_summary(summary: Summary, console: Console, title: str | None = None) -> None:
    if title:
        console.print(escape(title), style="bold", highlight=False)
    console.print(summary_table(summary))
    for line in summary_totals(summary):
        console.print(line, highlight=False, markup=False)


def _cell(value) -> str:
    if isinstance(value, list):
        return "x".join(str(v) for v in value)
    return str(value)


#: First characters that make a spreadsheet read a cell as a formula (OWASP's CSV injection list).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def name_cell(text) -> str:
    """A user's name (class, file) as one table cell: controls escaped, never Rich markup."""
    return escape(printable(str(text)))


def csv_text(value) -> str:
    """A name for a CSV cell: one that a spreadsheet would run as a formula gets a leading
    ``'`` (OWASP's advice), so ``=cmd|...`` shows as text."""
    text = str(value)
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def summary_csv(summary: Summary) -> str:
    """One CSV row per layer; shapes written as 16x8x8."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    branch = ["from"] if summary.branching else []
    writer.writerow(SUMMARY_COLUMNS + tuple(branch))
    for row in summary.layers:
        writer.writerow([csv_text(row.name)] + [_cell(getattr(row, c))
                                                for c in SUMMARY_COLUMNS[1:]]
                        + [csv_text(_from_cell(row)) for _ in branch])
    return buf.getvalue()


def summary_markdown(summary: Summary) -> str:
    """A GitHub-flavoured Markdown table plus totals."""
    branch = ["from"] if summary.branching else []
    head = ["#", "layer", "type", *branch, "kernel", "output", "params", "MACs", "RF", "jump",
            "act/sample"]
    lines = ["| " + " | ".join(head) + " |",
             "|" + "|".join("---:" if h in ("#", "params", "MACs", "act/sample") else "---"
                            for h in head) + "|",
             f"|  | input |  | {' |  ' * len(branch)} | {_shape(summary.input_shape)} |  |  "
             f"| 1x1 | 1x1 |  |"]
    for number, row, source in zip(_entry_numbers(summary), summary.layers,
                                   _from_cells(summary), strict=True):
        cells = [number, row.name, row.type, *[source for _ in branch],
                 row.description, _shape(row.output_shape),
                 format_count(row.params), format_count(row.macs),
                 _shape(row.receptive_field), _shape(row.jump),
                 format_bytes(row.activation_bytes)]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    lines.append("")
    lines.extend(f"- {line}" for line in summary_totals(summary))
    return "\n".join(lines) + "\n"


def layers_table(entries: list[dict]) -> Table:
    """``cnncli layers``: one row per registered type."""
    table = Table(header_style="bold", show_lines=True)
    table.add_column("type", style="bold")
    table.add_column("aliases")
    table.add_column("hyperparameters (default)")
    table.add_column("description")
    for e in entries:
        hp = []
        for key, default in e["hyperparameters"].items():
            hp.append(f"{key} (required)" if default is inspect.Parameter.empty
                      or default == "<required>" else f"{key}={default!r}")
        if e["key_aliases"]:
            hp.append("key aliases: " + ", ".join(f"{a}->{t}"
                                                  for a, t in e["key_aliases"].items()))
        if e["accepts_activation"]:
            hp.append("activation: <name>")
        table.add_row(e["type"], ", ".join(e["aliases"]), escape("\n".join(hp)),
                      escape(e["doc"]))
    return table


# ---------------------------------------------------------------- train, eval, predict

def percent(value) -> str:
    """0.9312 -> '93.12%'; None -> '-'."""
    return "-" if value is None else f"{100 * value:.2f}%"


def number(value, fmt="{:.4f}") -> str:
    return "-" if value is None else fmt.format(value)


#: Heading and cell text of each metrics.csv column in the training summary.
METRIC_CELLS = {
    "epoch": ("epoch", str),
    "train_loss": ("train loss", number),
    "train_accuracy": ("train acc", percent),
    "val_loss": ("val loss", number),
    "val_accuracy": ("val acc", percent),
    "lr": ("lr", lambda value: number(value, "{:.3g}")),
    "seconds": ("time", lambda value: number(value, "{:.1f}s")),
}


def summary_rows(rows: list[dict], best_epoch: int | None) -> list[dict | None]:
    """All rows of a short run; else the first 3, the best and the last 5 (None = a gap)."""
    if len(rows) <= 15:
        return list(rows)
    keep = {0, 1, 2, *range(len(rows) - 5, len(rows))}
    if best_epoch is not None:
        keep.add(best_epoch - 1)
    out, previous = [], -1
    for i in sorted(keep):
        if i != previous + 1:
            out.append(None)
        out.append(rows[i])
        previous = i
    return out


def metrics_table(rows: list[dict], best_epoch: int | None = None) -> Table:
    """The training summary: one row per epoch (a gap row where a long run is cut)."""
    table = Table(title="training summary (* best)", title_justify="left")
    for column in METRIC_COLUMNS:
        table.add_column(METRIC_CELLS[column][0], justify="right")
    for row in summary_rows(rows, best_epoch):
        if row is None:
            table.add_row(*["⋮"] * len(METRIC_COLUMNS))
            continue
        cells = [METRIC_CELLS[column][1](row.get(column)) for column in METRIC_COLUMNS]
        if row["epoch"] == best_epoch:
            cells[0] = f"*{cells[0]}"
        table.add_row(*cells)
    return table


def report_tables(report: dict) -> list:
    """``cnncli eval``: the per-class table, then the confusion matrix (up to 30 classes)."""
    per_class = Table(title="per class", title_justify="left")
    for name in ("class", "precision", "recall", "f1", "support"):
        per_class.add_column(name, justify="right")
    for row in report["per_class"]:
        per_class.add_row(name_cell(row["class"]), f"{row['precision']:.3f}",
                          f"{row['recall']:.3f}",
                          f"{row['f1']:.3f}", str(row["support"]))
    cm = report["confusion_matrix"]
    if len(cm) > 30:
        return [per_class]
    matrix = Table()
    matrix.add_column("true \\ pred", justify="right")
    names = [name_cell(row["class"]) for row in report["per_class"]]
    for name in names:
        matrix.add_column(name, justify="right")
    for i, (name, counts) in enumerate(zip(names, cm, strict=True)):
        cells = [f"[bold]{c}[/bold]" if i == j and c else (str(c) if c else "[dim]·[/dim]")
                 for j, c in enumerate(counts)]
        matrix.add_row(name, *cells)
    return [per_class, "confusion matrix (rows: true class, columns: predicted class)", matrix]


def predictions_table(rows: list) -> Table:
    """``cnncli predict``: input, predicted class and probability, then the runners-up."""
    k = max((len(ranked) for _, ranked in rows), default=1)
    table = Table()
    table.add_column("input")
    table.add_column("predicted", justify="right")
    table.add_column("probability", justify="right")
    if k > 1:
        table.add_column(f"next {k - 1}")
    for label, ranked in rows:
        rest = ", ".join(f"{name_cell(c)} {100 * p:.1f}%" for c, p in ranked[1:])
        table.add_row(name_cell(label), name_cell(ranked[0][0]), f"{100 * ranked[0][1]:.1f}%",
                      *([rest] if k > 1 else []))
    return table


def predictions_csv(rows: list) -> str:
    """``cnncli predict --out``: input, predicted, probability, class_2, probability_2, ..."""
    k = max((len(ranked) for _, ranked in rows), default=1)
    header = ["input", "predicted", "probability"]
    for r in range(2, k + 1):
        header += [f"class_{r}", f"probability_{r}"]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    for label, ranked in rows:
        writer.writerow([csv_text(label)] + [v for c, p in ranked
                                             for v in (csv_text(c), f"{p:.6f}")])
    return buf.getvalue()


# ---------------------------------------------------------------- bench

def _gflops(value) -> str:
    return "" if value is None else f"{value:.1f}"


def bench_table(result, title: str) -> Table:
    """``cnncli bench``: each layer's forward and backward time, share and rate."""
    layer_total = sum(t.forward_ms + t.backward_ms for t in result.layers) or 1.0
    table = Table(title=title, title_justify="left")
    for col in ("layer", "type", "output"):
        table.add_column(col)
    for col in ("forward ms", "backward ms", "share", "fwd GFLOP/s", "bwd GFLOP/s"):
        table.add_column(col, justify="right")
    for t in result.layers:
        share = (t.forward_ms + t.backward_ms) / layer_total
        table.add_row(t.name, t.type, "x".join(map(str, t.output_shape)),
                      f"{t.forward_ms:.3f}", f"{t.backward_ms:.3f}", f"{100 * share:.1f}%",
                      _gflops(t.forward_gflops), _gflops(t.backward_gflops))
    return table


def bench_lines(result) -> list[str]:
    """``cnncli bench``: whole steps, inference, memory, the matmul ceiling and threads."""
    threads = "default" if result.threads is None else str(result.threads)
    lines = [
        f"training step   {result.train_step_ms:8.2f} ms   {result.train_images_per_s:9.0f} "
        f"images/s  (forward + loss + backward + SGD update; steps took "
        f"{result.train_step_ms_min:.2f}-{result.train_step_ms_max:.2f} ms)",
        f"inference       {result.infer_batch_ms:8.2f} ms   {result.infer_images_per_s:9.0f} "
        "images/s",
        f"peak RSS        {result.peak_rss_mb:8.1f} MB   (getrusage ru_maxrss, whole process)",
        f"step NumPy peak {result.step_numpy_peak_mb:8.1f} MB   (tracemalloc, one training step)",
    ]
    if result.worker_peak_rss_mb is not None:
        lines.insert(3, f"worker peak RSS {result.worker_peak_rss_mb:8.1f} MB   (the process "
                        f"training each batch's second half)")
    if result.matmul_peak_gflops:
        every = result.matmul_peak_all_cores_gflops
        lines.append(f"matmul peak     {result.matmul_peak_gflops:8.1f} GFLOP/s  (float32 "
                     f"2048x2048, {threads} BLAS thread(s)"
                     + (f"; {every:.1f} on every core)" if every else ")"))
    lines.append(f"threads         {result.cnncli_threads} cnncli, {threads} BLAS")
    return lines
