"""`cnncli summary`, `cnncli config` and `cnncli layers`."""

from __future__ import annotations

import inspect
import json
import math
import re
import sys

import click
from rich.console import Console

from cnncli.cli.app import main
from cnncli.config.loader import check_config, check_data, dump_config
from cnncli.errors import ConfigError, ShapeError, printable


def _console() -> Console:
    # Not a terminal (pipe, file, test runner): wide enough that tables never wrap.
    return Console(width=None if sys.stdout.isatty() else 200, highlight=False)


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


def checked_from(path: str, input_shape=None):
    """Check a config file, or the config stored in a checkpoint (.npz or a run directory)."""
    from cnncli.training.checkpoint import is_checkpoint, load_checkpoint

    if is_checkpoint(path):
        ckpt = load_checkpoint(path)
        checked = check_data(ckpt.config, file=path, input_shape=input_shape)
        if input_shape is not None:
            _check_dense_inputs(checked, ckpt.state, path, input_shape,
                                ckpt.config["model"]["input_shape"])
        return checked
    return check_config(path, input_shape=input_shape)


def _check_dense_inputs(checked, state: dict, path, input_shape, trained_shape) -> None:
    """Trained dense weights fix their input size: an --input-shape must keep it."""
    for layer, label, in_shape in zip(checked.layers, checked.labels, checked.shapes,
                                      strict=False):
        weight = state.get(f"{layer.name}.weight")
        if layer.type_name != "dense" or weight is None or weight.ndim != 2:
            continue
        features = math.prod(in_shape)
        if weight.shape[1] != features:
            given = ",".join(map(str, input_shape))
            trained = ",".join(map(str, trained_shape))
            raise ShapeError(f"its input size changed: the checkpoint's weights take "
                             f"{weight.shape[1]} features, --input-shape {given} gives it "
                             f"{features}", file=path, layer=label,
                             hint=f"dense layers fix the input size; this model was trained "
                                  f"on {trained}")


@main.command()
@click.argument("config_or_checkpoint", metavar="CONFIG_OR_CHECKPOINT")
@click.option("--input-shape", metavar="C,H,W", help="Override model.input_shape.")
@click.option("--batch-size", type=click.IntRange(min=1), default=1, show_default=True,
              help="Batch size for the memory estimate.")
@click.option("--format", "fmt", type=click.Choice(["table", "json", "csv", "markdown"]),
              default="table", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Same as --format json.")
@click.option("--dtype", type=click.Choice(["float32", "float64"]), default="float32",
              show_default=True, help="Element type for byte counts.")
def summary(config_or_checkpoint, input_shape, batch_size, fmt, as_json, dtype):
    """Per-layer output shapes, parameters, MACs, receptive fields and memory of a model.

    \b
    Examples:
      cnncli summary configs/digits.yaml
      cnncli summary runs/digits/best.npz --batch-size 64 --json
      cnncli summary configs/lenet5.yaml --format markdown
    """
    from cnncli.inspect.render import print_summary, summary_csv, summary_markdown
    from cnncli.inspect.summary import summarize

    if as_json and fmt not in ("table", "json"):
        raise click.UsageError(f"--json and --format {fmt} ask for two formats; give one")
    checked = checked_from(config_or_checkpoint, _parse_shape(input_shape))
    _warn(checked.warnings)
    result = summarize(checked, batch_size=batch_size, dtype=dtype)
    fmt = "json" if as_json else fmt
    if fmt == "json":
        click.echo(json.dumps(result.to_json(), indent=2))
    elif fmt == "csv":
        click.echo(summary_csv(result), nl=False)
    elif fmt == "markdown":
        click.echo(summary_markdown(result), nl=False)
    else:
        title = f"{checked.config['name']}: input {'x'.join(map(str, result.input_shape))}"
        print_summary(result, _console(), title=title)


@main.command("config")
@click.argument("config", metavar="CONFIG")
def config_command(config):
    """Check a config and print it resolved (every default filled in) as YAML.

    \b
    Example:
      cnncli config configs/digits.yaml > resolved.yaml
    """
    checked = checked_from(config)
    _warn(checked.warnings)
    click.echo(dump_config(checked.config), nl=False)


def layer_catalogue() -> list[dict]:
    """Every registered layer type: aliases, hyperparameters with defaults, first doc paragraph."""
    from cnncli.nn.layers.base import hyperparameters
    from cnncli.nn.registry import ALIASES, LAYERS

    out = []
    for name in sorted(LAYERS):
        cls = LAYERS[name]
        doc = inspect.getdoc(cls) or ""
        out.append({
            "type": name,
            "aliases": sorted(a for a, t in ALIASES.items() if t == name),
            "hyperparameters": hyperparameters(cls),
            "key_aliases": dict(getattr(cls, "aliases", {}) or {}),
            "accepts_activation": bool(getattr(cls, "accepts_activation", False)),
            "is_activation": bool(getattr(cls, "is_activation", False)),
            # first paragraph, one line, plain text: ``x`` (reST literals) shown as x
            "doc": re.sub(r"``(.+?)``", r"\1", " ".join(doc.split("\n\n")[0].split())),
        })
    return out


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

    entries = layer_catalogue()
    if as_json:
        for e in entries:
            e["hyperparameters"] = {
                k: ("<required>" if v is inspect.Parameter.empty else _jsonable(v))
                for k, v in e["hyperparameters"].items()}
        click.echo(json.dumps(entries, indent=2))
    else:
        _console().print(layers_table(entries))


def _jsonable(value):
    if isinstance(value, tuple):
        return list(value)
    if value is None or isinstance(value, (bool, int, float, str, list)):
        return value
    return repr(value)
