"""Pictures of an evaluation (``cnncli eval --plot/--errors``), drawn with the project's own
PNG writer and pixel font, so no extra is needed: the confusion matrix, and the test images
the model got wrong most confidently."""

from __future__ import annotations

import numpy as np

from cnncli.inspect import pictures
from cnncli.nn.inference import probabilities

MAX_ERRORS = 36
DARK_TEXT_FROM = 0.55         # row share from which the (viridis) cell is light: black digits


def confusion_picture(matrix, class_names, cell: int = 30) -> np.ndarray:
    """Rows true classes, columns predicted; each cell its count, coloured by its share of the
    row (sequential map, 0..1), class names on both axes."""
    counts = np.asarray(matrix, dtype=np.int64)
    n = counts.shape[0]
    names = [str(c) for c in class_names] if len(class_names) == n else \
        [str(i) for i in range(n)]
    rows = counts.sum(axis=1, keepdims=True)
    share = np.divide(counts, rows, out=np.zeros(counts.shape), where=rows > 0)
    colors = pictures.sequential(share, 0.0, 1.0)                    # (n, n, 3)
    grid = pictures.upscale(colors, cell)
    digits_scale = 2 if cell >= 24 else 1
    for i in range(n):
        for j in range(n):
            text = str(counts[i, j])
            color = pictures.BLACK if share[i, j] >= DARK_TEXT_FROM else pictures.WHITE
            label = pictures.text_image(text, digits_scale, color=color,
                                        background=tuple(int(v) for v in colors[i, j]))
            if label.shape[1] > cell - 2:      # a count too wide for its cell: colour only
                continue
            top = i * cell + (cell - label.shape[0]) // 2
            left = j * cell + (cell - label.shape[1]) // 2
            grid[top:top + label.shape[0], left:left + label.shape[1]] = label
    for k in range(n + 1):                      # thin lines between the cells
        grid[min(k * cell, n * cell - 1), :] = pictures.GAP_COLOR
        grid[:, min(k * cell, n * cell - 1)] = pictures.GAP_COLOR
    row_labels = [pictures.text_image(name) for name in names]
    col_labels = [np.rot90(pictures.text_image(name)) for name in names]   # read bottom-up
    left_w = max(im.shape[1] for im in row_labels) + 6
    top_h = max(im.shape[0] for im in col_labels) + 6
    body = pictures.canvas(top_h + grid.shape[0], left_w + grid.shape[1])
    body[top_h:, left_w:] = grid
    for k, im in enumerate(row_labels):
        top = top_h + k * cell + (cell - im.shape[0]) // 2
        body[top:top + im.shape[0], left_w - 4 - im.shape[1]:left_w - 4] = im
    for k, im in enumerate(col_labels):
        left = left_w + k * cell + (cell - im.shape[1]) // 2
        body[top_h - 4 - im.shape[0]:top_h - 4, left:left + im.shape[1]] = im
    title = pictures.text_image("rows: true class   columns: predicted   colour: share of row")
    picture = pictures.vstack([title, body, pictures.colorbar(1.0, signed=False)], gap=8)
    return pictures.pad_border(picture, 8)


def most_confident_errors(logits, labels, count: int = MAX_ERRORS):
    """Indices of misclassified samples, most confident first, and every sample's
    probabilities."""
    probs = probabilities(logits)
    predicted = probs.argmax(axis=1)
    wrong = np.flatnonzero(predicted != np.asarray(labels))
    order = np.argsort(-probs[wrong, predicted[wrong]], kind="stable")
    return wrong[order][:count], probs


def errors_picture(x, labels, logits, class_names, count: int = MAX_ERRORS):
    """(picture, number shown) of the most confidently misclassified images, each labelled
    with its true and predicted class and the predicted probability."""
    if np.ndim(x) != 4:
        from cnncli.errors import DataError

        raise DataError(f"the inputs are vectors of {np.shape(x)[-1]} values, not images; "
                        "there are no errors to draw", key="errors")
    picks, probs = most_confident_errors(logits, labels, count)
    n = probs.shape[1]
    names = [str(c) for c in class_names] if len(class_names) == n else \
        [str(i) for i in range(n)]
    if not len(picks):
        return pictures.pad_border(pictures.text_image("no misclassified images"), 8), 0
    tiles = []
    for i in picks:
        pred = int(probs[i].argmax())
        image = pictures.input_picture(x[i], target=64)
        caption = [pictures.text_image(f"true {names[int(labels[i])]}"),
                   pictures.text_image(f"pred {names[pred]} {100 * probs[i, pred]:.0f}%",
                                       color=pictures.BOX_COLOR)]
        tiles.append(pictures.vstack([image, *caption], gap=3))
    title = pictures.text_image(f"{len(picks)} most confident errors of "
                                f"{int((probs.argmax(axis=1) != labels).sum())}")
    return pictures.pad_border(pictures.vstack([title, pictures.wrap(tiles, 900, 12)], gap=8),
                               8), len(picks)


def check_picture_names(*, plot=None, errors=None) -> None:
    """Refuse, before any work, a picture name that is not a .png."""
    from cnncli.errors import ConfigError

    for path, option in ((plot, "plot"), (errors, "errors")):
        if path is not None and path.suffix.lower() != ".png":
            raise ConfigError(f"{option}={path} is not a .png file", key=option,
                              hint="give a name ending in .png")


def write_eval_pictures(report: dict, model, x, y, class_names, *, plot=None,
                        errors=None) -> list[str]:
    """Write the confusion matrix (``plot``) and the errors grid (``errors``) PNGs of an
    evaluation; returns a line per file written."""
    check_picture_names(plot=plot, errors=errors)
    lines = []
    if plot is not None:
        pictures.write_png(plot, confusion_picture(report["confusion_matrix"], class_names))
        lines.append(f"wrote {plot} (confusion matrix)")
    if errors is not None:
        image, shown = errors_picture(x, y, model.predict_logits(x), class_names)
        pictures.write_png(errors, image)
        lines.append(f"wrote {errors} ({shown} most confidently misclassified images)")
    return lines
