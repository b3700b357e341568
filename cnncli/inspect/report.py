"""``cnncli report``: one self-contained HTML page about a run.

Everything is in the file: pictures are PNG ``data:`` URIs (drawn by ``pictures``), the curves
inline SVG, the style one ``<style>`` element; no script, no network, it opens from disk. A
section whose inputs are missing (no metrics yet, data that cannot be read) says why instead.
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

import numpy as np

from cnncli.errors import CnncliError, DataError
from cnncli.files import atomic_write
from cnncli.inspect import pictures
from cnncli.inspect.render import percent
from cnncli.training.metrics import METRICS_FILE
from cnncli.training.run_dir import TEST_FILE

REPORT_FILE = "report.html"
#: Every section of the page, in order: (id, title).
SECTIONS = (("config", "Resolved config"), ("summary", "Layers and receptive fields"),
            ("curves", "Training curves"), ("metrics", "Final metrics"),
            ("per-class", "Per-class scores"), ("confusion", "Confusion matrix"),
            ("errors", "Most confident errors"), ("filters", "First-layer filters"))
STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
h1 { font-size: 1.6em; } h2 { font-size: 1.2em; border-bottom: 1px solid #ccc; margin-top: 2em; }
table { border-collapse: collapse; } td, th { padding: 2px 10px; border-bottom: 1px solid #eee; }
th { text-align: left; } td.n { text-align: right; font-variant-numeric: tabular-nums; }
pre { background: #f6f6f6; padding: 1em; overflow: auto; }
img { image-rendering: pixelated; max-width: 100%; } .missing { color: #a33; }
svg text { font: 11px sans-serif; }
"""


def png_uri(image: np.ndarray) -> str:
    return "data:image/png;base64," + base64.b64encode(pictures.encode_png(image)).decode()


def _img(image: np.ndarray, alt: str) -> str:
    return f'<img src="{png_uri(image)}" alt="{html.escape(alt)}">'


def _table(head: list[str], rows: list[list], numeric=()) -> str:
    out = ["<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr>"]
    for row in rows:
        cells = "".join(f'<td{" class=n" if i in numeric else ""}>{html.escape(str(c))}</td>'
                        for i, c in enumerate(row))
        out.append(f"<tr>{cells}</tr>")
    return "\n".join(out) + "</table>"


def _missing(why: str) -> str:
    return f'<p class="missing">not available: {html.escape(why)}</p>'


# ---------------------------------------------------------------- curves (inline SVG)

CURVE_COLORS = {"train": "#1f77b4", "val": "#d62728"}


def curves_svg(columns: dict, width: int = 480, height: int = 260) -> str:
    """Loss and accuracy per epoch side by side, train solid and validation dashed."""
    epochs = columns["epoch"]
    panels = []
    for title, keys in (("loss", ("train_loss", "val_loss")),
                        ("accuracy", ("train_accuracy", "val_accuracy"))):
        series = [(k.split("_")[0], epochs[np.isfinite(columns[k])],
                   columns[k][np.isfinite(columns[k])]) for k in keys]
        panels.append(_panel_svg(title, [s for s in series if len(s[1])], epochs, width,
                                 height))
    return "\n".join(panels)


def _panel_svg(title: str, series: list, epochs: np.ndarray, width: int, height: int) -> str:
    values = np.concatenate([ys for _, _, ys in series]) if series else np.zeros(1)
    low, high = float(values.min()), float(values.max())
    if high - low < 1e-12:
        low, high = low - 0.5, high + 0.5
    x_lo, x_hi = float(epochs.min()), float(max(epochs.max(), epochs.min() + 1))
    left, right, top, bottom = 48, width - 10, 20, height - 30
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'role="img" aria-label="{title} per epoch">',
             f'<text x="{left}" y="14">{title}</text>',
             f'<rect x="{left}" y="{top}" width="{right - left}" height="{bottom - top}" '
             'fill="none" stroke="#999"/>',
             f'<text x="4" y="{top + 10}">{high:.3g}</text>',
             f'<text x="4" y="{bottom}">{low:.3g}</text>',
             f'<text x="{left}" y="{height - 8}">epoch {x_lo:g}</text>',
             f'<text x="{right - 60}" y="{height - 8}">epoch {x_hi:g}</text>']
    for part, xs, ys in series:
        px = left + (xs - x_lo) / (x_hi - x_lo) * (right - left)
        py = bottom - (ys - low) / (high - low) * (bottom - top)
        points = " ".join(f"{x:.1f},{y:.1f}" for x, y in zip(px, py, strict=True))
        dash = ' stroke-dasharray="5,3"' if part == "val" else ""
        parts.append(f'<polyline points="{points}" fill="none" stroke="{CURVE_COLORS[part]}" '
                     f'stroke-width="2"{dash}><title>{part} {title}</title></polyline>')
    legend = "   ".join(f'<tspan fill="{CURVE_COLORS[p]}">{p} {title}</tspan>'
                        for p, _, _ in series)
    parts.append(f'<text x="{left + 80}" y="14">{legend}</text></svg>')
    return "\n".join(parts)


# ---------------------------------------------------------------- the page

def build_report(run_dir) -> str:
    """The HTML page of a run directory (or of a checkpoint, standing for its run)."""
    from cnncli.config import dump_config
    from cnncli.inspect.plot import read_metrics
    from cnncli.inspect.sources import checked_source
    from cnncli.inspect.summary import summarize
    from cnncli.training.checkpoint import load_checkpoint

    run_dir = Path(run_dir)
    if run_dir.suffix.lower() == ".npz":
        ckpt_path, run_dir = run_dir, run_dir.parent
    else:
        if not run_dir.is_dir():
            raise DataError(f"{run_dir}: no such run directory",
                            hint="give a folder written by 'cnncli train'")
        ckpt_path = next((run_dir / n for n in ("best.npz", "last.npz")
                          if (run_dir / n).is_file()), None)
        if ckpt_path is None:
            raise DataError(f"{run_dir} holds no best.npz or last.npz",
                            hint="train the run for an epoch first")
    ckpt = load_checkpoint(ckpt_path)
    run = ckpt.run
    body = {}
    body["config"] = f"<pre>{html.escape(dump_config(run))}</pre>"

    checked = checked_source(ckpt_path)
    summary = summarize(checked)
    rows = [[r.name, r.type, r.description, "x".join(map(str, r.output_shape)),
             f"{r.params:,}", f"{r.macs:,}", "x".join(map(str, r.receptive_field)),
             "x".join(map(str, r.jump))] for r in summary.layers]
    body["summary"] = (_table(["layer", "type", "kernel", "output", "params", "MACs",
                               "receptive field", "jump"], rows, numeric=(4, 5)) +
                       f"<p>{summary.total_params:,} parameters, {summary.total_macs:,} "
                       f"multiply-adds per image, input "
                       f"{'x'.join(map(str, summary.input_shape))}</p>")

    try:
        columns = read_metrics(run_dir).columns if (run_dir / METRICS_FILE).exists() else None
    except CnncliError as err:
        columns, curves_problem = None, str(err)
    else:
        curves_problem = f"no {METRICS_FILE} in {run_dir}"
    body["curves"] = curves_svg(columns) if columns is not None else _missing(curves_problem)

    report, x, y, model, data_problem = _evaluation(ckpt, run_dir)
    names = ckpt.class_names
    if report is not None:
        lines = [("checkpoint", f"{ckpt.path.name} (epoch {ckpt.epoch})"),
                 ("test accuracy", percent(report["accuracy"])),
                 ("test loss", f"{report['loss']:.4f}"),
                 (f"top-{report['top_k']} accuracy", percent(report["top_k_accuracy"])),
                 ("macro F1", f"{report['macro_f1']:.3f}"),
                 ("test images", report["num_samples"])]
        if columns is not None:
            val = columns["val_accuracy"][np.isfinite(columns["val_accuracy"])]
            if len(val):
                lines.insert(1, ("best val accuracy", percent(float(val.max()))))
            lines.append(("epochs trained", int(np.nanmax(columns["epoch"]))))
        body["metrics"] = _table(["metric", "value"], [list(row) for row in lines],
                                 numeric=(1,))
        body["per-class"] = _table(["class", "precision", "recall", "F1", "support"],
                                   [[c["class"], f"{c['precision']:.3f}", f"{c['recall']:.3f}",
                                     f"{c['f1']:.3f}", c["support"]]
                                    for c in report["per_class"]], numeric=(1, 2, 3, 4))
        from cnncli.inspect.eval_pictures import confusion_picture, errors_picture

        body["confusion"] = _img(confusion_picture(report["confusion_matrix"], names),
                                 "confusion matrix")
        if x is not None:
            try:
                image, _ = errors_picture(x, y, model.predict_logits(x), names)
                body["errors"] = _img(image, "most confidently misclassified test images")
            except DataError as err:            # a model of feature vectors
                body["errors"] = _missing(err.message)
        else:
            body["errors"] = _missing(data_problem)
    else:
        for key in ("metrics", "per-class", "confusion", "errors"):
            body[key] = _missing(data_problem)

    from cnncli.inspect.tensorboard import first_filters

    filters = first_filters(model if model is not None else ckpt.model())
    body["filters"] = (_img(filters[1], f"{filters[0]} kernels") if filters is not None
                       else _missing("the model has no conv layer"))
    return _page(run.name, run_dir, body)


def _evaluation(ckpt, run_dir: Path):
    """(report, x, y, model, problem): the test split scored now, else test.json's report
    without the images, else why neither is there."""
    from cnncli.data.checkpoint_split import checkpoint_split
    from cnncli.training.evaluate import evaluate

    model = ckpt.model()
    try:
        x, y = checkpoint_split(ckpt, model, None, "test")
    except CnncliError as err:
        stored = run_dir / TEST_FILE
        if stored.is_file():
            try:
                return json.loads(stored.read_text(encoding="utf-8")), None, None, model, \
                    f"the test images cannot be read ({err})"
            except (OSError, ValueError):
                pass
        return None, None, None, model, f"the test split cannot be read ({err})"
    return evaluate(model, x, y, ckpt.class_names), x, y, model, None


def _page(name: str, run_dir: Path, body: dict) -> str:
    toc = " · ".join(f'<a href="#{key}">{html.escape(title)}</a>' for key, title in SECTIONS)
    sections = "\n".join(f'<section id="{key}"><h2>{html.escape(title)}</h2>\n{body[key]}'
                         "</section>" for key, title in SECTIONS)
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>cnncli report: {html.escape(name)}</title><style>{STYLE}</style></head>"
            f"<body><h1>Run {html.escape(name)}</h1><p>{html.escape(str(run_dir))}</p>"
            f"<nav>{toc}</nav>\n{sections}\n</body></html>\n")


def write_report(run_dir, out=None) -> Path:
    """Write the report (default ``RUN_DIR/report.html``) atomically; returns its path."""
    text = build_report(run_dir)
    source = Path(run_dir)
    out = Path(out) if out is not None else \
        (source.parent if source.suffix.lower() == ".npz" else source) / REPORT_FILE
    try:
        atomic_write(out, lambda f: f.write(text.encode("utf-8")))
    except OSError as err:
        raise CnncliError(f"cannot write {out}: {err.strerror or err}",
                          hint="choose another out=FILE") from None
    return out
