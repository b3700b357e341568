"""Streamed datasets: npy_dir (cnncli data pack) memory-mapped, image folders decoded per batch
in loader threads; the same statistics, batches and weights as the in-memory path."""

from __future__ import annotations

import re
import threading

import numpy as np
import pytest
from click.testing import CliRunner

from cnncli.cli import main
from cnncli.config.schema import DataConfig
from cnncli.data import load_dataset
from cnncli.data.streaming import ImageRows, _read_ahead
from cnncli.data.transforms import CHUNK_IMAGES, channel_moments, fit_normalization
from cnncli.errors import DataError
from cnncli.training.trainer import train

MODEL = {"input_shape": [3, 6, 6], "layers": [
    {"type": "conv2d", "out_channels": 4, "kernel_size": 3, "padding": 1, "activation": "relu"},
    {"type": "batchnorm2d"}, {"type": "maxpool2d", "kernel_size": 2}, {"type": "flatten"},
    {"type": "dropout", "p": 0.2}, {"type": "dense", "units": 3}]}


def _config(path, **data):
    return {"name": "s", "seed": 3, "model": MODEL,
            "data": {"path": str(path), "val_split": 0.2, "normalize": "standardize",
                     "augment": {"random_crop": 1, "horizontal_flip": True}, **data},
            "train": {"epochs": 2, "batch_size": 7, "optimizer": "sgd", "momentum": 0.9}}


def _images(rng, n=40, size=(6, 6)):
    x = rng.integers(0, 256, (n, 3, *size), dtype=np.uint8)
    return x, np.arange(n) % 3


def _write_folder(folder, x, y):
    from PIL import Image
    for i, (img, label) in enumerate(zip(x, y, strict=True)):
        (folder / f"c{label}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.moveaxis(img, 0, -1)).save(folder / f"c{label}" / f"{i:03d}.png")


def _folder_and_npz(tmp_path, rng):
    """The same images as tmp_path/images/c*/ PNGs and as tmp_path/same.npz in folder order."""
    x, y = _images(rng)
    _write_folder(tmp_path / "images", x, y)
    order = np.argsort([f"c{label}/{i:03d}" for i, label in enumerate(y)], kind="stable")
    np.savez(tmp_path / "same.npz", x_train=x[order], y_train=y[order],
             class_names=np.array(["c0", "c1", "c2"]))


def _weights(run):
    return {k: v for k, v in run.model.state_dict().items()}


def _same_weights(a, b):
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_packed_npy_dir_trains_to_the_same_weights_as_the_npz_in_memory(tmp_path):
    x, y = _images(np.random.default_rng(0))
    np.savez(tmp_path / "d.npz", x_train=x, y_train=y, x_test=x[:9], y_test=y[:9])
    result = CliRunner().invoke(main, ["data", "pack", str(tmp_path / "d.npz"),
                                       str(tmp_path / "packed")])
    assert result.exit_code == 0, result.output
    assert "x_train.npy: [40, 3, 6, 6]" in result.output
    streamed = load_dataset(DataConfig(dataset=None, path=str(tmp_path / "packed"),
                                       normalize="standardize"), (3, 6, 6), 3, seed=1)
    memory = load_dataset(DataConfig(dataset=None, path=str(tmp_path / "d.npz"),
                                     normalize="standardize"), (3, 6, 6), 3, seed=1)
    assert isinstance(streamed.x_train, ImageRows)
    assert isinstance(streamed.x_train.source.mapped, np.memmap)
    for key in ("scale", "mean", "std"):
        np.testing.assert_array_equal(streamed.normalization[key], memory.normalization[key])
    np.testing.assert_array_equal(streamed.x_val[:], memory.x_val)
    runs = [train(_config(tmp_path / name), out_dir=tmp_path / f"run_{name}")
            for name in ("d.npz", "packed")]
    _same_weights(_weights(runs[0]), _weights(runs[1]))
    assert runs[0].test == {**runs[1].test, "checkpoint": runs[0].test["checkpoint"]}


def test_image_folder_streams_with_any_loader_thread_count_to_the_same_weights(tmp_path):
    pytest.importorskip("PIL")
    _folder_and_npz(tmp_path, np.random.default_rng(1))
    weights = [_weights(train(_config(tmp_path / "images", loader_threads=threads, prefetch=2),
                              out_dir=tmp_path / f"t{threads}")) for threads in (1, 4)]
    weights.append(_weights(train(_config(tmp_path / "same.npz"), out_dir=tmp_path / "npz")))
    _same_weights(weights[0], weights[1])
    _same_weights(weights[0], weights[2])


def test_streamed_statistics_match_numpy_over_many_pieces():
    rng = np.random.default_rng(2)
    x = rng.integers(0, 256, (2 * CHUNK_IMAGES + 5, 2, 3, 3), dtype=np.uint8)
    mean, var = channel_moments(x, np.float32(255))
    scaled = x.astype(np.float32) / np.float32(255)
    np.testing.assert_allclose(mean, scaled.mean(axis=(0, 2, 3), dtype=np.float64), rtol=1e-12)
    np.testing.assert_allclose(var, scaled.var(axis=(0, 2, 3), dtype=np.float64), rtol=1e-10)
    rows = ImageRows(x)
    streamed, memory = fit_normalization(rows, "standardize"), fit_normalization(x, "standardize")
    for key in ("mean", "std"):
        np.testing.assert_array_equal(streamed[key], memory[key])


def test_images_of_another_size_need_data_resize(tmp_path):
    pytest.importorskip("PIL")
    x, y = _images(np.random.default_rng(3), n=6, size=(9, 7))
    _write_folder(tmp_path / "big", x, y)
    cfg = DataConfig(dataset=None, path=str(tmp_path / "big"), normalize="none", val_split=0)
    with pytest.raises(DataError, match="7x9 .*takes 6x6") as err:
        load_dataset(cfg, (3, 6, 6), 3, seed=0)
    assert "data.resize: fit" in err.value.hint
    for resize in ("fit", "crop"):
        ds = load_dataset(DataConfig(**{**cfg.__dict__, "resize": resize}), (3, 6, 6), 3, seed=0)
        assert ds.x_train.shape == (6, 3, 6, 6) and ds.x_train[:].shape == (6, 3, 6, 6)


def test_a_read_error_is_raised_at_its_batch_and_closing_stops_the_reader():
    def read(i):
        if i == 3:
            raise DataError("image 3 is damaged")
        return i * 10

    got = []
    with pytest.raises(DataError, match="image 3"):
        for value in _read_ahead(read, range(6), depth=2):
            got.append(value)
    assert got == [0, 10, 20]
    before = threading.active_count()
    reader = _read_ahead(lambda i: i, range(10_000), depth=1)
    assert next(reader) == 0
    reader.close()
    assert threading.active_count() <= before


def test_pack_refuses_a_folder_that_is_not_empty_and_train_takes_data(tmp_path):
    x, y = _images(np.random.default_rng(4))
    np.savez(tmp_path / "d.npz", x_train=x, y_train=y)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    result = CliRunner().invoke(main, ["data", "pack", str(tmp_path / "d.npz"),
                                       str(tmp_path / "full")])
    assert result.exit_code == 2 and "is not empty" in result.output
    assert sorted(p.name for p in (tmp_path / "full").iterdir()) == ["keep.txt"]
    import yaml
    config = _config(tmp_path / "elsewhere.npz")
    config["train"]["epochs"] = 1
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    result = CliRunner().invoke(main, ["train", str(tmp_path / "c.yaml"), "-q", "--data",
                                       str(tmp_path / "d.npz"), "--out", str(tmp_path / "r")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "r" / "best.npz").is_file()



def _pack_fails(src, out, message):
    """`data pack SRC OUT` fails with one line matching ``message`` and leaves no OUT."""
    result = CliRunner().invoke(main, ["data", "pack", str(src), str(out), "--channels", "3"])
    assert result.exit_code == 2, result.output
    assert len(result.output.strip().splitlines()) == 1
    assert re.search(message, result.output), result.output
    assert not out.exists()


def test_pack_refuses_empty_class_damaged_image_and_mixed_sizes_leaving_no_folder(tmp_path):
    pytest.importorskip("PIL")
    from PIL import Image
    src, out = tmp_path / "src", tmp_path / "out"
    x, y = _images(np.random.default_rng(5), n=9)
    _write_folder(src, x, y)
    (src / "c3").mkdir()
    _pack_fails(src, out, "class 'c3' has no training images")
    (src / "c3").rmdir()
    (src / "c1" / "broken.png").write_bytes(b"\x89PNG broken")
    _pack_fails(src, out, "cannot read image .*broken.png")
    (src / "c1" / "broken.png").unlink()
    Image.fromarray(np.zeros((4, 5, 3), np.uint8)).save(src / "c2" / "odd.png")
    _pack_fails(src, out, "odd.png is 5x4 but .*one size .*--size HxW with --resize fit")
    result = CliRunner().invoke(main, ["data", "pack", str(src), str(out), "--channels", "3",
                                       "--size", "6x6", "--resize", "crop"])
    assert result.exit_code == 0, result.output
    assert np.load(out / "x_train.npy").shape == (10, 3, 6, 6)


def test_eval_data_reads_an_image_folder_and_its_pack_like_the_npz(tmp_path):
    pytest.importorskip("PIL")
    import json
    _folder_and_npz(tmp_path, np.random.default_rng(6))
    assert CliRunner().invoke(main, ["data", "pack", str(tmp_path / "images"),
                                     str(tmp_path / "packed"), "--channels", "3"]).exit_code == 0
    train(_config(tmp_path / "same.npz"), out_dir=tmp_path / "run")
    reports = []
    for data in ("same.npz", "images", "packed"):
        result = CliRunner().invoke(main, ["eval", str(tmp_path / "run"), "--data",
                                           str(tmp_path / data), "--split", "all", "--json"])
        assert result.exit_code == 0, result.output
        reports.append({k: v for k, v in json.loads(result.output).items() if k != "data"})
    assert reports[0] == reports[1] == reports[2]
    assert reports[0]["num_samples"] == 40


def test_train_notes_when_decoding_an_image_folder_costs_much_of_an_epoch(tmp_path,
                                                                         monkeypatch):
    pytest.importorskip("PIL")
    import yaml

    from cnncli.cli import train as train_cli
    x, y = _images(np.random.default_rng(7))
    _write_folder(tmp_path / "images", x, y)
    config = _config(tmp_path / "elsewhere")
    config["train"]["epochs"] = 1
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    command = ["train", str(tmp_path / "c.yaml"), "--data", str(tmp_path / "images"),
               "--overwrite", "--out", str(tmp_path / "r")]
    outputs = {}
    for share in (0.0, 1e9):   # every decoding cost is above 0 and below 1e9 epochs
        monkeypatch.setattr(train_cli, "DECODING_NOTE_SHARE", share)
        result = CliRunner().invoke(main, command)
        assert result.exit_code == 0, result.output
        outputs[share] = result.stderr
    assert re.fullmatch(r"cnncli: note: decoding the images costs \d+ us each, \d+% of an "
                        r"epoch's time; pack them once with `cnncli data pack .*images OUT "
                        r"--channels 3 --size 6x6` and train with --data OUT, or keep them "
                        r"decoded in the run with data.cache: true\n", outputs[0.0])
    assert outputs[1e9] == ""
    cached = CliRunner().invoke(main, command + ["--set", "data.cache=true"])
    assert cached.exit_code == 0 and cached.stderr == ""   # decoded in the first epoch only


def test_pack_of_idx_files_loads_as_the_idx_files_do(tmp_path):
    from test_data import write_idx
    rng = np.random.default_rng(8)
    x, y = rng.integers(0, 256, (30, 7, 7), dtype=np.uint8), np.arange(30) % 3
    (tmp_path / "idx").mkdir()
    write_idx(tmp_path / "idx" / "train-images-idx3-ubyte", x, gz=True)
    write_idx(tmp_path / "idx" / "train-labels-idx1-ubyte", y.astype(np.uint8), gz=True)
    write_idx(tmp_path / "idx" / "t10k-images-idx3-ubyte", x[:6])
    write_idx(tmp_path / "idx" / "t10k-labels-idx1-ubyte", y[:6].astype(np.uint8))
    result = CliRunner().invoke(main, ["data", "pack", str(tmp_path / "idx"),
                                       str(tmp_path / "packed")])
    assert result.exit_code == 0, result.output
    assert "x_test.npy: [6, 7, 7]" in result.output
    loaded = [load_dataset(DataConfig(dataset=None, path=str(tmp_path / name),
                                      normalize="standardize", val_split=0.2), (1, 7, 7), 3,
                           seed=4) for name in ("idx", "packed")]
    assert isinstance(loaded[1].x_train, ImageRows)
    for key in ("x_train", "x_val", "x_test"):
        np.testing.assert_array_equal(getattr(loaded[0], key), getattr(loaded[1], key)[:])
    np.testing.assert_array_equal(loaded[0].y_train, loaded[1].y_train)


def test_a_streamed_folder_holds_its_file_names_in_one_compact_array(tmp_path):
    """The list of files is what grows with a streamed folder: one array of relative names,
    handed out as the same Paths, in the same order, as the folder's sorted listing."""
    from cnncli.data.sources import _class_files

    for label in ("b", "a"):
        (tmp_path / label).mkdir()
        for k in (3, 1, 2):
            (tmp_path / label / f"img{k}.png").write_bytes(b"")
    files, labels = _class_files(tmp_path, ["a", "b"])
    expected = [tmp_path / c / f"img{k}.png" for c in ("a", "b") for k in (1, 2, 3)]
    assert list(files) == expected and [files[i] for i in range(6)] == expected
    assert len(files) == 6 and labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert files.nbytes <= 6 * 4 * len("b/img3.png")  # fixed-width names, no Path objects


@pytest.mark.parametrize("stored", ["NCHW", "NHWC", "NHW", "fortran", "big-endian float"])
def test_mapped_rows_are_read_as_the_mapping_holds_them(tmp_path, stored):
    """Rows of an .npy read from its file (one read per run of rows, no page mapped) or, for a
    Fortran-ordered array, through the mapping: the same values in every order and layout."""
    from cnncli.data.streaming import MappedArray, open_npy
    from cnncli.data.transforms import to_nchw

    rng = np.random.default_rng(4)
    x = rng.integers(0, 256, (50, 3, 5, 5), dtype=np.uint8)
    stored_array = {"NCHW": x, "NHWC": np.moveaxis(x, 1, -1), "NHW": x[:, 0],
                    "fortran": np.asfortranarray(x),
                    "big-endian float": x.astype(">f4")}[stored]
    np.save(tmp_path / "x.npy", stored_array)
    mapped = open_npy(tmp_path / "x.npy")
    shape = (1, 5, 5) if stored == "NHW" else (3, 5, 5)
    layout = "NHWC" if stored == "NHWC" else None
    rows = MappedArray(mapped, to_nchw(mapped, shape, layout, "x"))
    assert rows._direct == (stored != "fortran")
    expected = to_nchw(stored_array, shape, layout, "x")
    for index in (np.arange(50), np.arange(7, 19), rng.permutation(50)[:13],
                  np.array([3, 3, 4, 49, 0]), np.array([], np.int64)):
        rows.will_need(index)
        got = rows.read(index)
        assert got.dtype == expected.dtype
        np.testing.assert_array_equal(got, expected[index])
    rows.warm_up()  # a hint: reads nothing into this process


def test_a_truncated_npy_is_one_located_error_at_the_row_it_lacks(tmp_path):
    from cnncli.data.streaming import MappedArray, open_npy

    np.save(tmp_path / "x.npy", np.zeros((20, 1, 4, 4), np.uint8))
    mapped = open_npy(tmp_path / "x.npy")
    rows = MappedArray(mapped, mapped)
    with open(tmp_path / "x.npy", "r+b") as f:  # cut after the header and 10 rows
        f.truncate(mapped.offset + 10 * 16)
    np.testing.assert_array_equal(rows.read(np.arange(10)), 0)
    with pytest.raises(DataError, match=r"x\.npy is shorter than its header says \(row 12 is "
                                        r"missing\)"):
        rows.read(np.array([2, 12]))


def test_cached_image_folder_trains_as_without_and_later_runs_read_the_cache(tmp_path):
    """data.cache: the first epoch decodes and fills run/data_cache/train.npy, the later
    epochs and a resumed run read it (nothing decoded), the weights are the same bitwise as
    without the cache, and a changed file makes a new cache."""
    import json
    import os

    from cnncli.data import decoding_cost
    from cnncli.data.sources import read_image

    rng = np.random.default_rng(6)
    _folder_and_npz(tmp_path, rng)
    plain = train(_config(tmp_path / "images", prefetch=2), out_dir=tmp_path / "plain")
    cached = train(_config(tmp_path / "images", prefetch=2, cache=True),
                   out_dir=tmp_path / "cached")
    _same_weights(_weights(plain), _weights(cached))
    folder = tmp_path / "cached" / "data_cache"
    assert sorted(p.name for p in folder.iterdir()) == ["train.json", "train.npy"]
    stored = np.load(folder / "train.npy", allow_pickle=False)
    files = cached.dataset.x_train.source.files
    assert stored.shape == (40, 3, 6, 6)
    for row in (0, 17, 39):
        np.testing.assert_array_equal(stored[row], read_image(files.paths[row], 3))
    train_rows, val_rows = len(cached.dataset.y_train), len(cached.dataset.y_val)
    # the statistics pass and the first epoch (training and validation rows); not the second
    assert files.decoded == 2 * train_rows + val_rows
    assert decoding_cost(cached.dataset) > 0

    more = _config(tmp_path / "images", prefetch=2, cache=True)
    more["train"]["epochs"] = 3
    resumed = train(more, resume=tmp_path / "cached")
    assert resumed.dataset.x_train.source.files.decoded == 0
    assert decoding_cost(resumed.dataset) is None

    changed = next((tmp_path / "images" / "c1").iterdir())
    os.utime(changed, ns=(0, 0))
    again = train(_config(tmp_path / "images", prefetch=2, cache=True),
                  out_dir=tmp_path / "cached", overwrite=True)
    assert again.dataset.x_train.source.files.decoded == 2 * train_rows + val_rows
    assert json.loads((folder / "train.json").read_text())["files"] == 40
    assert not list(folder.glob(".*.part"))


def test_data_cache_must_be_a_bool_named_at_its_line(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("name: x\nmodel:\n  input_shape: [1, 8, 8]\n  layers: [{type: flatten}, "
                      "{type: dense, units: 10}]\ndata:\n  cache: 3\n")
    result = CliRunner().invoke(main, ["train", str(config), "--out", str(tmp_path / "run")])
    assert result.exit_code == 2
    assert f"{config}:6:3: data.cache must be true or false, got 3" in result.output
    assert not (tmp_path / "run").exists()


def test_a_cache_that_cannot_be_written_is_one_line_naming_it(tmp_path, monkeypatch):
    import errno

    from cnncli.data import decoded_cache

    def full(fd, data, offset):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(decoded_cache, "_write_at", full)
    _folder_and_npz(tmp_path, np.random.default_rng(2))
    with pytest.raises(DataError, match=r"cannot write the decoded images to .*data_cache.train"
                                        r"\.npy: No space left on device \(free space there, "
                                        r"or set data\.cache: false\)"):
        train(_config(tmp_path / "images", cache=True), out_dir=tmp_path / "run")
    assert not list((tmp_path / "run" / "data_cache").glob("*train*"))


def test_a_reader_that_does_not_write_takes_up_a_cache_another_process_finished(tmp_path):
    """An MPI rank other than 0 reads the image folder with writing off; once rank 0 has
    finished run/data_cache/train.npy, the rank reads that file from the next epoch on
    instead of decoding (the same bytes), and never writes there itself."""
    from cnncli.data.decoded_cache import DecodedCache
    from cnncli.data.sources import ImageFiles

    rng = np.random.default_rng(8)
    x, y = _images(rng, n=12)
    _write_folder(tmp_path / "images", x, y)
    cache = tmp_path / "run" / "data_cache" / "train.npy"

    paths = sorted((tmp_path / "images").glob("*/*.png"))

    def files():
        return ImageFiles(paths, (3, 6, 6), None)

    reader = DecodedCache(files(), cache, writing=False)
    assert reader.read_ahead                       # nothing finished yet: it decodes
    decoded = reader.read(np.arange(5))
    assert reader.files.decoded == 5 and not cache.parent.exists()

    writer = DecodedCache(files(), cache, writing=True)
    everything = writer.read(np.arange(12))        # one epoch of rank 0 fills the file
    assert cache.exists() and not writer.read_ahead

    assert not reader.read_ahead                   # the next epoch's start takes it up
    np.testing.assert_array_equal(reader.read(np.arange(5)), decoded)
    np.testing.assert_array_equal(reader.read(np.arange(12)), everything)
    assert reader.files.decoded == 5               # read from the file, not decoded
