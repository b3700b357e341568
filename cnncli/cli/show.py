"""`cnncli plot` (training curves) and `cnncli show` (filters, feature maps, receptive fields)."""

from __future__ import annotations

import shlex
from pathlib import Path

import click
import numpy as np

from cnncli.cli.app import main
from cnncli.errors import ConfigError, MissingExtraError, ShapeError, printable
from cnncli.inspect import pictures, plot, receptive
from cnncli.training.checkpoint import is_checkpoint

# ---------------------------------------------------------------- plot

#: What ``plot --out`` writes (through matplotlib).
PLOT_SUFFIXES = (".png", ".svg", ".pdf")


@main.command("plot")
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path(path_type=Path))
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
            out = run_dirs[0] / "curves.png" if len(runs) == 1 and run_dirs[0].is_dir() \
                else Path("curves.png")
        click.echo(printable(f"wrote {plot.plot_png(runs, out)}"))
    for line in plot.summary_lines(runs):
        click.echo(printable(line))


# ---------------------------------------------------------------- show

def _load_checkpoint(path: Path):
    from cnncli.training.checkpoint import load_checkpoint

    return load_checkpoint(path)


def _model_and_meta(path: Path):
    """(built model, normalization, class names, untrained?) from a checkpoint or a config."""
    if is_checkpoint(path):
        ckpt = _load_checkpoint(path)
        return ckpt.model(), ckpt.normalization, getattr(ckpt, "class_names", None), False
    from cnncli import build_model

    return build_model(str(path)), {}, None, True   # no training statistics: inputs as given


def _layer_stack(path: Path):
    """(named unbuilt layers, input shape) of a config or checkpoint: no weights allocated."""
    from cnncli.config.loader import check_config, check_data

    if is_checkpoint(path):
        checked = check_data(_load_checkpoint(path).config, file=str(path))
    else:
        checked = check_config(path)
    return checked.layers, tuple(checked.shapes[0])


def _find_layer(layers, name: str) -> int:
    for i, layer in enumerate(layers):
        if layer.name == name:
            return i
    names = ", ".join(layer.name for layer in layers)
    raise ConfigError(f"no layer named {name!r}", key="layer", hint=f"layers: {names}")


def _default_out(source: Path, stem: str) -> Path:
    """Beside a checkpoint (its run directory); in the current directory for a config."""
    if source.is_dir():
        return source / f"{stem}.png"
    return source.parent / f"{stem}.png" if is_checkpoint(source) else Path(f"{stem}.png")


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
                metavar="CHECKPOINT_OR_CONFIG")
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
    model, _, _, untrained = _model_and_meta(source)
    convs = [i for i, layer in enumerate(model.layers)
             if "weight" in layer.params and layer.params["weight"].ndim == 4]
    if layer_name is not None:
        i = _find_layer(model.layers, layer_name)
        if i not in convs:
            raise ConfigError(f"layer {layer_name!r} ({model.layers[i].type_name}) has no conv "
                              "kernels to show", key="layer",
                              hint="conv layers: " + ", ".join(model.layers[j].name
                                                              for j in convs))
    elif not convs:
        raise ConfigError("the model has no conv layer; --filters shows conv kernels")
    else:
        i = convs[0]
    layer = model.layers[i]
    weight = layer.params["weight"]
    # RGB tiles only for the image's own 3 channels, not a grouped conv with 3 per group.
    grid, info = pictures.filter_grid(weight, rgb=model.shapes[i][0] == 3 and weight.shape[1] == 3)
    o, c, kh, kw = weight.shape
    title = f"{layer.name} weight {o}x{c}x{kh}x{kw}"
    if info["mode"] == "rgb":
        scale_text = f"rgb, 0 = grey, +-{info['limit']:.3g}"
        image = pictures.labelled(grid, f"{title}  {scale_text}")
        meaning = (f"one RGB tile per output channel (channel weights -> red/green/blue; "
                   f"0 = mid-grey, shared scale +-{info['limit']:.3g})")
    else:
        if c > 1:
            title += "  rows: outputs, columns: inputs"
        image = pictures.vstack([pictures.labelled(grid, title),
                                 pictures.colorbar(info["limit"])], gap=6)
        layout = ("rows = output channels, columns = input channels" if c > 1
                  else "one tile per output channel")
        meaning = (f"{layout}; blue negative, white 0, red positive, shared scale "
                   f"+-{info['limit']:.3g}")
    image = pictures.pad_border(image, 6)
    lines = [f"{layer.name}: weight {list(weight.shape)}, {meaning}; "
             f"{kh}x{kw} kernels enlarged {info['scale']}x"]
    if info["outputs_shown"] < o or info["inputs_shown"] < c:
        lines.append(f"  showing the first {info['outputs_shown']} outputs x "
                     f"{info['inputs_shown']} inputs of {o} x {c}")
    if untrained:
        lines.append("  (a config, not a checkpoint: these are the initial, untrained weights)")
    path = pictures.write_png(out or _default_out(source, f"filters_{layer.name}"), image)
    return lines, path


def _feature_groups(model):
    """[(first, last)] layer index ranges: each conv/pool layer plus the position-wise layers
    right after it (activation, batch norm, dropout), whose output the next layer sees."""
    groups, shapes, layers = [], model.shapes, model.layers

    def pointwise(j):
        return (len(shapes[j]) == 3 and tuple(shapes[j + 1]) == tuple(shapes[j])
                and layers[j].geometry(shapes[j]) is None)

    for i, layer in enumerate(layers):
        if len(shapes[i + 1]) != 3 or len(shapes[i]) != 3 or layer.geometry(shapes[i]) is None:
            continue
        last = i
        while last + 1 < len(layers) and pointwise(last + 1):
            last += 1
        groups.append((i, last))
    return groups


def _show_features(source: Path, features_input: str, layer_name, index: int, out):
    from cnncli.data import load_inputs
    from cnncli.nn.layers.base import from_internal, to_internal

    model, normalization, class_names, untrained = _model_and_meta(source)
    x, row_labels = load_inputs([features_input], model.input_shape, normalization)
    _check_index(index, x, features_input)
    groups = _feature_groups(model)
    if layer_name is not None:
        i = _find_layer(model.layers, layer_name)
        if len(model.shapes[i + 1]) != 3:
            raise ShapeError(f"layer {layer_name!r} has a flat output "
                             f"{list(model.shapes[i + 1])}; feature maps need a spatial layer",
                             hint="pick a conv/pool layer")
        last = next((b for a, b in groups if a == i), i)
        groups = [(i, last)]
    elif not groups:
        raise ConfigError("the model has no conv or pool layer to show feature maps of")
    wanted = {last: first for first, last in groups}
    h = to_internal(np.asarray(x[index:index + 1], dtype=model.dtype))
    panels = [pictures.labelled(pictures.input_picture(x[index]), "input")]
    label = row_labels[index] if row_labels else features_input
    lines = [f"input {label}: shape {list(x.shape[1:])}"]
    for j, layer in enumerate(model.layers):
        h = layer.forward(h, train=False)
        if j in wanted:
            maps = from_internal(h)[0]
            first = wanted[j]
            name = "+".join(model.layers[k].name for k in range(first, j + 1))
            grid, info = pictures.feature_grid(maps)
            c, mh, mw = maps.shape
            scale = (f"-{info['high']:.3g}..{info['high']:.3g}" if info["signed"]
                     else f"0..{info['high']:.3g}")
            bar = pictures.colorbar(info["high"], max(100, min(160, grid.shape[1] - 16)),
                                    signed=info["signed"])
            title = f"{name} {c}x{mh}x{mw}" + (f" (first {info['shown']})"
                                                 if info["shown"] < c else "")
            panels.append(pictures.vstack([pictures.labelled(grid, title), bar], gap=6))
            lines.append(f"{name}: {c}x{mh}x{mw}, colour scale {scale} "
                         f"({'blue<0<red' if info['signed'] else 'dark=0, bright=max'})"
                         + (f", first {info['shown']} maps shown" if info["shown"] < c else ""))
    logits = from_internal(h)[0] if h.ndim == 2 else None
    if logits is not None and logits.ndim == 1:
        z = np.exp(logits - logits.max())
        p = z / z.sum()
        k = int(np.argmax(p))
        cls = class_names[k] if class_names and k < len(class_names) else str(k)
        lines.append(f"prediction: {cls} (p={p[k]:.3f})")
        panels[0] = pictures.vstack([panels[0], pictures.text_image(f"pred {cls}"),
                                     pictures.text_image(f"p={p[k]:.2f}")], gap=4)
    if untrained:
        lines.append("(a config, not a checkpoint: untrained weights)")
    image = pictures.pad_border(pictures.wrap(panels, gap=16), 6)   # deep nets: several rows
    stem = f"features_{layer_name}" if layer_name else "features"
    path = pictures.write_png(out or _default_out(source, stem), image)
    return lines, path


def _check_index(index: int, x, path) -> None:
    if not 0 <= index < len(x):
        raise ConfigError(f"--index {index} is out of range: {path} has {len(x)} "
                          f"input row(s)", key="index", hint=f"use 0..{len(x) - 1}")


def _show_receptive(source: Path, layer_name, at, background, row: int, out):
    layers, input_shape = _layer_stack(source)
    index = (_find_layer(layers, layer_name) if layer_name is not None
             else receptive.last_spatial_index(layers, input_shape))
    box = receptive.input_box(layers, input_shape, index, at)
    under = None
    if background is not None:
        from cnncli.data import load_inputs

        normalization = (_load_checkpoint(source).normalization if is_checkpoint(source)
                         else {})
        x, _ = load_inputs([background], input_shape, normalization)
        _check_index(row, x, background)
        chw = np.asarray(x[row], dtype=np.float64)
        under = pictures.grey_rgb(chw.transpose(1, 2, 0) if chw.shape[0] == 3 else chw[0])
    image, _, _ = pictures.receptive_picture(box, under)
    title = (f"{box.layer} unit ({box.unit[0]},{box.unit[1]}): rows {box.top}..{box.bottom} "
             f"cols {box.left}..{box.right}")
    image = pictures.pad_border(pictures.labelled(image, title), 6)
    path = pictures.write_png(out or _default_out(source, f"receptive_field_{box.layer}"), image)
    return box.describe(), path
