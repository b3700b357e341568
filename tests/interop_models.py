"""Checkpoints with every weight and running statistic random, for the interop tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml

from cnncli.config import check_data
from cnncli.nn.model import model_from_entries
from cnncli.training.checkpoint import save_checkpoint

STANDARDIZE = {"mode": "standardize", "scale": np.float32(255.0)}
#: Every layer type and the awkward settings (ceil_mode, same padding, groups, dilation, names
#: that are no Python identifiers, dense on a (C, 1, 1) input), for a (3, 9, 9) input.
EVERY_LAYER = [
    {"type": "conv2d", "name": "conv-1", "filters": 4, "kernel_size": 2, "padding": "same",
     "activation": "relu"},
    {"type": "batchnorm2d", "name": "bn1", "momentum": 0.2},
    {"type": "maxpool2d", "kernel_size": 3, "stride": 2, "padding": 1, "ceil_mode": True},
    {"type": "avgpool2d", "kernel_size": 2, "stride": 1, "padding": 1, "ceil_mode": True,
     "count_include_pad": False},
    {"type": "lppool2d", "norm_type": 2, "kernel_size": 2, "ceil_mode": True},
    {"type": "gelu"}, {"type": "gelu", "approximate": "tanh"}, {"type": "elu", "alpha": 0.5},
    {"type": "leaky_relu", "negative_slope": 0.2},
    {"type": "conv2d", "filters": 4, "kernel_size": 1, "groups": 2, "dilation": 2},
    {"type": "global_max_pool2d"}, {"type": "global_avg_pool2d"},
    {"type": "dropout", "p": 0.3}, {"type": "dense", "units": 6}, {"type": "batchnorm1d"},
    {"type": "tanh"}, {"type": "sigmoid"}, {"type": "dense", "name": "class", "units": 3}]


def randomize(model, seed: int = 0) -> None:
    """Weights drawn afresh from ``seed`` (PyTorch's default init keeps logits of order 1) and
    random biases and batch-norm statistics, not the fresh 0/1, so nothing is trivial."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        for key, value in {**layer.params, **layer.buffers}.items():
            if key == "num_batches_tracked":
                value[...] = 7
            elif key == "running_var":
                value[...] = rng.uniform(0.5, 2.0, value.shape)
            elif key == "weight" and value.ndim > 1:
                value[...] = rng.permutation(value.reshape(-1)).reshape(value.shape)
            else:
                value[...] = rng.normal(0.0, 0.3, value.shape)


def make_checkpoint(path: Path, config: dict, *, seed: int = 0, normalization=None) -> Path:
    """A checkpoint of the (raw) ``config``'s model with random weights."""
    cfg = check_data(config).config
    model = model_from_entries(cfg["model"]["input_shape"], cfg["model"]["layers"])
    randomize(model, seed)
    channels = cfg["model"]["input_shape"][0]
    if normalization is None:
        rng = np.random.default_rng(seed + 1)
        normalization = {**STANDARDIZE, "mean": rng.uniform(0.2, 0.6, channels).astype(
            np.float32), "std": rng.uniform(0.2, 0.4, channels).astype(np.float32)}
    classes = model.output_shape[0]
    return save_checkpoint(path, config=cfg, model_state=model.state_dict(),
                           normalization=normalization,
                           class_names=[f"class{i}" for i in range(classes)])


def shipped_config(path) -> dict:
    return yaml.safe_load(Path(path).read_text())


def small_config(layers, input_shape=(3, 9, 9)) -> dict:
    return {"name": "small", "model": {"input_shape": list(input_shape), "layers": layers}}


def raw_batch(input_shape, n: int = 4, seed: int = 0) -> np.ndarray:
    """Raw pixel values (0..255), what predict reads from an .npy."""
    return np.random.default_rng(seed).uniform(0, 255, (n, *input_shape)).astype(np.float32)


def random_graph(draw, st):
    """(layer entries, input shape) of a small random branching model, drawn with hypothesis's
    ``draw`` and strategies ``st``: convs, activations, batch norms, pools and dropouts reading
    any earlier tensor (the input too), add and concat joining tensors of one size, and every
    tensor used: those no layer reads are concatenated before the dense head."""
    c, h, w = draw(st.integers(1, 3)), draw(st.integers(3, 7)), draw(st.integers(3, 7))
    channels: list[int] = []          # per entry: its output channels (all keep h x w)
    layers: list[dict] = []
    read: set = set()

    def source():
        ref = draw(st.sampled_from(["input", *range(len(layers))]))
        read.add(ref)
        return ref, c if ref == "input" else channels[ref]

    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(["conv", "conv", "activation", "batchnorm", "pool",
                                     "dropout", "add", "concat"]))
        if kind in ("add", "concat") and layers:
            pool = ["input", *range(len(layers))]
            refs = draw(st.lists(st.sampled_from(pool), min_size=2, max_size=3, unique=True))
            sizes = [c if r == "input" else channels[r] for r in refs]
            if kind == "add" and len(set(sizes)) > 1:
                kind = "concat"   # add needs one shape
            read.update(refs)
            layers.append({"type": kind, "from": refs})
            channels.append(sum(sizes) if kind == "concat" else sizes[0])
            continue
        if kind in ("add", "concat"):
            kind = "conv"   # nothing to join yet
        ref, size = source()
        if kind == "conv":
            k = draw(st.sampled_from([1, 3]))
            entry = {"type": "conv2d", "filters": draw(st.sampled_from([2, 3])),
                     "kernel_size": k, "padding": k // 2, "bias": draw(st.booleans())}
            if draw(st.booleans()):
                entry["activation"] = draw(st.sampled_from(["relu", "tanh", "gelu"]))
            size = entry["filters"]
        elif kind == "activation":
            entry = {"type": draw(st.sampled_from(["relu", "leaky_relu", "elu", "sigmoid"]))}
        elif kind == "batchnorm":
            entry = {"type": "batchnorm2d"}
        elif kind == "pool":
            entry = {"type": draw(st.sampled_from(["maxpool2d", "avgpool2d"])),
                     "kernel_size": 3, "stride": 1, "padding": 1}
        else:
            entry = {"type": "dropout", "p": 0.3}
        layers.append({**entry, "from": [ref]})
        channels.append(size)
    unread = [k for k in range(len(layers)) if k not in read]
    if len(unread) > 1:
        layers.append({"type": "concat", "from": unread})
    layers += [{"type": draw(st.sampled_from(["global_avg_pool2d", "flatten"]))},
               {"type": "dense", "units": 3}]
    return layers, (c, h, w)
