"""The pictures ``cnncli show`` draws of a network: conv kernels, feature maps and receptive
fields, each returned as an RGB image with the lines that explain it (the CLI prints and
writes them)."""

from __future__ import annotations

import numpy as np

from cnncli.errors import ConfigError, ShapeError
from cnncli.inspect import pictures
from cnncli.inspect.walk import feature_groups
from cnncli.nn.inference import layer_outputs, probabilities


def find_layer(layers, name: str) -> int:
    """Index of the layer called ``name``; the error lists the names there are."""
    for i, layer in enumerate(layers):
        if layer.name == name:
            return i
    names = ", ".join(layer.name for layer in layers)
    raise ConfigError(f"no layer named {name!r}", key="layer", hint=f"layers: {names}")


def filters_view(model, layer_name: str | None = None):
    """(lines, image, layer name) of a conv layer's kernels: the named one, else the first."""
    convs = [i for i, layer in enumerate(model.layers)
             if "weight" in layer.params and layer.params["weight"].ndim == 4]
    if layer_name is not None:
        i = find_layer(model.layers, layer_name)
        if i not in convs:
            raise ConfigError(f"layer {layer_name!r} ({model.layers[i].type_name}) has no conv "
                              "kernels to show", key="layer",
                              hint="conv layers: " + ", ".join(model.layers[j].name
                                                              for j in convs))
    elif not convs:
        raise ConfigError("the model has no conv layer, and the filter picture shows conv kernels")
    else:
        i = convs[0]
    layer = model.layers[i]
    weight = layer.params["weight"]
    # RGB tiles only for the image's own 3 channels, not a grouped conv with 3 per group.
    grid, info = pictures.filter_grid(weight, rgb=model.input_shapes[i][0] == 3
                                         and weight.shape[1] == 3)
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
    lines = [f"{layer.name}: weight {list(weight.shape)}, {meaning}; "
             f"{kh}x{kw} kernels enlarged {info['scale']}x"]
    if info["outputs_shown"] < o or info["inputs_shown"] < c:
        lines.append(f"  showing the first {info['outputs_shown']} outputs x "
                     f"{info['inputs_shown']} inputs of {o} x {c}")
    return lines, pictures.pad_border(image, 6), layer.name


def features_view(model, x_chw: np.ndarray, label: str, layer_name: str | None = None,
                  class_names=None):
    """(lines, image) of the feature maps one input produces after each conv/pool layer
    (with the position-wise layers after it), or after the named layer only; a model that
    ends in class scores adds its prediction."""
    groups = feature_groups(model.layers, model.shapes, model.sources)
    if layer_name is not None:
        i = find_layer(model.layers, layer_name)
        if len(model.shapes[i + 1]) != 3:
            raise ShapeError(f"layer {layer_name!r} has a flat output "
                             f"{list(model.shapes[i + 1])}; feature maps need a spatial layer",
                             hint="pick a conv/pool layer")
        last = next((b for a, b in groups if a == i), i)
        groups = [(i, last)]
    elif not groups:
        raise ConfigError("the model has no conv or pool layer to show feature maps of")
    wanted = {last: first for first, last in groups}
    panels = [pictures.labelled(pictures.input_picture(x_chw), "input")]
    lines = [f"input {label}: shape {list(x_chw.shape)}"]
    output = None
    for j, output in layer_outputs(model, x_chw[None]):
        if j not in wanted:
            continue
        maps = output[0]
        name = "+".join(model.layers[k].name for k in range(wanted[j], j + 1))
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
    if output is not None and output.ndim == 2:
        p = probabilities(output[0])
        k = int(np.argmax(p))
        cls = class_names[k] if class_names and k < len(class_names) else str(k)
        lines.append(f"prediction: {cls} (p={p[k]:.3f})")
        panels[0] = pictures.vstack([panels[0], pictures.text_image(f"pred {cls}"),
                                     pictures.text_image(f"p={p[k]:.2f}")], gap=4)
    return lines, pictures.pad_border(pictures.wrap(panels, gap=16), 6)  # deep nets: rows


def receptive_view(box, background_chw: np.ndarray | None = None):
    """(lines, image) of the input box one output unit sees, over an input image or a grid."""
    under = None
    if background_chw is not None:
        chw = np.asarray(background_chw, dtype=np.float64)
        under = pictures.grey_rgb(chw.transpose(1, 2, 0) if chw.shape[0] == 3 else chw[0])
    image, _, _ = pictures.receptive_picture(box, under)
    title = (f"{box.layer} unit ({box.unit[0]},{box.unit[1]}): rows {box.top}..{box.bottom} "
             f"cols {box.left}..{box.right}")
    return box.describe(), pictures.pad_border(pictures.labelled(image, title), 6)
