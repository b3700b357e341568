"""Layout, sanity checks, stratified split and normalisation of raw image arrays."""

from __future__ import annotations

import numpy as np

from cnncli.errors import DataError

CHANNEL_COUNTS = (1, 2, 3, 4)
MAX_CLASSES = 1_000_000  # a larger label is garbage, not a hint to grow the output layer


def to_nchw(x: np.ndarray, input_shape: tuple, layout: str | None, what: str) -> np.ndarray:
    """(N,H,W), (N,C,H,W) or (N,H,W,C) -> NCHW; ``layout`` settles ambiguous 4-D arrays."""
    x = np.asarray(x)
    if x.ndim == 3:
        return x[:, None]
    if x.ndim != 4:
        raise DataError(f"{what} has shape {x.shape}; expected (N, H, W), (N, C, H, W) or "
                        f"(N, H, W, C)")
    if layout is None:
        layout = _infer_layout(x.shape[1:], tuple(input_shape), what)
    return x if layout == "NCHW" else np.transpose(x, (0, 3, 1, 2))


def _infer_layout(shape: tuple, input_shape: tuple, what: str) -> str:
    c, h, w = input_shape
    as_nchw, as_nhwc = shape == (c, h, w), shape == (h, w, c)
    if as_nchw != as_nhwc:
        return "NCHW" if as_nchw else "NHWC"
    first, last = shape[0] in CHANNEL_COUNTS, shape[2] in CHANNEL_COUNTS
    if first != last and not as_nchw:
        return "NCHW" if first else "NHWC"
    raise DataError(f"{what} has shape (N, {', '.join(map(str, shape))}): cannot tell whether "
                    f"channels come first or last for model input_shape {list(input_shape)}",
                    key="layout", hint="set data.layout: NCHW or NHWC")


def as_labels(y: np.ndarray, n: int, num_classes: int, what: str) -> np.ndarray:
    """Checked int64 labels: 1-D, length ``n``, integer-valued, within [0, num_classes)."""
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise DataError(f"{what} labels have shape {y.shape}; expected one integer per image "
                        f"({n},)", hint="store class indices, not one-hot vectors")
    if len(y) != n:
        raise DataError(f"{what} has {n} images but {len(y)} labels")
    if y.dtype.kind in "fc":
        bad = ~np.isfinite(y) | (y != np.round(y)) if y.dtype.kind == "f" else np.ones(len(y))
        if np.any(bad):
            first = int(np.flatnonzero(bad)[0])
            raise DataError(f"{what} label {first} is {y[first].item()!r}, not an integer "
                            f"class index")
    elif y.dtype.kind not in "iub":
        raise DataError(f"{what} labels have dtype {y.dtype}; expected integer class indices")
    out = (y < 0) | (y >= num_classes)  # before the int64 cast, which wraps huge values
    if np.any(out):
        first = int(np.flatnonzero(out)[0])
        value, top = int(y[first].item()), int(y.max().item())
        hint = ("labels must be >= 0" if value < 0 else
                f"make the last layer output {top + 1} units" if top < MAX_CLASSES else
                "labels must be class indices 0..K-1")
        raise DataError(f"{what} label {value} (at index {first}) is outside 0.."
                        f"{num_classes - 1}: the model has {num_classes} classes", hint=hint)
    return y.astype(np.int64)


def check_images(x: np.ndarray, input_shape: tuple, what: str) -> None:
    """NCHW images must match the model input and hold finite numbers."""
    c, h, w = input_shape
    if x.dtype.kind not in "uif":
        raise DataError(f"{what} has dtype {x.dtype}; expected integer or float pixels")
    if x.shape[1] != c:
        raise DataError(f"{what} has {x.shape[1]} channel(s) but the model input_shape "
                        f"{list(input_shape)} expects {c}", key="input_shape")
    if x.shape[2:] != (h, w):
        raise DataError(f"{what} images are {x.shape[2]}x{x.shape[3]} (HxW) but the model "
                        f"input_shape {list(input_shape)} expects {h}x{w}", key="input_shape")
    if x.dtype.kind != "f":
        return
    for start, chunk in _chunks(x):  # a streamed dataset is checked a piece at a time
        finite = np.isfinite(chunk).reshape(len(chunk), -1).all(axis=1)
        if not finite.all():
            raise DataError(f"{what} image {start + int(np.flatnonzero(~finite)[0])} contains "
                            f"NaN or inf values")
        if chunk.dtype.itemsize > 4 and chunk.size and \
                np.abs(chunk).max() > np.finfo(np.float32).max:  # inf once cast to float32
            peak = np.abs(chunk).reshape(len(chunk), -1).max(axis=1)
            raise DataError(f"{what} image {start + int(np.argmax(peak))} holds "
                            f"{float(peak.max()):.3g}, beyond the float32 range the model "
                            f"computes in (+-3.4e38)")


#: Images per piece when a whole split is scanned (statistics, checks): bounded memory, and
#: the same pieces whether the split is in memory or streamed, so the same numbers.
CHUNK_IMAGES = 1024


def _chunks(x):
    """(first index, x[first:first + CHUNK_IMAGES]) over the whole of ``x``."""
    for start in range(0, len(x), CHUNK_IMAGES):
        yield start, np.asarray(x[start:start + CHUNK_IMAGES])


def stratified_split(y: np.ndarray, fraction: float, rng: np.random.Generator):
    """(train_idx, val_idx): each class keeps ``fraction`` of its images in val (rounded)."""
    if fraction <= 0:
        return np.arange(len(y)), np.arange(0)
    val = []
    for cls in np.unique(y):  # a loop over classes, not samples
        members = np.flatnonzero(y == cls)
        take = int(np.floor(fraction * len(members) + 0.5))
        val.append(rng.permutation(members)[:take])
    val_idx = np.sort(np.concatenate(val))
    mask = np.ones(len(y), bool)
    mask[val_idx] = False
    return np.flatnonzero(mask), val_idx


def fit_normalization(x, mode: str, value_max: float | None = None) -> dict:
    """Statistics of the training images (NCHW, raw units) for ``normalize``, read a piece
    at a time: ``x`` is an array or a streamed dataset (``streaming.ImageRows``)."""
    channels = x.shape[1]
    if mode == "none":
        scale = 1.0
    elif value_max is not None:
        scale = float(value_max)
    elif x.dtype == np.uint8:
        scale = 255.0
    else:
        peak = max((float(chunk.max()) for _, chunk in _chunks(x) if chunk.size), default=1.0)
        scale = peak if peak > 1.0 else 1.0
    mean = np.zeros(channels, np.float32)
    std = np.ones(channels, np.float32)
    if mode == "standardize":
        mean64, var64 = channel_moments(x, np.float32(scale))
        mean, std = mean64.astype(np.float32), np.sqrt(var64).astype(np.float32)
        std[std == 0] = 1.0  # a constant channel: leave it centred, do not divide by zero
    return {"mode": mode, "scale": np.float32(scale), "mean": mean, "std": std}


def channel_moments(x, scale: np.float32) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and (population) variance of ``x / scale`` in float64, in one pass:
    each piece's own moments, merged by Chan et al.'s pairwise update (no cancellation)."""
    count, mean, m2 = 0, np.zeros(x.shape[1]), np.zeros(x.shape[1])
    for _, chunk in _chunks(x):
        scaled = chunk.astype(np.float32) / scale
        n = scaled.size // scaled.shape[1]
        if n == 0:
            continue
        piece_mean = scaled.mean(axis=(0, 2, 3), dtype=np.float64)
        centred = scaled - piece_mean.reshape(1, -1, 1, 1)
        piece_m2 = np.einsum("nchw,nchw->c", centred, centred)
        delta, total = piece_mean - mean, count + n
        mean = mean + delta * (n / total)
        m2 = m2 + piece_m2 + delta ** 2 * (count * n / total)
        count = total
    return mean, m2 / max(count, 1)


def normalize(x_raw: np.ndarray, normalization: dict) -> np.ndarray:
    """Raw NCHW images -> float32 model input, using stored statistics (train or checkpoint)."""
    mode = str(normalization.get("mode", "none"))
    if mode == "none":
        return np.ascontiguousarray(x_raw, dtype=np.float32)
    # One float32 copy, then each step in place: the same operations as (x / s - m) / std,
    # so the same bits, without a new array per step (a batch's normalisation is on the
    # streaming path's critical path).
    x = np.array(x_raw, dtype=np.float32, order="C")
    np.divide(x, np.float32(normalization.get("scale", 1.0)), out=x)
    if mode == "standardize":
        mean = np.asarray(normalization["mean"], np.float32).reshape(1, -1, 1, 1)
        std = np.asarray(normalization["std"], np.float32).reshape(1, -1, 1, 1)
        if mean.shape[1] != x.shape[1]:
            raise DataError(f"the normalisation statistics are for {mean.shape[1]} channel(s) "
                            f"but the images have {x.shape[1]}")
        np.subtract(x, mean, out=x)
        np.divide(x, std, out=x)
    return x
