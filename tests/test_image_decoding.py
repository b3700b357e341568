"""Image files as streamed training reads them: the lean PNG path gives PIL's own pixels, damaged
files are named, JPEGs are decoded at a reduced scale only when resized, and a batch is the same
whatever the number of decoding threads."""

from __future__ import annotations

import numpy as np
import pytest

from cnncli.data import png, sources
from cnncli.data.sources import ImageFiles, read_image
from cnncli.errors import DataError

Image = pytest.importorskip("PIL.Image")
PngImagePlugin = pytest.importorskip("PIL.PngImagePlugin")


def _smooth(rng, shape):
    """Images with structure (ramps plus noise), so PIL's encoder picks all five row filters."""
    ramp = np.add.outer(np.arange(shape[0]), np.arange(shape[1])) * 3
    ramp = ramp.reshape(shape[:2] + (1,) * (len(shape) - 2))
    return ((ramp + rng.integers(0, 40, shape)) % 256).astype(np.uint8)


def _save_all_kinds(folder, rng):
    """One file per kind of PNG PIL writes: grey, RGB, RGBA, text chunks and pixels split over
    several IDAT chunks (the lean path), and grey+alpha, palette, 16-bit, 1-bit and a
    transparent colour (left to PIL)."""
    grey, rgb, rgba = (_smooth(rng, s) for s in ((13, 11), (13, 11, 3), (13, 11, 4)))
    text = PngImagePlugin.PngInfo()
    text.add_text("Comment", "made by a test")
    images = {
        "grey": (Image.fromarray(grey), {}),
        "rgb": (Image.fromarray(rgb), {}),
        "rgba": (Image.fromarray(rgba), {}),
        "text": (Image.fromarray(rgb), {"pnginfo": text}),
        "many_idat": (Image.fromarray(rng.integers(0, 256, (160, 150, 3), dtype=np.uint8)), {}),
        "grey_alpha": (Image.fromarray(rgba[..., :2].copy(), "LA"), {}),
        "palette": (Image.fromarray(rgb).convert("P", palette=Image.ADAPTIVE, colors=7), {}),
        "sixteen": (Image.fromarray(grey.astype(np.uint16) * 257), {}),
        "one_bit": (Image.fromarray(grey > 128), {}),
        "transparent": (Image.fromarray(rgb), {"transparency": tuple(int(v) for v in rgb[0, 0])}),
    }
    paths = {}
    for name, (img, options) in images.items():
        paths[name] = folder / f"{name}.png"
        img.save(paths[name], **options)
    return paths


def test_lean_png_path_gives_pils_pixels_for_every_kind_mode_and_size(tmp_path, monkeypatch):
    paths = _save_all_kinds(tmp_path, np.random.default_rng(0))
    lean = {name for name, path in paths.items() if png.open_simple_png(path, 1 << 26)}
    assert lean == {"grey", "rgb", "rgba", "text", "many_idat"}
    assert paths["many_idat"].read_bytes().count(b"IDAT") > 1
    cases = [(c, size, resize) for c in (1, 3, 4) for size, resize in
             ((None, "none"), ((13, 11), "none"), ((8, 8), "fit"), ((8, 8), "crop"))]

    def outcome(path, case):
        try:
            return read_image(path, *case)
        except DataError as err:  # the 150x160 one is refused at 13x11 without a resize
            return str(err)

    got = {(name, case): outcome(path, case) for name, path in paths.items() for case in cases}
    monkeypatch.setattr(sources, "open_simple_png", lambda path, limit: None)  # PIL alone
    for (name, case), pixels in got.items():
        if isinstance(pixels, str):
            assert name == "many_idat" and pixels == outcome(paths[name], case)
            continue
        np.testing.assert_array_equal(pixels, outcome(paths[name], case),
                                      err_msg=f"{name} {case}")
        assert pixels.dtype == np.uint8 and pixels.shape[0] == case[0]


def test_lean_png_path_reads_a_png_header_size_and_refuses_too_many_pixels(tmp_path):
    Image.fromarray(np.zeros((5, 9), np.uint8)).save(tmp_path / "a.png")
    assert png.png_size(tmp_path / "a.png") == (9, 5)
    assert png.open_simple_png(tmp_path / "a.png", 44) is None     # 45 pixels > 44: PIL's turn
    (tmp_path / "b.jpg").write_bytes(b"\xff\xd8 not a png")
    assert png.png_size(tmp_path / "b.jpg") is None
    assert png.open_simple_png(tmp_path / "b.jpg", 1 << 26) is None


def test_a_damaged_png_is_named_or_read_whole_never_wrong(tmp_path):
    rng = np.random.default_rng(1)
    Image.fromarray(_smooth(rng, (12, 10, 3))).save(tmp_path / "whole.png")
    data = (tmp_path / "whole.png").read_bytes()
    whole = read_image(tmp_path / "whole.png", 3)
    damaged = [data[:cut] for cut in range(0, len(data), 7)]
    idat = data.index(b"IDAT")
    damaged += [data[:i] + bytes([data[i] ^ 0x5A]) + data[i + 1:]
                for i in range(idat + 4, min(len(data) - 12, idat + 60))]
    named = 0
    for i, blob in enumerate(damaged):
        path = tmp_path / f"bad{i}.png"
        path.write_bytes(blob)
        try:
            pixels = read_image(path, 3)
        except DataError as err:
            assert str(path) in str(err)
            named += 1
            continue
        np.testing.assert_array_equal(pixels, whole, err_msg=f"damaged file {i} read wrong")
    assert named > len(damaged) // 2


def test_a_large_jpeg_is_decoded_reduced_when_resized_and_stays_close(tmp_path):
    rng = np.random.default_rng(2)
    big = np.repeat(np.repeat(_smooth(rng, (40, 48, 3)), 8, axis=0), 8, axis=1)  # 320x384
    Image.fromarray(big).save(tmp_path / "big.jpg", quality=95)
    small = read_image(tmp_path / "big.jpg", 3, (32, 32), "fit")
    with Image.open(tmp_path / "big.jpg") as img:
        full = np.moveaxis(np.asarray(img.convert("RGB").resize((32, 32), Image.BILINEAR)), -1, 0)
    assert small.shape == (3, 32, 32)
    assert np.abs(small.astype(int) - full).mean() < 4  # the draft scale changes a few levels
    same = read_image(tmp_path / "big.jpg", 3)          # no resize: every pixel decoded
    assert same.shape == (3, 320, 384)


@pytest.mark.parametrize("threads", [1, 2, 3, 8])
def test_a_batch_and_its_first_bad_file_do_not_depend_on_the_thread_count(tmp_path, threads):
    rng = np.random.default_rng(3)
    images = rng.integers(0, 256, (11, 6, 5), dtype=np.uint8)
    paths = []
    for i, img in enumerate(images):
        paths.append(tmp_path / f"{i:02d}.png")
        Image.fromarray(img).save(paths[-1])
    rows = np.array([7, 0, 10, 3, 3, 5, 1])
    files = ImageFiles(paths, (1, 6, 5), None, threads)
    np.testing.assert_array_equal(files.read(rows)[:, 0], images[rows])
    assert files.decoded == len(rows) and files.decode_seconds >= 0
    for bad in (5, 9):
        paths[bad].write_bytes(b"not an image")
    with pytest.raises(DataError, match="05.png"):
        ImageFiles(paths, (1, 6, 5), None, threads).read(np.array([2, 9, 5, 1, 5, 0][::-1]))
