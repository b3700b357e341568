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

from cnncli.inspect.summary import Summary, format_bytes, format_count

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
    table.add_column("kernel")
    table.add_column("output", justify="right")
    table.add_column("params", justify="right")
    table.add_column("MACs", justify="right")
    table.add_column("RF", justify="right")
    table.add_column("jump", justify="right")
    table.add_column("act/sample", justify="right")
    table.add_row("", "input", "", "", _shape(summary.input_shape), "", "", "1x1", "1x1", "")
    for number, row in zip(_entry_numbers(summary), summary.layers, strict=True):
        table.add_row(number, escape(row.name), row.type, escape(row.description),
                      _shape(row.output_shape),
                      format_count(row.params), format_count(row.macs),
                      _shape(row.receptive_field), _shape(row.jump),
                      format_bytes(row.activation_bytes))
    return table


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


def csv_text(value) -> str:
    """A name for a CSV cell: one that a spreadsheet would run as a formula gets a leading
    ``'`` (OWASP's advice), so ``=cmd|...`` shows as text."""
    text = str(value)
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def summary_csv(summary: Summary) -> str:
    """One CSV row per layer; shapes written as 16x8x8."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(SUMMARY_COLUMNS)
    for row in summary.layers:
        writer.writerow([csv_text(row.name)] + [_cell(getattr(row, c))
                                                for c in SUMMARY_COLUMNS[1:]])
    return buf.getvalue()


def summary_markdown(summary: Summary) -> str:
    """A GitHub-flavoured Markdown table plus totals."""
    head = ["#", "layer", "type", "kernel", "output", "params", "MACs", "RF", "jump",
            "act/sample"]
    lines = ["| " + " | ".join(head) + " |",
             "|" + "|".join("---:" if h in ("#", "params", "MACs", "act/sample") else "---"
                            for h in head) + "|",
             f"|  | input |  |  | {_shape(summary.input_shape)} |  |  | 1x1 | 1x1 |  |"]
    for number, row in zip(_entry_numbers(summary), summary.layers, strict=True):
        cells = [number, row.name, row.type, row.description, _shape(row.output_shape),
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
