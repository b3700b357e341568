"""Checkpoints: round trip, atomic writes under simulated crashes, and every unreadable file."""

import json
import os

import numpy as np
import pytest

from cnncli import files
from cnncli.errors import CheckpointError
from cnncli.training import checkpoint as ckpt_mod
from cnncli.training.checkpoint import FORMAT_VERSION, load_checkpoint, save_checkpoint

CONFIG = {"name": "tiny", "seed": 3,
          "model": {"input_shape": (1, 4, 4),
                    "layers": [{"type": "flatten"}, {"type": "dense", "units": 3, "name": "fc"}]}}


def _state(seed=0):
    rng = np.random.default_rng(seed)
    return {"fc.weight": rng.standard_normal((3, 16)).astype(np.float32),
            "fc.bias": rng.standard_normal(3).astype(np.float32),
            "bn.num_batches_tracked": np.array(7, dtype=np.int64)}


def _save(path, seed=0, **extra):
    state = _state(seed)
    kwargs = dict(config=CONFIG, model_state=state,
                  optimizer_state={"kind": np.array("sgd"), "steps": np.array(4),
                                   "momentum/fc.bias": np.ones(3, np.float32)},
                  epoch=2, step=40,
                  rng_state={"shuffle": np.random.default_rng(1).bit_generator.state},
                  normalization={"mode": np.array("scale"), "scale": np.float32(16.0)},
                  class_names=["a", "b", "c"], best_metric=0.75,
                  metrics=[{"epoch": 1, "train_loss": 1.5, "val_loss": None}],
                  run_state={"bad_epochs": 1})
    kwargs.update(extra)
    save_checkpoint(path, **kwargs)
    return state


def test_round_trip_preserves_everything(tmp_path):
    path = tmp_path / "run" / "last.npz"
    state = _save(path)
    ck = load_checkpoint(path)
    assert ck.state.keys() == state.keys()
    for k, v in state.items():
        assert ck.state[k].dtype == v.dtype
        np.testing.assert_array_equal(ck.state[k], v)
    assert ck.epoch == 2 and ck.step == 40 and ck.best_metric == 0.75
    assert ck.class_names == ["a", "b", "c"]
    assert ck.normalization["mode"] == "scale" and float(ck.normalization["scale"]) == 16.0
    assert ck.metrics == [{"epoch": 1, "train_loss": 1.5, "val_loss": None}]
    assert ck.run_state == {"bad_epochs": 1}
    assert str(ck.optimizer_state["kind"]) == "sgd"
    assert ck.config["model"]["input_shape"] == [1, 4, 4] and ck.config["seed"] == 3
    assert ck.format_version == FORMAT_VERSION
    gen = np.random.default_rng()
    gen.bit_generator.state = ck.rng_state["shuffle"]
    assert gen.random() == np.random.default_rng(1).random()


def test_file_is_plain_npz_without_pickle(tmp_path):
    _save(tmp_path / "c.npz")
    with np.load(tmp_path / "c.npz", allow_pickle=False) as data:
        assert int(data["format_version"]) == FORMAT_VERSION
        assert "params/fc.weight" in data.files and "optim/momentum/fc.bias" in data.files
        json.loads(str(data["metrics"]))


def test_model_rebuilds_with_stored_weights(tmp_path):
    state = _save(tmp_path / "c.npz")
    state.pop("bn.num_batches_tracked")
    save_checkpoint(tmp_path / "m.npz", config=CONFIG, model_state=state)
    model = load_checkpoint(tmp_path / "m.npz").model()
    x = np.random.default_rng(5).standard_normal((2, 1, 4, 4)).astype(np.float32)
    expected = x.reshape(2, 16) @ state["fc.weight"].T + state["fc.bias"]
    np.testing.assert_allclose(model.forward(x), expected, rtol=1e-5, atol=1e-6)


def test_run_directory_resolves_to_last(tmp_path):
    _save(tmp_path / "last.npz")
    assert load_checkpoint(tmp_path).path.name == "last.npz"


@pytest.mark.parametrize("where", ["during_write", "at_replace"])
def test_crash_mid_write_leaves_previous_file(tmp_path, monkeypatch, where):
    path = tmp_path / "last.npz"
    old = _save(path, seed=1)
    before = path.read_bytes()

    class Crash(BaseException):
        pass

    if where == "during_write":
        def partial_savez(f, **arrays):
            f.write(b"PK\x03\x04 half a zip")
            raise Crash
        monkeypatch.setattr(ckpt_mod.np, "savez", partial_savez)
    else:
        def no_replace(src, dst):
            raise Crash
        monkeypatch.setattr(files.os, "replace", no_replace)
    with pytest.raises(Crash):
        _save(path, seed=2)
    monkeypatch.undo()
    assert path.read_bytes() == before
    np.testing.assert_array_equal(load_checkpoint(path).state["fc.weight"], old["fc.weight"])
    assert os.listdir(tmp_path) == ["last.npz"]


def test_overwrite_replaces_contents(tmp_path):
    _save(tmp_path / "c.npz", seed=1)
    new = _save(tmp_path / "c.npz", seed=2)
    np.testing.assert_array_equal(load_checkpoint(tmp_path / "c.npz").state["fc.bias"],
                                  new["fc.bias"])


def _expect_error(path, match):
    with pytest.raises(CheckpointError, match=match) as info:
        load_checkpoint(path)
    assert "\n" not in str(info.value)


def test_missing_file(tmp_path):
    _expect_error(tmp_path / "nope.npz", "no checkpoint")


@pytest.mark.parametrize("keep", [0.1, 0.5, 0.9])
def test_truncated_file(tmp_path, keep):
    path = tmp_path / "c.npz"
    _save(path)
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * keep)])
    _expect_error(path, "truncated or corrupt")


def test_corrupt_bytes(tmp_path):
    path = tmp_path / "c.npz"
    _save(path)
    data = bytearray(path.read_bytes())
    rng = np.random.default_rng(0)
    for i in rng.integers(0, len(data), 200):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))
    _expect_error(path, "corrupt|not a cnncli")


def test_text_file(tmp_path):
    path = tmp_path / "c.npz"
    path.write_text("model: {}\n")
    _expect_error(path, "not an .npz file")


def test_foreign_npz_and_npy(tmp_path):
    np.savez(tmp_path / "other.npz", x=np.zeros(3))
    _expect_error(tmp_path / "other.npz", "not a cnncli checkpoint")
    np.save(tmp_path / "arr.npy", np.zeros(3))
    _expect_error(tmp_path / "arr.npy", "not a cnncli checkpoint")


def test_newer_format(tmp_path):
    path = tmp_path / "c.npz"
    _save(path)
    with np.load(path, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    arrays["format_version"] = np.array(FORMAT_VERSION + 1)
    np.savez(path, **arrays)
    _expect_error(path, "newer")


def test_weights_not_matching_the_model(tmp_path):
    save_checkpoint(tmp_path / "c.npz", config=CONFIG,
                    model_state={"fc.weight": np.zeros((3, 15), np.float32),
                                 "fc.bias": np.zeros(3, np.float32)})
    with pytest.raises(CheckpointError, match="fc.weight"):
        load_checkpoint(tmp_path / "c.npz").model()


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_weights_with_nan_or_inf_are_refused_not_evaluated(tmp_path, bad):
    """A diverged or damaged checkpoint would make eval report 'loss nan' as a result."""
    weight = np.zeros((3, 16), np.float32)
    weight[1, 2] = bad
    save_checkpoint(tmp_path / "c.npz", config=CONFIG,
                    model_state={"fc.weight": weight, "fc.bias": np.zeros(3, np.float32)})
    ck = load_checkpoint(tmp_path / "c.npz")  # its config and metrics stay readable
    with pytest.raises(CheckpointError, match=r"c\.npz: fc\.weight holds NaN or infinite "
                                              r"values .*use an earlier checkpoint"):
        ck.model()


@pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")
@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_written_files_get_the_usual_umask_mode_not_mkstemps_0600(tmp_path, umask):
    old = os.umask(umask)
    try:
        _save(tmp_path / "c.npz")
        files.atomic_write(tmp_path / "metrics.csv", lambda f: f.write(b"epoch\n"))
    finally:
        os.umask(old)
    for name in ("c.npz", "metrics.csv"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o666 & ~umask, name


MODEL_YAML = "model: {input_shape: [1, 4, 4], layers: [{type: flatten}, {type: dense, units: 3}]}"


@pytest.mark.parametrize("arrays, says", [
    ({"format_version": np.array("x"), "config": np.array(MODEL_YAML)}, "format_version is"),
    ({"format_version": np.array([1, 2]), "config": np.array(MODEL_YAML)}, "format_version is"),
    ({"format_version": np.array(1), "config": np.array(MODEL_YAML), "epoch": np.array("two")},
     "epoch is"),
    ({"format_version": np.array(1), "config": np.array(MODEL_YAML),
      "best_metric": np.array("high")}, "best_metric is"),
    # normalisation statistics that would silently rescale every input
    ({"format_version": np.array(1), "config": np.array(MODEL_YAML),
      "normalization/mode": np.array("scale")}, "normalization/scale is missing for mode scale"),
    ({"format_version": np.array(1), "config": np.array(MODEL_YAML),
      "normalization/mode": np.array("bogus")}, "normalization/mode is 'bogus', expected one of"),
    ({"format_version": np.array(1), "config": np.array(MODEL_YAML),
      "normalization/mode": np.array("scale"), "normalization/scale": np.float32(0)},
     "normalization/scale is 0.0, expected one positive number"),
    ({"format_version": np.array(1), "config": np.array(MODEL_YAML),
      "normalization/mode": np.array("standardize"), "normalization/scale": np.float32(1),
      "normalization/mean": np.zeros(1, np.float32), "normalization/std": np.zeros(1, np.float32)},
     "normalization/mean and std must be finite"),
    ({"format_version": np.array(1), "config": np.array(MODEL_YAML),
      "normalization/mode": np.array("standardize"), "normalization/scale": np.float32(1)},
     "normalization/mean is missing"),
])
def test_malformed_fields_of_a_foreign_npz_are_one_line(tmp_path, arrays, says):
    np.savez(tmp_path / "odd.npz", **arrays)
    with pytest.raises(CheckpointError, match=f"odd.npz is not a readable cnncli checkpoint "
                                              f"\\({says}"):
        load_checkpoint(tmp_path / "odd.npz")


@pytest.mark.parametrize("config, says", [
    ("model: {input_shape: [1, 4, 4], layers: [{type: bogus}]}", "unknown layer type 'bogus'"),
    ("model: {layers: []}", "unusable config: model needs the key 'input_shape'"),
])
def test_a_stored_config_that_builds_no_model_is_one_line(tmp_path, config, says):
    np.savez(tmp_path / "odd.npz", format_version=np.array(1), config=np.array(config))
    with pytest.raises(CheckpointError, match="odd.npz") as err:
        load_checkpoint(tmp_path / "odd.npz").model()
    assert says in str(err.value)
