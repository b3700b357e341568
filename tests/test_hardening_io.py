"""Hostile files and streams (issue 12): every bad input is one line and an exit code, nothing is
written outside the folder the user chose, and no traceback or Python warning reaches stderr."""

import os

import pytest
from click.testing import CliRunner

from cnncli.cli.app import main
from cnncli.errors import CnncliError
from cnncli.files import safe_path
from cnncli.nn.model import model_from_entries
from cnncli.training.checkpoint import save_checkpoint


def run_cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def assert_one_line_error(result, code, *fragments):
    assert result.exit_code == code, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("cnncli: error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def files_under(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


# ---------------------------------------------------------------- 1. paths from names

def hostile_checkpoint(folder, name):
    """A checkpoint whose stored config names a conv layer ``name``, written without the
    config loader (as an attacker would), with weights that fit it."""
    entries = [{"type": "conv2d", "out_channels": 2, "kernel_size": 3, "name": name},
               {"type": "flatten"}, {"type": "dense", "units": 3, "name": "fc"}]
    model = model_from_entries([1, 6, 6], entries, seed=0)
    config = {"name": "t", "seed": 0, "model": {"input_shape": [1, 6, 6], "layers": entries}}
    return save_checkpoint(folder / "best.npz", config=config, model_state=model.state_dict(),
                           normalization={"mode": "none"}, class_names=["a", "b", "c"])


@pytest.mark.parametrize("name", ["../../escaped", "a/b", "..\\..\\escaped", "bell\x07",
                                  "/tmp/abs"])
@pytest.mark.parametrize("picture", ["--filters", "--receptive-field"])
def test_show_with_a_hostile_layer_name_in_a_checkpoint_writes_nothing_outside(tmp_path,
                                                                               name, picture):
    run_dir = tmp_path / "deep" / "run"
    path = hostile_checkpoint(run_dir, name)
    result = run_cli("show", path, picture)
    assert_one_line_error(result, 2, "refusing to write a file named", "--out")
    assert files_under(tmp_path) == ["deep/run/best.npz"]
    out = tmp_path / "chosen.png"   # a file the user names is written whatever the layer name
    assert run_cli("show", path, picture, "--out", out).exit_code == 0
    assert files_under(tmp_path) == ["chosen.png", "deep/run/best.npz"]


def test_safe_path_refuses_parts_that_leave_the_folder(tmp_path):
    assert safe_path(tmp_path, "filters_conv1.png") == tmp_path / "filters_conv1.png"
    assert safe_path(".", "curves.png") == type(tmp_path)("curves.png")
    for part in ("..", ".", "a/b", "../x.png", "", "nul\x00.png", "/etc/passwd", "x\ny"):
        with pytest.raises(CnncliError, match="refusing to write a file named") as caught:
            safe_path(tmp_path, part)
        assert repr(part) in str(caught.value)


def test_safe_path_refuses_a_symlink_pointing_outside(tmp_path):
    outside = tmp_path / "outside.png"
    (tmp_path / "run").mkdir()
    os.symlink(outside, tmp_path / "run" / "curves.png")
    with pytest.raises(CnncliError, match="leads outside"):
        safe_path(tmp_path / "run", "curves.png")
    assert not outside.exists()


def test_plot_default_png_does_not_follow_a_symlink_out_of_the_run(tmp_path):
    pytest.importorskip("matplotlib")
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.csv").write_text("epoch,train_loss\n1,0.5\n2,0.4\n")
    os.symlink(tmp_path / "elsewhere.png", run / "curves.png")
    assert_one_line_error(run_cli("plot", run), 2, "leads outside")
    assert not (tmp_path / "elsewhere.png").exists()
