"""`cnncli bench`: the JSON schema, positive figures, options and errors (no timing asserts)."""

import json

import pytest
from click.testing import CliRunner

from cnncli.cli.app import main

TINY = """\
name: tiny
model:
  input_shape: [1, 8, 8]
  layers:
    - {type: conv2d, name: c1, out_channels: 2, kernel_size: 3, padding: 1, activation: relu}
    - {type: maxpool2d, kernel_size: 2}
    - {type: flatten}
    - {type: dense, name: out, units: 3}
"""


@pytest.fixture
def tiny(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY)
    return path


def run(*args):
    result = CliRunner().invoke(main, ["bench", *map(str, args)])
    return result


def test_json_schema_and_positive_numbers(tiny):
    result = run(tiny, "--steps", 2, "--warmup", 1, "--batch-size", 4, "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert {"batch_size", "train_images_per_s", "infer_images_per_s", "peak_rss_mb",
            "layers"} <= set(data)
    assert data["batch_size"] == 4
    for key in ("train_images_per_s", "infer_images_per_s", "peak_rss_mb",
                "matmul_peak_gflops"):
        assert data[key] > 0, key
    every = data["matmul_peak_all_cores_gflops"]  # None where BLAS already uses every core
    assert every is None or every > 0
    names = [layer["name"] for layer in data["layers"]]
    types = [layer["type"] for layer in data["layers"]]
    # activation: relu becomes its own layer; every layer of the model is listed in order.
    assert names[0] == "c1" and names[-1] == "out"
    assert types == ["conv2d", "relu", "maxpool2d", "flatten", "dense"]
    for layer in data["layers"]:
        assert {"name", "type", "forward_ms", "backward_ms"} <= set(layer)
        assert layer["forward_ms"] > 0 and layer["backward_ms"] > 0, layer
    conv = data["layers"][0]
    assert conv["forward_gflops"] > 0 and conv["backward_gflops"] > 0
    assert data["layers"][1]["forward_gflops"] is None  # relu does no multiplications
    assert data["layers"][2]["forward_gflops"] is None  # nor does max pooling
    assert data["layers"][4]["forward_gflops"] > 0


def test_table_output(tiny):
    result = run(tiny, "--steps", 2, "--warmup", 0)
    assert result.exit_code == 0, result.output
    for text in ("c1", "maxpool2d", "forward ms", "images/s", "peak RSS", "GFLOP/s"):
        assert text in result.output


def test_threads_option(tiny):
    pytest.importorskip("threadpoolctl")
    from threadpoolctl import threadpool_info

    before = [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"]
    from cnncli.parallel import threads

    cnncli_before = threads.get_threads()
    result = run(tiny, "--steps", 2, "--warmup", 0, "--threads", 3, "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert (data["threads"], data["cnncli_threads"]) == (1, 3)  # BLAS on one thread inside
    result = run(tiny, "--steps", 2, "--warmup", 0, "--threads", 1, "--blas-threads", 2,
                 "--json")
    data = json.loads(result.output)
    assert (data["threads"], data["cnncli_threads"]) == (2, 1)
    after = [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"]
    assert after == before  # the limits are lifted when the command ends
    assert threads.get_threads() == cnncli_before


def test_checkpoint_config_is_accepted(tiny, tmp_path):
    from cnncli import build_model
    from cnncli.config import load_config
    from cnncli.training.checkpoint import save_checkpoint

    cfg = load_config(tiny)
    path = tmp_path / "tiny.npz"
    save_checkpoint(path, config=cfg, model_state=build_model(cfg).state_dict())
    result = run(path, "--steps", 1, "--warmup", 0, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["batch_size"] == 64
    # a run directory stands for its last.npz, as in summary and show
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    path.rename(run_dir / "last.npz")
    result = run(run_dir, "--steps", 1, "--warmup", 0, "--json")
    assert result.exit_code == 0, result.output
    assert [layer["name"] for layer in json.loads(result.output)["layers"]] == \
        [layer.name for layer in build_model(cfg).layers]


@pytest.mark.parametrize("args, fragment", [
    (["--steps", 0], "--steps"),
    (["--batch-size", 0], "--batch-size"),
    (["--threads", 0], "--threads"),
])
def test_bad_options(tiny, args, fragment):
    result = run(tiny, *args)
    assert result.exit_code == 2
    assert fragment in result.output


def test_missing_config_is_one_line_error(tmp_path):
    result = run(tmp_path / "nope.yaml", "--steps", 1)
    assert result.exit_code == 2
    assert "config file not found" in result.output
    assert "Traceback" not in result.output


def test_model_without_class_scores(tmp_path):
    path = tmp_path / "spatial.yaml"
    path.write_text("model:\n  input_shape: [1, 6, 6]\n  layers:\n"
                    "    - {type: conv2d, out_channels: 2, kernel_size: 3}\n")
    result = run(path, "--steps", 1, "--warmup", 0)
    assert result.exit_code == 2
    assert "class scores" in result.output
