"""Branching models in a config: ``from:``, ``blocks:`` with ``$params`` and ``repeat``, and
``scale:``, resolved into the flat list of layer entries that ``nn.model_from_entries`` builds.

Rules (docs/config.md shows them):

* ``from:`` names a layer's input: a layer name, a negative index (-1, the layer before, is
  the default) or ``input`` (the model's input, or the enclosing block's). Names and indices
  count within the list the layer is written in; a used block counts as one item, its output
  the output of its last layer.
* A block used as ``{type: <block>, name: N, repeat: R, <param>: value}`` becomes its layers,
  named ``N.<layer>`` (``N.<r>.<layer>`` when ``repeat:`` is written, as PyTorch names the
  modules of an ``nn.Sequential``); an unnamed layer gets its position as its name. ``$p``
  is replaced by parameter ``p`` of the enclosing block.
* ``scale: {depth: D, width: W}`` multiplies every written ``repeat`` by D and every
  ``out_channels``/``units`` but the last dense layer's by W (rounded half up, at least 1).

The flat entries carry ``from`` as absolute indices (or "input"); where the written entry was
(for errors) travels alongside.
"""

from __future__ import annotations

import difflib
import math
import re
from dataclasses import dataclass, field

from cnncli.checks import is_int, shown
from cnncli.nn.layers.base import LAYER_NAME

BLOCK_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
PARAM = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)\Z")
USE_KEYS = ("type", "name", "repeat", "from")
WIDTH_KEYS = ("out_channels", "units")


@dataclass
class FlatEntry:
    """One layer entry of the flat list and where it was written."""

    entry: dict                  # the layer entry, without ``from``, names in full
    refs: list | None            # absolute entry indices / "input"; None: the entry before
    path: tuple                  # where the entry is written in the file
    key_paths: dict = field(default_factory=dict)  # key -> where a ``$param`` value came from


@dataclass
class _Scope:
    """A list of layers being expanded: its input, and its items' outputs and names."""

    input: object                    # flat index or "input"
    where: str                       # "model.layers" or "block 'res'"
    names: list                      # the local name of every item, in order (None: unnamed)
    outputs: list = field(default_factory=list)   # flat index of each item's output so far


@dataclass
class _Block:
    name: str
    params: dict        # name -> default (``_REQUIRED`` if none)
    layers: list
    path: tuple


_REQUIRED = object()


class Expander:
    """Expands ``model.layers`` with ``model.blocks`` and ``model.scale`` (see the module doc).

    ``ck`` is the config's Checker (``error(path, message, hint=..., layer=...)``)."""

    def __init__(self, ck, blocks=None, scale=None):
        self.ck = ck
        self.flat: list[FlatEntry] = []
        self.blocks = self._blocks(blocks)
        self.depth, self.width = self._scale(scale)
        self.uses: dict[str, int] = {}
        self.label: str | None = None   # the item being expanded, for errors

    # ------------------------------------------------------------ sections
    def _blocks(self, section) -> dict[str, _Block]:
        from cnncli.nn.registry import ALIASES, LAYERS

        path = ("model", "blocks")
        if section is None:
            return {}
        if not isinstance(section, dict):
            raise self.ck.error(path, f"model.blocks must be a mapping of block names, got "
                                      f"{shown(section)}", hint="blocks: {res: {layers: [...]}}")
        out = {}
        for name, body in section.items():
            bpath = path + (name,)
            if not isinstance(name, str) or not BLOCK_NAME.match(name):
                raise self.ck.error(bpath, f"block name must be letters, digits and _, got "
                                           f"{shown(name)}")
            if name in LAYERS or name in ALIASES:
                raise self.ck.error(bpath, f"block name {name!r} is a layer type",
                                    hint="give the block another name")
            self.ck.mapping(bpath, body, ("params", "layers"), required=("layers",))
            layers = body["layers"]
            if not isinstance(layers, list) or not layers:
                raise self.ck.error(bpath + ("layers",), f"model.blocks.{name}.layers must be a "
                                    f"non-empty list of layers, got {shown(layers)}")
            params = body.get("params") or {}
            if isinstance(params, list):   # names only: every one must be given
                params = {p: _REQUIRED for p in params}
            if not isinstance(params, dict):
                raise self.ck.error(bpath + ("params",), f"model.blocks.{name}.params must map "
                                    f"parameter names to defaults, got {shown(params)}",
                                    hint="e.g. params: {channels: 16, stride: 1}")
            for pname in params:
                if (not isinstance(pname, str) or not BLOCK_NAME.match(pname)
                        or pname in USE_KEYS):
                    raise self.ck.error(bpath + ("params", pname), f"block parameter name must "
                                        f"be letters, digits and _ (not {', '.join(USE_KEYS)}),"
                                        f" got {shown(pname)}")
            out[name] = _Block(name, dict(params), layers, bpath)
        return out

    def _scale(self, section) -> tuple[float, float]:
        path = ("model", "scale")
        if section is None:
            return 1.0, 1.0
        self.ck.mapping(path, section, ("depth", "width"))
        values = []
        for key in ("depth", "width"):
            value = section.get(key, 1.0)
            if (isinstance(value, bool) or not isinstance(value, (int, float))
                    or not math.isfinite(value) or value <= 0):
                raise self.ck.error(path + (key,), f"model.scale.{key} must be a number > 0, "
                                                   f"got {shown(value)}")
            values.append(float(value))
        return values[0], values[1]

    # ------------------------------------------------------------ expansion
    def expand(self, layers: list) -> list[FlatEntry]:
        lpath = ("model", "layers")
        scope = _Scope("input", "model.layers", [_local_name(e) for e in layers])
        self._expand_list(layers, lpath, scope, prefix="", env=None, stack=())
        self._scale_width()
        return self.flat

    def _expand_list(self, layers, lpath, scope: _Scope, prefix, env, stack) -> None:
        for pos, written in enumerate(layers):
            path = lpath + (pos,)
            self.label = self._label(written, prefix, pos)
            item, key_paths = self._substitute(written, path, env, stack)
            block = (self.blocks.get(item.get("type"))
                     if isinstance(item, dict) and isinstance(item.get("type"), str) else None)
            refs = self._refs(item, pos, scope, path) if isinstance(item, dict) else None
            if block is not None:
                self._expand_use(block, item, refs, path, scope, prefix, stack, key_paths)
            else:
                self._add_layer(item, refs, path, scope, prefix, pos, key_paths)
            scope.outputs.append(len(self.flat) - 1)

    def _add_layer(self, item, refs, path, scope, prefix, pos, key_paths) -> None:
        if isinstance(item, dict):
            item = {k: v for k, v in item.items() if k != "from"}
            if prefix:
                local = item.get("name")
                item["name"] = prefix + (local if isinstance(local, str) else str(pos))
        self._append(item, refs if refs is not None else [scope_default(scope)], path,
                     key_paths)

    def _append(self, entry, refs, path, key_paths) -> None:
        default = len(self.flat) - 1 if self.flat else "input"
        refs = None if refs == [default] else refs
        self.flat.append(FlatEntry(entry, refs, path, key_paths))

    def _expand_use(self, block: _Block, item, refs, path, scope, prefix, stack, key_paths):
        if block.name in stack:
            chain = " -> ".join((*stack[stack.index(block.name):], block.name))
            raise self.error(path + ("type",), f"block {block.name!r} uses itself ({chain})",
                           hint="a block may use only other blocks")
        env = {}
        for key, value in item.items():
            if key in USE_KEYS:
                continue
            if key not in block.params:
                options = sorted(block.params) or ["(none)"]
                close = difflib.get_close_matches(str(key), list(block.params), n=1)
                hint = (f"did you mean '{close[0]}'?" if close
                        else "its parameters: " + ", ".join(options))
                raise self.error(path + (key,), f"block {block.name!r} has no parameter {key!r}",
                               hint=hint)
            env[key] = (value, key_paths.get(key, path + (key,)))
        for pname, default in block.params.items():
            if pname not in env:
                if default is _REQUIRED:
                    raise self.error(path, f"block {block.name!r} needs the parameter {pname!r}",
                                   hint=f"add {pname}: <value> to this layer", key=pname)
                env[pname] = (default, block.path + ("params", pname))
        count = self.uses[block.name] = self.uses.get(block.name, 0) + 1
        name = item.get("name", f"{block.name}_{count}")
        if not isinstance(name, str) or not LAYER_NAME.fullmatch(name):
            raise self.error(path + ("name",), f"name must be letters, digits, _ and -, with "
                                             f"dots only between parts (layer2.0), got "
                                             f"{shown(name)}", hint="it prefixes the block's "
                                                                    "parameter names")
        repeated = "repeat" in item
        repeat = item.get("repeat", 1)
        if not is_int(repeat) or repeat < 1:
            raise self.error(key_paths.get("repeat", path + ("repeat",)),
                           f"repeat must be an int >= 1, got {shown(repeat)}",
                           hint="remove the layer to use the block no times")
        if repeated:
            repeat = max(1, math.floor(repeat * self.depth + 0.5))
        first_input = refs if refs is not None else [scope_default(scope)]
        for r in range(repeat):
            inner_prefix = prefix + name + (f".{r}." if repeated else ".")
            block_input = first_input if r == 0 else [len(self.flat) - 1]
            if len(block_input) != 1:
                raise self.error(path + ("from",), f"a block takes one input, got "
                                                 f"{len(block_input)}")
            inner = _Scope(block_input[0], f"block {block.name!r}",
                           [_local_name(e) for e in block.layers])
            self._expand_list(block.layers, block.path + ("layers",), inner, inner_prefix, env,
                              (*stack, block.name))

    def _label(self, item, prefix, pos) -> str:
        """How errors name the item: its would-be flat entry, ``layer 5 'stage1.0.conv1'``."""
        from cnncli.nn.model import layer_label

        def text(key):
            value = item.get(key) if isinstance(item, dict) else None
            return value if isinstance(value, str) else None

        name = text("name") or (str(pos) if prefix else None)
        return layer_label(len(self.flat) + 1, prefix + name if name else None, text("type"))

    def error(self, path, message, hint=None, key=None):
        return self.ck.error(path, message, hint=hint, key=key, layer=self.label)

    # ------------------------------------------------------------ from
    def _refs(self, item: dict, pos: int, scope: _Scope, path):
        if "from" not in item:
            return None
        value = item["from"]
        fpath = path + ("from",)
        many = isinstance(value, list)
        values = value if many else [value]
        if many and not values:
            raise self.error(fpath, "from is an empty list", hint="e.g. from: [-1, input]")
        refs = [self._ref(v, pos, scope, fpath + ((i,) if many else ())) for i, v
                in enumerate(values)]
        return refs

    def _ref(self, ref, pos, scope: _Scope, path):
        if ref == "input":
            return scope.input
        if is_int(ref) and ref < 0:
            target = pos + ref
            if target >= 0:
                return scope.outputs[target]
            if target == -1:
                return scope.input
            raise self.error(path, f"from: {ref} reaches before the start of {scope.where} "
                                 f"(item {pos + 1} can go back at most {pos + 1})",
                           hint="-1 is the layer before; 'input' is the input", key="from")
        if isinstance(ref, str) and ref:
            names = scope.names
            if ref in names[:pos]:
                return scope.outputs[names.index(ref)]
            if ref in names[pos:]:
                later = names.index(ref, pos)
                what = "itself" if later == pos else f"a later layer (item {later + 1})"
                raise self.error(path, f"from names {ref!r}, {what} in {scope.where}: a cycle",
                               hint="a layer can read only the layers before it", key="from")
            known = [n for n in names[:pos] if n] + ["input"]
            close = difflib.get_close_matches(ref, known, n=1)
            hint = (f"did you mean '{close[0]}'?" if close
                    else "layers before it: " + ", ".join(known))
            raise self.error(path, f"from names {ref!r}, which is no layer before it in "
                                 f"{scope.where}", hint=hint, key="from")
        raise self.error(path, f"from must be a layer name, a negative index or 'input', got "
                             f"{shown(ref)}", hint="-1 is the layer before", key="from")

    # ------------------------------------------------------------ $params
    def _substitute(self, value, path, env, stack):
        """``value`` with every ``$p`` replaced; also {key: path of the parameter's value}."""
        key_paths = {}

        def walk(v, at, key):
            if isinstance(v, dict):
                return {k: walk(x, at + (k,), k if key is None else key) for k, x in v.items()}
            if isinstance(v, list):
                return [walk(x, at + (i,), key) for i, x in enumerate(v)]
            match = PARAM.match(v) if isinstance(v, str) else None
            if match is None:
                return v
            pname = match.group(1)
            if env is None:
                raise self.error(at, f"{v!r} names a block parameter outside any block",
                                    hint="$name works in model.blocks.<block>.layers")
            if pname not in env:
                close = difflib.get_close_matches(pname, list(env), n=1)
                hint = (f"did you mean '${close[0]}'?" if close
                        else "its parameters: " + (", ".join(sorted(env)) or "(none)"))
                raise self.error(at, f"{v!r}: block {stack[-1]!r} has no parameter "
                                        f"{pname!r}", hint=hint)
            if key is not None:
                key_paths.setdefault(key, env[pname][1])
            return env[pname][0]

        return walk(value, path, None), key_paths

    # ------------------------------------------------------------ scale
    def _scale_width(self) -> None:
        if self.width == 1.0:
            return
        from cnncli.nn.registry import ALIASES, LAYERS

        def cls_of(entry):
            kind = entry.get("type") if isinstance(entry, dict) else None
            return LAYERS.get(ALIASES.get(kind, kind)) if isinstance(kind, str) else None

        dense = [k for k, fe in enumerate(self.flat) if cls_of(fe.entry) is LAYERS["dense"]]
        keep = dense[-1] if dense else None
        for k, fe in enumerate(self.flat):
            cls = cls_of(fe.entry)
            if cls is None or k == keep:
                continue
            for key, value in fe.entry.items():
                if cls.aliases.get(key, key) in WIDTH_KEYS and is_int(value):
                    fe.entry[key] = max(1, math.floor(value * self.width + 0.5))


def scope_default(scope: _Scope):
    """An item's input when it has no ``from``: the item before, or the list's input."""
    return scope.outputs[-1] if scope.outputs else scope.input


def _local_name(entry):
    name = entry.get("name") if isinstance(entry, dict) else None
    return name if isinstance(name, str) else None


def unused_outputs(flat: list[FlatEntry]) -> list[int]:
    """Entries whose output no later entry reads (the last entry is the model's output)."""
    read = set()
    for k, fe in enumerate(flat):
        if fe.refs is None:
            read.add(k - 1)
        else:
            read.update(r for r in fe.refs if r != "input")
    return [k for k in range(len(flat) - 1) if k not in read]

