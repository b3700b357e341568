"""`cnncli train`, `cnncli eval` and `cnncli predict`: call the library, render its results."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import shlex
import sys
import time
from pathlib import Path

import click

from cnncli.cli.app import main
from cnncli.errors import CheckpointError, CnncliError, printable
from cnncli.training.checkpoint import atomic_write


def _pct(value) -> str:
    return "-" if value is None else f"{100 * value:.2f}%"


def _num(value, fmt="{:.4f}") -> str:
    return "-" if value is None else fmt.format(value)


def _cell(text) -> str:
    """A user's name (class, file) as one table cell: controls escaped, never Rich markup."""
    from rich.markup import escape

    return escape(printable(text))


def _console():
    from rich.console import Console

    # In a pipe or a file Rich assumes 80 columns and cuts long class names: no limit there.
    return Console(highlight=False, width=None if sys.stdout.isatty() else 100_000)


# ---------------------------------------------------------------- download progress

@contextlib.contextmanager
def _download_progress(quiet: bool):
    """Show first-use dataset downloads on stderr: a byte bar on a terminal, else one line."""
    from cnncli.data import download

    bars: dict[str, object] = {}

    def show(url: str, done: int, total: int | None) -> None:
        if url not in bars:
            if sys.stderr.isatty():
                from tqdm import tqdm

                bars[url] = tqdm(total=total, desc=url.rsplit("/", 1)[-1], unit="B",
                                 unit_scale=True, leave=False, file=sys.stderr)
            else:
                bars[url] = None
                size = "" if not total else f" ({total / 1e6:.1f} MB)" if total >= 10**5 \
                    else f" ({total:,} bytes)"
                click.echo(f"downloading {url}{size} ...", err=True)
        bar = bars[url]
        if bar is not None:
            bar.update(done - bar.n)
            if total and done >= total:  # finished: clear it before the next file's bar
                bar.close()
                bars[url] = None

    previous = download.progress
    download.progress = None if quiet else show
    try:
        yield
    finally:
        download.progress = previous
        for bar in bars.values():
            if bar is not None:
                bar.close()


# ---------------------------------------------------------------- train progress

class _Progress:
    """Renders training callbacks: a tqdm bar on a terminal, one line per epoch always."""

    def __init__(self, quiet: bool, verbose: bool):
        from cnncli.training.trainer import Callbacks  # noqa: F401  (protocol followed)

        self.quiet, self.verbose = quiet, verbose
        self.tty = sys.stdout.isatty()
        self.bar = None

    def echo(self, text: str) -> None:
        if self.bar is not None:
            self.bar.write(text)
        else:
            click.echo(text)

    def on_start(self, run) -> None:
        if self.quiet:
            return
        data = run.dataset
        what = "resuming" if run.start_epoch else "training"
        skipped = getattr(data, "skipped", [])
        note = (f"; skipped {len(skipped)} hidden folder{'s' if len(skipped) > 1 else ''}: "
                f"{', '.join(skipped)}" if skipped else "")
        click.echo(printable(f"{what} {run.config.get('name') or 'run'}: {len(data.y_train)} "
                             f"train / {len(data.y_val)} val / {len(data.y_test)} test images, "
                             f"{sum(v.size for _, v, _ in run.model.parameters()):,} parameters "
                             f"-> {run.run_dir}{note}"))
        if self.verbose:
            click.echo("  " + _settings_text(run.config.get("train") or {}))
        if run.start_epoch >= run.epochs:
            click.echo(f"already trained {run.start_epoch} epochs; pass --epochs N with N > "
                       f"{run.start_epoch} to continue")

    def on_epoch_start(self, epoch, epochs, num_batches, lr) -> None:
        self.epoch, self.epochs = epoch, epochs
        self.loss_sum, self.correct, self.seen, self.started = 0.0, 0, 0, time.perf_counter()
        if self.tty and not self.quiet:
            from tqdm import tqdm

            self.bar = tqdm(total=num_batches, desc=f"epoch {epoch}/{epochs}", leave=False,
                            file=sys.stdout, dynamic_ncols=True, unit="batch")

    def on_batch(self, batch, size, loss, correct) -> None:
        self.loss_sum += loss * size
        self.correct += correct
        self.seen += size
        if self.bar is not None:
            elapsed = max(time.perf_counter() - self.started, 1e-9)
            self.bar.set_postfix_str(f"loss {self.loss_sum / self.seen:.4f} acc "
                                     f"{100 * self.correct / self.seen:.1f}% "
                                     f"{self.seen / elapsed:,.0f} img/s", refresh=False)
            self.bar.update(1)

    def on_epoch_end(self, row, improved) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        if self.quiet:
            return
        width = len(str(self.epochs))
        val = ""
        if row["val_loss"] is not None:
            val = f"  val loss {row['val_loss']:.4f} acc {_pct(row['val_accuracy'])}"
        click.echo(f"epoch {row['epoch']:>{width}}/{self.epochs}  train loss "
                   f"{row['train_loss']:.4f} acc {_pct(row['train_accuracy'])}{val}  "
                   f"lr {row['lr']:.3g}  {row['seconds']:.1f}s{'  *' if improved else ''}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _settings_text(train: dict) -> str:
    """One line: optimizer, lr and schedule, batch size, epochs and whichever extras are on."""
    sched = train.get("lr_schedule") or "constant"
    if isinstance(sched, dict):
        extra = {k: v for k, v in sched.items() if k not in ("type", "warmup_epochs")}
        text = sched.get("type", "constant") + (
            "(" + ", ".join(f"{k}={v}" for k, v in extra.items()) + ")" if extra else "")
        if sched.get("warmup_epochs"):
            text += f" after {sched['warmup_epochs']} warmup epochs"
        sched = text
    parts = [f"{train.get('optimizer', 'sgd')} lr={train.get('lr')} schedule={sched}",
             f"batch_size={train.get('batch_size')}", f"epochs={train.get('epochs')}"]
    for key in ("momentum", "nesterov", "weight_decay", "grad_clip_norm", "label_smoothing"):
        if train.get(key):
            parts.append(f"{key}={train[key]}")
    if train.get("early_stopping"):
        es = train["early_stopping"]
        parts.append(f"early_stopping={es.get('metric')}/patience {es.get('patience')}")
    return ", ".join(parts)


def _summary_rows(rows: list[dict], best_epoch: int | None) -> list[dict | None]:
    """All rows of a short run; else the first 3, the best and the last 5 (None = a gap)."""
    if len(rows) <= 15:
        return list(rows)
    keep = {0, 1, 2, *range(len(rows) - 5, len(rows))}
    if best_epoch is not None:
        keep.add(best_epoch - 1)
    out, previous = [], -1
    for i in sorted(keep):
        if i != previous + 1:
            out.append(None)
        out.append(rows[i])
        previous = i
    return out


def _metrics_table(rows: list[dict], best_epoch: int | None = None):
    from rich.table import Table

    table = Table(title="training summary (* best)", title_justify="left")
    for name in ("epoch", "train loss", "train acc", "val loss", "val acc", "lr", "time"):
        table.add_column(name, justify="right")
    for row in _summary_rows(rows, best_epoch):
        if row is None:
            table.add_row(*["⋮"] * 7)
            continue
        mark = "*" if row["epoch"] == best_epoch else ""
        table.add_row(f"{mark}{row['epoch']}", _num(row["train_loss"]), _pct(row["train_accuracy"]),
                      _num(row.get("val_loss")), _pct(row.get("val_accuracy")),
                      f"{row['lr']:.3g}", f"{row['seconds']:.1f}s")
    return table


@main.command("train")
@click.argument("config", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--epochs", type=click.IntRange(min=1), help="Override train.epochs.")
@click.option("--batch-size", type=click.IntRange(min=1), help="Override train.batch_size.")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), help="Override train.lr.")
@click.option("--seed", type=int, help="Override seed.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path),
              help="Run directory (default: runs/<name>/).")
@click.option("--resume", "resume", type=click.Path(exists=True, path_type=Path),
              metavar="RUN_DIR_OR_CKPT", help="Continue a run from its last.npz.")
@click.option("--overwrite", is_flag=True,
              help="Replace a run already in the run directory (its checkpoints and metrics "
                   "are deleted first); without it such a directory is refused.")
@click.option("--quiet", "-q", is_flag=True, help="Print only the final result.")
@click.option("--verbose", "-v", is_flag=True, help="Also print the training settings.")
def train_command(config, epochs, batch_size, lr, seed, out, resume, overwrite, quiet,
                  verbose):
    """Train the model CONFIG describes; write config.yaml, metrics.csv, last.npz, best.npz.

    With --resume, CONFIG may be omitted: the run's stored config is used.

    \b
    Examples:
      cnncli train configs/digits.yaml
      cnncli train configs/digits.yaml --epochs 5 --out runs/quick --overwrite
      cnncli train --resume runs/digits --epochs 40
    """
    from cnncli.training.trainer import TrainingInterrupted, train

    if config is None and resume is None:
        raise click.UsageError("give a CONFIG file (or --resume RUN_DIR to continue a run)")
    cfg = None
    if config is not None:
        from cnncli.config.loader import check_config

        checked = check_config(config)
        for line in checked.warnings:     # strides that drop rows: once per layer
            click.echo(f"cnncli: warning: {printable(line)}", err=True)
        cfg = checked.config
    progress = _Progress(quiet, verbose)
    try:
        with _download_progress(quiet):
            run = train(cfg, out_dir=out, resume=resume, epochs=epochs, batch_size=batch_size,
                        lr=lr, seed=seed, callbacks=progress, overwrite=overwrite)
    except CnncliError as err:        # data.path missing, wrong input_shape: point at the key
        if config is None:
            raise
        raise checked.locate(err) from None
    except OSError as err:  # run directory or checkpoint writes: disk full, not a folder, ...
        raise CnncliError(f"cannot write {err.filename or 'the run directory'}: "
                          f"{err.strerror or err}",
                          hint="choose another --out or free some space; files already "
                               "written are intact") from None
    except TrainingInterrupted as stop:
        progress.close()
        # No CONFIG: the run's stored config keeps this run's --lr/--batch-size overrides;
        # the file may also have been edited since.
        again = ["cnncli", "train", "--resume", str(stop.run_dir)] + \
            (["--epochs", str(epochs)] if epochs else [])
        click.echo("\n" + printable(f"interrupted: state after epoch {stop.epoch} saved to "
                                    f"{stop.run_dir / 'last.npz'}"), err=True)
        click.echo(printable(f"resume with: {shlex.join(again)}"), err=True)
        sys.exit(130)
    finally:
        progress.close()
    if not quiet and run.metrics:
        _console().print(_metrics_table(run.metrics, run.best_epoch))
    if run.stopped_early:
        click.echo(f"early stopping after epoch {run.metrics[-1]['epoch']}")
    if run.best_epoch is not None:
        click.echo(printable(f"best {run.best_by} {_pct(run.best_metric)} at epoch "
                             f"{run.best_epoch} -> {run.best_path}"))
    if run.test is not None:
        click.echo(f"test accuracy {_pct(run.test['accuracy'])} (loss {run.test['loss']:.4f}, "
                   f"{run.test['num_samples']} images, best.npz)")


# ---------------------------------------------------------------- eval

def _report_tables(report: dict, class_names: list[str]):
    from rich.table import Table

    per_class = Table(title="per class", title_justify="left")
    for name in ("class", "precision", "recall", "f1", "support"):
        per_class.add_column(name, justify="right")
    for row in report["per_class"]:
        per_class.add_row(_cell(row["class"]), f"{row['precision']:.3f}", f"{row['recall']:.3f}",
                          f"{row['f1']:.3f}", str(row["support"]))
    cm = report["confusion_matrix"]
    if len(cm) > 30:
        return [per_class]
    matrix = Table()
    matrix.add_column("true \\ pred", justify="right")
    names = [_cell(row["class"]) for row in report["per_class"]]
    for name in names:
        matrix.add_column(name, justify="right")
    for i, (name, counts) in enumerate(zip(names, cm, strict=True)):
        cells = [f"[bold]{c}[/bold]" if i == j and c else (str(c) if c else "[dim]·[/dim]")
                 for j, c in enumerate(counts)]
        matrix.add_row(name, *cells)
    return [per_class, "confusion matrix (rows: true class, columns: predicted class)", matrix]


@main.command("eval")
@click.argument("checkpoint", type=click.Path(path_type=Path))
@click.option("--data", "data", metavar="PATH_OR_DATASET",
              help="Evaluate on another dataset name or path (default: the run's data).")
@click.option("--split", type=click.Choice(["test", "val", "train", "all"]), default="test",
              show_default=True,
              help="Which images: the test split, the validation split (val_split of the "
                   "training images, as in training), the rest of the training images, or all "
                   "of them (e.g. a flat image folder, which has no test split).")
@click.option("--json", "as_json", is_flag=True, help="Print the metrics as JSON.")
@click.option("--top-k", type=click.IntRange(min=1), default=5, show_default=True,
              help="Also report top-k accuracy.")
def eval_command(checkpoint, data, split, as_json, top_k):
    """Loss, accuracy, per-class precision/recall/F1 and the confusion matrix of a checkpoint.

    By default on the test split of the run's own data, re-split as in training.

    \b
    Examples:
      cnncli eval runs/digits/best.npz
      cnncli eval runs/digits --split val --json
      cnncli eval runs/digits/best.npz --data my_images/ --split all
    """
    from cnncli.data.checkpoint_split import checkpoint_split
    from cnncli.training.checkpoint import load_checkpoint
    from cnncli.training.evaluate import evaluate

    ckpt = load_checkpoint(checkpoint)
    model = ckpt.model()
    with _download_progress(False):  # stderr: --json output stays clean
        x, y = checkpoint_split(ckpt, model, data, split)
    class_names = ckpt.class_names
    report = evaluate(model, x, y, class_names, top_k=top_k)
    report = {"checkpoint": str(ckpt.path), "split": split, **report}
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    console = _console()
    where = "on every image (train, val and test)" if split == "all" else \
        f"on the {split} split"
    click.echo(printable(f"{ckpt.path} (epoch {ckpt.epoch}) {where}: "
                         f"{report['num_samples']} images"))
    absent = len(report["per_class"]) - report["macro_f1_classes"]
    click.echo(f"loss {report['loss']:.4f}   accuracy {_pct(report['accuracy'])}   "
               f"top-{report['top_k']} accuracy {_pct(report['top_k_accuracy'])}   "
               f"macro F1 {report['macro_f1']:.3f}"
               + (f" (over the {report['macro_f1_classes']} classes present; {absent} "
                  f"never occur)" if absent else ""))
    for table in _report_tables(report, class_names):
        console.print(table)


# ---------------------------------------------------------------- predict

@main.command("predict")
@click.argument("checkpoint", type=click.Path(path_type=Path))
@click.argument("inputs", nargs=-1, required=True)
@click.option("--top", "top", type=click.IntRange(min=1), default=3, show_default=True,
              help="How many classes to list per input.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the predictions to this CSV instead of a table.")
def predict_command(checkpoint, inputs, top, out):
    """Predicted class and top probabilities for images, .npy or .npz INPUTS.

    \b
    Examples:
      cnncli predict runs/digits/best.npz digit.png
      cnncli predict runs/digits/best.npz batch.npy --top 2 --out preds.csv
    """
    from cnncli.data import load_inputs
    from cnncli.inspect.render import csv_text
    from cnncli.training.checkpoint import load_checkpoint
    from cnncli.training.evaluate import softmax, top_k_indices

    ckpt = load_checkpoint(checkpoint)
    model = ckpt.model()
    if not ckpt.normalization:
        raise CheckpointError(f"{ckpt.path} stores no normalisation statistics",
                              hint="use a checkpoint written by 'cnncli train'")
    x, labels = load_inputs(list(inputs), tuple(model.input_shape), ckpt.normalization)
    logits = model.predict_logits(x)
    probs = softmax(logits)
    k = min(top, probs.shape[1])
    best = top_k_indices(logits, k)
    names = ckpt.class_names if len(ckpt.class_names) == probs.shape[1] else \
        [str(i) for i in range(probs.shape[1])]
    rows = [(label, [(names[c], float(probs[i, c])) for c in best[i]])
            for i, label in enumerate(labels)]
    if out is not None:
        header = ["input", "predicted", "probability"]
        for r in range(2, k + 1):
            header += [f"class_{r}", f"probability_{r}"]
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(header)
        for label, ranked in rows:
            writer.writerow([csv_text(label)] + [v for c, p in ranked
                                                 for v in (csv_text(c), f"{p:.6f}")])
        try:  # creates missing parent folders, as train --out does
            atomic_write(out, lambda f: f.write(buf.getvalue().encode("utf-8")))
        except OSError as err:
            raise CnncliError(f"cannot write --out {out}: {err.strerror or err}") from None
        click.echo(printable(f"wrote {len(rows)} predictions to {out}"))
        return
    from rich.table import Table

    table = Table()
    table.add_column("input")
    table.add_column("predicted", justify="right")
    table.add_column("probability", justify="right")
    if k > 1:
        table.add_column(f"next {k - 1}")
    for label, ranked in rows:
        rest = ", ".join(f"{_cell(c)} {100 * p:.1f}%" for c, p in ranked[1:])
        table.add_row(_cell(label), _cell(ranked[0][0]), f"{100 * ranked[0][1]:.1f}%",
                      *([rest] if k > 1 else []))
    _console().print(table)
