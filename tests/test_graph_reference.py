"""Branching networks against PyTorch 2.13 (tests/fixtures/graph_reference.npz).

The fixtures come from tests/fixtures/make_graph_fixtures.py, which builds each config's
torch.nn twin by hand; this test never imports torch. Each case builds the cnncli model from
its YAML, loads the torch state_dict by name (so the names must line up), runs one training
step and compares logits, the input gradient, every parameter gradient and the running
statistics, then the logits in eval mode.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from test_torch_reference import assert_close

import cnncli
from cnncli.cli import main

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).parent / "fixtures" / "graph_reference.npz"
_DATA = np.load(FIXTURES, allow_pickle=False)
CASES = [str(name) for name in _DATA["cases"]]
RESNET18_PARAMS = 11_689_512  # torchvision.models.resnet18()
RESNET18_MACS = 1.82e9  # torchvision's published 1.81 GFLOPS, plus batch norm and pooling


def case_arrays(name: str) -> tuple[dict, dict[str, np.ndarray]]:
    prefix = name + "__"
    arrays = {k[len(prefix) :]: _DATA[k] for k in _DATA.files if k.startswith(prefix)}
    return json.loads(str(arrays.pop("hparams")[0])), arrays


def config_path(name: str, hp: dict, folder: Path) -> Path:
    """The case's config file: a shipped one, or its YAML text written to ``folder``."""
    if "config" in hp:
        return ROOT / hp["config"]
    path = folder / f"{name}.yaml"
    path.write_text(hp["yaml"])
    return path


def test_fixture_file_is_small_and_covers_the_graph_shapes():
    assert FIXTURES.stat().st_size < 2_000_000
    assert {
        "add_two_branches",
        "concat",
        "two_consumers",
        "block_repeated",
        "projection_shortcut",
        "resnet20_cifar",
    } <= set(CASES)
    for name in CASES:
        hp, a = case_arrays(name)
        assert [k[2:] for k in a if k.startswith("w.")] == hp["keys"], name
        assert {k[2:] for k in a if k.startswith("g.")} | {
            k[2:] for k in a if k.startswith("s.")
        } == set(hp["keys"]), name


def test_torch_resnet18_of_the_fixture_has_torchvisions_parameter_count():
    hp, _ = case_arrays("resnet18")
    shapes = dict((k, tuple(s)) for k, s in hp["state_dict"])
    weights = [
        k for k in shapes if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))
    ]
    assert sum(int(np.prod(shapes[k])) for k in weights) == hp["params"] == RESNET18_PARAMS
    assert shapes["layer2.0.downsample.0.weight"] == (128, 64, 1, 1)
    assert shapes["fc.weight"] == (1000, 512)


def load_case(name: str, folder: Path, dtype: str, speedups: bool):
    hp, a = case_arrays(name)
    model = cnncli.build_model(config_path(name, hp, folder), dtype=dtype, speedups=speedups)
    # Same names in the same order as the torch model's state_dict.
    assert list(model.state_dict()) == hp["keys"]
    model.load_state_dict({key: a["w." + key] for key in hp["keys"]})
    model.zero_grad()
    return hp, a, model


@pytest.mark.parametrize("speedups", [False, True], ids=["plain", "speedups"])
@pytest.mark.parametrize("name", CASES)
def test_graph_training_step_matches_torch(name, speedups, tmp_path):
    hp, a, model = load_case(name, tmp_path, "float64", speedups)
    stored = hp["stored"]  # the precision the torch results were saved in
    logits = model.forward(a["x"], train=True)
    assert logits.dtype == np.float64
    assert_close(logits, a["logits"], stored, f"{name} logits")
    dx = model.backward(a["dlogits"])
    assert_close(dx, a["dx"], stored, f"{name} input grad")
    grads = model.grads()
    assert sorted(grads) == sorted(k[2:] for k in a if k.startswith("g."))
    for key, grad in grads.items():
        assert_close(grad, a["g." + key], stored, f"{name} {key} grad")
    state = model.state_dict()
    for key in (k[2:] for k in a if k.startswith("s.")):
        if key.endswith("num_batches_tracked"):
            assert int(state[key]) == int(a["s." + key]), f"{name} {key}"
        else:
            assert_close(state[key], a["s." + key], stored, f"{name} {key}")
    assert_close(
        model.forward(a["x_eval"], train=False), a["logits_eval"], stored, f"{name} eval logits"
    )


@pytest.mark.parametrize("name", CASES)
def test_graph_float32_forward_matches_torch(name, tmp_path):
    """cnncli's default dtype: the logits agree to float32 precision. (Gradients are compared
    in float64 only: at batch 2 the batch-norm backward of ResNet-20 cancels most digits in
    float32, in any framework.)"""
    _, a, model = load_case(name, tmp_path, "float32", speedups=True)
    assert_close(model.forward(a["x"], train=True), a["logits"], "float32", f"{name} logits")
    assert_close(
        model.forward(a["x_eval"], train=False), a["logits_eval"], "float32", f"{name} eval logits"
    )


def test_resnet18_config_has_torchvisions_names_and_parameters():
    hp, _ = case_arrays("resnet18")
    model = cnncli.build_model(ROOT / hp["config"])
    assert [[k, list(v.shape)] for k, v in model.state_dict().items()] == hp["state_dict"]


def test_summary_of_resnet18_reports_torchvisions_size():
    result = CliRunner().invoke(main, ["summary", str(ROOT / "configs/resnet18.yaml"), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["total_params"] == RESNET18_PARAMS
    assert abs(report["total_macs"] / RESNET18_MACS - 1) < 0.02, report["total_macs"]
