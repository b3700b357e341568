"""`cnncli train`, `cnncli eval` and `cnncli predict`: call the library, render its results."""

from __future__ import annotations

import contextlib
import json
import shlex
import sys
import time
from pathlib import Path

import click

from cnncli.cli.app import main
from cnncli.cli.complete import complete_config, complete_run
from cnncli.errors import CheckpointError, CnncliError
from cnncli.files import atomic_write


def _console():
    from rich.console import Console

    return Console(highlight=False)


# ---------------------------------------------------------------- download progress

@contextlib.contextmanager
def _download_progress(quiet: bool):
    """A ``progress`` callback for first-use dataset downloads (None when quiet): a byte bar
    on stderr on a terminal, else one line per file."""
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

    try:
        yield None if quiet else show
    finally:
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
        click.echo(f"{what} {run.config.name}: {len(data.y_train)} train / "
                   f"{len(data.y_val)} val / {len(data.y_test)} test images, "
                   f"{sum(v.size for _, v, _ in run.model.parameters()):,} parameters -> "
                   f"{run.run_dir}")
        if self.verbose:
            click.echo("  " + _settings_text(run.config.train))
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
        from cnncli.inspect.render import percent

        if self.bar is not None:
            self.bar.close()
            self.bar = None
        if self.quiet:
            return
        width = len(str(self.epochs))
        val = ""
        if row["val_loss"] is not None:
            val = f"  val loss {row['val_loss']:.4f} acc {percent(row['val_accuracy'])}"
        click.echo(f"epoch {row['epoch']:>{width}}/{self.epochs}  train loss "
                   f"{row['train_loss']:.4f} acc {percent(row['train_accuracy'])}{val}  "
                   f"lr {row['lr']:.3g}  {row['seconds']:.1f}s{'  *' if improved else ''}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _settings_text(train) -> str:
    """One line: optimizer, lr and schedule, batch size, epochs and whichever extras are on."""
    sched = train.lr_schedule.to_dict()
    extra = {k: v for k, v in sched.items() if k not in ("type", "warmup_epochs")}
    text = sched["type"] + ("(" + ", ".join(f"{k}={v}" for k, v in extra.items()) + ")"
                            if extra else "")
    if sched["warmup_epochs"]:
        text += f" after {sched['warmup_epochs']} warmup epochs"
    parts = [f"{train.optimizer} lr={train.lr} schedule={text}",
             f"batch_size={train.batch_size}", f"epochs={train.epochs}"]
    for key in ("momentum", "nesterov", "weight_decay", "grad_clip_norm", "label_smoothing"):
        if getattr(train, key):
            parts.append(f"{key}={getattr(train, key)}")
    if train.early_stopping is not None:
        es = train.early_stopping
        parts.append(f"early_stopping={es.metric}/patience {es.patience}")
    return ", ".join(parts)


@main.command("train")
@click.argument("config", required=False, type=click.Path(dir_okay=False, path_type=Path),
                shell_complete=complete_config)
@click.option("--epochs", type=click.IntRange(min=1), help="Override train.epochs.")
@click.option("--batch-size", type=click.IntRange(min=1), help="Override train.batch_size.")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), help="Override train.lr.")
@click.option("--seed", type=int, help="Override seed.")
@click.option("--set", "sets", multiple=True, metavar="KEY.PATH=VALUE",
              help="Override any config value by its dotted path, e.g. --set train.lr=0.01 or "
                   "--set model.layers.0.out_channels=32 (repeatable).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path),
              help="Run directory (default: runs/<name>/).")
@click.option("--resume", "resume", type=click.Path(exists=True, path_type=Path),
              metavar="RUN_DIR_OR_CKPT", help="Continue a run from its last.npz.",
              shell_complete=complete_run)
@click.option("--overwrite", is_flag=True,
              help="Replace a run already in the run directory (its checkpoints and metrics "
                   "are deleted first); without it such a directory is refused.")
@click.option("--tensorboard", is_flag=True,
              help="Write TensorBoard event files into RUN_DIR/tensorboard/ (same as "
                   "--set train.tensorboard=true; needs the [tensorboard] extra).")
@click.option("--quiet", "-q", is_flag=True, help="Print only the final result.")
@click.option("--verbose", "-v", is_flag=True, help="Also print the training settings.")
def train_command(config, epochs, batch_size, lr, seed, sets, out, resume, overwrite, tensorboard,
                  quiet, verbose):
    """Train the model CONFIG describes; write config.yaml, metrics.csv, last.npz, best.npz.

    With --resume, CONFIG may be omitted: the run's stored config is used.
    """
    from cnncli.inspect.render import metrics_table, percent
    from cnncli.training.trainer import TrainingInterrupted, train

    if config is None and resume is None:
        raise click.UsageError("give a CONFIG file (or --resume RUN_DIR to continue a run)")
    from cnncli.config.overrides import refuse_both

    refuse_both(sets, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed)
    if tensorboard:
        sets = (*sets, "train.tensorboard=true")
    cfg = None
    if config is not None:
        from cnncli.config import check_config

        checked = check_config(config, sets=sets)
        for line in checked.warnings:     # strides that drop rows: once per layer
            click.echo(f"cnncli: warning: {line}", err=True)
        cfg = checked.run
    elif sets:                            # --resume RUN --set ...: the run's own config, changed
        from cnncli.config import check_data
        from cnncli.training.checkpoint import load_checkpoint
        from cnncli.training.trainer import resolve_resume_path

        ckpt_path = resolve_resume_path(resume)
        cfg = check_data(load_checkpoint(ckpt_path).config, file=str(ckpt_path), sets=sets).run
    from cnncli.inspect.tensorboard import TensorBoardReporter, summary_writer_class
    from cnncli.training.reporters import Reporters

    if cfg is not None and cfg.train.tensorboard:
        summary_writer_class()            # a missing extra stops here, before any work
    progress = Reporters(_Progress(quiet, verbose), TensorBoardReporter())
    try:
        with _download_progress(quiet) as show_download:
            run = train(cfg, out_dir=out, resume=resume, epochs=epochs, batch_size=batch_size,
                        lr=lr, seed=seed, callbacks=progress, overwrite=overwrite,
                        progress=show_download)
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
        click.echo(f"\ninterrupted: state after epoch {stop.epoch} saved to "
                   f"{stop.run_dir / 'last.npz'}", err=True)
        click.echo(f"resume with: {shlex.join(again)}", err=True)
        sys.exit(130)
    finally:
        progress.close()
    if run.test is not None:              # what `cnncli runs` and `cnncli report` read
        from cnncli.training.run_dir import write_test_scores

        try:
            write_test_scores(run.run_dir, run.test)
        except OSError as err:
            raise CnncliError(f"cannot write {err.filename or 'test.json'}: "
                              f"{err.strerror or err}") from None
    if not quiet and run.metrics:
        _console().print(metrics_table(run.metrics, run.best_epoch))
    if run.stopped_early:
        click.echo(f"early stopping after epoch {run.metrics[-1]['epoch']}")
    if run.best_epoch is not None:
        click.echo(f"best {run.best_by} {percent(run.best_metric)} at epoch {run.best_epoch}"
                   f" -> {run.best_path}")
    if run.test is not None:
        click.echo(f"test accuracy {percent(run.test['accuracy'])} (loss {run.test['loss']:.4f}, "
                   f"{run.test['num_samples']} images, best.npz)")


# ---------------------------------------------------------------- eval

@main.command("eval")
@click.argument("checkpoint", type=click.Path(path_type=Path), shell_complete=complete_run)
@click.option("--data", "data", metavar="PATH_OR_DATASET",
              help="Evaluate on another dataset name or path (default: the run's data).")
@click.option("--split", type=click.Choice(["test", "val", "train"]), default="test",
              show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the metrics as JSON.")
@click.option("--top-k", type=click.IntRange(min=1), default=5, show_default=True,
              help="Also report top-k accuracy.")
@click.option("--set", "sets", multiple=True, metavar="KEY.PATH=VALUE",
              help="Override a data.* value of the run's config, e.g. --set data.cache_dir=DIR "
                   "(repeatable).")
@click.option("--plot", "plot_png", type=click.Path(dir_okay=False, path_type=Path),
              metavar="FILE.png", help="Draw the confusion matrix into this PNG.")
@click.option("--errors", "errors_png", type=click.Path(dir_okay=False, path_type=Path),
              metavar="FILE.png",
              help="Draw the most confidently misclassified images into this PNG.")
def eval_command(checkpoint, data, split, as_json, top_k, sets, plot_png, errors_png):
    """Loss, accuracy, per-class precision/recall/F1 and the confusion matrix of a checkpoint."""
    from cnncli.data.checkpoint_split import checkpoint_split
    from cnncli.inspect.render import percent, report_tables
    from cnncli.training.checkpoint import load_checkpoint
    from cnncli.training.evaluate import evaluate

    if plot_png is not None or errors_png is not None:
        from cnncli.inspect.eval_pictures import check_picture_names

        check_picture_names(plot=plot_png, errors=errors_png)
    ckpt = load_checkpoint(checkpoint)
    if sets:  # the run's data config changed: checkpoint_split reads ckpt.run
        import dataclasses

        from cnncli.config import check_data
        from cnncli.config.overrides import refuse_all_but_data

        refuse_all_but_data(sets)
        ckpt = dataclasses.replace(ckpt, _run=check_data(ckpt.config, file=str(ckpt.path),
                                                         sets=sets).run)
    model = ckpt.model()
    with _download_progress(False) as show_download:  # stderr: --json output stays clean
        x, y = checkpoint_split(ckpt, model, data, split, progress=show_download)
    class_names = ckpt.class_names
    report = evaluate(model, x, y, class_names, top_k=top_k)
    report = {"checkpoint": str(ckpt.path), "split": split, **report}
    if plot_png is not None or errors_png is not None:
        from cnncli.inspect.eval_pictures import write_eval_pictures

        for line in write_eval_pictures(report, model, x, y, class_names, plot=plot_png,
                                        errors=errors_png):
            click.echo(line, err=as_json)     # --json: stdout stays the JSON
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    console = _console()
    click.echo(f"{ckpt.path} (epoch {ckpt.epoch}) on the {split} split: "
               f"{report['num_samples']} images")
    click.echo(f"loss {report['loss']:.4f}   accuracy {percent(report['accuracy'])}   "
               f"top-{report['top_k']} accuracy {percent(report['top_k_accuracy'])}   "
               f"macro F1 {report['macro_f1']:.3f}")
    for table in report_tables(report):
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
    """Predicted class and top probabilities for images, .npy or .npz INPUTS."""
    from cnncli.data import load_inputs
    from cnncli.inspect.render import predictions_csv, predictions_table
    from cnncli.training.checkpoint import load_checkpoint
    from cnncli.training.evaluate import top_predictions

    ckpt = load_checkpoint(checkpoint)
    model = ckpt.model()
    if not ckpt.normalization:
        raise CheckpointError(f"{ckpt.path} stores no normalisation statistics",
                              hint="use a checkpoint written by 'cnncli train'")
    x, labels = load_inputs(list(inputs), tuple(model.input_shape), ckpt.normalization)
    rows = top_predictions(model, x, labels, ckpt.class_names, top)
    if out is not None:
        text = predictions_csv(rows)
        try:  # creates missing parent folders, as train --out does
            atomic_write(out, lambda f: f.write(text.encode("utf-8")))
        except OSError as err:
            raise CnncliError(f"cannot write --out {out}: {err.strerror or err}") from None
        click.echo(f"wrote {len(rows)} predictions to {out}")
        return
    _console().print(predictions_table(rows))
