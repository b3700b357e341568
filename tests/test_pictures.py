"""The pure picture functions show their data: PNG bytes, colour scales, tile placement, boxes."""

import io
import struct
import zlib

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cnncli.inspect import pictures

PIL = pytest.importorskip("PIL.Image")

RED_END = (178, 24, 43)
BLUE_END = (33, 102, 172)


def decode(data: bytes) -> np.ndarray:
    return np.asarray(PIL.open(io.BytesIO(data)).convert("RGB"))


# ---------------------------------------------------------------- PNG writer

@given(st.integers(1, 17), st.integers(1, 17), st.booleans(), st.integers(0, 2**32 - 1))
def test_png_round_trips_through_pillow(h, w, rgb, seed):
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, size=(h, w, 3) if rgb else (h, w), dtype=np.uint8)
    decoded = np.asarray(PIL.open(io.BytesIO(pictures.encode_png(image))))
    np.testing.assert_array_equal(decoded, image)


def test_png_structure_without_pillow():
    image = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    data = pictures.encode_png(image)
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    length, kind = struct.unpack(">I4s", data[8:16])
    assert kind == b"IHDR" and length == 13
    width, height, depth, color_type = struct.unpack(">IIBB", data[16:26])
    assert (width, height, depth, color_type) == (3, 2, 8, 2)
    idat_at = data.index(b"IDAT")
    idat_len = struct.unpack(">I", data[idat_at - 4:idat_at])[0]
    raw = zlib.decompress(data[idat_at + 4:idat_at + 4 + idat_len])
    rows = np.frombuffer(raw, np.uint8).reshape(2, 1 + 9)
    assert np.all(rows[:, 0] == 0)  # filter type "none" on each row
    np.testing.assert_array_equal(rows[:, 1:].reshape(2, 3, 3), image)
    assert data.endswith(b"IEND\xaeB`\x82")


def test_png_rejects_wrong_arrays():
    with pytest.raises(ValueError):
        pictures.encode_png(np.zeros((2, 2), np.float32))
    with pytest.raises(ValueError):
        pictures.encode_png(np.zeros((0, 2, 3), np.uint8))


def test_write_png_to_an_unwritable_place_is_a_cnncli_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(pictures.CnncliError, match="cannot write") as err:
        pictures.write_png(blocker / "sub" / "a.png", np.zeros((2, 2, 3), np.uint8))
    assert f"{blocker} is a file, not a folder" in str(err.value)  # not "File exists"
    with pytest.raises(pictures.CnncliError, match=f"{blocker} is a file, not a folder"):
        pictures.write_png(blocker / "a.png", np.zeros((2, 2, 3), np.uint8))


# ---------------------------------------------------------------- colour scales

def test_diverging_zero_is_middle_and_sign_picks_the_side():
    values = np.array([-2.0, -1.0, 0.0, 1.0, 2.0])
    rgb = pictures.diverging(values).astype(int)
    assert tuple(rgb[2]) == pictures.DIVERGING_MIDDLE
    assert tuple(rgb[0]) == BLUE_END and tuple(rgb[4]) == RED_END
    assert rgb[1, 2] > rgb[1, 0]  # negative: more blue than red
    assert rgb[3, 0] > rgb[3, 2]  # positive: more red than blue
    # symmetric: the same |value| is as far from white on both sides
    white = np.array(pictures.DIVERGING_MIDDLE)
    assert abs(np.abs(rgb[1] - white).sum() - np.abs(rgb[3] - white).sum()) < 60


@given(st.lists(st.floats(-5, 5), min_size=2, max_size=30))
def test_diverging_lightness_falls_with_magnitude(values):
    values = np.array(values)
    rgb = pictures.diverging(values, limit=5.0).astype(int)
    lightness = rgb.sum(axis=1)
    for side in (values >= 0, values <= 0):  # on each side, larger |v| is never lighter
        order = np.argsort(np.abs(values[side]))
        assert np.all(np.diff(lightness[side][order]) <= 3)  # rounding slack


def test_shared_limit_is_max_abs():
    assert pictures.symmetric_limit(np.array([0.2, -0.7, 0.5])) == pytest.approx(0.7)
    assert pictures.symmetric_limit(np.zeros(4)) == 1.0


def test_sequential_ends_and_monotone():
    rgb = pictures.sequential(np.array([0.0, 0.5, 1.0]), 0.0, 1.0).astype(int)
    assert tuple(rgb[0]) == (68, 1, 84) and tuple(rgb[2]) == (253, 231, 37)
    assert rgb[0].sum() < rgb[1].sum() < rgb[2].sum()


def test_colorbars_run_from_their_low_end_to_their_high_end():
    signed = pictures.colorbar(2.0, width=50)
    assert tuple(signed[5, 1]) == tuple(pictures.diverging(np.array([-2.0 + 4.0 / 49]), 2.0)[0])
    assert tuple(signed[5, 25]) == tuple(pictures.diverging(np.array([-2 + 4 * 25 / 49]), 2)[0])
    narrow, label = pictures.colorbar(10.6, width=60)[13:], pictures.text_image("-10.6")
    assert np.array_equal(narrow[:, :label.shape[1]], label)  # no "0" drawn over the end label
    plain = pictures.colorbar(3.0, width=50, signed=False)
    assert tuple(plain[5, 0]) != tuple(plain[5, 1])           # a grey frame
    assert tuple(plain[5, 1]) == tuple(pictures.sequential(np.array([3.0 / 49]), 0, 3.0)[0])
    assert tuple(plain[5, 48]) == tuple(pictures.sequential(np.array([3.0 * 48 / 49]), 0, 3)[0])
    assert plain[5, 1].sum() < plain[5, 25].sum() < plain[5, 48].sum()   # dark to bright
    assert np.all(plain[13:] == pictures.BLACK, axis=-1).any()          # labels under it


def test_signed_rgb_zero_is_grey_and_channels_keep_their_order():
    w = np.array([[[1.0, 0.0, -1.0]]])
    assert tuple(pictures.signed_rgb(w)[0, 0]) == (255, 128, 0)


# ---------------------------------------------------------------- layout

def test_upscale_is_nearest_neighbour():
    image = np.arange(6, dtype=np.uint8).reshape(2, 3)
    big = pictures.upscale(image, 3)
    assert big.shape == (6, 9)
    np.testing.assert_array_equal(big[::3, ::3], image)
    np.testing.assert_array_equal(big[2::3, 2::3], image)


def tile_origin(index: int, columns: int, tile_hw, gap: int):
    """Top-left pixel (y, x) of tile ``index`` in a grid: rows of ``columns`` tiles, ``gap``
    pixels before every tile and row."""
    row, col = divmod(index, columns)
    return gap + row * (tile_hw[0] + gap), gap + col * (tile_hw[1] + gap)


def test_tile_grid_places_tiles_row_major_with_gaps():
    n, h, w, gap = 5, 3, 4, 2
    tiles = np.zeros((n, h, w, 3), np.uint8)
    tiles[..., 0] = np.arange(1, n + 1)[:, None, None] * 40
    grid = pictures.tile_grid(tiles, columns=3, gap=gap)
    assert grid.shape == (2 * (h + gap) + gap, 3 * (w + gap) + gap, 3)
    for i in range(n):
        y, x = tile_origin(i, 3, (h, w), gap)
        np.testing.assert_array_equal(grid[y:y + h, x:x + w], tiles[i])
        assert tuple(grid[y - 1, x]) == pictures.GAP_COLOR
    y, x = tile_origin(5, 3, (h, w), gap)  # the empty sixth cell
    assert np.all(grid[y:y + h, x:x + w] == pictures.BACKGROUND)


def test_wrap_starts_a_new_row_before_the_width_limit():
    a, b, c = (np.full((5, 40, 3), v, np.uint8) for v in (10, 20, 30))
    one_row = pictures.wrap([a, b], max_width=100, gap=4)
    assert one_row.shape[:2] == (5, 84)
    two_rows = pictures.wrap([a, b, c], max_width=100, gap=4)
    assert two_rows.shape[:2] == (14, 84)
    assert np.all(two_rows[9:, :40] == 30) and np.all(two_rows[:5, 44:84] == 20)


def test_draw_rect_clips_and_stays_inside_the_box():
    image = pictures.canvas(10, 10, (0, 0, 0))
    pictures.draw_rect(image, -3, 4, 6, 20, (255, 0, 0), thickness=1)
    red = np.all(image == (255, 0, 0), axis=-1)
    assert red[5, 4:].all() and red[:6, 4].all()
    assert not red[6:].any() and not red[:, :4].any()
    assert not red[2:5, 5:].any()  # outline only


def test_tint_rect_blends_only_inside():
    image = pictures.canvas(4, 4, (0, 0, 0))
    pictures.tint_rect(image, 1, 1, 3, 3, (200, 100, 0), alpha=0.5)
    assert tuple(image[1, 1]) == (100, 50, 0) and tuple(image[0, 0]) == (0, 0, 0)


def test_text_image_draws_ink_and_grows_with_length():
    short, long = pictures.text_image("ab"), pictures.text_image("abcd")
    assert short.shape[0] == long.shape[0] == 10
    assert long.shape[1] > short.shape[1]
    assert np.any(np.all(short == pictures.BLACK, axis=-1))
    assert pictures.text_image("\u00e9").shape == pictures.text_image("?").shape


# ---------------------------------------------------------------- filters and features

def tile_colour(grid, info, index, columns):
    y, x = tile_origin(index, columns, info["tile"], info["gap"])
    return grid[y, x], grid[y:y + info["tile"][0], x:x + info["tile"][1]]


def test_filter_grid_one_tile_per_output_input_pair_with_shared_scale():
    w = np.zeros((2, 3 + 1, 3, 3))  # 4 input channels -> one tile per (o, c)
    w[0, 1, 0, 0] = 2.0     # largest positive -> red end
    w[1, 2, 2, 2] = -2.0    # largest negative -> blue end
    w[1, 3, 1, 1] = 1.0     # half the scale -> a lighter red
    grid, info = pictures.filter_grid(w)
    assert info["mode"] == "diverging" and info["limit"] == 2.0 and info["columns"] == 4
    s = info["scale"]
    assert info["tile"] == (3 * s, 3 * s) and 3 * s >= 24
    _, tile = tile_colour(grid, info, 0 * 4 + 1, 4)
    assert tuple(tile[0, 0]) == RED_END
    assert tuple(tile[s, s]) == pictures.DIVERGING_MIDDLE      # a zero weight
    _, tile = tile_colour(grid, info, 1 * 4 + 2, 4)
    assert tuple(tile[2 * s, 2 * s]) == BLUE_END
    assert np.all(tile[:s, :s] == pictures.DIVERGING_MIDDLE)
    _, tile = tile_colour(grid, info, 1 * 4 + 3, 4)
    half = tile[s, s].astype(int)
    assert half[0] > half[2] and tuple(half) not in (RED_END, pictures.DIVERGING_MIDDLE)
    _, tile = tile_colour(grid, info, 0, 4)
    assert np.all(tile == pictures.DIVERGING_MIDDLE)            # the all-zero kernel


def test_filter_grid_single_input_channel_is_a_square_grid():
    w = np.random.default_rng(0).standard_normal((16, 1, 3, 3))
    grid, info = pictures.filter_grid(w)
    assert info["columns"] == 4
    k = int(np.argmax(np.abs(w)))
    o, _, i, j = np.unravel_index(k, w.shape)
    _, tile = tile_colour(grid, info, o, 4)
    s = info["scale"]
    expected = RED_END if w.flat[k] > 0 else BLUE_END
    assert tuple(tile[i * s, j * s]) == expected


def test_filter_grid_rgb_tiles_for_three_input_channels():
    w = np.zeros((2, 3, 2, 2))
    w[1, 0, 0, 1] = 0.5     # red channel, positive, at (0, 1) of output 1
    w[1, 2, 1, 0] = -0.5    # blue channel, negative, at (1, 0)
    grid, info = pictures.filter_grid(w)
    assert info["mode"] == "rgb"
    s = info["scale"]
    _, tile = tile_colour(grid, info, 1, info["columns"])
    assert tuple(tile[0, s]) == (255, 128, 128)
    assert tuple(tile[s, 0]) == (128, 128, 0)
    assert tuple(tile[0, 0]) == (128, 128, 128)
    y, x = tile_origin(1, info["columns"], info["tile"], info["gap"])
    assert tuple(grid[y - 1, x]) == pictures.WHITE   # borders stand out from grey zero weights


def test_filter_grid_caps_huge_layers():
    grid, info = pictures.filter_grid(np.ones((100, 50, 1, 1)))
    assert info["outputs_shown"] == pictures.MAX_FILTER_OUTPUTS
    assert info["inputs_shown"] == pictures.MAX_FILTER_INPUTS
    assert grid.shape[0] < 4000 and grid.shape[1] < 4000


def test_feature_grid_nonnegative_maps_use_zero_to_max():
    maps = np.zeros((3, 4, 4))
    maps[2, 1, 3] = 5.0
    maps[0, 0, 0] = 2.5
    grid, info = pictures.feature_grid(maps)
    assert not info["signed"] and info["high"] == 5.0 and info["columns"] == 2
    s = info["scale"]
    _, tile = tile_colour(grid, info, 2, 2)
    assert tuple(tile[s, 3 * s]) == (253, 231, 37)
    assert tuple(tile[0, 0]) == (68, 1, 84)
    _, tile = tile_colour(grid, info, 0, 2)
    assert tuple(tile[0, 0]) == tuple(pictures.sequential(np.array([0.5]), 0, 1)[0])


def test_feature_grid_signed_maps_are_diverging():
    maps = np.array([[[-1.0, 0.0], [0.5, 1.0]]])
    grid, info = pictures.feature_grid(maps)
    assert info["signed"]
    s = info["scale"]
    _, tile = tile_colour(grid, info, 0, 1)
    assert tuple(tile[0, 0]) == BLUE_END and tuple(tile[s, s]) == RED_END
    assert tuple(tile[0, s]) == pictures.DIVERGING_MIDDLE


def test_png_of_a_grid_decodes_to_the_same_pixels(tmp_path):
    grid, _ = pictures.filter_grid(np.random.default_rng(1).standard_normal((4, 2, 3, 3)))
    path = pictures.write_png(tmp_path / "g.png", grid)
    np.testing.assert_array_equal(decode(path.read_bytes()), grid)


def test_feature_grid_ignores_non_finite_values_for_the_scale():
    maps = np.array([[[np.nan, 0.0], [2.0, np.inf]]])
    grid, info = pictures.feature_grid(maps)
    assert not info["signed"] and info["high"] == 2.0
    s = info["scale"]
    _, tile = tile_colour(grid, info, 0, 1)
    assert tuple(tile[s, 0]) == (253, 231, 37)
