"""Whether this cnncli builds branching networks (issue 13: `from:`, add/concat, blocks).

The reference fixtures and configs for them were written before the graph model landed; the
tests that need it skip on exactly this condition, so they run by themselves once it lands.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from cnncli.nn import layers, registry  # noqa: F401  (importing the layers fills the registry)

BRANCHING = {"add", "concat"} <= set(registry.LAYERS)
NOT_BUILT = "branching networks not built yet"


def uses_branching(config: Path) -> bool:
    """A config with blocks or a layer that names its input (`from:`)."""
    model = yaml.safe_load(config.read_text()).get("model") or {}
    return "blocks" in model or any("from" in entry for entry in model.get("layers") or [])
