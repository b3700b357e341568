"""Fuzzing `cnncli summary FILE`: exit 0, or exit 2 with one error line; never a traceback."""

from __future__ import annotations

import copy
import tempfile
from pathlib import Path

import yaml
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cnncli.cli.app import main

BASE = {
    "name": "fuzz",
    "seed": 0,
    "model": {
        "input_shape": [1, 8, 8],
        "layers": [
            {"type": "conv2d", "out_channels": 4, "kernel_size": 3, "padding": 1,
             "activation": "relu"},
            {"type": "maxpool2d", "kernel_size": 2},
            {"type": "batchnorm2d"},
            {"type": "flatten"},
            {"type": "dropout", "p": 0.5},
            {"type": "dense", "units": 10},
        ],
    },
    "data": {"dataset": "digits", "val_split": 0.1, "augment": {"random_crop": 1}},
    "train": {"epochs": 2, "optimizer": "adam", "lr_schedule": {"type": "step",
                                                                "step_size": 1}},
}

KEYS = ["type", "kernel_size", "stride", "padding", "dilation", "groups", "units",
        "out_channels", "activation", "name", "p", "model", "layers", "input_shape", "train",
        "data", "epochs", "lr", "lr_schedule", "milestones", "early_stopping", "augment",
        "ceil_mode", "filters", "norm_type", "bias", "xyz", ""]

scalars = st.one_of(
    st.none(), st.booleans(),
    st.integers(-5, 40), st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["same", "valid", "relu", "conv2d", "dense", "maxpool2d", "flatten",
                     "adam", "step", "cosine", "NCHW", "", "1e400", "-0"]),
    st.text(max_size=8),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(st.sampled_from(KEYS), inner, max_size=4)),
    max_leaves=12,
)


def paths(value, prefix=()):
    """Every path into a nested dict/list."""
    yield prefix
    if isinstance(value, dict):
        for k, v in value.items():
            yield from paths(v, prefix + (k,))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from paths(v, prefix + (i,))


@st.composite
def mutated_configs(draw):
    """The base config with a few random paths replaced, deleted or given extra keys."""
    cfg = copy.deepcopy(BASE)
    for _ in range(draw(st.integers(1, 3))):
        where = draw(st.sampled_from(list(paths(cfg))[1:]))
        parent = cfg
        for part in where[:-1]:
            parent = parent[part]
        action = draw(st.sampled_from(["replace", "delete", "add"]))
        if action == "replace":
            parent[where[-1]] = draw(values)
        elif action == "delete":
            del parent[where[-1]]
        elif isinstance(parent, dict):
            parent[draw(st.sampled_from(KEYS))] = draw(values)
        if not isinstance(cfg, dict):
            break
    return yaml.safe_dump(cfg, sort_keys=False, allow_unicode=True).encode("utf-8")


@st.composite
def corrupted_text(draw):
    """Valid YAML text with random bytes spliced in (may be non-UTF-8)."""
    text = yaml.safe_dump(BASE, sort_keys=False).encode("utf-8")
    at = draw(st.integers(0, len(text)))
    cut = draw(st.integers(0, 20))
    return text[:at] + draw(st.binary(max_size=12)) + text[at + cut:]


@st.composite
def random_layer_stacks(draw):
    """Registered layer types with random (often wrong) values for their real hyperparameters."""
    from cnncli.nn.layers.base import hyperparameters
    from cnncli.nn.registry import LAYERS

    hp_values = st.one_of(st.integers(-2, 6), st.lists(st.integers(-1, 4), max_size=3),
                          st.sampled_from([None, True, False, 0.5, 1.5, "same", "valid", "none",
                                           "tanh", "he_normal", "default", "x"]))
    layers = []
    for _ in range(draw(st.integers(1, 5))):
        kind = draw(st.sampled_from(sorted(LAYERS)))
        entry = {"type": kind}
        for key in hyperparameters(LAYERS[kind]):
            if draw(st.booleans()):
                entry[key] = draw(hp_values)
        if draw(st.integers(0, 4)) == 0:
            entry["activation"] = draw(st.sampled_from(["relu", "gelu", "dense", 3]))
        layers.append(entry)
    shape = draw(st.sampled_from([[1, 8, 8], [3, 5, 7], [2, 1, 1], [6]]))
    cfg = {"model": {"input_shape": shape, "layers": layers}}
    return yaml.safe_dump(cfg, sort_keys=False).encode("utf-8")


def check_exit(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "fuzz.yaml"
        path.write_bytes(data)
        result = CliRunner().invoke(main, ["summary", str(path)])
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        f"{result.exception!r} for {data!r}")
    assert result.exit_code in (0, 2), (result.exit_code, result.output, data)
    if result.exit_code == 2:
        lines = result.stderr.splitlines()
        assert len(lines) == 1, (result.stderr, data)
        assert lines[0].startswith("cnncli: error: "), lines
        assert "Traceback" not in result.output
    else:
        assert all(line.startswith("cnncli: warning: ") for line in result.stderr.splitlines())
        assert "total params" in result.stdout


FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(mutated_configs())
def test_mutated_configs(data):
    check_exit(data)


@FUZZ
@given(corrupted_text())
def test_corrupted_text(data):
    check_exit(data)


@FUZZ
@given(random_layer_stacks())
def test_random_layer_stacks(data):
    check_exit(data)


@FUZZ
@given(st.one_of(st.binary(max_size=200),
                 st.text(max_size=200).map(lambda t: t.encode("utf-8")),
                 values.map(lambda v: yaml.safe_dump(v).encode("utf-8"))))
def test_random_documents(data):
    check_exit(data)
