"""Start a run from other weights (a checkpoint or a safetensors file), matched by parameter
name: ``apply_initial_weights`` loads what fits and reports what it loaded, kept fresh or
re-initialised; ``--freeze`` layers are recorded for the optimizer (``train.init_from``)."""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cnncli.errors import CheckpointError, ConfigError
from cnncli.interop import safetensors
from cnncli.training.checkpoint import load_checkpoint


@dataclass
class InitReport:
    """Which model parameters came from the source, and which did not and why."""

    source: str
    loaded: list[str] = field(default_factory=list)
    fresh: list[str] = field(default_factory=list)       # not in the source: initialised anew
    reinit: list[str] = field(default_factory=list)      # in the source, but --reinit
    mismatched: list[str] = field(default_factory=list)  # shape differs (all in --reinit)
    unused: list[str] = field(default_factory=list)      # in the source, not in the model
    frozen: list[str] = field(default_factory=list)      # layer names
    statistics: list[str] = field(default_factory=list)  # buffers: batch norm's running ones

    def rows(self) -> list[tuple[str, str]]:
        """(parameter, what happened) in model order, for the CLI's table."""
        why = {**{n: "loaded" for n in self.loaded}, **{n: "new (not in source)"
                                                         for n in self.fresh},
               **{n: "re-initialised" for n in self.reinit},
               **{n: "re-initialised (shape differs)" for n in self.mismatched}}
        return [(name, why[name]) for name in why]

    def trained(self, name: str) -> str:
        """Whether training changes a parameter: a frozen layer's running statistics still
        follow the batches in training mode (as in PyTorch with requires_grad=False)."""
        if name.rsplit(".", 1)[0] not in self.frozen:
            return "yes"
        return "statistics still update" if name in self.statistics else "frozen"


def record(source, freeze=(), reinit=()) -> dict:
    """What the run's config.yaml keeps under ``train.init_from``."""
    return {"source": str(source), "freeze": list(freeze), "reinit": list(reinit)}


def read_weights(source) -> dict[str, np.ndarray]:
    """The named arrays of a cnncli checkpoint (or run directory) or a .safetensors file, in
    cnncli's names (a cnncli export's renamed layers are mapped back)."""
    path = Path(source)
    if path.suffix.lower() == ".safetensors":
        tensors, meta = safetensors.read(path)
        try:
            renamed = json.loads(meta.get("cnncli.layer_names", "{}"))
        except ValueError:
            renamed = {}
        out = {}
        for key, value in tensors.items():
            layer, _, param = key.rpartition(".")
            out[f"{renamed.get(layer, layer)}.{param}" if layer else key] = value
        return out
    if path.suffix.lower() == ".onnx":
        raise CheckpointError(f"{path} is an ONNX model, not weights that start a run",
                              hint="import it first (the import command writes a checkpoint "
                                   "and its config), then start from that checkpoint")
    ckpt = load_checkpoint(path)
    ckpt.check_finite()
    return ckpt.state


def _layer_names(model, names, option: str) -> list[str]:
    """The layers ``names`` stand for: a layer's own name, or a block's (a name before a dot,
    ``layer1`` or ``layer1.0``), which stands for the layers with parameters inside it."""
    known = [layer.name for layer in model.layers]
    weighted = {layer.name for layer in model.layers if layer.params or layer.buffers}
    out = []
    for name in names:
        inside = [name] if name in known else [k for k in known if k.startswith(name + ".")
                                                and k in weighted]
        if not inside:
            close = difflib.get_close_matches(name, known, n=1)
            raise ConfigError(f"{option}{name}: the model has no layer or block {name!r}",
                              hint=f"did you mean '{close[0]}'?" if close else
                              "layers: " + ", ".join(known))
        out.extend(inside)
    return list(dict.fromkeys(out))


def apply_initial_weights(model, source, reinit=(), freeze=()) -> InitReport:
    """Copy the source's arrays into ``model`` where names match. A shape mismatch is an
    error unless its layer is in ``reinit`` (whose parameters all keep their fresh values).
    Checks everything before changing anything."""
    reinit = _layer_names(model, reinit, "reinit=")
    frozen = _layer_names(model, freeze, "freeze=")
    state = read_weights(source)
    report = InitReport(str(source), frozen=frozen)
    updates, refused = [], []
    for layer in model.layers:
        for key, value in {**layer.params, **layer.buffers}.items():
            name = f"{layer.name}.{key}"
            if key in layer.buffers:
                report.statistics.append(name)
            new = state.get(name)
            if new is None:
                report.fresh.append(name)
            elif np.shape(new) != value.shape:
                if layer.name not in reinit:
                    refused.append(CheckpointError(
                        f"{name} has shape {list(np.shape(new))} but the model's is "
                        f"{list(value.shape)}", file=source,
                        layer=f"layer '{layer.name}' ({layer.type_name})",
                        hint=f"pass reinit={layer.name} to start that layer afresh"))
                report.mismatched.append(name)
            elif not np.all(np.isfinite(new)):
                raise CheckpointError(f"{name} holds NaN or infinite values", file=source,
                                      layer=f"layer '{layer.name}' ({layer.type_name})",
                                      hint="start from weights of a run that did not diverge")
            elif layer.name in reinit:
                report.reinit.append(name)
            else:
                updates.append((value, new))
                report.loaded.append(name)
    expected = {n for n, _ in report.rows()}
    report.unused = sorted(set(state) - expected)
    if not report.loaded:  # before a shape: reinit= on one layer would not help
        sample = ", ".join(sorted(state)[:3]) or "nothing"
        shapes = (f" ({len(report.mismatched)} names match, with other shapes)"
                  if report.mismatched else "")
        raise CheckpointError(f"{source}: none of its parameters ({sample}, ...) matches the "
                              f"model's ({', '.join(sorted(expected)[:3])}, ...){shapes}; it is "
                              "for another architecture",
                              hint="name the layers as the source does, with name: in the config")
    if refused:
        raise refused[0]
    for value, new in updates:
        value[...] = new
    return report
