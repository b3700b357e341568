"""Pure-NumPy picture making: colour maps, tile grids, boxes, text labels and a PNG writer.

Images are uint8 arrays of shape (H, W, 3) (RGB). Nothing here needs pillow or matplotlib.
"""

from __future__ import annotations

import math
import struct
import zlib
from pathlib import Path

import numpy as np

from cnncli.errors import CnncliError
from cnncli.files import make_folder

WHITE = (255, 255, 255)
BLACK = (0, 0, 0)
BACKGROUND = (255, 255, 255)
GAP_COLOR = (150, 150, 150)

# Diverging map (ColorBrewer RdBu, reversed): -1 blue, 0 near-white, +1 red.
_DIVERGING = np.array([(33, 102, 172), (103, 169, 207), (247, 247, 247),
                       (239, 138, 98), (178, 24, 43)], dtype=np.float64)
# Sequential map (viridis anchors): 0 dark purple -> 1 yellow.
_SEQUENTIAL = np.array([(68, 1, 84), (59, 82, 139), (33, 145, 140),
                        (94, 201, 98), (253, 231, 37)], dtype=np.float64)
DIVERGING_MIDDLE = tuple(int(v) for v in _DIVERGING[2])


# ---------------------------------------------------------------- colour scales

def _colormap(t: np.ndarray, anchors: np.ndarray) -> np.ndarray:
    """Map t in [0, 1] (any shape) to RGB uint8 (shape + (3,)) by piecewise-linear anchors."""
    t = np.clip(np.nan_to_num(np.asarray(t, dtype=np.float64), nan=0.5), 0.0, 1.0)
    pos = t * (len(anchors) - 1)
    lo = np.minimum(np.floor(pos).astype(np.intp), len(anchors) - 2)
    frac = (pos - lo)[..., None]
    rgb = anchors[lo] * (1.0 - frac) + anchors[lo + 1] * frac
    return np.rint(rgb).astype(np.uint8)


def symmetric_limit(values: np.ndarray) -> float:
    """The shared scale of a diverging picture: max |value| (1 when everything is zero)."""
    finite = np.asarray(values, dtype=np.float64)
    finite = finite[np.isfinite(finite)]
    limit = float(np.max(np.abs(finite))) if finite.size else 0.0
    return limit if limit > 0 else 1.0


def diverging(values: np.ndarray, limit: float | None = None) -> np.ndarray:
    """Signed values -> RGB: negative blue, zero the middle colour, positive red."""
    values = np.asarray(values, dtype=np.float64)
    limit = symmetric_limit(values) if limit is None else float(limit)
    return _colormap(0.5 + values / (2.0 * limit), _DIVERGING)


def sequential(values: np.ndarray, low: float | None = None,
               high: float | None = None) -> np.ndarray:
    """Values -> RGB on a dark-to-bright map from ``low`` to ``high`` (default min/max)."""
    values = np.asarray(values, dtype=np.float64)
    finite = values[np.isfinite(values)]
    low = (float(finite.min()) if finite.size else 0.0) if low is None else float(low)
    high = (float(finite.max()) if finite.size else 1.0) if high is None else float(high)
    span = high - low if high > low else 1.0
    return _colormap((values - low) / span, _SEQUENTIAL)


def signed_rgb(values: np.ndarray, limit: float | None = None) -> np.ndarray:
    """(..., 3) signed RGB weights -> RGB uint8 with 0 at mid-grey, one shared scale."""
    values = np.asarray(values, dtype=np.float64)
    limit = symmetric_limit(values) if limit is None else float(limit)
    t = np.clip(0.5 + values / (2.0 * limit), 0.0, 1.0)
    return np.rint(t * 255.0).astype(np.uint8)


def grey_rgb(values: np.ndarray) -> np.ndarray:
    """An image for display: (H, W) or (H, W, 3) stretched to its own min..max, as RGB."""
    values = np.nan_to_num(np.asarray(values, dtype=np.float64))
    low, high = float(values.min()), float(values.max())
    t = (values - low) / (high - low) if high > low else np.full_like(values, 0.5)
    rgb = np.rint(t * 255.0).astype(np.uint8)
    return np.repeat(rgb[..., None], 3, axis=-1) if rgb.ndim == 2 else rgb


# ---------------------------------------------------------------- layout

def upscale(image: np.ndarray, factor: int) -> np.ndarray:
    """Nearest-neighbour enlargement by an integer factor along both image axes."""
    factor = int(factor)
    if factor <= 1:
        return image
    return np.repeat(np.repeat(image, factor, axis=0), factor, axis=1)


def tile_scale(size: int, target: int = 32, most: int = 16) -> int:
    """Integer factor that brings a ``size``-pixel tile to about ``target`` pixels."""
    return int(min(most, max(1, math.ceil(target / max(1, size)))))


def grid_columns(count: int) -> int:
    """Columns of a near-square grid holding ``count`` tiles."""
    return max(1, math.ceil(math.sqrt(count)))


def tile_grid(tiles: np.ndarray, columns: int, gap: int = 2,
              gap_color=GAP_COLOR) -> np.ndarray:
    """Tiles (n, h, w, 3) -> one image, row-major, ``gap`` pixels between and around tiles."""
    tiles = np.asarray(tiles)
    n, h, w = tiles.shape[:3]
    columns = max(1, min(int(columns), n))
    rows = math.ceil(n / columns)
    out = np.empty((rows * (h + gap) + gap, columns * (w + gap) + gap, 3), dtype=np.uint8)
    out[...] = gap_color
    padded = np.empty((rows * columns, h, w, 3), dtype=np.uint8)
    padded[...] = BACKGROUND  # unused cells of the last row
    padded[:n] = tiles
    # Place all tiles at once through a (rows, h, columns, w) view of the interior.
    body = padded.reshape(rows, columns, h, w, 3).transpose(0, 2, 1, 3, 4)
    cells = out[gap:, gap:].reshape(rows, h + gap, columns, w + gap, 3)
    cells[:, :h, :, :w] = body
    return out


def canvas(height: int, width: int, color=BACKGROUND) -> np.ndarray:
    out = np.empty((int(height), int(width), 3), dtype=np.uint8)
    out[...] = color
    return out


def _stack(images: list[np.ndarray], axis: int, gap: int, color) -> np.ndarray:
    """Images one after another along ``axis`` (0 down, 1 across), aligned at the start of
    the other axis, ``gap`` pixels apart on a background of ``color``."""
    size = [0, 0]
    size[axis] = sum(im.shape[axis] for im in images) + gap * (len(images) - 1)
    size[1 - axis] = max(im.shape[1 - axis] for im in images)
    out = canvas(*size, color)
    at = 0
    for im in images:
        place = [slice(0, im.shape[0]), slice(0, im.shape[1])]
        place[axis] = slice(at, at + im.shape[axis])
        out[tuple(place)] = im
        at += im.shape[axis] + gap
    return out


def hstack(images: list[np.ndarray], gap: int = 12, color=BACKGROUND) -> np.ndarray:
    """Images side by side, top-aligned, on a background of ``color``."""
    return _stack(images, 1, gap, color)


def vstack(images: list[np.ndarray], gap: int = 4, color=BACKGROUND) -> np.ndarray:
    """Images one under another, left-aligned."""
    return _stack(images, 0, gap, color)


def wrap(images: list[np.ndarray], max_width: int = 1600, gap: int = 16) -> np.ndarray:
    """Images left to right, starting a new row before one would pass ``max_width`` pixels."""
    rows, row, width = [], [], 0
    for im in images:
        if row and width + gap + im.shape[1] > max_width:
            rows.append(row)
            row, width = [], 0
        width += (gap if row else 0) + im.shape[1]
        row.append(im)
    rows.append(row)
    return vstack([hstack(r, gap) for r in rows], gap=gap)


def pad_border(image: np.ndarray, margin: int, color=BACKGROUND) -> np.ndarray:
    out = canvas(image.shape[0] + 2 * margin, image.shape[1] + 2 * margin, color)
    out[margin:margin + image.shape[0], margin:margin + image.shape[1]] = image
    return out


# ---------------------------------------------------------------- drawing

def draw_rect(image: np.ndarray, top: int, left: int, bottom: int, right: int, color,
              thickness: int = 2, dashed: int = 0) -> np.ndarray:
    """Outline the pixel box [top, bottom) x [left, right) in place, clipped to the image.

    The outline lies inside the box. ``dashed`` > 0 draws dashes of that length.
    """
    h, w = image.shape[:2]
    color = np.asarray(color, dtype=np.uint8)
    t = max(1, int(thickness))

    def paint(y0, y1, x0, x1, along_x):
        y0, y1, x0, x1 = max(y0, 0), min(y1, h), max(x0, 0), min(x1, w)
        if y0 >= y1 or x0 >= x1:
            return
        if not dashed:
            image[y0:y1, x0:x1] = color
            return
        if along_x:
            cols = np.arange(x0, x1)
            keep = cols[((cols - left) // dashed) % 2 == 0]
            image[y0:y1, keep] = color
        else:
            rows = np.arange(y0, y1)
            keep = rows[((rows - top) // dashed) % 2 == 0]
            image[keep, x0:x1] = color

    paint(top, top + t, left, right, True)
    paint(bottom - t, bottom, left, right, True)
    paint(top, bottom, left, left + t, False)
    paint(top, bottom, right - t, right, False)
    return image


def tint_rect(image: np.ndarray, top: int, left: int, bottom: int, right: int, color,
              alpha: float = 0.3) -> np.ndarray:
    """Blend ``color`` over [top, bottom) x [left, right) in place, clipped to the image."""
    h, w = image.shape[:2]
    y0, y1, x0, x1 = max(top, 0), min(bottom, h), max(left, 0), min(right, w)
    if y0 < y1 and x0 < x1:
        region = image[y0:y1, x0:x1].astype(np.float64)
        region = region * (1 - alpha) + np.asarray(color, np.float64) * alpha
        image[y0:y1, x0:x1] = np.rint(region).astype(np.uint8)
    return image


# ---------------------------------------------------------------- text

# A 3x5 pixel font (rows top to bottom); enough for layer names and shapes.
_GLYPHS = {
    "0": "111101101101111", "1": "010110010010111", "2": "111001111100111",
    "3": "111001111001111", "4": "101101111001001", "5": "111100111001111",
    "6": "111100111101111", "7": "111001001010010", "8": "111101111101111",
    "9": "111101111001111", "a": "010101111101101", "b": "110101110101110",
    "c": "011100100100011", "d": "110101101101110", "e": "111100110100111",
    "f": "111100110100100", "g": "011100101101011", "h": "101101111101101",
    "i": "111010010010111", "j": "001001001101010", "k": "101101110101101",
    "l": "100100100100111", "m": "101111111101101", "n": "110101101101101",
    "o": "010101101101010", "p": "110101110100100", "q": "010101101110011",
    "r": "110101110101101", "s": "011100010001110", "t": "111010010010010",
    "u": "101101101101111", "v": "101101101101010", "w": "101101111111101",
    "x": "101101010101101", "y": "101101010010010", "z": "111001010100111",
    " ": "000000000000000", ".": "000000000000010", ",": "000000000010100",
    "_": "000000000000111", "-": "000000111000000", ":": "000010000010000",
    "(": "001010010010001", ")": "100010010010100", "[": "011010010010011",
    "]": "110010010010110", "/": "001001010100100", "=": "000111000111000",
    "+": "000010111010000", "?": "111001010000010", "'": "010010000000000",
    "%": "101001010100101",
}
_GLYPH_BITS = {ch: np.array([int(b) for b in bits], dtype=bool).reshape(5, 3)
               for ch, bits in _GLYPHS.items()}


def text_image(text: str, scale: int = 2, color=BLACK, background=BACKGROUND) -> np.ndarray:
    """Render one line of text with the built-in 3x5 font (case-insensitive)."""
    glyphs = [_GLYPH_BITS.get(ch, _GLYPH_BITS["?"]) for ch in text.lower()] or [_GLYPH_BITS[" "]]
    spacer = np.zeros((5, 1), dtype=bool)
    bits = np.concatenate([part for g in glyphs for part in (g, spacer)][:-1], axis=1)
    bits = upscale(bits, scale)
    out = canvas(bits.shape[0], bits.shape[1], background)
    out[bits] = color
    return out


def labelled(image: np.ndarray, label: str, scale: int = 2) -> np.ndarray:
    """``image`` with a text label above it."""
    return vstack([text_image(label, scale), image], gap=2 * scale)


# ---------------------------------------------------------------- PNG

def encode_png(image: np.ndarray) -> bytes:
    """8-bit RGB (H, W, 3) or greyscale (H, W) uint8 -> PNG bytes (zlib, no filters)."""
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim not in (2, 3) or (
            image.ndim == 3 and image.shape[2] != 3) or 0 in image.shape[:2]:
        raise ValueError(f"encode_png needs a non-empty uint8 (H, W) or (H, W, 3) array, got "
                         f"{image.dtype} {image.shape}")
    height, width = image.shape[:2]
    color_type = 2 if image.ndim == 3 else 0
    rows = np.ascontiguousarray(image).reshape(height, -1)
    raw = np.concatenate([np.zeros((height, 1), np.uint8), rows], axis=1).tobytes()

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    header = struct.pack(">IIBBBBB", width, height, 8, color_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))


def write_png(path, image: np.ndarray) -> Path:
    """Write ``image`` as a PNG file; returns the path. Raises CnncliError if it cannot."""
    path = Path(path)
    data = encode_png(image)
    try:
        make_folder(path.parent)
        path.write_bytes(data)
    except OSError as err:
        raise CnncliError(f"cannot write {path}: {err.strerror}",
                          hint="choose another out=DIR") from None
    return path


# ---------------------------------------------------------------- the pictures cnncli draws

MAX_FILTER_OUTPUTS = 64
MAX_FILTER_INPUTS = 32
MAX_FEATURE_MAPS = 64


def colorbar(limit: float, width: int = 160, height: int = 10, *,
             signed: bool = True) -> np.ndarray:
    """The colour scale as a labelled bar: diverging -limit, 0, +limit, or sequential 0..limit."""
    values = np.repeat(np.linspace(-limit if signed else 0.0, limit, width)[None, :], height,
                       axis=0)
    bar = diverging(values, limit) if signed else sequential(values, 0.0, limit)
    bar = draw_rect(bar, 0, 0, height, width, (120, 120, 120), thickness=1)
    left = text_image(f"{-limit:+.3g}" if signed else "0")
    right = text_image(f"{limit:+.3g}" if signed else f"{limit:.3g}")
    labels = canvas(left.shape[0], width + right.shape[1])
    labels[:, :left.shape[1]] = left
    mid = text_image("0")
    at = width // 2 - mid.shape[1] // 2
    if signed and left.shape[1] + 4 <= at and at + mid.shape[1] + 4 <= width - right.shape[1] // 2:
        labels[:, at:at + mid.shape[1]] = mid     # only where it does not cover the end labels
    labels[:, width - right.shape[1] // 2:width - right.shape[1] // 2 + right.shape[1]] = right
    return vstack([bar, labels], gap=3)


def filter_grid(weight: np.ndarray, *, target: int = 36, gap: int = 2, rgb: bool | None = None):
    """Conv weights (O, C/groups, kh, kw) -> (tile grid image, info dict).

    Three input channels make one RGB tile per output channel (0 = mid-grey); otherwise one
    tile per (output, input channel) pair on the diverging map (rows = outputs, columns =
    inputs; one near-square grid when there is one input channel). One symmetric scale for all.
    ``rgb`` forces or forbids RGB tiles (default: exactly 3 input channels).
    """
    weight = np.asarray(weight, dtype=np.float64)
    out_ch, in_ch, kh, kw = weight.shape
    shown = weight[:MAX_FILTER_OUTPUTS, :MAX_FILTER_INPUTS]
    limit = symmetric_limit(shown)
    scale = tile_scale(max(kh, kw), target)
    gap_color = GAP_COLOR
    if (in_ch == 3) if rgb is None else (rgb and in_ch == 3):
        tiles = signed_rgb(shown.transpose(0, 2, 3, 1), limit)   # (O, kh, kw, 3)
        columns = grid_columns(len(tiles))
        mode = "rgb"
        gap_color = WHITE   # grey is the zero weight here: it would hide the tile borders
    else:
        tiles = diverging(shown.reshape(-1, kh, kw), limit)       # (O*C, kh, kw, 3)
        columns = shown.shape[1] if shown.shape[1] > 1 else grid_columns(len(tiles))
        mode = "diverging"
    tiles = upscale(tiles.transpose(1, 2, 0, 3), scale).transpose(2, 0, 1, 3)
    image = tile_grid(tiles, columns, gap, gap_color)
    info = {"mode": mode, "limit": limit, "scale": scale, "columns": columns,
            "outputs_shown": shown.shape[0], "inputs_shown": shown.shape[1],
            "outputs": out_ch, "inputs": in_ch, "tile": (kh * scale, kw * scale), "gap": gap}
    return image, info


def feature_grid(maps: np.ndarray, *, target: int = 40, gap: int = 2):
    """Feature maps (C, H, W) of one input -> (tile grid image, info dict).

    One scale per layer so maps are comparable: the diverging map (0 = middle) when any value
    is negative, else the sequential map from 0 to the largest value.
    """
    maps = np.asarray(maps, dtype=np.float64)
    shown = maps[:MAX_FEATURE_MAPS]
    c, h, w = shown.shape
    finite = shown[np.isfinite(shown)]   # a diverged model's NaN/inf must not hide the rest
    signed = bool(finite.size and finite.min() < 0)
    if signed:
        limit = symmetric_limit(finite)
        tiles, low, high = diverging(shown, limit), -limit, limit
    else:
        high = float(finite.max()) if finite.size else 1.0
        low, high = 0.0, (high if high > 0 else 1.0)
        tiles = sequential(shown, low, high)
    scale = tile_scale(max(h, w), target)
    tiles = upscale(tiles.transpose(1, 2, 0, 3), scale).transpose(2, 0, 1, 3)
    columns = grid_columns(c)
    info = {"signed": signed, "low": low, "high": high, "scale": scale, "columns": columns,
            "shown": c, "channels": maps.shape[0], "tile": (h * scale, w * scale), "gap": gap}
    return tile_grid(tiles, columns, gap), info


def input_picture(x_chw: np.ndarray, target: int = 96) -> np.ndarray:
    """One (C, H, W) input for display: RGB if 3 channels, else channel 0 in grey."""
    x = np.asarray(x_chw, dtype=np.float64)
    image = grey_rgb(x.transpose(1, 2, 0)) if x.shape[0] == 3 else grey_rgb(x[0])
    return upscale(image, tile_scale(max(x.shape[1:]), target))


BOX_COLOR = (220, 30, 30)
PADDING_COLOR = (225, 225, 225)
GRID_COLOR = (190, 190, 190)
JUMP_COLOR = (90, 90, 200)
MIN_JUMP_SPACING = 8   # pixels between the jump lines of a blank grid, at least


def receptive_picture(box, background: np.ndarray | None = None, target: int = 256):
    """Draw ``box`` (a receptive.ReceptiveBox) over the input and the padding around it.

    ``background``: an (H, W, 3) uint8 input picture at 1 pixel per input pixel (faded outside
    the box), or None for a blank grid with lines every input pixel and stronger lines at the
    layer's jump (the box tinted). The canvas
    grows to hold the unclipped box (the padding shown grey, the box dashed there). Returns
    (image, scale, (pad_top, pad_left)) where pad_* are input pixels added above/left.
    """
    h, w = box.input_hw
    scale = tile_scale(max(h, w), target, most=32)
    pad_top, pad_left = max(0, -box.top), max(0, -box.left)
    pad_bottom, pad_right = max(0, box.bottom - (h - 1)), max(0, box.right - (w - 1))
    full_h, full_w = h + pad_top + pad_bottom, w + pad_left + pad_right
    image = canvas(full_h * scale, full_w * scale, PADDING_COLOR)
    y0, x0 = pad_top * scale, pad_left * scale
    if background is not None:
        image[y0:y0 + h * scale, x0:x0 + w * scale] = upscale(background, scale)
    else:
        inner = canvas(h * scale, w * scale, WHITE)
        if scale >= 4:
            inner[::scale, :] = GRID_COLOR
            inner[:, ::scale] = GRID_COLOR
        # Stronger lines where neighbouring units of the layer start (every `jump` pixels),
        # unless they would be so close (a big input) that they hide the box.
        jy, jx = box.jump
        rows = np.arange(box.top % jy if jy > 1 else 0, h, jy) * scale
        cols = np.arange(box.left % jx if jx > 1 else 0, w, jx) * scale
        if jy > 1 and jy * scale >= MIN_JUMP_SPACING:
            inner[rows, :] = JUMP_COLOR
        if jx > 1 and jx * scale >= MIN_JUMP_SPACING:
            inner[:, cols] = JUMP_COLOR
        image[y0:y0 + h * scale, x0:x0 + w * scale] = inner
    if background is None:  # frame the blank input; an image frames itself
        draw_rect(image, y0, x0, y0 + h * scale, x0 + w * scale, (60, 60, 60), thickness=1)
    top, left = (box.top + pad_top) * scale, (box.left + pad_left) * scale
    bottom, right = (box.bottom + pad_top + 1) * scale, (box.right + pad_left + 1) * scale
    thick = max(2, scale // 8)
    inside = box.clipped
    dash = max(4, scale // 2)
    draw_rect(image, top, left, bottom, right, BOX_COLOR, thickness=thick, dashed=dash)
    ct = cl = cb = cr = 0   # the part of the input the unit sees (none if only padding)
    if inside is not None:
        t, l, b, r = inside
        ct, cl = (t + pad_top) * scale, (l + pad_left) * scale
        cb, cr = (b + pad_top + 1) * scale, (r + pad_left + 1) * scale
    if background is not None:  # fade the image outside the box, so what the unit sees stands out
        keep = image[ct:cb, cl:cr].copy()
        inner = image[y0:y0 + h * scale, x0:x0 + w * scale].astype(np.float64)
        image[y0:y0 + h * scale, x0:x0 + w * scale] = np.rint(inner * 0.35 + 255 * 0.65)
        image[ct:cb, cl:cr] = keep
    if inside is not None:
        if background is None:
            tint_rect(image, ct, cl, cb, cr, BOX_COLOR, alpha=0.25)
        draw_rect(image, ct, cl, cb, cr, BOX_COLOR, thickness=thick)
    return image, scale, (pad_top, pad_left)
