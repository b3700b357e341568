"""What every interop format shares: reading the source run, optional extras, PyTorch names."""

from __future__ import annotations

import json
import keyword
import re
from pathlib import Path

import numpy as np

from cnncli.config import dump_config
from cnncli.errors import MissingExtraError
from cnncli.training.checkpoint import Checkpoint, load_checkpoint


def require(module: str, extra: str):
    """Import an optional module or say which extra installs it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingExtraError(f"this command needs the {module} package",
                           hint=f"pip install 'cnncli[{extra}]'") from None


def load_source(path) -> tuple[Checkpoint, object]:
    """(checkpoint, model with its weights) of a run directory or checkpoint file."""
    ckpt = load_checkpoint(path)
    return ckpt, ckpt.model()


def python_names(names: list[str]) -> dict[str, str]:
    """Each layer name -> a Python identifier for a torch attribute (itself when it is one):
    other characters become "_", a leading digit or keyword gets "layer_", clashes get "_2"."""
    out, taken = {}, set()
    for name in names:
        ident = re.sub(r"\W", "_", name, flags=re.ASCII)
        if not ident or ident[0].isdigit() or keyword.iskeyword(ident):
            ident = "layer_" + ident
        base, k = ident, 1
        while ident in taken:
            k += 1
            ident = f"{base}_{k}"
        taken.add(ident)
        out[name] = ident
    return out


def torch_state_dict(model) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """The model's state_dict under torch attribute names (``num_batches_tracked`` stays an
    int64 scalar, as PyTorch keeps it), and the layer name each torch name stands for."""
    names = python_names([layer.name for layer in model.layers])
    state = {}
    for layer in model.layers:
        for key, value in {**layer.params, **layer.buffers}.items():
            state[f"{names[layer.name]}.{key}"] = np.array(value)
    return state, {v: k for k, v in names.items() if k != v}


def metadata(ckpt: Checkpoint, renamed: dict[str, str] | None = None) -> dict[str, str]:
    """String metadata every export carries: the resolved config, class names, normalisation."""
    norm = {k: (v.tolist() if isinstance(v, np.ndarray) else v)
            for k, v in ckpt.normalization.items()}
    out = {"cnncli.config": dump_config(ckpt.run),
           "cnncli.class_names": json.dumps(list(ckpt.class_names)),
           "cnncli.normalization": json.dumps(norm)}
    if renamed:
        out["cnncli.layer_names"] = json.dumps(renamed)
    return out


def default_output(ckpt: Checkpoint, suffix: str) -> Path:
    """Beside the checkpoint, named after it: runs/x/best.npz -> runs/x/best.onnx."""
    return ckpt.path.with_name(ckpt.path.stem + suffix)
