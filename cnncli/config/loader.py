"""YAML config -> a validated, resolved dict, with file:line:col on every error.

The YAML is composed into nodes (not loaded straight to Python) so each key and value keeps
its position. ``check_config`` validates the whole file (keys, types, ranges, layers, shapes)
without allocating any weights; ``load_config`` returns just the resolved dict.
"""

from __future__ import annotations

import copy
import difflib
import math
import numbers
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from cnncli.errors import ConfigError

MAX_INT = 2**31 - 1           # larger ints are typos (or fuzz) and would overflow NumPy shapes
MAX_VALUES = 100_000          # YAML nodes per file: stops alias "billion laughs" expansion
MAX_DEPTH = 64                # nesting depth of mappings/lists
MAX_FILE_BYTES = 10 * 2**20   # a config is a few KB; anything this big is the wrong file

DATASETS = ("digits", "mnist", "fashion-mnist", "cifar10")
OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("constant", "step", "multistep", "cosine", "exponential")
DEFAULT_LR = {"sgd": 0.01, "adam": 0.001, "adamw": 0.001}

DEFAULTS = {
    "data": {
        "dataset": "digits", "path": None, "layout": None, "val_split": 0.1,
        "normalize": "scale", "augment": {"random_crop": 0, "horizontal_flip": False},
        "cache_dir": None,
    },
    "train": {
        "epochs": 10, "batch_size": 64, "optimizer": "sgd", "lr": None, "momentum": 0.0,
        "nesterov": False, "weight_decay": None, "betas": [0.9, 0.999], "eps": 1.0e-8,
        "lr_schedule": "constant", "grad_clip_norm": None, "early_stopping": None,
        "label_smoothing": 0.0,
    },
}
# Which section a bare key in a library error (DataError(key="path")) belongs to.
_SECTION_OF_KEY = {**{key: "data" for key in DEFAULTS["data"]},
                   **{key: "train" for key in DEFAULTS["train"]},
                   "input_shape": "model", "layers": "model"}
SCHEDULE_KEYS = ("type", "step_size", "gamma", "milestones", "eta_min", "warmup_epochs")
EARLY_STOPPING_DEFAULTS = {"patience": 5, "metric": "val_accuracy", "min_delta": 0.0}


# ---------------------------------------------------------------- results

@dataclass
class CheckedConfig:
    """A validated config: the resolved dict, where each key was, and the unbuilt layers."""

    config: dict
    file: str
    locations: dict = field(default_factory=dict)
    layers: list = field(default_factory=list)     # Layer objects, constructed, never built
    labels: list = field(default_factory=list)     # "layer 3 'conv2' (conv2d)" per layer
    entry_index: list = field(default_factory=list)  # config entry (0-based) of each layer
    shapes: list = field(default_factory=list)     # input shape, then each layer's output
    warnings: list = field(default_factory=list)   # one line each, already located

    def where(self, path) -> str:
        line, col = _find(self.locations, path)
        return _prefix(self.file, line, col)

    def locate(self, err):
        """Point an unlocated error that names a config key (``key="path"``) at that key."""
        section = _SECTION_OF_KEY.get(err.key) if isinstance(err.key, str) else None
        if err.file is None and section is not None:
            line, col = _find(self.locations, (section, err.key))
            err.located(file=self.file, line=line, column=col)
        return err


# ---------------------------------------------------------------- reading

def read_config_text(path) -> str:
    """The file's text; missing, unreadable, empty or non-UTF-8 files raise ConfigError."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError("is a directory, not a config file", file=path)
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            raise ConfigError(f"file is {path.stat().st_size} bytes; a config should be a small "
                              "YAML file", file=path, hint="is this the right file?")
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError("config file not found", file=path,
                          hint="check the path; example configs are in configs/") from None
    except OSError as err:
        raise ConfigError(f"cannot read config: {err.strerror}", file=path) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        before = raw[:err.start]
        line = before.count(b"\n") + 1
        col = err.start - (before.rfind(b"\n") + 1) + 1
        raise ConfigError(f"file is not UTF-8 text (byte 0x{raw[err.start]:02x})", file=path,
                          line=line, column=col, hint="save the file as UTF-8") from None
    return text.removeprefix("\ufeff")


def parse_yaml(text: str, file="<config>") -> tuple[object, dict]:
    """YAML text -> (plain Python data, {path tuple: (line, col)}), 1-based positions.

    A mapping key's path points at the key; a list item's path at the item.
    """
    if not text.strip() or all(not ln.strip() or ln.lstrip().startswith("#")
                               for ln in text.splitlines()):
        raise ConfigError("config file is empty", file=file,
                          hint="it needs at least model: input_shape and layers")
    loader = None
    try:
        loader = yaml.SafeLoader(text)
        root = loader.get_single_node()
    except yaml.MarkedYAMLError as err:
        raise _yaml_error(err, file) from None
    except yaml.reader.ReaderError as err:
        line, col = _line_col(text, err.position)
        raise ConfigError(f"YAML error: unacceptable character #x{err.character:04x}"
                          if isinstance(err.character, int) else f"YAML error: {err.reason}",
                          file=file, line=line, column=col) from None
    except yaml.YAMLError as err:
        raise ConfigError(f"YAML error: {err}", file=file) from None
    except RecursionError:
        raise ConfigError(f"config is nested too deeply (more than {MAX_DEPTH} levels)",
                          file=file) from None
    if root is None or (isinstance(root, yaml.ScalarNode) and root.tag.endswith(":null")):
        if loader is not None:
            loader.dispose()
        raise ConfigError("config file is empty", file=file,
                          hint="it needs at least model: input_shape and layers")
    locations: dict = {}
    builder = _Builder(loader, file, locations)
    try:
        data = builder.value(root, ())
    finally:
        loader.dispose()
    return data, locations


_MAP_TAG = "tag:yaml.org,2002:map"
_SEQ_TAG = "tag:yaml.org,2002:seq"
_MERGE_TAG = "tag:yaml.org,2002:merge"


class _Builder:
    """Turns YAML nodes into plain data, recording positions and rejecting duplicates."""

    def __init__(self, loader, file, locations):
        self.loader, self.file, self.locations = loader, file, locations
        self.count = 0

    def value(self, node, path):
        self.count += 1
        line, col = node.start_mark.line + 1, node.start_mark.column + 1
        if self.count > MAX_VALUES:
            raise ConfigError(f"config is too large (more than {MAX_VALUES} values; "
                              "are YAML aliases expanding?)", file=self.file, line=line,
                              column=col)
        if len(path) > MAX_DEPTH:
            raise ConfigError(f"config is nested too deeply (more than {MAX_DEPTH} levels)",
                              file=self.file, line=line, column=col)
        self.locations.setdefault(path, (line, col))
        if (isinstance(node, (yaml.MappingNode, yaml.SequenceNode))
                and node.tag not in (_MAP_TAG, _SEQ_TAG)):
            raise ConfigError(f"YAML tag {node.tag!r} is not allowed in a config",
                              file=self.file, line=line, column=col,
                              hint="use plain mappings, lists and values")
        if isinstance(node, yaml.MappingNode):
            out = {}
            merged = self.merged(node, path)
            for key_node, value_node in node.value:
                if key_node.tag == _MERGE_TAG:
                    continue
                key = self.scalar_key(key_node)
                kline, kcol = key_node.start_mark.line + 1, key_node.start_mark.column + 1
                if key in out:
                    first = self.locations.get(path + (key,), ("?", "?"))[0]
                    raise ConfigError(f"duplicate key {key!r} (first given on line {first})",
                                      file=self.file, line=kline, column=kcol,
                                      hint="give each key once")
                self.locations[path + (key,)] = (kline, kcol)
                out[key] = self.value(value_node, path + (key,))
            return {**{k: v for k, v in merged.items() if k not in out}, **out}
        if isinstance(node, yaml.SequenceNode):
            return [self.value(item, path + (i,)) for i, item in enumerate(node.value)]
        return self.scalar(node)

    def merged(self, node, path) -> dict:
        """Keys brought in by YAML merge keys (``<<: *defaults``); explicit keys win."""
        out = {}
        for key_node, value_node in node.value:
            if key_node.tag != _MERGE_TAG:
                continue
            sources = (value_node.value if isinstance(value_node, yaml.SequenceNode)
                       else [value_node])
            for source in sources:
                if not isinstance(source, yaml.MappingNode):
                    raise ConfigError("'<<' must merge a mapping (e.g. <<: *defaults)",
                                      file=self.file, line=source.start_mark.line + 1,
                                      column=source.start_mark.column + 1)
                for key, value in self.value(source, path).items():
                    out.setdefault(key, value)
        return out

    def scalar(self, node):
        try:
            return self.loader.construct_object(node, deep=True)
        except yaml.MarkedYAMLError as err:
            raise _yaml_error(err, self.file) from None
        except (ValueError, TypeError, OverflowError) as err:
            raise ConfigError(f"cannot read value {node.value!r} ({err})", file=self.file,
                              line=node.start_mark.line + 1,
                              column=node.start_mark.column + 1) from None

    def scalar_key(self, node):
        line, col = node.start_mark.line + 1, node.start_mark.column + 1
        if not isinstance(node, yaml.ScalarNode):
            raise ConfigError("a key must be a plain name, not a list or mapping",
                              file=self.file, line=line, column=col)
        key = self.scalar(node)
        if not isinstance(key, str):
            hint = ("YAML reads yes/no/on/off as booleans; quote the key"
                    if isinstance(key, bool) else "keys are names such as 'kernel_size'")
            raise ConfigError(f"key {node.value!r} is not a name (read as {key!r})",
                              file=self.file, line=line, column=col, hint=hint)
        return key


def _yaml_error(err, file) -> ConfigError:
    mark = err.problem_mark or err.context_mark
    problem = err.problem or err.context or "invalid YAML"
    if err.context and err.problem:
        problem = f"{problem} ({err.context})"
    line, col = (mark.line + 1, mark.column + 1) if mark else (None, None)
    return ConfigError(f"YAML syntax error: {problem}", file=file, line=line, column=col)


def _line_col(text: str, position: int) -> tuple[int, int]:
    before = text[:position]
    return before.count("\n") + 1, position - (before.rfind("\n") + 1) + 1


def _find(locations: dict, path) -> tuple[int | None, int | None]:
    """Position of ``path``, or of its nearest located ancestor."""
    path = tuple(path)
    while True:
        if path in locations:
            return locations[path]
        if not path:
            return None, None
        path = path[:-1]


def _prefix(file, line, col) -> str:
    where = str(file)
    if line is not None:
        where += f":{line}"
        if col is not None:
            where += f":{col}"
    return where + ": "


# ---------------------------------------------------------------- validation helpers

class _Checker:
    """Type/range checks that raise ConfigError located at the offending key."""

    def __init__(self, file, locations):
        self.file, self.locations = file, locations

    def error(self, path, message, hint=None, layer=None) -> ConfigError:
        line, col = _find(self.locations, path)
        return ConfigError(message, file=self.file, line=line, column=col, hint=hint,
                           layer=layer, key=str(path[-1]) if path else None)

    @staticmethod
    def dotted(path) -> str:
        out = ""
        for part in path:
            out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
        return out

    def mapping(self, path, value, allowed, *, required=()) -> dict:
        name = self.dotted(path) or "the config"
        if not isinstance(value, dict):
            raise self.error(path, f"{name} must be a mapping of keys, got {_show(value)}")
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

    def integer(self, path, value, *, low=None, high=MAX_INT, null=False):
        if value is None and null:
            return None
        ok = isinstance(value, numbers.Integral) and not isinstance(value, bool)
        if ok and ((low is not None and value < low) or value > high):
            ok = False
        if not ok:
            rng = f" >= {low}" if low is not None else ""
            if high != MAX_INT:
                rng = f" in [{low}, {high}]"
            null_txt = " or null" if null else ""
            raise self.error(path, f"{self.dotted(path)} must be an int{rng}{null_txt}, "
                                   f"got {_show(value)}")
        return int(value)

    def number(self, path, value, *, low=None, high=None, low_open=False, high_open=False,
               null=False):
        if value is None and null:
            return None
        ok = (isinstance(value, numbers.Real) and not isinstance(value, bool)
              and math.isfinite(value))
        if ok and low is not None:
            ok = value > low if low_open else value >= low
        if ok and high is not None:
            ok = value < high if high_open else value <= high
        if not ok:
            if low is not None and high is not None:
                rng = (f" in {'(' if low_open else '['}{low}, {high}"
                       f"{')' if high_open else ']'}")
            elif low is not None:
                rng = f" {'>' if low_open else '>='} {low}"
            else:
                rng = ""
            null_txt = " or null" if null else ""
            raise self.error(path, f"{self.dotted(path)} must be a finite number{rng}"
                                   f"{null_txt}, got {_show(value)}")
        return float(value)

    def boolean(self, path, value):
        if not isinstance(value, bool):
            raise self.error(path, f"{self.dotted(path)} must be true or false, "
                                   f"got {_show(value)}")
        return value

    def choice(self, path, value, options, *, null=False):
        if value is None and null:
            return None
        if not isinstance(value, str) or value not in options:
            close = (difflib.get_close_matches(value, list(options), n=1)
                     if isinstance(value, str) else [])
            hint = f"did you mean '{close[0]}'?" if close else None
            opts = ", ".join(options) + (", null" if null else "")
            raise self.error(path, f"{self.dotted(path)} must be one of {opts}; "
                                   f"got {_show(value)}", hint=hint)
        return value

    def string(self, path, value, *, null=False):
        if value is None and null:
            return None
        if not isinstance(value, str) or not value:
            null_txt = " or null" if null else ""
            raise self.error(path, f"{self.dotted(path)} must be a non-empty string"
                                   f"{null_txt}, got {_show(value)}")
        return value


def _show(value) -> str:
    """A value as the user would recognise it, cut short if long."""
    from cnncli.nn.layers.base import shown

    return shown(value)


# ---------------------------------------------------------------- sections

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def _resolve(data, ck: _Checker, default_name: str) -> dict:
    ck.mapping((), data, ("name", "seed", "model", "data", "train"), required=("model",))
    name = data.get("name", default_name)
    if "name" in data:
        ck.string(("name",), name)
    if not isinstance(name, str) or not _NAME_RE.match(name) or len(name) > 100:
        raise ck.error(("name",), f"name must be a plain run name (letters, digits, . _ -), "
                                  f"got {_show(name)}", hint="it names the runs/<name>/ folder")
    seed = ck.integer(("seed",), data.get("seed", 0), low=0, high=2**32 - 1)
    return {"name": name, "seed": seed, "model": _model(data["model"], ck),
            "data": _data(data.get("data", {}), ck), "train": _train(data.get("train", {}), ck)}


def _model(section, ck: _Checker) -> dict:
    path = ("model",)
    ck.mapping(path, section, ("input_shape", "layers"), required=("input_shape", "layers"))
    shape = section["input_shape"]
    spath = path + ("input_shape",)
    if not isinstance(shape, list) or len(shape) not in (1, 3):
        raise ck.error(spath, f"model.input_shape must be [C, H, W] (or [F]), got {_show(shape)}")
    dims = [ck.integer(spath + (i,), v, low=1) for i, v in enumerate(shape)]
    if math.prod(dims) > MAX_INT:
        raise ck.error(spath, f"model.input_shape {dims} has {math.prod(dims)} values per "
                              "sample; that is too large")
    layers = section["layers"]
    lpath = path + ("layers",)
    if not isinstance(layers, list):
        raise ck.error(lpath, f"model.layers must be a list of layers, got {_show(layers)}",
                       hint="each item: - {type: conv2d, ...}")
    if not layers:
        raise ck.error(lpath, "model.layers is empty", hint="add at least one layer")
    for i, entry in enumerate(layers):
        try:
            _no_huge_ints(ck, lpath + (i,), entry)
        except ConfigError as err:
            raise err.located(layer=_entry_label(i, entry)) from None
    return {"input_shape": dims, "layers": copy.deepcopy(layers)}


def _no_huge_ints(ck: _Checker, path, value) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _no_huge_ints(ck, path + (k,), v)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _no_huge_ints(ck, path + (i,), v)
    elif isinstance(value, numbers.Integral) and not isinstance(value, bool):
        if abs(value) > MAX_INT:
            raise ck.error(path, f"{ck.dotted(path[-1:]) if path else 'value'} is too large: "
                                 f"{_show(value)} (at most {MAX_INT})")


def _data(section, ck: _Checker) -> dict:
    path = ("data",)
    section = {} if section is None else section
    ck.mapping(path, section, tuple(DEFAULTS["data"]))
    out = copy.deepcopy(DEFAULTS["data"])
    p = lambda key: path + (key,)  # noqa: E731
    if "path" in section:
        src = section["path"]
        if isinstance(src, list):
            if not src or len(src) > 2:
                raise ck.error(p("path"), f"data.path must be a path or a pair of paths, "
                                          f"got {_show(src)}")
            for i, item in enumerate(src):
                ck.string(p("path") + (i,), item)
        else:
            ck.string(p("path"), src, null=True)
        out["path"] = src
    if "dataset" in section:
        out["dataset"] = ck.choice(p("dataset"), section["dataset"], DATASETS, null=True)
        if out["dataset"] is not None and out["path"] is not None:
            raise ck.error(p("dataset"), "give data.dataset or data.path, not both",
                           hint="set dataset: null to read data.path")
    elif out["path"] is not None:
        out["dataset"] = None
    if out["dataset"] is None and out["path"] is None:
        raise ck.error(path, "data needs a dataset or a path",
                       hint=f"dataset: one of {', '.join(DATASETS)}")
    if "layout" in section:
        out["layout"] = ck.choice(p("layout"), section["layout"], ("NCHW", "NHWC"), null=True)
    if "val_split" in section:
        out["val_split"] = ck.number(p("val_split"), section["val_split"], low=0, high=1,
                                     high_open=True)
    if "normalize" in section:
        out["normalize"] = ck.choice(p("normalize"), section["normalize"],
                                     ("scale", "standardize", "none"))
    if "augment" in section and section["augment"] is not None:
        aug = ck.mapping(p("augment"), section["augment"], ("random_crop", "horizontal_flip"))
        apath = p("augment")
        if "random_crop" in aug:
            out["augment"]["random_crop"] = ck.integer(apath + ("random_crop",),
                                                       aug["random_crop"], low=0, high=4096)
        if "horizontal_flip" in aug:
            out["augment"]["horizontal_flip"] = ck.boolean(apath + ("horizontal_flip",),
                                                           aug["horizontal_flip"])
    if "cache_dir" in section:
        out["cache_dir"] = ck.string(p("cache_dir"), section["cache_dir"], null=True)
    return out


def _train(section, ck: _Checker) -> dict:
    path = ("train",)
    section = {} if section is None else section
    ck.mapping(path, section, tuple(DEFAULTS["train"]))
    out = copy.deepcopy(DEFAULTS["train"])
    p = lambda key: path + (key,)  # noqa: E731
    get = section.get
    if "epochs" in section:
        out["epochs"] = ck.integer(p("epochs"), get("epochs"), low=1, high=1_000_000)
    if "batch_size" in section:
        out["batch_size"] = ck.integer(p("batch_size"), get("batch_size"), low=1,
                                       high=1_000_000)
    if "optimizer" in section:
        out["optimizer"] = ck.choice(p("optimizer"), get("optimizer"), OPTIMIZERS)
    opt = out["optimizer"]
    lr = ck.number(p("lr"), get("lr"), low=0, low_open=True, null=True)
    out["lr"] = DEFAULT_LR[opt] if lr is None else lr
    if "momentum" in section:
        out["momentum"] = ck.number(p("momentum"), get("momentum"), low=0, high=1,
                                    high_open=True)
    if "nesterov" in section:
        out["nesterov"] = ck.boolean(p("nesterov"), get("nesterov"))
    if out["nesterov"] and (opt != "sgd" or out["momentum"] <= 0):
        raise ck.error(p("nesterov"), "nesterov needs optimizer: sgd with momentum > 0",
                       hint="set momentum: 0.9")
    wd = ck.number(p("weight_decay"), get("weight_decay"), low=0, null=True)
    out["weight_decay"] = (0.01 if opt == "adamw" else 0.0) if wd is None else wd
    if "betas" in section:
        betas = get("betas")
        if not isinstance(betas, list) or len(betas) != 2:
            raise ck.error(p("betas"), f"train.betas must be [beta1, beta2], got {_show(betas)}")
        out["betas"] = [ck.number(p("betas") + (i,), b, low=0, high=1, high_open=True)
                        for i, b in enumerate(betas)]
    if "eps" in section:
        out["eps"] = ck.number(p("eps"), get("eps"), low=0, low_open=True)
    if "lr_schedule" in section:
        out["lr_schedule"] = _schedule(get("lr_schedule"), ck, out["epochs"])
    else:
        out["lr_schedule"] = {"type": "constant", "warmup_epochs": 0}
    out["grad_clip_norm"] = ck.number(p("grad_clip_norm"), get("grad_clip_norm"), low=0,
                                      low_open=True, null=True)
    if get("early_stopping") is not None:
        es = ck.mapping(p("early_stopping"), get("early_stopping"),
                        tuple(EARLY_STOPPING_DEFAULTS))
        epath = p("early_stopping")
        out["early_stopping"] = {
            "patience": ck.integer(epath + ("patience",),
                                   es.get("patience", EARLY_STOPPING_DEFAULTS["patience"]),
                                   low=1),
            "metric": ck.choice(epath + ("metric",),
                                es.get("metric", EARLY_STOPPING_DEFAULTS["metric"]),
                                ("val_accuracy", "val_loss")),
            "min_delta": ck.number(epath + ("min_delta",),
                                   es.get("min_delta", EARLY_STOPPING_DEFAULTS["min_delta"]),
                                   low=0),
        }
    if "label_smoothing" in section:
        out["label_smoothing"] = ck.number(p("label_smoothing"), get("label_smoothing"), low=0,
                                           high=1, high_open=True)
    return out


def _schedule(spec, ck: _Checker, epochs: int) -> dict:
    path = ("train", "lr_schedule")
    if spec is None:
        spec = "constant"
    if isinstance(spec, str):
        spec = {"type": ck.choice(path, spec, SCHEDULES)}
    elif isinstance(spec, dict):
        ck.mapping(path, spec, SCHEDULE_KEYS)
    else:
        raise ck.error(path, f"train.lr_schedule must be a name ({', '.join(SCHEDULES)}) or a "
                             f"mapping with type:, got {_show(spec)}")
    p = lambda key: path + (key,)  # noqa: E731
    kind = ck.choice(p("type"), spec.get("type", "constant"), SCHEDULES)
    out = {"type": kind}
    if kind == "step":
        if "step_size" not in spec:
            raise ck.error(path, "lr_schedule step needs step_size (epochs between decays)",
                           hint="e.g. step_size: 5")
        out["step_size"] = ck.integer(p("step_size"), spec["step_size"], low=1)
    if kind == "multistep":
        ms = spec.get("milestones")
        if not isinstance(ms, list) or not ms:
            raise ck.error(p("milestones") if "milestones" in spec else path,
                           f"lr_schedule multistep needs milestones: a list of epochs, "
                           f"got {_show(ms)}", hint="e.g. milestones: [10, 20]")
        out["milestones"] = [ck.integer(p("milestones") + (i,), m, low=1)
                             for i, m in enumerate(ms)]
        if out["milestones"] != sorted(set(out["milestones"])):
            raise ck.error(p("milestones"), f"milestones must increase, got {ms}")
    if kind in ("step", "multistep", "exponential"):
        if kind == "exponential" and "gamma" not in spec:
            raise ck.error(path, "lr_schedule exponential needs gamma", hint="e.g. gamma: 0.9")
        out["gamma"] = ck.number(p("gamma"), spec.get("gamma", 0.1), low=0, low_open=True)
    if kind == "cosine":
        out["eta_min"] = ck.number(p("eta_min"), spec.get("eta_min", 0.0), low=0)
    out["warmup_epochs"] = ck.integer(p("warmup_epochs"), spec.get("warmup_epochs", 0), low=0)
    if out["warmup_epochs"] >= epochs and out["warmup_epochs"] > 0:
        raise ck.error(p("warmup_epochs"), f"warmup_epochs ({out['warmup_epochs']}) must be "
                                           f"less than train.epochs ({epochs})")
    unused = sorted(set(spec) - set(out) - {"type"})
    if unused:
        raise ck.error(p(unused[0]), f"{unused[0]!r} does not apply to lr_schedule {kind}")
    return out


# ---------------------------------------------------------------- layers and shapes

def _check_layers(checked: CheckedConfig, ck: _Checker) -> None:
    """Construct every layer (no weights) and walk output shapes; collect drop warnings."""
    from cnncli.nn import layers as _layers  # noqa: F401  (fills the registry)
    from cnncli.nn.model import _assign_names, make_layers

    model = checked.config["model"]
    lpath = ("model", "layers")
    seen_names: dict = {}
    for i, entry in enumerate(model["layers"]):
        epath = lpath + (i,)
        name = entry.get("name") if isinstance(entry, dict) else None
        label = _entry_label(i, entry)
        try:
            made = make_layers(entry)
        except ConfigError as err:
            raise _locate_layer_error(err, ck, epath, entry, label) from None
        except (TypeError, ValueError, OverflowError, ArithmeticError) as err:
            raise ck.error(epath + ("type",), f"invalid hyperparameters ({err})",
                           layer=label) from None
        if isinstance(name, str):
            if name in seen_names:
                raise ck.error(epath + ("name",), f"two layers are named {name!r} (layers "
                                                  f"{seen_names[name] + 1} and {i + 1})",
                               hint="names must be unique", layer=label)
            seen_names[name] = i
        model["layers"][i] = _filled_entry(entry)
        checked.layers.extend(made)
        checked.labels.extend([label] * len(made))
        checked.entry_index.extend([i] * len(made))
    try:
        _assign_names(checked.layers)
    except ConfigError as err:
        raise err.located(file=checked.file) from None

    shape = tuple(model["input_shape"])
    checked.shapes = [shape]
    warned = set()
    for layer, label, i in zip(checked.layers, checked.labels, checked.entry_index, strict=True):
        epath = lpath + (i,)
        try:
            out = tuple(int(s) for s in layer.output_shape(shape))
        except ConfigError as err:   # at the key it names (or its alias) if written, else type:
            written = [epath + (k,) for k in (err.key, *(a for a, t in layer.aliases.items()
                                                          if t == err.key))]
            at = next((w for w in written if w in ck.locations), epath + ("type",))
            line, col = _find(ck.locations, at)
            raise err.located(file=ck.file, line=line, column=col, layer=label) from None
        except (TypeError, ValueError, OverflowError, ArithmeticError) as err:
            raise ck.error(epath + ("type",), f"cannot take input shape {list(shape)} ({err})",
                           layer=label) from None
        if not out or any(s < 1 for s in out):
            raise ck.error(epath + ("type",), f"output shape {list(out)} from input "
                                              f"{list(shape)} is empty", layer=label)
        drop = _dropped(layer, shape)
        if drop and i not in warned:
            warned.add(i)
            checked.warnings.append(f"{checked.where(epath + ('type',))}{label}: {drop}")
        checked.shapes.append(out)
        shape = out


def _filled_entry(entry: dict) -> dict:
    """A valid layer entry resolved: canonical type and keys, every default written out."""
    from cnncli.nn.layers.base import hyperparameters
    from cnncli.nn.registry import layer_class

    cls = layer_class(entry["type"])
    given = {cls.aliases.get(key, key): value for key, value in entry.items()}
    out = {"type": cls.type_name}
    if "name" in entry:
        out["name"] = entry["name"]
    for key, default in hyperparameters(cls).items():
        out[key] = given[key] if key in given else _plain(default)
    if "activation" in entry and "activation" not in out:
        out["activation"] = entry["activation"]
    return out


def _entry_label(i: int, entry) -> str:
    """``layer 3 'conv2' (conv2d)`` for config entry ``i`` (0-based), whatever it holds."""
    from cnncli.nn.model import layer_label

    def text(key):
        value = entry.get(key) if isinstance(entry, dict) else None
        return value if isinstance(value, str) else None

    return layer_label(i + 1, text("name"), text("type"))


def _dropped(layer, shape) -> str | None:
    """Text for rows/columns a strided window never reaches, or None."""
    if len(shape) != 3 or getattr(layer, "ceil_mode", False):
        return None
    try:
        geom = layer.geometry(shape)
    except Exception:  # noqa: BLE001 - geometry is advisory here; shape errors came earlier
        return None
    if geom is None:
        return None
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = geom
    parts = []
    for size, k, s, p, d, axis in ((shape[1], kh, sh, ph, dh, "row"),
                                   (shape[2], kw, sw, pw, dw, "column")):
        left = (size + 2 * p - d * (k - 1) - 1) % s
        if left:
            parts.append(f"{left} {axis}{'s' if left > 1 else ''}")
    if not parts:
        return None
    return (f"input {shape[1]}x{shape[2]} with kernel {kh}x{kw}, stride {sh}x{sw}, padding "
            f"{ph}x{pw} drops the last {' and '.join(parts)} "
            "(size + 2*padding - dilation*(kernel-1) - 1 is not divisible by the stride)")


def _locate_layer_error(err: ConfigError, ck: _Checker, epath, entry, label) -> ConfigError:
    key = err.key
    if isinstance(entry, dict) and key is not None and key not in entry:
        from cnncli.nn.registry import LAYERS, canonical_type
        try:
            cls = LAYERS[canonical_type(entry.get("type"))]
            key = next((a for a, t in cls.aliases.items() if t == key and a in entry), key)
        except ConfigError:
            pass
    path = epath + (key,) if key is not None else epath
    line, col = _find(ck.locations, path)
    return err.located(file=ck.file, line=line, column=col, layer=label)


# ---------------------------------------------------------------- entry points

def check_text(text: str, file="<config>", *, input_shape=None) -> CheckedConfig:
    """Validate YAML text fully (sections, layers, shapes); ``input_shape`` overrides the file."""
    data, locations = parse_yaml(text, file)
    stem = Path(str(file)).stem if file != "<config>" else "run"
    default_name = stem if _NAME_RE.match(stem or "") else "run"
    return check_data(data, file=file, locations=locations, default_name=default_name,
                      input_shape=input_shape)


def check_data(data, *, file="<config>", locations=None, default_name="run",
               input_shape=None) -> CheckedConfig:
    """Validate already-parsed config data (e.g. a checkpoint's resolved config)."""
    locations = locations or {}
    ck = _Checker(file, locations)
    if isinstance(data, dict) and "model" in data and input_shape is not None:
        data = dict(data)
        data["model"] = dict(data["model"]) if isinstance(data["model"], dict) else data["model"]
        if isinstance(data["model"], dict):
            data["model"]["input_shape"] = list(input_shape)
    resolved = _resolve(data, ck, default_name)
    checked = CheckedConfig(config=resolved, file=str(file), locations=locations)
    _check_layers(checked, ck)
    return checked


def check_config(path, *, input_shape=None) -> CheckedConfig:
    """Read and validate a config file; errors carry file:line:col."""
    return check_text(read_config_text(path), str(path), input_shape=input_shape)


def load_config(source) -> dict:
    """The resolved config dict (defaults filled) of a YAML file path, or of a dict."""
    if isinstance(source, dict):
        return check_data(source).config
    return check_config(source).config


def load_config_text(text: str, file="<config>") -> dict:
    """The resolved config dict of YAML text."""
    return check_text(text, file).config


def dump_config(cfg: dict) -> str:
    """A resolved config as YAML text (section order kept); ``load_config_text`` reads it back."""
    return yaml.safe_dump(_plain(cfg), sort_keys=False, default_flow_style=None, width=100)


def _plain(value):
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def model_section(cfg: dict) -> dict:
    """The ``model:`` part of a full config (or a model section given directly)."""
    section = cfg.get("model", cfg)
    if not isinstance(section, dict) or "layers" not in section or "input_shape" not in section:
        raise ConfigError("config needs model.input_shape and model.layers")
    return section
