"""Hostile files and streams (issue 12): every bad input is one line and an exit code, nothing is
written outside the folder the user chose, and no traceback or Python warning reaches stderr."""

import os

import numpy as np
import pytest
import yaml
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
    """A checkpoint whose stored config and weights name a conv layer ``name``, written
    without cnncli's checks (as an attacker would): a valid one with the name swapped in."""
    entries = [{"type": "conv2d", "out_channels": 2, "kernel_size": 3, "name": "conv"},
               {"type": "flatten"}, {"type": "dense", "units": 3, "name": "fc"}]
    model = model_from_entries([1, 6, 6], entries, seed=0)
    config = {"name": "t", "seed": 0, "model": {"input_shape": [1, 6, 6], "layers": entries}}
    path = save_checkpoint(folder / "best.npz", config=config, model_state=model.state_dict(),
                           normalization={"mode": "none"}, class_names=["a", "b", "c"])
    with np.load(path, allow_pickle=False) as data:
        arrays = {k.replace("params/conv.", f"params/{name}."): data[k] for k in data.files}
    entries[0]["name"] = name
    arrays["config"] = np.array(yaml.safe_dump(config))
    path.unlink()
    np.savez(path, **arrays)
    return path


@pytest.mark.parametrize("name", ["../../escaped", "a/b", "..\\..\\escaped", "bell\x07",
                                  "/tmp/abs"])
@pytest.mark.parametrize("picture", ["--filters", "--receptive-field"])
def test_show_with_a_hostile_layer_name_in_a_checkpoint_writes_nothing_outside(tmp_path,
                                                                               name, picture):
    """The checkpoint's config is checked like a file: the name is refused before any
    picture is drawn (safe_path guards the file names as a second line of defence)."""
    run_dir = tmp_path / "deep" / "run"
    path = hostile_checkpoint(run_dir, name)
    result = run_cli("show", path, picture)
    assert_one_line_error(result, 2, "name must be letters, digits")
    assert files_under(tmp_path) == ["deep/run/best.npz"]
    result = run_cli("show", path, picture, "--out", tmp_path / "chosen.png")
    assert_one_line_error(result, 2, "name must be letters, digits")
    assert files_under(tmp_path) == ["deep/run/best.npz"]


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


# ---------------------------------------------------------------- 2. sizes claimed by headers

def npy_bytes(shape, descr="<f4", data=b"\0" * 64):
    """A .npy file whose header claims ``shape`` whatever ``data`` really holds."""
    header = repr({"descr": descr, "fortran_order": False, "shape": tuple(shape)}).encode()
    header += b" " * (-(len(header) + 11) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header + data


def lying_npz(path, **members):
    import zipfile

    with zipfile.ZipFile(path, "w") as zf:
        for name, blob in members.items():
            zf.writestr(name, blob)
    return path


TERA = (10**6, 10**6, 10**3)   # 4 * 10**15 bytes of float32


def train_config(folder, data_path, input_shape=(1, 4, 4)):
    import yaml

    config = {"name": "t", "seed": 0,
              "model": {"input_shape": list(input_shape),
                        "layers": [{"type": "flatten"}, {"type": "dense", "units": 3}]},
              "data": {"path": str(data_path), "normalize": "none"},
              "train": {"epochs": 1, "batch_size": 4}}
    path = folder / "c.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_npz_member_whose_header_claims_petabytes_is_one_line(tmp_path):
    data = lying_npz(tmp_path / "d.npz", **{"x_train.npy": npy_bytes(TERA),
                                            "y_train.npy": npy_bytes((3,), "<i8", b"\0" * 24)})
    result = run_cli("train", train_config(tmp_path, data), "--out", tmp_path / "run")
    assert_one_line_error(result, 2, "corrupt file", "x_train.npy's header claims "
                          "4,000,000,000,000,000 bytes", "the file has 64 bytes")


def test_npy_input_with_a_lying_header_is_one_line(tmp_path):
    ckpt = hostile_checkpoint(tmp_path / "run", "conv")
    (tmp_path / "x.npy").write_bytes(npy_bytes(TERA))
    result = run_cli("predict", ckpt, tmp_path / "x.npy")
    assert_one_line_error(result, 2, "x.npy's header claims 4,000,000,000,000,000 bytes")


def test_checkpoint_member_whose_header_claims_petabytes_is_one_line(tmp_path):
    import zipfile

    ckpt = hostile_checkpoint(tmp_path / "run", "conv")
    with zipfile.ZipFile(ckpt) as zf:
        members = {name: zf.read(name) for name in zf.namelist()}
    members["params/fc.weight.npy"] = npy_bytes(TERA)
    lying_npz(ckpt, **members)
    for command in (["eval", ckpt], ["summary", ckpt], ["train", "--resume", ckpt]):
        result = run_cli(*command)
        assert_one_line_error(result, 2, "params/fc.weight.npy's header claims")


def test_zip_member_claiming_more_than_deflate_can_hold_is_one_line(tmp_path):
    import zipfile

    path = tmp_path / "d.npz"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("x_train.npy", npy_bytes((4,), data=b"\0" * 16))
    blob = bytearray(path.read_bytes())
    # file_size in the central directory and local header: 2**31 bytes from a few bytes
    for sig, offset in ((b"PK\x01\x02", 24), (b"PK\x03\x04", 22)):
        at = blob.index(sig) + offset
        blob[at:at + 4] = (2**31).to_bytes(4, "little")
    path.write_bytes(bytes(blob))
    result = run_cli("train", train_config(tmp_path, path), "--out", tmp_path / "run")
    assert_one_line_error(result, 2, "x_train.npy claims 2,147,483,648 bytes")


def idx_bytes(code, shape, data=b""):
    return bytes([0, 0, code, len(shape)]) + b"".join(int(d).to_bytes(4, "big")
                                                      for d in shape) + data


def test_idx_header_with_overflowing_sizes_is_one_line(tmp_path):
    # 2**32-1 cubed times 8 bytes wraps around int64; the header must still be compared
    (tmp_path / "train-images-idx3-ubyte").write_bytes(idx_bytes(0x0E, [2**32 - 1] * 3,
                                                                 b"\0" * 64))
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(idx_bytes(0x08, [3], b"\0\1\2"))
    result = run_cli("train", train_config(tmp_path, tmp_path), "--out", tmp_path / "run")
    assert_one_line_error(result, 2, "corrupt file: IDX header claims (4294967295, "
                          "4294967295, 4294967295)", "the file has 64 bytes")


def test_idx_header_with_255_dimensions_is_one_line(tmp_path):
    (tmp_path / "train-images-idx3-ubyte").write_bytes(idx_bytes(0x08, [1] * 255))
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(idx_bytes(0x08, [1], b"\0"))
    result = run_cli("train", train_config(tmp_path, tmp_path), "--out", tmp_path / "run")
    assert_one_line_error(result, 2, "corrupt IDX header: 255 dimensions")


def test_gzipped_idx_claiming_more_than_it_can_hold_is_refused_before_decompressing(tmp_path):
    import gzip

    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(
        gzip.compress(idx_bytes(0x08, [10**9, 100, 100], b"\0" * 1000)))
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(idx_bytes(0x08, [1], b"\0"))
    result = run_cli("train", train_config(tmp_path, tmp_path), "--out", tmp_path / "run")
    assert_one_line_error(result, 2, "= 10,000,000,000,000 bytes, more than",
                          "compressed bytes can hold")


def png_claiming(path, width, height):
    """A PNG whose header claims width x height but whose data is a few bytes."""
    import struct
    import zlib

    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    path.write_bytes(b"\x89PNG\r\n\x1a\n"
                     + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(b"\0" * (width + 1)))
                     + chunk(b"IEND", b""))
    return path


@pytest.mark.parametrize("side", [10_000, 100_000])
def test_png_claiming_gigapixels_is_refused_before_decoding(tmp_path, side):
    pytest.importorskip("PIL")
    ckpt = hostile_checkpoint(tmp_path / "run", "conv")
    bomb = png_claiming(tmp_path / "bomb.png", side, side)
    result = run_cli("predict", ckpt, bomb)
    assert_one_line_error(result, 2, "bomb.png is too large to read", "decompression bomb")


def test_weights_are_drawn_in_float32_without_a_float64_copy():
    import math
    import tracemalloc

    from cnncli.nn.layers.init import init_weight

    for scheme in ("default", "he_normal"):
        shape = (512, 1024)
        tracemalloc.start()
        w = init_weight(np.random.default_rng(0), shape, 1024, 512, scheme, np.float32)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert w.dtype == np.float32 and w.shape == shape
        assert peak < 1.5 * w.nbytes      # a float64 draw first would be 3x
        if scheme == "default":
            assert np.abs(w).max() <= 1 / math.sqrt(1024)
        assert abs(float(w.std()) - (1 / math.sqrt(3 * 1024) if scheme == "default"
                                     else math.sqrt(2 / 1024))) < 0.01 * w.std()
    # float64 weights are exactly NumPy's uniform draw (seeded float64 runs are unchanged)
    w64 = init_weight(np.random.default_rng(5), (7, 9), 9, 7, "default", np.float64)
    np.testing.assert_array_equal(w64, np.random.default_rng(5).uniform(-1 / 3, 1 / 3, (7, 9)))


# ---------------------------------------------------------------- 3. checkpoint metadata

TINY = """name: tiny
seed: 0
model:
  input_shape: [1, 8, 8]
  layers:
    - {type: conv2d, name: conv1, out_channels: 2, kernel_size: 3, padding: 1, activation: relu}
    - {type: maxpool2d, name: pool, kernel_size: 2}
    - {type: flatten}
    - {type: dense, name: out, units: 10}
data: {dataset: digits, val_split: 0.1, normalize: scale}
train: {epochs: 1, batch_size: 256, optimizer: adam, lr: 0.003}
"""


def train_tiny(folder):
    """last.npz of a real one-epoch run on the bundled digits (Adam state, RNG states,
    metrics) in ``folder``/run."""
    (folder / "tiny.yaml").write_text(TINY)
    result = run_cli("train", folder / "tiny.yaml", "--out", folder / "run", "-q")
    assert result.exit_code == 0, result.output
    return folder / "run" / "last.npz"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return train_tiny(tmp_path_factory.mktemp("trained"))


def rewritten(source, target, changes):
    """A copy of checkpoint ``source`` with members replaced (None deletes one)."""
    arrays = dict(np.load(source, allow_pickle=False))
    for key, value in changes.items():
        if value is None:
            arrays.pop(key)
        else:
            arrays[key] = np.asarray(value)
    target.parent.mkdir(parents=True, exist_ok=True)
    np.savez(target, **arrays)
    return target


BAD_METADATA = {
    "rng_state": ({"rng_state": '{"batches": {"bit_generator": "PCG64", "state": 5}}'},
                  "rng_state['batches'] is not a generator state"),
    "rng_state_kind": ({"rng_state": '{"batches": {"bit_generator": "MT19937"}}'},
                       "rng_state['batches'] is not a generator state"),
    "metrics_type": ({"metrics": '{"epoch": 1}'}, "metrics is not a list"),
    "metrics_row": ({"metrics": '["x"]'}, "metrics row 1 is not a mapping"),
    "metrics_value": ({"metrics": '[{"epoch": 1, "train_loss": "low"}]'},
                      "metrics row 1: train_loss is 'low'"),
    "run_state_type": ({"run_state": "[1]"}, "run_state is not a mapping"),
    "run_state_value": ({"run_state": '{"bad_epochs": -1}'}, "run_state bad_epochs is -1"),
    "optim_steps_negative": ({"optim/steps": -1}, "optim/steps is -1"),
    "optim_steps_missing": ({"optim/steps": None}, "optim/steps is missing"),
    "optim_slot_shape": ({"optim/exp_avg/out.bias": np.zeros(3, np.float32)},
                         "optim/exp_avg/out.bias belongs to no stored parameter"),
    "param_strings": ({"params/out.bias": np.array(["a"] * 10)},
                      "params/out.bias is <U1, expected numbers"),
    "class_names_numbers": ({"class_names": np.arange(10)}, "class_names is int64"),
    "format_version": ({"format_version": 0}, "format_version is 0"),
    "epoch_negative": ({"epoch": -3}, "epoch -3 and step"),
    "version_type": ({"cnncli_version": 5}, "cnncli_version is int64"),
    "json_syntax": ({"run_state": "{"}, "run_state is not JSON"),
}


@pytest.mark.parametrize("case", sorted(BAD_METADATA))
def test_malformed_checkpoint_metadata_is_one_line_naming_the_key(trained, tmp_path, case):
    changes, message = BAD_METADATA[case]
    path = rewritten(trained, tmp_path / "bad" / "last.npz", changes)
    for command in (["train", "--resume", path, "--epochs", "2", "-q"], ["eval", path]):
        assert_one_line_error(run_cli(*command), 2, message)


def test_adam_state_missing_one_slot_is_one_line(trained, tmp_path):
    path = rewritten(trained, tmp_path / "bad" / "last.npz", {"optim/exp_avg_sq/out.bias": None})
    assert_one_line_error(run_cli("train", "--resume", path, "--epochs", "2", "-q"), 2,
                          "adam state of out.bias holds exp_avg, expected exp_avg, exp_avg_sq")


def test_checkpoint_member_that_is_not_npy_is_one_line(trained, tmp_path):
    import shutil
    import zipfile

    path = tmp_path / "run" / "last.npz"
    path.parent.mkdir()
    shutil.copy(trained, path)
    with zipfile.ZipFile(path, "a") as zf:
        zf.writestr("notes.txt", "hello")
    for command in (["eval", path], ["summary", path], ["show", path, "--filters"]):
        assert_one_line_error(run_cli(*command), 2, "member 'notes.txt' is not a .npy array")


def test_resumed_rows_without_some_columns_still_print_the_table(trained, tmp_path):
    path = rewritten(trained, tmp_path / "run" / "last.npz", {"metrics": '[{"epoch": 1}]'})
    result = run_cli("train", "--resume", path, "--epochs", "2")
    assert result.exit_code == 0, result.output
    assert "training summary" in result.output


# ---------------------------------------------------------------- 3. streams and Ctrl-C

REPO = __import__("pathlib").Path(__file__).resolve().parent.parent


def run_program(*args, **popen):
    """The real program in a subprocess (streams and signals are its own)."""
    import subprocess
    import sys

    code = "import sys; sys.argv[0] = 'cnncli'; from cnncli.cli import main; main()"
    return subprocess.run([sys.executable, "-c", code, *map(str, args)], cwd=REPO,
                          stderr=subprocess.PIPE, text=True, timeout=120, **popen)


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_stdout_on_a_full_device_is_one_line_exit_1():
    for args in (["summary", "configs/digits.yaml"], ["layers"], ["--help"]):
        with open("/dev/full", "w") as full:
            result = run_program(*args, stdout=full)
        assert result.returncode == 1, result.stderr
        assert result.stderr == ("cnncli: error: cannot write to standard output: No space "
                                 "left on device\n")


def test_stdout_closed_by_the_reader_exits_141_quietly():
    read, write = os.pipe()
    os.close(read)                 # `| head -1` after head has gone
    try:
        result = run_program("layers", stdout=write)
    finally:
        os.close(write)
    assert result.returncode == 141 and result.stderr == ""


def test_ctrl_c_while_importing_is_one_line_exit_130():
    import subprocess
    import sys

    code = ("import builtins, sys\n"
            "sys.argv = ['cnncli', 'layers']\n"
            "real = builtins.__import__\n"
            "def interrupting(name, *args, **kwargs):\n"
            "    if name == 'yaml':\n"     # a Ctrl-C that lands while the package imports
            "        raise KeyboardInterrupt\n"
            "    return real(name, *args, **kwargs)\n"
            "builtins.__import__ = interrupting\n"
            "from cnncli.cli import main\n"
            "main()\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 130
    assert result.stderr == "\ncnncli: interrupted\n"


def test_ctrl_c_while_parsing_is_one_line_exit_130(monkeypatch):
    import click

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(click.Group, "make_context", interrupt)
    result = run_cli("layers")
    assert result.exit_code == 130 and result.stderr == "\ncnncli: interrupted\n"


# ---------------------------------------------------------------- 3. plot of a diverged run

DIVERGED = ("epoch,train_loss,train_accuracy,val_loss,val_accuracy,lr,seconds\n"
            "1,1e308,0.1,inf,0.1,0.01,1\n2,-1e308,0.2,nan,0.2,0.01,1\n3,0.5,0.3,0.4,0.3,0.01,1\n")


def diverged_run(folder):
    folder.mkdir()
    (folder / "metrics.csv").write_text(DIVERGED)
    return folder


def assert_skips_said_once(result):
    assert result.exit_code == 0, result.output
    assert result.stderr.count("cnncli:") <= 1 and "Traceback" not in result.output
    assert ("run: 3 inf or huge values not drawn (train_loss at epoch 1, train_loss at "
            "epoch 2, val_loss at epoch 1)") in result.stdout


def test_plot_of_metrics_with_inf_skips_them_and_says_so_with_matplotlib(tmp_path):
    pytest.importorskip("matplotlib")
    import warnings

    run = diverged_run(tmp_path / "run")
    with warnings.catch_warnings():
        warnings.simplefilter("error")    # matplotlib overflowing its axes would warn first
        result = run_cli("plot", run)
    assert_skips_said_once(result)
    assert (run / "curves.png").stat().st_size > 1000


def test_plot_of_metrics_with_inf_skips_them_and_says_so_without_matplotlib(tmp_path,
                                                                           monkeypatch):
    import sys

    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    result = run_cli("plot", diverged_run(tmp_path / "run"), "--terminal")
    assert_skips_said_once(result)
    assert "run train loss" in result.stdout and "0.5" in result.stdout


# ---------------------------------------------------------------- 4. no Python warnings

def test_normal_paths_are_clean_with_warnings_as_errors(tmp_path):
    """PYTHONWARNINGS=error turns any warning that would leak to stderr into a failure."""
    import subprocess
    import sys

    pytest.importorskip("PIL")
    from PIL import Image

    (tmp_path / "tiny.yaml").write_text(TINY)
    Image.fromarray(np.tile(np.arange(8, dtype=np.uint8) * 30, (8, 1))).save(tmp_path / "d.png")
    run, ckpt = tmp_path / "run", tmp_path / "run" / "best.npz"
    env = {**os.environ, "PYTHONWARNINGS": "error"}
    commands = [["train", "tiny.yaml", "--out", run], ["eval", ckpt], ["predict", ckpt, "d.png"],
                ["summary", "tiny.yaml"], ["summary", ckpt], ["layers"],
                ["show", ckpt, "--filters"], ["show", ckpt, "--features", "d.png"],
                ["show", ckpt, "--receptive-field", "--input", "d.png"],
                ["plot", run, "--terminal"],
                ["train", "--resume", run, "--epochs", "2", "-q"]]
    for command in commands:
        result = subprocess.run([sys.executable, "-m", "cnncli", *map(str, command)],
                                cwd=tmp_path, env=env, capture_output=True, text=True,
                                timeout=300)
        assert result.returncode == 0, (command, result.stderr)
        noise = [line for line in result.stderr.splitlines()
                 if not line.startswith("cnncli: matplotlib is not installed")]
        assert noise == [], (command, result.stderr)


def test_data_beyond_float32_is_one_line_not_a_learning_rate_hint(tmp_path):
    x = np.full((6, 4, 4), 1e300)
    np.savez(tmp_path / "d.npz", x_train=x, y_train=np.arange(6) % 3)
    result = run_cli("train", train_config(tmp_path, tmp_path / "d.npz"), "--out",
                     tmp_path / "run")
    assert_one_line_error(result, 2, "x_train image 0 holds 1e+300, beyond the float32 range")
    assert "lr" not in result.stderr


def test_a_checkpoint_whose_scores_overflow_is_one_line_not_nan(trained, tmp_path):
    huge = {key: np.full(value.shape, 3e38, np.float32)
            for key, value in np.load(trained).items() if key.startswith("params/")}
    path = rewritten(trained, tmp_path / "run" / "last.npz", huge)
    np.save(tmp_path / "x.npy", np.full((2, 1, 8, 8), 16, np.float32))
    for command in (["eval", path], ["predict", path, tmp_path / "x.npy"]):
        assert_one_line_error(run_cli(*command), 2, "class scores overflow to inf or NaN")
