"""Reading a config file: its text, and YAML parsed with the position of every key and value.

The YAML is composed into nodes (not loaded straight to Python) so each key and value keeps
its position; aliases, nesting and size are bounded so no file can exhaust memory.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from cnncli.errors import ConfigError

MAX_VALUES = 100_000          # YAML nodes per file: stops alias "billion laughs" expansion
MAX_DEPTH = 64                # nesting depth of mappings/lists
MAX_FILE_BYTES = 10 * 2**20   # a config is a few KB; anything this big is the wrong file


# ---------------------------------------------------------------- reading

def read_config_text(path) -> str:
    """The file's text; missing, unreadable, empty or non-UTF-8 files raise ConfigError."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError("is a directory, not a config file", file=path)
    try:
        if path.exists() and not path.is_file():  # a FIFO or device would block the read
            raise ConfigError("is not a regular file (a pipe or device?), not a config file",
                              file=path, hint="give the path of a YAML file")
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
        if (node.style is None and ":" in node.value
                and node.tag in ("tag:yaml.org,2002:int", "tag:yaml.org,2002:float")):
            # YAML 1.1 reads 1:10 as the base-60 number 70: never what a config means.
            raise ConfigError(f"{node.value!r} is read by YAML as a base-60 number "
                              f"({self.loader.construct_object(node)}); write a plain number",
                              file=self.file, line=node.start_mark.line + 1,
                              column=node.start_mark.column + 1,
                              hint=f"quote it ('{node.value}') if it is meant as text")
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


def find_position(locations: dict, path) -> tuple[int | None, int | None]:
    """Position of ``path``, or of its nearest located ancestor."""
    path = tuple(path)
    while True:
        if path in locations:
            return locations[path]
        if not path:
            return None, None
        path = path[:-1]


def location_prefix(file, line, col) -> str:
    where = str(file)
    if line is not None:
        where += f":{line}"
        if col is not None:
            where += f":{col}"
    return where + ": "
