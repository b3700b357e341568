"""Learning-rate schedules against torch.optim.lr_scheduler stepped once per epoch (fixture)."""

import json
from pathlib import Path

import numpy as np
import pytest

from cnncli.config import resolve_config
from cnncli.errors import ConfigError
from cnncli.training.schedules import make_schedule

FIXTURE = Path(__file__).parent / "fixtures" / "schedule_reference.npz"


def schedule(spec, epochs: int = 10):
    """``train.lr_schedule: spec`` resolved by the config loader, as training gets it."""
    model = {"input_shape": [4], "layers": [{"type": "dense", "units": 2}]}
    run = resolve_config({"model": model, "train": {"epochs": epochs, "lr_schedule": spec}})
    return run.train.lr_schedule


@pytest.fixture(scope="module")
def ref():
    with np.load(FIXTURE, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


@pytest.mark.parametrize("name", ["step", "multistep", "exponential", "cosine", "cosine_warmup",
                                  "step_warmup", "constant_warmup"])
def test_matches_torch_scheduler(ref, name):
    spec, epochs = json.loads(str(ref["specs"]))[name]
    lr = make_schedule(schedule(spec, epochs), float(ref["base_lr"]), epochs)
    np.testing.assert_allclose([lr(e) for e in range(epochs)], ref[name], rtol=1e-12, atol=1e-15)


def test_constant_by_name_and_default():
    assert [make_schedule(schedule("constant"), 0.3, 5)(e) for e in range(5)] == [0.3] * 5
    assert make_schedule(schedule(None), 0.3, 5)(4) == 0.3


def test_warmup_rule_is_linear_up_to_base():
    lr = make_schedule(schedule({"type": "constant", "warmup_epochs": 3}), 1.0, 10)
    assert [lr(e) for e in range(5)] == [0.25, 0.5, 0.75, 1.0, 1.0]


@pytest.mark.parametrize("spec, key", [
    ({"type": "step"}, "step_size"),
    ({"type": "multistep", "milestones": []}, "milestones"),
    ({"type": "exponential"}, "gamma"),
    ({"type": "triangle"}, "type"),
    ({"type": "constant", "warmup_epochs": -1}, "warmup_epochs"),
])
def test_bad_specs_name_their_key(spec, key):
    with pytest.raises(ConfigError) as info:
        schedule(spec)
    assert info.value.key == key
