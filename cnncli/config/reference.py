"""docs/config.md's tables of keys, types and defaults, generated from the schema's fields."""

from __future__ import annotations

import dataclasses

import yaml

from cnncli.config.schema import TOP_LEVEL_DOC, DataConfig, TrainConfig

HEADER = "| key | type | default | meaning |\n|---|---|---|---|\n"


def _literal(value) -> str:
    if isinstance(value, tuple):
        value = list(value)
    text = yaml.safe_dump(value, default_flow_style=True).strip()
    return f"`{text.removesuffix('...').strip()}`"


def _rows(cls, prefix="") -> list[str]:
    rows = []
    for f in dataclasses.fields(cls):
        default = (f.default_factory() if f.default is dataclasses.MISSING else f.default)
        meta = f.metadata
        if dataclasses.is_dataclass(default) and meta.get("rule") is None \
                and meta.get("type_doc") is None:
            rows.extend(_rows(type(default), prefix=f"{prefix}{f.name}."))
            continue
        kind = meta.get("type_doc") or meta["rule"].text
        shown = meta.get("default_doc") or _literal(default)
        rows.append(f"| `{prefix}{f.name}` | {kind} | {shown} | {meta['doc']} |")
    return rows


def config_tables() -> dict[str, str]:
    """Markdown tables for the top level, ``data:`` and ``train:``, keyed by section."""
    top = [f"| `{key}` | {kind} | {default} | {doc} |"
           for key, (kind, default, doc) in TOP_LEVEL_DOC.items()]
    return {section: HEADER + "\n".join(rows) + "\n"
            for section, rows in (("top", top), ("data", _rows(DataConfig)),
                                  ("train", _rows(TrainConfig)))}
