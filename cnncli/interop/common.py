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


#: Attributes of torch.nn.Module and nn.ModuleDict (PyTorch 2.13) and of the generated Net: a
#: submodule of one of these names would be shadowed by it (or refused by add_module).
TORCH_ATTRIBUTES = frozenset("""
    T_destination add_module apply bfloat16 buffers call_super_init children clear compile cpu
    cuda double dump_patches eval extra_repr float forward get_buffer get_extra_state
    get_parameter get_submodule half ipu items keys load_state_dict modules mtia named_buffers
    named_children named_modules named_parameters parameters pop register_backward_hook
    register_buffer register_forward_hook register_forward_pre_hook
    register_full_backward_hook register_full_backward_pre_hook
    register_load_state_dict_post_hook register_load_state_dict_pre_hook register_module
    register_parameter register_state_dict_post_hook register_state_dict_pre_hook
    requires_grad_ set_extra_state set_submodule share_memory state_dict to to_empty train
    training type update values xpu zero_grad input_scale input_mean input_std""".split())


def _identifier(part: str) -> str:
    """``part`` as a Python identifier: other characters become "_", and a leading digit or
    underscore, a keyword or a torch attribute gets "layer_" in front."""
    ident = re.sub(r"\W", "_", part, flags=re.ASCII)
    if (not ident or ident[0].isdigit() or ident[0] == "_" or keyword.iskeyword(ident)
            or ident in TORCH_ATTRIBUTES):
        ident = "layer_" + ident
    return ident


def _unique(ident: str, taken: set[str]) -> str:
    base, k = ident, 1
    while ident in taken:
        k += 1
        ident = f"{base}_{k}"
    taken.add(ident)
    return ident


def python_names(names: list[str]) -> dict[str, str]:
    """Each layer name -> one Python identifier (a variable of the generated forward): other
    characters, dots too, become "_", see ``_identifier``; clashes get "_2"."""
    taken: set[str] = set()
    return {name: _unique(_identifier(name), taken) for name in names}


def module_paths(names: list[str]) -> dict[str, str]:
    """Each layer name -> its torch submodule path, kept as it is where PyTorch allows it, so
    that the state_dict keys are cnncli's (``layer1.0.conv1.weight``, as torchvision names
    them). Each dotted part becomes an identifier (``_identifier``) except that a number after
    the first part stays (a ModuleDict key, like torchvision's Sequential index); clashes get
    "_2" on the last part."""
    taken: set[str] = set()
    out = {}
    for name in names:
        parts = name.split(".")
        path = ".".join([_identifier(parts[0])] + [part if part.isdigit() else _identifier(part)
                                                    for part in parts[1:]])
        out[name] = _unique(path, taken)
    return out


def torch_state_dict(model) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """The model's state_dict under torch attribute names (``num_batches_tracked`` stays an
    int64 scalar, as PyTorch keeps it), and the layer name each torch name stands for."""
    names = module_paths([layer.name for layer in model.layers])
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
