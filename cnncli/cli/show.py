"""`cnncli plot` (training curves) and `cnncli show` (filters, feature maps, receptive fields)."""

from __future__ import annotations

import shlex
from pathlib import Path

import click

from cnncli.cli.app import main
from cnncli.cli.complete import complete_checkpoint_or_config, complete_run
from cnncli.errors import ConfigError, MissingExtraError, printable
from cnncli.files import safe_path
from cnncli.inspect import pictures, plot, receptive
from cnncli.training.checkpoint import is_checkpoint

# ---------------------------------------------------------------- plot

#: What ``plot --out`` writes (through matplotlib).
PLOT_SUFFIXES = (".png", ".svg", ".pdf")


@main.command("plot")
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path(path_type=Path),
                shell_complete=complete_run)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="PNG to write (default: RUN_DIR/curves.png for one run, ./curves.png "
                   "for several).")
@click.option("--terminal", is_flag=True, help="Draw the curves in the terminal instead.")
def plot_command(run_dirs, out, terminal):
    """Loss and accuracy curves (train and validation) of one or more runs, overlaid.

    \b
    Examples:
      cnncli plot runs/digits
      cnncli plot runs/a runs/b --out compare.png
      cnncli plot runs/digits --terminal
    """
    if out is not None and out.suffix.lower() not in PLOT_SUFFIXES:
        raise ConfigError(f"--out {str(out)!r} is not a {', '.join(PLOT_SUFFIXES)} file",
                          key="out", hint="give a name ending in .png")
    runs = plot.read_runs(run_dirs)
    if not terminal and not plot.have_matplotlib():  # never exit 0 without the file asked for
        raise MissingExtraError("writing the plot as a picture needs matplotlib",
                                hint=f"{plot.PLOT_HINT}, or draw it in the terminal: "
                                     f"cnncli plot {shlex.join(map(str, run_dirs))} --terminal")
    if terminal:
        click.echo(plot.terminal_plot(runs, width=plot.terminal_width(),
                                      style=lambda text, color: click.style(text, fg=color)))
    else:
        if out is None:
            out = safe_path(run_dirs[0] if len(runs) == 1 and run_dirs[0].is_dir() else ".",
                            "curves.png")
        click.echo(printable(f"wrote {plot.plot_png(runs, out)}"))
    for line in plot.summary_lines(runs):
        click.echo(printable(line))


# ---------------------------------------------------------------- show

def _default_out(source: Path, stem: str) -> Path:
    """Beside a checkpoint (its run directory); in the current directory for a config. The
    stem holds a layer name, which a hand-made checkpoint may make hostile ('../x')."""
    folder = source if source.is_dir() else source.parent if is_checkpoint(source) else "."
    return safe_path(folder, f"{stem}.png")


def _parse_at(text: str | None):
    if text is None:
        return None
    parts = text.replace(" ", "").split(",")
    try:
        y, x = (int(p) for p in parts)
    except ValueError:
        raise ConfigError(f"--at must be Y,X (two ints), got {text!r}", key="at") from None
    return y, x


@main.command("show")
@click.argument("source", type=click.Path(exists=True, path_type=Path),
                metavar="CHECKPOINT_OR_CONFIG", shell_complete=complete_checkpoint_or_config)
@click.option("--filters", "mode", flag_value="filters", help="Grid of a conv layer's kernels.")
@click.option("--features", "features_input", metavar="INPUT", default=None,
              help="Feature maps this input (image, .npy or .npz) produces at each conv/pool "
                   "layer.")
@click.option("--receptive-field", "receptive_flag", is_flag=True,
              help="The input region one output unit of a layer sees.")
@click.option("--layer", "layer_name", default=None, metavar="NAME",
              help="Layer name (see 'cnncli summary').")
@click.option("--index", default=0, show_default=True, type=int,
              help="Row of the --features or --input file to use.")
@click.option("--at", "at", default=None, metavar="Y,X",
              help="Output unit for --receptive-field (default: the centre).")
@click.option("--input", "background", default=None, metavar="IMG",
              help="Image drawn under the --receptive-field box (default: a blank grid).")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="PNG to write (default: beside the checkpoint, or in the current dir).")
def show_command(source, mode, features_input, receptive_flag, layer_name, index, at,
                 background, out):
    """Pictures of a network: --filters, --features INPUT or --receptive-field.

    \b
    Examples:
      cnncli show runs/digits/best.npz --filters
      cnncli show runs/digits/best.npz --features digit.png --layer conv2
      cnncli show configs/digits.yaml --receptive-field --layer pool --at 0,0
    """
    chosen = [m for m, on in (("--filters", mode == "filters"),
                              ("--features", features_input is not None),
                              ("--receptive-field", receptive_flag)) if on]
    if len(chosen) != 1:
        got = " and ".join(chosen) if chosen else "none"
        raise ConfigError(f"choose exactly one of --filters, --features INPUT, "
                          f"--receptive-field (got {got})")
    _reject_unused_options(chosen[0], at, background)
    if source.is_dir() and not is_checkpoint(source):
        raise ConfigError(f"{source}: no last.npz in this directory",
                          hint="give a checkpoint .npz, a run directory written by 'cnncli "
                               "train', or a config")
    if out is not None and out.suffix.lower() != ".png":
        raise ConfigError(f"--out {str(out)!r} is not a .png file; show writes PNG pictures",
                          key="out", hint="give a name ending in .png")
    if chosen[0] == "--filters":
        lines, path = _show_filters(source, layer_name, out)
    elif chosen[0] == "--features":
        lines, path = _show_features(source, features_input, layer_name, index, out)
    else:
        lines, path = _show_receptive(source, layer_name, _parse_at(at), background, index, out)
    for line in lines:
        click.echo(printable(line))
    click.echo(printable(f"wrote {path}"))


def _reject_unused_options(mode: str, at, background) -> None:
    """An option the chosen picture does not use is a mistake, not something to ignore."""
    index_given = (click.get_current_context().get_parameter_source("index")
                   is not click.core.ParameterSource.DEFAULT)
    index_used = mode == "--features" or (mode == "--receptive-field" and background is not None)
    for name, given, used, use in (
            ("--at", at is not None, mode == "--receptive-field", "--receptive-field"),
            ("--input", background is not None, mode == "--receptive-field",
             "--receptive-field; --features takes the input as its own value"),
            ("--index", index_given, index_used,
             "--features INPUT or --receptive-field --input IMG")):
        if given and not used:
            raise ConfigError(f"{name} does not apply to {mode}"
                              + (" without --input" if name == "--index" and
                                 mode == "--receptive-field" else ""),
                              key=name.lstrip("-"), hint=f"it is for {use}")


def _show_filters(source: Path, layer_name, out):
    from cnncli.inspect import sources, views

    loaded = sources.model_source(source)
    lines, image, name = views.filters_view(loaded.model, layer_name)
    if not loaded.trained:
        lines.append("  (a config, not a checkpoint: these are the initial, untrained weights)")
    return lines, pictures.write_png(out or _default_out(source, f"filters_{name}"), image)


def _show_features(source: Path, features_input: str, layer_name, index: int, out):
    from cnncli.data import load_inputs
    from cnncli.inspect import sources, views

    loaded = sources.model_source(source)
    x, row_labels = load_inputs([features_input], loaded.model.input_shape,
                                loaded.normalization)
    _check_index(index, x, features_input)
    label = row_labels[index] if row_labels else features_input
    lines, image = views.features_view(loaded.model, x[index], label, layer_name,
                                       loaded.class_names)
    if not loaded.trained:
        lines.append("(a config, not a checkpoint: untrained weights)")
    stem = f"features_{layer_name}" if layer_name else "features"
    return lines, pictures.write_png(out or _default_out(source, stem), image)


def _check_index(index: int, x, path) -> None:
    if not 0 <= index < len(x):
        raise ConfigError(f"--index {index} is out of range: {path} has {len(x)} "
                          f"input row(s)", key="index", hint=f"use 0..{len(x) - 1}")


def _show_receptive(source: Path, layer_name, at, background, row: int, out):
    from cnncli.inspect import sources, views

    checked = sources.checked_source(source)
    layers, input_shape = checked.layers, tuple(checked.shapes[0])
    index = (views.find_layer(layers, layer_name) if layer_name is not None
             else receptive.last_spatial_index(layers, input_shape, checked.sources))
    box = receptive.input_box(layers, input_shape, index, at, checked.sources)
    under = None
    if background is not None:
        from cnncli.data import load_inputs

        x, _ = load_inputs([background], input_shape, sources.source_normalization(source))
        _check_index(row, x, background)
        under = x[row]
    lines, image = views.receptive_view(box, under)
    path = pictures.write_png(out or _default_out(source, f"receptive_field_{box.layer}"), image)
    return lines, path
