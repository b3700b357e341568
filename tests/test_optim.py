"""Optimizers and gradient clipping against torch.optim reference trajectories (fixture)."""

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cnncli.errors import CheckpointError, ConfigError
from cnncli.training.optim import SGD, Adam, AdamW, clip_grad_norm, make_optimizer

FIXTURE = Path(__file__).parent / "fixtures" / "optim_reference.npz"
CLASSES = {"SGD": SGD, "Adam": Adam, "AdamW": AdamW}


@pytest.fixture(scope="module")
def ref():
    with np.load(FIXTURE, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


def _steps(ref):
    return sum(1 for k in ref if k.startswith("grad/") and k.endswith("/a.bias"))


def _run(opt, ref, names, on_step):
    params = {k: ref[f"init/{k}"].copy() for k in names}
    for s in range(_steps(ref)):
        opt.step((k, params[k], ref[f"grad/{s}/{k}"]) for k in names)
        on_step(s, params)
    return params


@pytest.mark.parametrize("combo", ["sgd", "sgd_momentum", "sgd_nesterov_wd", "sgd_wd", "adam",
                                   "adam_wd_betas", "adamw", "adamw_wd"])
def test_matches_torch_every_step(ref, combo):
    cls, kwargs = json.loads(str(ref["configs"]))[combo]
    names = [str(n) for n in ref["names"]]
    opt = CLASSES[cls](**kwargs)

    def check(s, params):
        for k in names:
            np.testing.assert_allclose(params[k], ref[f"{combo}/{s}/{k}"], rtol=1e-5, atol=1e-6,
                                       err_msg=f"{combo} step {s} {k}")
            assert params[k].dtype == np.float32

    _run(opt, ref, names, check)


@pytest.mark.parametrize("combo", ["sgd_momentum", "adam_wd_betas", "adamw_wd"])
def test_state_dict_round_trip_continues_identically(ref, combo):
    """Saving the state after 3 steps and loading it into a fresh optimizer changes nothing."""
    cls, kwargs = json.loads(str(ref["configs"]))[combo]
    names = [str(n) for n in ref["names"]]
    straight = _run(CLASSES[cls](**kwargs), ref, names, lambda s, p: None)

    first = CLASSES[cls](**kwargs)
    params = {k: ref[f"init/{k}"].copy() for k in names}
    for s in range(3):
        first.step((k, params[k], ref[f"grad/{s}/{k}"]) for k in names)
    second = CLASSES[cls](**kwargs)
    second.load_state_dict({k: v.copy() for k, v in first.state_dict().items()})
    for s in range(3, _steps(ref)):
        second.step((k, params[k], ref[f"grad/{s}/{k}"]) for k in names)
    for k in names:
        np.testing.assert_array_equal(params[k], straight[k])


def test_loading_another_optimizers_state_is_refused():
    sgd = SGD(0.1, momentum=0.9)
    sgd.step([("w", np.ones(3, np.float32), np.ones(3, np.float32))])
    with pytest.raises(CheckpointError, match="sgd"):
        Adam().load_state_dict(sgd.state_dict())


@pytest.mark.parametrize("max_norm", [0.5, 100.0])
def test_clip_grad_norm_matches_torch(ref, max_norm):
    names = [str(n) for n in ref["names"]]
    grads = [ref[f"grad/0/{k}"].copy() for k in names]
    total = clip_grad_norm(grads, max_norm)
    np.testing.assert_allclose(total, float(ref[f"clip/{max_norm}/total"]), rtol=1e-6)
    for k, g in zip(names, grads, strict=True):
        np.testing.assert_allclose(g, ref[f"clip/{max_norm}/{k}"], rtol=1e-6, atol=1e-7)


@given(st.lists(st.floats(-1e3, 1e3), min_size=1, max_size=20),
       st.floats(1e-3, 1e3))
def test_clipped_norm_never_exceeds_max(values, max_norm):
    g = [np.array(values, dtype=np.float64)]
    clip_grad_norm(g, max_norm)
    assert np.linalg.norm(g[0]) <= max_norm * (1 + 1e-9)


def _train_section(**train):
    from cnncli.config import resolve_config

    model = {"input_shape": [4], "layers": [{"type": "dense", "units": 2}]}
    return resolve_config({"model": model, "train": train}).train


def test_make_optimizer_builds_what_the_resolved_section_says():
    sgd = make_optimizer(_train_section(optimizer="sgd", momentum=0.9, nesterov=True, lr=0.2))
    assert isinstance(sgd, SGD) and (sgd.lr, sgd.momentum, sgd.nesterov) == (0.2, 0.9, True)
    adamw = make_optimizer(_train_section(optimizer="adamw", lr=0.5, betas=[0.8, 0.9]))
    assert isinstance(adamw, AdamW) and adamw.lr == 0.5 and (adamw.beta1, adamw.beta2) == (0.8, 0.9)
    with pytest.raises(ConfigError, match="'rmsprop'"):
        _train_section(optimizer="rmsprop")
    with pytest.raises(ConfigError, match="momentum"):
        _train_section(optimizer="sgd", nesterov=True, momentum=0.0)
