"""Data sources, checks, stratified split and normalisation on generated files."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cnncli.config import DataConfig
from cnncli.data import load_dataset, load_inputs, normalize
from cnncli.data.sources import parse_idx
from cnncli.data.transforms import stratified_split
from cnncli.errors import DataError

CFG = {"dataset": None, "path": None, "layout": None, "val_split": 0.0, "normalize": "none"}


def _cfg(path, **kw):
    return DataConfig(**{**CFG, "path": str(path), **kw})


def _images(rng, n, c, h, w):
    return rng.integers(0, 256, size=(n, c, h, w), dtype=np.uint8)


def write_idx(path, array, gz=False):
    codes = {np.dtype(np.uint8): 0x08, np.dtype(">i4"): 0x0C, np.dtype(">f4"): 0x0D}
    array = np.asarray(array)
    if array.dtype.kind == "f":
        array = array.astype(">f4")
    elif array.dtype != np.uint8:
        array = array.astype(">i4")
    header = bytes([0, 0, codes[array.dtype], array.ndim]) + struct.pack(
        f">{array.ndim}I", *array.shape)
    blob = header + array.tobytes()
    if gz:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(blob))
    else:
        path.write_bytes(blob)
    return path


# ---------------------------------------------------------------- npz layouts

@pytest.mark.parametrize("layout", ["NHW", "NCHW", "NHWC"])
def test_npz_every_layout_gives_the_same_nchw(tmp_path, layout):
    rng = np.random.default_rng(0)
    c = 1 if layout == "NHW" else 3
    x = _images(rng, 12, c, 5, 6)
    stored = {"NHW": x[:, 0], "NCHW": x, "NHWC": x.transpose(0, 2, 3, 1)}[layout]
    y = np.arange(12) % 3
    np.savez(tmp_path / "d.npz", x_train=stored, y_train=y, x_test=stored[:4], y_test=y[:4],
             class_names=np.array(["a", "b", "c"]))
    ds = load_dataset(_cfg(tmp_path / "d.npz"), (c, 5, 6), 3, seed=0)
    np.testing.assert_array_equal(ds.x_train, x.astype(np.float32))
    np.testing.assert_array_equal(ds.x_test, x[:4].astype(np.float32))
    assert ds.x_train.flags.c_contiguous and ds.x_train.dtype == np.float32
    assert ds.y_train.dtype == np.int64 and ds.class_names == ["a", "b", "c"]
    assert ds.x_val.shape == (0, c, 5, 6)


def test_ambiguous_layout_needs_the_layout_key(tmp_path):
    rng = np.random.default_rng(1)
    x = _images(rng, 6, 3, 3, 3)  # C == H == W: both readings fit the model
    np.savez(tmp_path / "d.npz", x_train=x, y_train=np.zeros(6, int))
    with pytest.raises(DataError, match="layout") as err:
        load_dataset(_cfg(tmp_path / "d.npz"), (3, 3, 3), 2, seed=0)
    assert err.value.key == "layout"
    nhwc = load_dataset(_cfg(tmp_path / "d.npz", layout="NHWC"), (3, 3, 3), 2, seed=0)
    np.testing.assert_array_equal(nhwc.x_train, x.transpose(0, 3, 1, 2))


def test_layout_inferred_from_model_shape_for_3_32_3(tmp_path):
    x = _images(np.random.default_rng(2), 4, 3, 32, 3)  # (N, 3, 32, 3) is NCHW for [3, 32, 3]
    np.savez(tmp_path / "d.npz", x_train=x, y_train=np.zeros(4, int))
    ds = load_dataset(_cfg(tmp_path / "d.npz"), (3, 32, 3), 1, seed=0)
    np.testing.assert_array_equal(ds.x_train, x)


def test_no_test_split_gives_empty_arrays(tmp_path):
    np.savez(tmp_path / "d.npz", x_train=np.ones((4, 2, 2), np.uint8), y_train=[0, 1, 0, 1])
    ds = load_dataset(_cfg(tmp_path / "d.npz"), (1, 2, 2), 2, seed=0)
    assert ds.x_test.shape == (0, 1, 2, 2) and ds.y_test.shape == (0,)
    assert ds.class_names == ["0", "1"]


# ---------------------------------------------------------------- IDX

@pytest.mark.parametrize("gz", [False, True])
def test_idx_directory_gz_and_raw(tmp_path, gz):
    rng = np.random.default_rng(3)
    x, y = _images(rng, 20, 1, 7, 7)[:, 0], np.arange(20) % 4
    write_idx(tmp_path / "train-images-idx3-ubyte", x, gz)
    write_idx(tmp_path / "train-labels-idx1-ubyte", y.astype(np.uint8), gz)
    write_idx(tmp_path / "t10k-images-idx3-ubyte", x[:5], gz)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", y[:5].astype(np.uint8), gz)
    ds = load_dataset(_cfg(tmp_path), (1, 7, 7), 4, seed=0)
    np.testing.assert_array_equal(ds.x_train[:, 0], x)
    np.testing.assert_array_equal(ds.y_train, y)
    np.testing.assert_array_equal(ds.x_test[:, 0], x[:5])


def test_idx_file_pair_and_single_images_file(tmp_path):
    rng = np.random.default_rng(4)
    x, y = _images(rng, 6, 1, 4, 4)[:, 0], np.array([0, 1, 2, 0, 1, 2], np.uint8)
    img = write_idx(tmp_path / "train-images-idx3-ubyte", x, gz=True)
    lab = write_idx(tmp_path / "train-labels-idx1-ubyte", y, gz=True)
    pair = load_dataset(DataConfig(**{**CFG, "path": (str(img), str(lab))}), (1, 4, 4), 3,
                        seed=0)
    single = load_dataset(_cfg(img), (1, 4, 4), 3, seed=0)
    np.testing.assert_array_equal(pair.x_train[:, 0], x)
    np.testing.assert_array_equal(single.y_train, y)


def test_idx_float_and_int32_types_roundtrip():
    for array in (np.arange(6, dtype=np.float32).reshape(2, 3) / 7, np.arange(-3, 3)):
        dtype = ">f4" if array.dtype.kind == "f" else ">i4"
        code = 0x0D if array.dtype.kind == "f" else 0x0C
        blob = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
        got = parse_idx(blob + array.astype(dtype).tobytes(), "mem")
        np.testing.assert_array_equal(got, array.astype(dtype))


def test_idx_truncated_and_bad_magic(tmp_path):
    path = write_idx(tmp_path / "train-images-idx3-ubyte", np.zeros((3, 4, 4), np.uint8))
    path.write_bytes(path.read_bytes()[:-5])
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros(3, np.uint8))
    with pytest.raises(DataError, match=r"\(3, 4, 4\).*43 bytes"):
        load_dataset(_cfg(tmp_path), (1, 4, 4), 2, seed=0)
    with pytest.raises(DataError, match="not an IDX file"):
        parse_idx(b"PK\x03\x04rest", "x.idx")


# ---------------------------------------------------------------- image folders

def _write_pngs(folder, images_by_class):
    from PIL import Image
    for name, images in images_by_class.items():
        (folder / name).mkdir(parents=True)
        for i, img in enumerate(images):
            Image.fromarray(img).save(folder / name / f"{i}.png")


def test_image_folder_grey_and_rgb_with_train_test(tmp_path):
    pytest.importorskip("PIL")
    rng = np.random.default_rng(5)
    rgb = {c: [rng.integers(0, 256, (6, 5, 3), dtype=np.uint8) for _ in range(3)]
           for c in ("cat", "dog")}
    _write_pngs(tmp_path / "train", rgb)
    _write_pngs(tmp_path / "test", {"dog": rgb["dog"][:1]})
    ds = load_dataset(_cfg(tmp_path), (3, 6, 5), 2, seed=0)
    assert ds.class_names == ["cat", "dog"]
    np.testing.assert_array_equal(ds.y_train, [0, 0, 0, 1, 1, 1])
    np.testing.assert_array_equal(ds.x_train[0], rgb["cat"][0].transpose(2, 0, 1))
    np.testing.assert_array_equal(ds.y_test, [1])
    grey = {"a": [rng.integers(0, 256, (4, 4), dtype=np.uint8)], "b": [np.zeros((4, 4), np.uint8)]}
    _write_pngs(tmp_path / "flat", grey)
    flat = load_dataset(_cfg(tmp_path / "flat"), (1, 4, 4), 2, seed=0)
    np.testing.assert_array_equal(flat.x_train[0, 0], grey["a"][0])


def test_image_folder_mixed_sizes_and_missing_pillow(tmp_path, monkeypatch):
    pytest.importorskip("PIL")
    _write_pngs(tmp_path, {"a": [np.zeros((4, 4), np.uint8)], "b": [np.zeros((5, 4), np.uint8)]})
    with pytest.raises(DataError, match="all images must have one size"):
        load_dataset(_cfg(tmp_path), (1, 4, 4), 2, seed=0)
    import builtins
    real_import = builtins.__import__

    def no_pil(name, *args, **kw):
        if name == "PIL" or name.startswith("PIL."):
            raise ImportError(name)
        return real_import(name, *args, **kw)

    monkeypatch.setattr(builtins, "__import__", no_pil)
    with pytest.raises(DataError, match=r"pip install 'cnncli\[images\]'"):
        load_dataset(_cfg(tmp_path), (1, 4, 4), 2, seed=0)


# ---------------------------------------------------------------- bundled digits

def test_bundled_digits_scaled_by_16():
    ds = load_dataset(DataConfig(**{**CFG, "path": None, "dataset": "digits", "val_split": 0.1,
                                    "normalize": "scale"}), (1, 8, 8), 10, seed=0)
    assert float(ds.normalization["scale"]) == 16.0
    assert ds.x_train.max() == 1.0 and ds.x_train.min() == 0.0
    assert len(ds.y_train) + len(ds.y_val) == 1438 and len(ds.y_test) == 359
    assert ds.class_names == [str(i) for i in range(10)]


# ---------------------------------------------------------------- split

def _labelled(tmp_path, counts, seed=0):
    y = np.repeat(np.arange(len(counts)), counts)
    x = np.random.default_rng(seed).integers(0, 256, (len(y), 2, 2), dtype=np.uint8)
    np.savez(tmp_path / "d.npz", x_train=x, y_train=y)
    return x, y


def test_val_split_is_stratified_deterministic_and_disjoint(tmp_path):
    x, y = _labelled(tmp_path, [40, 20, 10])
    cfg = _cfg(tmp_path / "d.npz", val_split=0.2)
    a = load_dataset(cfg, (1, 2, 2), 3, seed=7)
    b = load_dataset(cfg, (1, 2, 2), 3, seed=7)
    c = load_dataset(cfg, (1, 2, 2), 3, seed=8)
    np.testing.assert_array_equal(np.bincount(a.y_val), [8, 4, 2])
    np.testing.assert_array_equal(a.x_val, b.x_val)
    assert not np.array_equal(a.x_val, c.x_val)
    # the union of train and val is exactly the original set of images
    rows = lambda arr: sorted(map(bytes, arr.astype(np.uint8).reshape(len(arr), -1)))  # noqa: E731
    assert rows(np.concatenate([a.x_train, a.x_val])) == rows(x[:, None])


@given(labels=st.lists(st.integers(0, 4), min_size=1, max_size=60),
       fraction=st.floats(0.0, 0.95), seed=st.integers(0, 2**32 - 1))
def test_stratified_split_properties(labels, fraction, seed):
    y = np.array(labels)
    train, val = stratified_split(y, fraction, np.random.default_rng(seed))
    again = stratified_split(y, fraction, np.random.default_rng(seed))
    np.testing.assert_array_equal(val, again[1])
    np.testing.assert_array_equal(np.sort(np.concatenate([train, val])), np.arange(len(y)))
    for cls in np.unique(y):
        count = int(np.sum(y == cls))
        assert int(np.sum(y[val] == cls)) == int(np.floor(fraction * count + 0.5))


def test_val_split_too_small_to_hold_an_image(tmp_path):
    _labelled(tmp_path, [3, 3])
    with pytest.raises(DataError, match="val_split 0.1 of 6 training images leaves no"):
        load_dataset(_cfg(tmp_path / "d.npz", val_split=0.1), (1, 2, 2), 2, seed=0)


# ---------------------------------------------------------------- normalisation

def test_standardize_uses_train_split_stats_and_reuses_them(tmp_path):
    rng = np.random.default_rng(9)
    x = rng.integers(0, 256, (30, 2, 3, 3), dtype=np.uint8)
    x[:, 1] //= 4
    np.savez(tmp_path / "d.npz", x_train=x, y_train=np.arange(30) % 3, x_test=x[:5],
             y_test=np.arange(5) % 3)
    ds = load_dataset(_cfg(tmp_path / "d.npz", normalize="standardize", val_split=0.2),
                      (2, 3, 3), 3, seed=0)
    np.testing.assert_allclose(ds.x_train.mean(axis=(0, 2, 3)), 0, atol=1e-5)
    np.testing.assert_allclose(ds.x_train.std(axis=(0, 2, 3)), 1, atol=1e-5)
    norm = ds.normalization
    train_raw = (ds.x_train * norm["std"][None, :, None, None] + norm["mean"][None, :, None, None])
    np.testing.assert_allclose(norm["mean"], (train_raw).mean(axis=(0, 2, 3)), atol=1e-5)
    assert float(norm["scale"]) == 255.0 and norm["mode"] == "standardize"
    # the test split was normalised with the training statistics, and normalize() repeats it
    np.testing.assert_allclose(normalize(x[:5], norm), ds.x_test, rtol=1e-6)
    stored = {k: np.asarray(v) for k, v in norm.items()}  # as a checkpoint returns them
    np.testing.assert_allclose(normalize(x[:5], stored), ds.x_test, rtol=1e-6)


def test_given_normalization_is_reused_not_refitted(tmp_path):
    x = np.random.default_rng(10).integers(0, 256, (8, 1, 2, 2), dtype=np.uint8)
    np.savez(tmp_path / "d.npz", x_train=x, y_train=np.arange(8) % 2)
    stored = {"mode": np.array("standardize"), "scale": np.float32(255), "mean":
              np.array([0.5], np.float32), "std": np.array([0.25], np.float32)}
    ds = load_dataset(_cfg(tmp_path / "d.npz", normalize="scale"), (1, 2, 2), 2, seed=0,
                      normalization=stored)
    np.testing.assert_allclose(ds.x_train, (x / 255.0 - 0.5) / 0.25, rtol=1e-5)
    assert ds.normalization is stored


def test_scale_of_float_data_and_none(tmp_path):
    x = np.linspace(0, 3, 4 * 4).reshape(4, 1, 2, 2).astype(np.float32)
    np.savez(tmp_path / "d.npz", x_train=x, y_train=[0, 1, 0, 1])
    scaled = load_dataset(_cfg(tmp_path / "d.npz", normalize="scale"), (1, 2, 2), 2, seed=0)
    assert float(scaled.normalization["scale"]) == 3.0 and scaled.x_train.max() == 1.0
    raw = load_dataset(_cfg(tmp_path / "d.npz", normalize="none"), (1, 2, 2), 2, seed=0)
    np.testing.assert_array_equal(raw.x_train, x)


# ---------------------------------------------------------------- checks

def _npz(tmp_path, **arrays):
    np.savez(tmp_path / "d.npz", **arrays)
    return _cfg(tmp_path / "d.npz")


@pytest.mark.parametrize("arrays, shape, classes, message", [
    ({"x_train": np.zeros((4, 3, 5, 5)), "y_train": np.zeros(4, int)}, (1, 5, 5), 2,
     r"3 channel\(s\) but the model input_shape \[1, 5, 5\] expects 1"),
    ({"x_train": np.zeros((4, 6, 5)), "y_train": np.zeros(4, int)}, (1, 5, 5), 2,
     r"6x5 \(HxW\) but the model input_shape \[1, 5, 5\] expects 5x5"),
    ({"x_train": np.zeros((4, 5, 5)), "y_train": np.array([0, 1, 2, 3])}, (1, 5, 5), 3,
     r"label 3 \(at index 3\) is outside 0..2: the model has 3 classes"),
    ({"x_train": np.zeros((4, 5, 5)), "y_train": np.array([0, -1, 0, 0])}, (1, 5, 5), 3,
     r"label -1 \(at index 1\) is outside"),
    ({"x_train": np.zeros((3, 5, 5)), "y_train": np.array([0, 1.5, 0])}, (1, 5, 5), 3,
     r"train label 1 is 1\.5, not an integer"),
    ({"x_train": np.zeros((3, 5, 5)), "y_train": np.array(["a", "b", "c"])}, (1, 5, 5), 3,
     r"dtype <U1; expected integer"),
    ({"x_train": np.array([[[0.0, np.nan]]] * 2), "y_train": np.zeros(2, int)}, (1, 1, 2), 1,
     r"x_train image 0 contains NaN or inf"),
    ({"x_train": np.zeros((0, 5, 5)), "y_train": np.zeros(0, int)}, (1, 5, 5), 2,
     r"training split is empty"),
    ({"x_train": np.zeros((4, 5, 5)), "y_train": np.zeros(3, int)}, (1, 5, 5), 2,
     r"train has 4 images but 3 labels"),
    ({"x_train": np.zeros((4, 5, 5)), "y_train": np.eye(4, dtype=int)}, (1, 5, 5), 4,
     r"one-hot"),
    ({"x_train": np.zeros((4, 5, 5)), "y_train": np.zeros(4, int),
      "x_test": np.zeros((2, 5, 5)), "y_test": np.array([0, 9])}, (1, 5, 5), 2,
     r"test label 9 \(at index 1\) is outside 0..1"),
    ({"x_train": np.zeros((4, 5, 5)), "y_train": np.zeros(4, int),
      "class_names": np.array(["a", "b", "c"])}, (1, 5, 5), 2,
     r"the data has 3 classes but the model outputs 2"),
    ({"x_train": np.zeros((4, 5, 5))}, (1, 5, 5), 2, r"lacks y_train"),
    ({"x_train": np.zeros((4, 5, 5)), "y_train": np.zeros(4, int), "x_test": np.zeros((1, 5, 5))},
     (1, 5, 5), 2, r"has x_test but not its partner"),
    ({"x_train": np.zeros((4, 5)), "y_train": np.zeros(4, int)}, (1, 5, 5), 2,
     r"shape \(4, 5\); expected \(N, H, W\)"),
])
def test_data_errors_name_both_numbers(tmp_path, arrays, shape, classes, message):
    with pytest.raises(DataError, match=message):
        load_dataset(_npz(tmp_path, **arrays), shape, classes, seed=0)


@pytest.mark.parametrize("y_bad, label, hint", [
    (np.array([0, 2**63, 1], np.uint64), "9223372036854775808", "labels must be class indices"),
    (np.array([0, 1e20, 1]), "100000000000000000000", "labels must be class indices"),
    (np.array([0, 7, 1], np.uint8), "7", "make the last layer output 8 units"),
])
def test_out_of_range_labels_are_shown_as_stored_not_wrapped_by_int64(tmp_path, y_bad, label,
                                                                    hint):
    with pytest.raises(DataError) as err:
        load_dataset(_npz(tmp_path, x_train=np.zeros((3, 2, 2)), y_train=y_bad), (1, 2, 2), 2,
                     seed=0)
    assert f"train label {label} (at index 1) is outside 0..1" in str(err.value)
    assert hint in str(err.value)


def test_unlocated_data_errors_name_the_data_file(tmp_path):
    """NaN pixels, count mismatches, bad labels: the message says which file, since the CLI
    cannot point at a config line for them."""
    cfg = _npz(tmp_path, x_train=np.zeros((4, 5, 5)), y_train=np.zeros(3, int))
    with pytest.raises(DataError) as err:
        load_dataset(cfg, (1, 5, 5), 2, seed=0)
    assert str(err.value) == f"{tmp_path / 'd.npz'}: train has 4 images but 3 labels"
    cfg = _npz(tmp_path, x_train=np.zeros((4, 6, 5)), y_train=np.zeros(4, int))
    with pytest.raises(DataError) as err:  # located at model.input_shape by the CLI instead
        load_dataset(cfg, (1, 5, 5), 2, seed=0)
    assert err.value.key == "input_shape" and str(err.value).startswith("x_train images")


def test_file_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist") as err:
        load_dataset(_cfg(tmp_path / "nope.npz"), (1, 2, 2), 2, seed=0)
    assert err.value.key == "path"
    (tmp_path / "bad.npz").write_bytes(b"not a zip file at all")
    with pytest.raises(DataError, match="not a readable NumPy file"):
        load_dataset(_cfg(tmp_path / "bad.npz"), (1, 2, 2), 2, seed=0)
    np.savez(tmp_path / "obj.npz", x_train=np.array([{"a": 1}], dtype=object), y_train=[0])
    with pytest.raises(DataError, match="refuses to load"):
        load_dataset(_cfg(tmp_path / "obj.npz"), (1, 2, 2), 2, seed=0)
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(DataError, match="is not an .npz, IDX file"):
        load_dataset(_cfg(tmp_path / "notes.txt"), (1, 2, 2), 2, seed=0)


def test_relative_path_resolves_against_root(tmp_path):
    np.savez(tmp_path / "d.npz", x_train=np.zeros((2, 2, 2), np.uint8), y_train=[0, 1])
    ds = load_dataset(_cfg("d.npz"), (1, 2, 2), 2, seed=0, root=tmp_path)
    assert len(ds.y_train) == 2


# ---------------------------------------------------------------- predict inputs

def test_load_inputs_npz_npy_and_png(tmp_path):
    pytest.importorskip("PIL")
    from PIL import Image
    rng = np.random.default_rng(11)
    x = rng.integers(0, 17, (3, 8, 8), dtype=np.uint8)
    np.save(tmp_path / "batch.npy", x)
    np.savez(tmp_path / "t.npz", x_test=x[:2], y_test=[0, 1])
    np.save(tmp_path / "one.npy", x[0])
    Image.fromarray((x[0] * 15).astype(np.uint8)).save(tmp_path / "digit.png")
    Image.fromarray(np.full((20, 30), 255, np.uint8)).save(tmp_path / "big.png")
    norm = {"mode": "scale", "scale": np.float32(16.0), "mean": np.zeros(1, np.float32),
            "std": np.ones(1, np.float32)}
    paths = [str(tmp_path / n) for n in ("batch.npy", "t.npz", "one.npy", "digit.png",
                                         "big.png")]
    got, labels = load_inputs(paths, (1, 8, 8), norm)
    assert got.shape == (8, 1, 8, 8) and got.dtype == np.float32
    assert labels == ["batch.npy[0]", "batch.npy[1]", "batch.npy[2]", "t.npz[0]", "t.npz[1]",
                      "one.npy[0]", "digit.png", "big.png"]
    np.testing.assert_allclose(got[:3, 0], x / 16.0)
    np.testing.assert_allclose(got[5, 0], x[0] / 16.0)
    # a 0..255 PNG is mapped to [0, 1] like the training data, and resized to the input size
    np.testing.assert_allclose(got[6, 0], x[0] * 15 / 255.0, atol=1e-6)
    np.testing.assert_allclose(got[7, 0], 1.0)


def test_load_inputs_same_name_in_two_folders_keeps_paths(tmp_path):
    for sub in ("a", "b"):
        (tmp_path / sub).mkdir()
        np.save(tmp_path / sub / "x.npy", np.zeros((1, 2, 2)))
    paths = [str(tmp_path / "a" / "x.npy"), str(tmp_path / "b" / "x.npy")]
    _, labels = load_inputs(paths, (1, 2, 2), {"mode": "none"})
    assert labels == [f"{paths[0]}[0]", f"{paths[1]}[0]"]


def test_load_inputs_errors(tmp_path):
    norm = {"mode": "none"}
    with pytest.raises(DataError, match="does not exist"):
        load_inputs([str(tmp_path / "x.npy")], (1, 4, 4), norm)
    np.savez(tmp_path / "m.npz", a=np.zeros((1, 4, 4)), b=np.zeros((1, 4, 4)))
    with pytest.raises(DataError, match="cannot tell which are the images"):
        load_inputs([str(tmp_path / "m.npz")], (1, 4, 4), norm)
    np.save(tmp_path / "wrong.npy", np.zeros((2, 5, 5)))
    with pytest.raises(DataError, match="5x5"):
        load_inputs([str(tmp_path / "wrong.npy")], (1, 4, 4), norm)
    (tmp_path / "a.csv").write_text("1,2")
    with pytest.raises(DataError, match="not an image, .npy or .npz"):
        load_inputs([str(tmp_path / "a.csv")], (1, 4, 4), norm)


def test_package_copy_of_digits_matches_the_repository_file():
    from pathlib import Path
    package = Path(__file__).parents[1] / "cnncli" / "datasets" / "digits.npz"
    repo = Path(__file__).parents[1] / "data" / "digits.npz"
    if not repo.is_file():
        pytest.skip("no repository data/ directory (installed package)")
    assert package.read_bytes() == repo.read_bytes(), \
        "copy data/digits.npz to cnncli/datasets/digits.npz after regenerating it"


def test_training_needs_two_classes_each_with_an_image(tmp_path):
    """One class (a folder with one subfolder, labels all 0) trains nothing: loss 0, "100%";
    an empty class folder is a class the model can never learn. Eval data may lack classes."""
    pytest.importorskip("PIL")
    img = np.zeros((4, 4), np.uint8)
    _write_pngs(tmp_path / "one", {"cat": [img, img]})
    with pytest.raises(DataError, match=r"one: every training image is of class 'cat'; a "
                                        r"classifier needs at least two classes") as info:
        load_dataset(_cfg(tmp_path / "one"), (1, 4, 4), 2, seed=0, training=True)
    assert info.value.key == "path"  # the CLI points at data.path in the config
    _write_pngs(tmp_path / "empty", {"cat": [img], "dog": [img]})
    (tmp_path / "empty" / "eel").mkdir()
    (tmp_path / "empty" / "eel" / "notes.txt").write_text("no images here")
    with pytest.raises(DataError, match=r"empty: class 'eel' has no training images, so the "
                                        r"model could never learn it"):
        load_dataset(_cfg(tmp_path / "empty"), (1, 4, 4), 3, seed=0, training=True)
    np.savez(tmp_path / "zeros.npz", x_train=np.zeros((6, 2, 2), np.uint8),
             y_train=np.zeros(6, np.int64))
    with pytest.raises(DataError, match=r"zeros\.npz: every training image is of class 0;"):
        load_dataset(_cfg(tmp_path / "zeros.npz"), (1, 2, 2), 3, seed=0, training=True)
    # evaluation data may hold any subset of the classes
    assert load_dataset(_cfg(tmp_path / "empty"), (1, 4, 4), 3, seed=0).class_names == \
        ["cat", "dog", "eel"]
    assert len(load_dataset(_cfg(tmp_path / "one"), (1, 4, 4), 1, seed=0).y_train) == 2
