"""`cnncli summary`, `cnncli config` and `cnncli layers`."""

from __future__ import annotations

import inspect
import json

import click

from cnncli.cli.app import main, table_console
from cnncli.cli.complete import complete_checkpoint_or_config
from cnncli.config import dump_config
from cnncli.errors import ConfigError, printable
from cnncli.inspect.sources import checked_source


def _parse_shape(text: str | None):
    if text is None:
        return None
    try:
        dims = [int(p) for p in text.replace("x", ",").split(",")]
    except ValueError:
        dims = []
    if len(dims) not in (1, 3) or any(d < 1 for d in dims):
        raise ConfigError(f"--input-shape must be C,H,W (or F) with positive ints, got {text!r}",
                          hint="e.g. --input-shape 1,28,28")
    return dims


def _warn(warnings) -> None:
    for line in warnings:
        click.echo(f"cnncli: warning: {printable(line)}", err=True)


def _warn_memory(needed: int, batch_size: int) -> None:
    from cnncli.nn.memory import available_memory, does_not_fit, format_bytes

    available = available_memory()
    if does_not_fit(needed, available):
        _warn([f"a training step at batch size {batch_size} needs about {format_bytes(needed)} "
               f"but {format_bytes(available)} is available: cnncli train would refuse it "
               "(see docs/train.md, 'Memory')"])


@main.command()
@click.argument("config_or_checkpoint", metavar="CONFIG_OR_CHECKPOINT",
                shell_complete=complete_checkpoint_or_config)
@click.option("--input-shape", metavar="C,H,W", help="Override model.input_shape.")
@click.option("--batch-size", type=click.IntRange(min=1), default=1, show_default=True,
              help="Batch size for the memory estimate.")
@click.option("--format", "fmt", type=click.Choice(["table", "json", "csv", "markdown"]),
              default="table", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Same as --format json.")
@click.option("--dtype", type=click.Choice(["float32", "float64"]), default="float32",
              show_default=True, help="Element type for byte counts.")
@click.option("--set", "sets", multiple=True, metavar="KEY.PATH=VALUE",
              help="Override any config value by its dotted path, e.g. "
                   "--set model.layers.0.out_channels=32 (repeatable).")
@click.option("--graph", "as_graph", is_flag=True,
              help="Draw the network as a graph of text (branches as lanes).")
def summary(config_or_checkpoint, input_shape, batch_size, fmt, as_json, dtype, sets,
            as_graph):
    """Per-layer output shapes, parameters, MACs, receptive fields and memory of a model.

    \b
    Examples:
      cnncli summary configs/digits.yaml
      cnncli summary runs/digits/best.npz --batch-size 64 --json
      cnncli summary configs/lenet5.yaml --format markdown
      cnncli summary configs/digits.yaml --set model.layers.0.out_channels=32
      cnncli summary configs/digits.yaml --graph
    """
    from cnncli.inspect.render import graph_lines, print_summary, summary_csv, summary_markdown
    from cnncli.inspect.summary import summarize

    if as_json and fmt not in ("table", "json"):
        raise click.UsageError(f"--json and --format {fmt} ask for two formats; give one")
    if as_graph and (as_json or fmt != "table"):
        raise click.UsageError("--graph draws text; leave out --json/--format")
    checked = checked_source(config_or_checkpoint, _parse_shape(input_shape), sets)
    _warn(checked.warnings)
    result = summarize(checked, batch_size=batch_size, dtype=dtype)
    _warn_memory(result.memory["total_bytes"], batch_size)
    fmt = "json" if as_json else fmt
    if as_graph:
        for line in graph_lines(result):
            click.echo(printable(line))
    elif fmt == "json":
        click.echo(json.dumps(result.to_json(), indent=2))
    elif fmt == "csv":
        click.echo(summary_csv(result), nl=False)
    elif fmt == "markdown":
        click.echo(summary_markdown(result), nl=False)
    else:
        title = f"{checked.run.name}: input {'x'.join(map(str, result.input_shape))}"
        print_summary(result, table_console(), title=title)


@main.command("config")
@click.argument("config", metavar="CONFIG", shell_complete=complete_checkpoint_or_config)
def config_command(config):
    """Check a config and print it resolved (every default filled in) as YAML.

    \b
    Example:
      cnncli config configs/digits.yaml > resolved.yaml
    """
    checked = checked_source(config)
    _warn(checked.warnings)
    click.echo(dump_config(checked.run), nl=False)


@main.command("layers")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def layers_command(as_json):
    """List every layer type with its hyperparameters, defaults and aliases.

    \b
    Examples:
      cnncli layers
      cnncli layers --json
    """
    from cnncli.inspect.render import layers_table
    from cnncli.nn.registry import catalogue

    entries = catalogue()
    if as_json:
        for e in entries:
            e["hyperparameters"] = {
                k: ("<required>" if v is inspect.Parameter.empty else _jsonable(v))
                for k, v in e["hyperparameters"].items()}
        click.echo(json.dumps(entries, indent=2))
    else:
        table_console().print(layers_table(entries))


def _jsonable(value):
    if isinstance(value, tuple):
        return list(value)
    if value is None or isinstance(value, (bool, int, float, str, list)):
        return value
    return repr(value)
