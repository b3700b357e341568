"""Parsed YAML -> a checked, resolved ``RunConfig``, with file:line:col on every error.

``check_config``/``check_text``/``check_data`` validate the whole file (keys, types, ranges,
layers, shapes) without allocating any weights and return a ``CheckedConfig``: the resolved
config, where each key was written, the unbuilt layers and their shapes, and located warnings.
The rules and defaults of every key are the fields of ``cnncli.config.schema``.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from cnncli.checks import MAX_INT, is_int, shown
from cnncli.config.graph import Expander, unused_outputs
from cnncli.config.overrides import SetPosition, apply_overrides
from cnncli.config.schema import (
    BETA,
    DATASETS,
    DEFAULT_LR,
    DEFAULT_WEIGHT_DECAY,
    POSITIVE_INT,
    SEED_RULE,
    STRING,
    AugmentConfig,
    DataConfig,
    EarlyStoppingConfig,
    InitFromConfig,
    LayerSpec,
    ModelConfig,
    Rule,
    RunConfig,
    ScheduleConfig,
    TrainConfig,
    frozen_mapping,
    plain,
)
from cnncli.config.yaml_file import (
    find_position,
    location_prefix,
    parse_yaml,
    read_config_text,
)
from cnncli.errors import ConfigError

SECTIONS = {"data": DataConfig, "train": TrainConfig}
# Which section a bare key in a library error (DataError(key="path")) belongs to.
_SECTION_OF_KEY = {**{f.name: "data" for f in dataclasses.fields(DataConfig)},
                   **{f.name: "train" for f in dataclasses.fields(TrainConfig)},
                   "input_shape": "model", "layers": "model"}
RUN_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


# ---------------------------------------------------------------- results

@dataclass
class CheckedConfig:
    """A validated config: the resolved config, where each key was, and the unbuilt layers."""

    run: RunConfig
    file: str
    locations: dict = field(default_factory=dict)
    layers: list = field(default_factory=list)     # Layer objects, constructed, never built
    labels: list = field(default_factory=list)     # "layer 3 'conv2' (conv2d)" per layer
    entry_index: list = field(default_factory=list)  # config entry (0-based) of each layer
    shapes: list = field(default_factory=list)     # input shape, then each layer's output
    sources: list = field(default_factory=list)    # per layer, the shapes' indices it reads
    warnings: list = field(default_factory=list)   # one line each, already located

    @property
    def config(self) -> dict:
        """The plain resolved config (what ``cnncli config`` prints and ``config.yaml`` holds)."""
        return self.run.to_dict()

    def where(self, path) -> str:
        return location_prefix(*_position(self.file, self.locations, path))

    def locate(self, err):
        """Point an unlocated error that names a config key (``key="path"``) at that key."""
        section = _SECTION_OF_KEY.get(err.key) if isinstance(err.key, str) else None
        if err.file is None and section is not None:
            file, line, col = _position(self.file, self.locations, (section, err.key))
            err.located(file=file, line=line, column=col)
        return err


def _position(file, locations, path) -> tuple:
    """(file, line, column) of ``path``; a value given by ``--set`` names that instead."""
    found = find_position(locations, path)
    if isinstance(found, SetPosition):
        return found.text, None, None
    return (file, *found)


# ---------------------------------------------------------------- located checks

class Checker:
    """Runs the value rules and raises their errors located at the offending key."""

    def __init__(self, file, locations):
        self.file, self.locations = file, locations

    def error(self, path, message, hint=None, layer=None, key=None) -> ConfigError:
        """A ConfigError at ``path`` (or its nearest written ancestor) naming ``key``, by
        default the last part of the path."""
        file, line, col = self.position(path)
        key = key if key is not None else (str(path[-1]) if path else None)
        return ConfigError(message, file=file, line=line, column=col, hint=hint,
                           layer=layer, key=key)

    def position(self, path) -> tuple:
        return _position(self.file, self.locations, path)

    @staticmethod
    def dotted(path) -> str:
        out = ""
        for part in path:
            out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
        return out

    def apply(self, rule: Rule, path, value):
        """``rule`` on ``value``, its error (if any) located at ``path``."""
        try:
            return rule(self.dotted(path), value)
        except ConfigError as err:
            raise self.error(path, err.message, hint=err.hint) from None

    def mapping(self, path, value, allowed, *, required=()) -> dict:
        name = self.dotted(path) or "the config"
        if not isinstance(value, dict):
            raise self.error(path, f"{name} must be a mapping of keys, got {shown(value)}")
        for key in value:
            if key not in allowed:
                close = difflib.get_close_matches(key, list(allowed), n=1)
                hint = (f"did you mean '{close[0]}'?" if close
                        else "valid keys: " + ", ".join(allowed))
                where = f" in {name}" if path else ""
                raise self.error(path + (key,), f"unknown key {key!r}{where}", hint=hint)
        for key in required:
            if key not in value:
                raise self.error(path, f"{name} needs the key {key!r}")
        return value

    def fields(self, cls, path, raw: dict, *, skip=()) -> dict:
        """Check every key of ``raw`` that has a rule in ``cls``; returns {key: value}."""
        out = {}
        for f in dataclasses.fields(cls):
            if f.name in raw and f.name not in skip and f.metadata.get("rule") is not None:
                out[f.name] = self.apply(f.metadata["rule"], path + (f.name,), raw[f.name])
        return out


def _field_names(cls) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(cls))


# ---------------------------------------------------------------- sections

def _run(data, ck: Checker, default_name: str) -> RunConfig:
    ck.mapping((), data, ("name", "seed", "model", "data", "train"), required=("model",))
    name = data.get("name", default_name)
    if "name" in data:
        ck.apply(STRING, ("name",), name)
    if not isinstance(name, str) or not RUN_NAME_RE.match(name) or len(name) > 100:
        raise ck.error(("name",), f"name must be a plain run name (letters, digits, . _ -), "
                                  f"got {shown(name)}", hint="it names the runs/<name>/ folder")
    seed = ck.apply(SEED_RULE, ("seed",), data.get("seed", 0))
    return RunConfig(name=name, seed=seed, model=_model(data["model"], ck),
                     data=_data(data.get("data", {}), ck), train=_train(data.get("train", {}), ck))


def _model(section, ck: Checker) -> ModelConfig:
    path = ("model",)
    ck.mapping(path, section, ("input_shape", "layers", "blocks", "scale"),
               required=("input_shape", "layers"))
    shape = section["input_shape"]
    spath = path + ("input_shape",)
    if not isinstance(shape, list) or len(shape) not in (1, 3):
        raise ck.error(spath, f"model.input_shape must be [C, H, W] (or [F]), got {shown(shape)}")
    dims = tuple(ck.apply(POSITIVE_INT, spath + (i,), v) for i, v in enumerate(shape))
    if math.prod(dims) > MAX_INT:
        raise ck.error(spath, f"model.input_shape {list(dims)} has {math.prod(dims)} values per "
                              "sample; that is too large")
    layers = section["layers"]
    lpath = path + ("layers",)
    if not isinstance(layers, list):
        raise ck.error(lpath, f"model.layers must be a list of layers, got {shown(layers)}",
                       hint="each item: - {type: conv2d, ...}")
    if not layers:
        raise ck.error(lpath, "model.layers is empty", hint="add at least one layer")
    for i, entry in enumerate(layers):
        try:
            _no_huge_ints(ck, lpath + (i,), entry)
        except ConfigError as err:
            raise err.located(layer=_entry_label(i, entry)) from None
    for key in ("blocks", "scale"):
        _no_huge_ints(ck, path + (key,), section.get(key))
    # Blocks, repeats and scale become one flat list of entries here; the entries are checked
    # and resolved into LayerSpecs with the layers (_check_layers).
    flat = Expander(ck, section.get("blocks"), section.get("scale")).expand(layers)
    return ModelConfig(input_shape=dims, layers=tuple(flat))


def _no_huge_ints(ck: Checker, path, value) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _no_huge_ints(ck, path + (k,), v)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _no_huge_ints(ck, path + (i,), v)
    elif is_int(value) and abs(value) > MAX_INT:
        raise ck.error(path, f"{ck.dotted(path[-1:]) if path else 'value'} is too large: "
                             f"{shown(value)} (at most {MAX_INT})")


def _data(section, ck: Checker) -> DataConfig:
    path = ("data",)
    section = {} if section is None else section
    ck.mapping(path, section, _field_names(DataConfig))
    values = ck.fields(DataConfig, path, section, skip=("dataset",))
    if "path" in section:
        values["path"] = _data_path(section["path"], ck, path + ("path",))
    source = values.get("path")
    if "dataset" in section:
        values["dataset"] = ck.apply(_field_rule(DataConfig, "dataset"), path + ("dataset",),
                                     section["dataset"])
        if values["dataset"] is not None and source is not None:
            raise ck.error(path + ("dataset",), "give data.dataset or data.path, not both",
                           hint="set dataset: null to read data.path")
    elif source is not None:
        values["dataset"] = None
    if values.get("dataset", DataConfig.dataset) is None and source is None:
        raise ck.error(path, "data needs a dataset or a path",
                       hint=f"dataset: one of {', '.join(DATASETS)}")
    if section.get("augment") is not None:
        apath = path + ("augment",)
        aug = ck.mapping(apath, section["augment"], _field_names(AugmentConfig))
        values["augment"] = AugmentConfig(**ck.fields(AugmentConfig, apath, aug))
    return DataConfig(**values)


def _data_path(src, ck: Checker, path):
    if isinstance(src, list):
        if not src or len(src) > 2:
            raise ck.error(path, f"data.path must be a path or a pair of paths, got {shown(src)}")
        return tuple(ck.apply(STRING, path + (i,), item) for i, item in enumerate(src))
    return ck.apply(_field_rule(DataConfig, "cache_dir"), path, src)  # a string or null


def _field_rule(cls, name) -> Rule:
    return next(f.metadata["rule"] for f in dataclasses.fields(cls) if f.name == name)


def _train(section, ck: Checker) -> TrainConfig:
    path = ("train",)
    section = {} if section is None else section
    ck.mapping(path, section, _field_names(TrainConfig))
    values = ck.fields(TrainConfig, path, section)
    opt = values.get("optimizer", TrainConfig.optimizer)
    if values.get("lr") is None:
        values["lr"] = DEFAULT_LR[opt]
    if values.get("weight_decay") is None:
        values["weight_decay"] = DEFAULT_WEIGHT_DECAY[opt]
    if values.get("nesterov") and (opt != "sgd" or values.get("momentum", 0.0) <= 0):
        raise ck.error(path + ("nesterov",), "nesterov needs optimizer: sgd with momentum > 0",
                       hint="set momentum: 0.9")
    if "momentum" in section and opt != "sgd" and values["momentum"] != 0:
        raise ck.error(path + ("momentum",), f"momentum applies to optimizer sgd, not {opt}",
                       hint=f"{opt} has betas: [0.9, 0.999] instead; remove momentum")
    if "betas" in section:
        values["betas"] = _betas(section["betas"], ck, path + ("betas",))
    if "lr_schedule" in section:
        values["lr_schedule"] = _schedule(section["lr_schedule"], ck,
                                          values.get("epochs", TrainConfig.epochs))
    if section.get("early_stopping") is not None:
        epath = path + ("early_stopping",)
        es = ck.mapping(epath, section["early_stopping"], _field_names(EarlyStoppingConfig))
        values["early_stopping"] = EarlyStoppingConfig(**ck.fields(EarlyStoppingConfig, epath,
                                                                   es))
    if section.get("init_from") is not None:
        values["init_from"] = _init_from(section["init_from"], ck, path + ("init_from",))
    return TrainConfig(**values)


def _init_from(section, ck: Checker, path) -> InitFromConfig:
    ck.mapping(path, section, _field_names(InitFromConfig), required=("source",))
    values = ck.fields(InitFromConfig, path, section)
    for key in ("freeze", "reinit"):
        names = section.get(key, [])
        if not isinstance(names, list):
            raise ck.error(path + (key,), f"train.init_from.{key} must be a list of layer "
                                          f"names, got {shown(names)}")
        values[key] = tuple(ck.apply(STRING, path + (key, i), n) for i, n in enumerate(names))
    return InitFromConfig(**values)


def _betas(betas, ck: Checker, path) -> tuple[float, float]:
    if not isinstance(betas, list) or len(betas) != 2:
        raise ck.error(path, f"train.betas must be [beta1, beta2], got {shown(betas)}")
    return tuple(ck.apply(BETA, path + (i,), b) for i, b in enumerate(betas))


def _schedule(spec, ck: Checker, epochs: int) -> ScheduleConfig:
    path = ("train", "lr_schedule")
    kinds = ScheduleConfig.KEYS
    type_rule = _field_rule(ScheduleConfig, "type")
    if spec is None:
        spec = "constant"
    if isinstance(spec, str):
        spec = {"type": ck.apply(type_rule, path, spec)}
    elif isinstance(spec, dict):
        ck.mapping(path, spec, _field_names(ScheduleConfig))
    else:
        raise ck.error(path, f"train.lr_schedule must be a name ({', '.join(kinds)}) or a "
                             f"mapping with type:, got {shown(spec)}")
    kind = ck.apply(type_rule, path + ("type",), spec.get("type", "constant"))
    values = {"type": kind}
    for key, default in kinds[kind].items():
        if key == "milestones":
            values[key] = _milestones(spec.get(key), ck, path)
        elif key in spec:
            values[key] = ck.apply(_field_rule(ScheduleConfig, key), path + (key,), spec[key])
        elif default is None:
            what = " (epochs between decays)" if key == "step_size" else ""
            example = "step_size: 5" if key == "step_size" else "gamma: 0.9"
            raise ck.error(path, f"lr_schedule {kind} needs {key}{what}",
                           hint=f"e.g. {example}", key=key)
        else:
            values[key] = default
    values["warmup_epochs"] = ck.apply(_field_rule(ScheduleConfig, "warmup_epochs"),
                                       path + ("warmup_epochs",), spec.get("warmup_epochs", 0))
    if 0 < values["warmup_epochs"] >= epochs:
        raise ck.error(path + ("warmup_epochs",), f"warmup_epochs ({values['warmup_epochs']}) "
                                                  f"must be less than train.epochs ({epochs})")
    unused = sorted(set(spec) - set(values))
    if unused:
        raise ck.error(path + (unused[0],), f"{unused[0]!r} does not apply to lr_schedule {kind}")
    return ScheduleConfig(**values)


def _milestones(ms, ck: Checker, path) -> tuple[int, ...]:
    mpath = path + ("milestones",)
    if not isinstance(ms, list) or not ms:
        raise ck.error(mpath, f"lr_schedule multistep needs milestones: a list of epochs, "
                              f"got {shown(ms)}", hint="e.g. milestones: [10, 20]")
    out = tuple(ck.apply(POSITIVE_INT, mpath + (i,), m) for i, m in enumerate(ms))
    if list(out) != sorted(set(out)):
        raise ck.error(mpath, f"milestones must increase, got {ms}")
    return out


# ---------------------------------------------------------------- layers and shapes

def _check_layers(checked: CheckedConfig, ck: Checker) -> None:
    """Construct every layer (no weights) and walk output shapes through the graph; collect
    drop and unused-output warnings. ``model.layers`` holds the flat entries (``graph``)."""
    from cnncli.nn import layers as _layers  # noqa: F401  (fills the registry)
    from cnncli.nn.model import _assign_names, is_multi_input, layer_sources, make_layers

    model = checked.run.model
    flat = list(model.layers)
    specs = []
    seen_names: dict = {}
    counts = []
    for i, fe in enumerate(flat):
        entry, epath = fe.entry, fe.path
        name = entry.get("name") if isinstance(entry, dict) else None
        label = _entry_label(i, entry)
        try:
            made = make_layers(entry)
        except ConfigError as err:
            raise _locate_layer_error(err, ck, fe, label) from None
        except (TypeError, ValueError, OverflowError, ArithmeticError) as err:
            raise ck.error(epath + ("type",), f"invalid hyperparameters ({err})",
                           layer=label) from None
        if isinstance(name, str):
            if name in seen_names:
                raise ck.error(epath + ("name",), f"two layers are named {name!r} (layers "
                                                  f"{seen_names[name] + 1} and {i + 1})",
                               hint="names must be unique", layer=label)
            seen_names[name] = i
        if fe.refs is not None and len(fe.refs) > 1 and not is_multi_input(made[0]):
            raise ck.error(epath + ("from",), f"{made[0].type_name} takes one input, got "
                                              f"{len(fe.refs)}", layer=label,
                           hint="only add and concat take several")
        specs.append(_layer_spec(entry, fe.refs))
        checked.layers.extend(made)
        checked.labels.extend([label] * len(made))
        checked.entry_index.extend([i] * len(made))
        counts.append(len(made))
    checked.run = checked.run.replace(model=dataclasses.replace(model, layers=tuple(specs)))
    try:
        _assign_names(checked.layers)
    except ConfigError as err:
        raise err.located(file=checked.file) from None

    checked.sources = layer_sources([fe.refs for fe in flat], counts)
    checked.shapes = [tuple(model.input_shape)]
    warned = set()
    for layer, label, i, src in zip(checked.layers, checked.labels, checked.entry_index,
                                    checked.sources, strict=True):
        fe = flat[i]
        epath = fe.path
        shape = ([checked.shapes[s] for s in src] if is_multi_input(layer)
                 else checked.shapes[src[0]])
        try:
            out = tuple(int(s) for s in layer.output_shape(shape))
        except ConfigError as err:   # at the key it names (or its alias) if written, else type:
            written = [fe.key_paths.get(k, epath + (k,))
                       for k in (err.key, *(a for a, t in layer.aliases.items()
                                            if t == err.key))]
            at = next((w for w in written if w in ck.locations), epath + ("type",))
            file, line, col = ck.position(at)
            raise err.located(file=file, line=line, column=col, layer=label) from None
        except (TypeError, ValueError, OverflowError, ArithmeticError) as err:
            raise ck.error(epath + ("type",), f"cannot take input shape {list(shape)} ({err})",
                           layer=label) from None
        if not out or any(s < 1 for s in out):
            raise ck.error(epath + ("type",), f"output shape {list(out)} from input "
                                              f"{list(shape)} is empty", layer=label)
        drop = None if is_multi_input(layer) else _dropped(layer, shape)
        if drop and i not in warned:
            warned.add(i)
            checked.warnings.append(f"{checked.where(_warning_path(ck, epath))}{label}: "
                                    f"{drop}")
        checked.shapes.append(out)
    for i in unused_outputs(flat):
        checked.warnings.append(f"{checked.where(flat[i].path)}{_entry_label(i, flat[i].entry)}"
                                ": its output is not used (no later layer reads it and it is "
                                "not the last layer)")


def _layer_spec(entry: dict, refs=None) -> LayerSpec:
    """A valid layer entry resolved: canonical type and keys, every default written out."""
    from cnncli.nn.layers.base import hyperparameters
    from cnncli.nn.registry import layer_class

    cls = layer_class(entry["type"])
    given = {cls.aliases.get(key, key): value for key, value in entry.items()}
    params = {key: given[key] if key in given else default
              for key, default in hyperparameters(cls).items()}
    activation = entry.get("activation") if "activation" not in params else None
    return LayerSpec(type=cls.type_name, name=entry.get("name"), params=frozen_mapping(params),
                     activation=activation, inputs=None if refs is None else tuple(refs))


def _entry_label(i: int, entry) -> str:
    """``layer 3 'conv2' (conv2d)`` for config entry ``i`` (0-based), whatever it holds."""
    from cnncli.nn.model import layer_label

    def text(key):
        value = entry.get(key) if isinstance(entry, dict) else None
        return value if isinstance(value, str) else None

    return layer_label(i + 1, text("name"), text("type"))


def _warning_path(ck: Checker, epath) -> tuple:
    """Where a layer's warning points: its ``type:``, unless a merge key (``<<: *conv``) brought
    that in from an anchor's earlier line; then the entry's own ``stride:`` or the entry."""
    type_line = find_position(ck.locations, epath + ("type",))[0]
    entry_line = find_position(ck.locations, epath)[0]
    if type_line is None or entry_line is None or type_line >= entry_line:
        return epath + ("type",)
    stride_line = find_position(ck.locations, epath + ("stride",))[0]
    return epath + ("stride",) if stride_line is not None and stride_line >= entry_line \
        else epath


def _dropped(layer, shape) -> str | None:
    """Text for input rows/columns that no window reaches, or None.

    The last ``(size + 2p - d(k-1) - 1) mod s`` padded rows are never covered; only those
    beyond the padding at the end are real pixels (a ResNet stem's 7x7/2 conv with padding 3
    on 224 leaves out a row of zero padding only, and gets no warning). A window narrower
    than its stride (a ResNet shortcut's 1x1 stride-2 conv) skips pixels between windows by
    design, so the last one left out is no surprise: no warning along that axis either.
    """
    if len(shape) != 3 or getattr(layer, "ceil_mode", False):
        return None
    try:
        geom = layer.geometry(shape)
    except Exception:  # noqa: BLE001 - geometry is advisory here; shape errors came earlier
        return None
    if geom is None:
        return None
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = geom
    sides = (layer.padding_sides(shape) if hasattr(layer, "padding_sides")
             else ((ph, ph), (pw, pw)))
    parts = []
    for size, k, s, (lo, hi), d, axis in ((shape[1], kh, sh, sides[0], dh, "row"),
                                          (shape[2], kw, sw, sides[1], dw, "column")):
        real = (size + lo + hi - d * (k - 1) - 1) % s - hi
        if real > 0 and d * (k - 1) + 1 >= s:
            parts.append(f"{real} {axis}{'s' if real > 1 else ''}")
    if not parts:
        return None
    return (f"input {shape[1]}x{shape[2]} with kernel {kh}x{kw}, stride {sh}x{sw}, padding "
            f"{ph}x{pw} drops the last {' and '.join(parts)} of input pixels "
            "((size + 2*padding - dilation*(kernel-1) - 1) mod stride is more than the padding)")


def _locate_layer_error(err: ConfigError, ck: Checker, fe, label) -> ConfigError:
    entry, epath = fe.entry, fe.path
    key = err.key
    if isinstance(entry, dict) and key is not None and key not in entry:
        from cnncli.nn.registry import LAYERS, canonical_type
        try:
            cls = LAYERS[canonical_type(entry.get("type"))]
            key = next((a for a, t in cls.aliases.items() if t == key and a in entry), key)
        except ConfigError:
            pass
    path = fe.key_paths.get(key, epath + (key,)) if key is not None else epath
    file, line, col = ck.position(path)
    return err.located(file=file, line=line, column=col, layer=label)


# ---------------------------------------------------------------- entry points

def check_text(text: str, file="<config>", *, input_shape=None, sets=()) -> CheckedConfig:
    """Validate YAML text fully (sections, layers, shapes); ``input_shape`` and ``sets``
    (``KEY.PATH=VALUE`` texts, see ``overrides``) override the file."""
    data, locations = parse_yaml(text, file)
    stem = Path(str(file)).stem if file != "<config>" else "run"
    default_name = stem if RUN_NAME_RE.match(stem or "") else "run"
    return check_data(data, file=file, locations=locations, default_name=default_name,
                      input_shape=input_shape, sets=sets)


def check_data(data, *, file="<config>", locations=None, default_name="run",
               input_shape=None, sets=()) -> CheckedConfig:
    """Validate already-parsed config data (e.g. a checkpoint's resolved config), with the
    ``KEY.PATH=VALUE`` overrides ``sets`` applied first."""
    if isinstance(data, RunConfig):
        data = data.to_dict()
    locations = locations if locations is not None else {}
    data = apply_overrides(data, locations, sets)
    ck = Checker(file, locations)
    if isinstance(data, dict) and "model" in data and input_shape is not None:
        data = dict(data)
        data["model"] = dict(data["model"]) if isinstance(data["model"], dict) else data["model"]
        if isinstance(data["model"], dict):
            data["model"]["input_shape"] = list(input_shape)
    checked = CheckedConfig(run=_run(data, ck, default_name), file=str(file),
                            locations=locations)
    _check_layers(checked, ck)
    return checked


def check_config(path, *, input_shape=None, sets=()) -> CheckedConfig:
    """Read and validate a config file (with ``--set`` overrides ``sets``); errors carry
    file:line:col, or the ``--set`` text of an overridden value."""
    return check_text(read_config_text(path), str(path), input_shape=input_shape, sets=sets)


def resolve_config(source) -> RunConfig:
    """The resolved ``RunConfig`` of a YAML file path, of a plain dict, or of a RunConfig."""
    if isinstance(source, RunConfig):
        return source
    if isinstance(source, dict):
        return check_data(source).run
    return check_config(source).run


def load_config(source) -> dict:
    """The plain resolved config (defaults filled) of a YAML file path, or of a dict."""
    return resolve_config(source).to_dict()


def load_config_text(text: str, file="<config>") -> dict:
    """The plain resolved config of YAML text."""
    return check_text(text, file).config


def dump_config(cfg) -> str:
    """A resolved config (RunConfig or dict) as YAML text, section order kept;
    ``load_config_text`` reads it back."""
    if isinstance(cfg, RunConfig):
        cfg = cfg.to_dict()
    return yaml.safe_dump(plain(cfg), sort_keys=False, default_flow_style=None, width=100)
