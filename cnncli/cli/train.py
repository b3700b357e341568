"""`cnncli train`, `cnncli eval` and `cnncli predict`: call the library, render its results."""

from __future__ import annotations

import contextlib
import json
import shlex
import sys
import time
from pathlib import Path

import click

from cnncli.cli.app import main, table_console
from cnncli.cli.complete import complete_config, complete_run
from cnncli.errors import CheckpointError, CnncliError, printable
from cnncli.files import atomic_write
from cnncli.parallel import mpi


def _cell(text) -> str:
    """A user's name (class, file) as one table cell: controls escaped, never Rich markup."""
    from rich.markup import escape

    return escape(printable(text))


def _console():
    # In a pipe or a file Rich assumes 80 columns and cuts long class names: no limit there.
    return table_console(piped_width=100_000)


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
        skipped = data.skipped
        note = (f"; skipped {len(skipped)} hidden folder{'s' if len(skipped) > 1 else ''}: "
                f"{', '.join(skipped)}" if skipped else "")
        ranks = f" on {run.ranks} ranks" if run.ranks > 1 else ""
        click.echo(printable(f"{what} {run.config.name}{ranks}: {len(data.y_train)} train / "
                             f"{len(data.y_val)} val / {len(data.y_test)} test images, "
                             f"{sum(v.size for _, v, _ in run.model.parameters()):,} parameters "
                             f"-> {run.run_dir}{note}"))
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


def _run_dir_option(ctx, param, value):
    """--out '' would mean the current folder: refuse it rather than guess."""
    if value is not None and not value.strip():
        raise click.BadParameter("is an empty path; give a folder, e.g. --out runs/NAME")
    return None if value is None else Path(value)


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
@click.option("--data", "data", metavar="PATH_OR_DATASET",
              help="Train on this dataset name or path instead of the config's data.path "
                   "(one config, several copies of the data).")
@click.option("--out", type=click.Path(file_okay=False), callback=_run_dir_option,
              help="Run directory (default: runs/<name>/).")
@click.option("--resume", "resume", type=click.Path(exists=True, path_type=Path),
              metavar="RUN_DIR_OR_CKPT", help="Continue a run from its last.npz.",
              shell_complete=complete_run)
@click.option("--overwrite", is_flag=True,
              help="Replace a run already in the run directory (its checkpoints, metrics, "
                   "test scores and TensorBoard events are deleted first); without it such a "
                   "directory is refused.")
@click.option("--init-from", "init_from", type=click.Path(exists=True, path_type=Path),
              metavar="CKPT_OR_SAFETENSORS",
              help="Start from these weights, matched by parameter name (a new run).")
@click.option("--freeze", multiple=True, metavar="LAYER",
              help="With --init-from: give this layer, or every layer of this block "
                   "(e.g. layer1), no updates (repeatable).")
@click.option("--reinit", multiple=True, metavar="LAYER",
              help="With --init-from: keep this layer's (or this block's) fresh weights, "
                   "even if their shape differs from the source's (repeatable).")
@click.option("--tensorboard", is_flag=True,
              help="Write TensorBoard event files into RUN_DIR/tensorboard/ (same as "
                   "--set train.tensorboard=true; needs the [tensorboard] extra).")
@click.option("--ranks", type=click.IntRange(min=1), metavar="N",
              help="Train on N MPI ranks of this machine (starts mpiexec -n N; needs the "
                   "[mpi] extra). Under mpiexec, the ranks it started are used.")
@click.option("--quiet", "-q", is_flag=True, help="Print only the final result.")
@click.option("--verbose", "-v", is_flag=True, help="Also print the training settings.")
def train_command(config, epochs, batch_size, lr, seed, sets, data, out, resume, overwrite,
                  init_from, freeze, reinit, tensorboard, ranks, quiet, verbose):
    """Train the model CONFIG describes; write config.yaml, metrics.csv, last.npz, best.npz.

    With --resume, CONFIG may be omitted: the run's stored config is used.

    \b
    Examples:
      cnncli train configs/digits.yaml
      cnncli train configs/digits.yaml --epochs 5 --out runs/quick --overwrite
      cnncli train configs/digits.yaml --data packed_digits/
      cnncli train --resume runs/digits --epochs 40
      cnncli train configs/digits.yaml --ranks 2
    """
    from cnncli.inspect.tensorboard import TensorBoardReporter
    from cnncli.training.reporters import Reporters
    from cnncli.training.trainer import TrainingInterrupted, train

    if config is None and resume is None:
        raise click.UsageError("give a CONFIG file (or --resume RUN_DIR to continue a run)")
    if _on_ranks(ranks):
        return
    checked, cfg = _run_config(config, resume, sets, tensorboard, data, epochs=epochs,
                               batch_size=batch_size, lr=lr, seed=seed)
    extra = {}
    if init_from is not None or freeze or reinit:
        cfg, extra["init_weights"] = _initial_weights(cfg, init_from, freeze, reinit, resume,
                                                      seed, quiet)
    progress = Reporters(_Progress(quiet, verbose), TensorBoardReporter())
    try:
        with _download_progress(quiet) as show_download:
            run = train(cfg, out_dir=out, resume=resume, epochs=epochs, batch_size=batch_size,
                        lr=lr, seed=seed, callbacks=progress, overwrite=overwrite,
                        progress=show_download, **extra)
    except CnncliError as err:        # data.path missing, wrong input_shape: point at the key
        raise (err if checked is None else checked.locate(err)) from None
    except OSError as err:  # run directory or checkpoint writes: disk full, not a folder, ...
        raise CnncliError(f"cannot write {err.filename or 'the run directory'}: "
                          f"{err.strerror or err}",
                          hint="choose another --out or free some space; files already "
                               "written are intact") from None
    except TrainingInterrupted as stop:
        progress.close()
        _interrupted(stop, epochs)
    finally:
        progress.close()
    if not mpi.is_follower():
        _report_run(run, quiet)
        if not quiet:
            _decoding_note(run)


def _on_ranks(ranks) -> bool:
    """--ranks N (N > 1) outside MPI: run this very command under ``mpiexec -n N`` and exit
    with its code (True: done). Under MPI: join the ranks (rank 0 alone prints; Ctrl-C and
    SIGTERM stop each rank the same way) and train here (False)."""
    import os
    import signal

    from cnncli.parallel import mpi_launched

    if mpi_launched():
        if mpi.world() is not None:
            signal.signal(signal.SIGTERM, signal.default_int_handler)
            if mpi.is_follower():
                sys.stdout = open(os.devnull, "w")  # noqa: SIM115 (for the whole run)
        return False
    if ranks is None or ranks == 1:
        return False
    sys.exit(mpi.launch(ranks, _command_words(click.get_current_context())))


def _command_words(ctx) -> list[str]:
    """The command line of this command, rebuilt from its parsed parameters (the process's
    own argv may belong to another program, a test runner say); --ranks left out."""
    words = [ctx.info_name]
    for param in ctx.command.params:
        value = ctx.params.get(param.name)
        if param.name == "ranks" or value is None or value is False or value == ():
            continue
        if isinstance(param, click.Argument):
            words.append(str(value))
        elif getattr(param, "is_flag", False):
            words.append(param.opts[0])
        else:
            for item in (value if param.multiple else (value,)):
                words += [param.opts[0], str(item)]
    return words


#: Decoding an image folder that costs more than this share of an epoch's time earns a note
#: on `cnncli data pack`: the packed folder trains at in-memory speed (benchmarks/RESULTS.md).
DECODING_NOTE_SHARE = 0.1


def _decoding_note(run) -> None:
    """One line on stderr when decoding the image folder was a large part of each epoch."""
    from cnncli.data import decoding_cost

    cost = decoding_cost(run.dataset)
    if cost is None or not run.metrics or run.config.data.cache:  # cached: decoded once
        return
    images = len(run.dataset.y_train) + len(run.dataset.y_val)  # decoded every epoch
    epoch = sum(row["seconds"] for row in run.metrics) / len(run.metrics)
    share = cost * images / max(epoch, 1e-9)
    if share <= DECODING_NOTE_SHARE:
        return
    data, (channels, height, width) = run.config.data, run.config.model.input_shape
    resize = f" --resize {data.resize}" if data.resize else ""
    click.echo(printable(
        f"cnncli: note: decoding the images costs {cost * 1e6:.0f} us each, {share:.0%} of an "
        f"epoch's time; pack them once with `cnncli data pack {data.path} OUT --channels "
        f"{channels} --size {height}x{width}{resize}` and train with --data OUT, or keep them "
        f"decoded in the run with data.cache: true"), err=True)


def _run_config(config, resume, sets, tensorboard, data=None, **flags):
    """(the CheckedConfig of CONFIG or None, the RunConfig to train or None for the resumed
    run's own): --set and --data applied, warnings printed, a missing [tensorboard] extra
    refused."""
    from cnncli.config import check_config, check_data
    from cnncli.config.overrides import refuse_both
    from cnncli.inspect.tensorboard import summary_writer_class

    refuse_both(sets, **flags)
    if tensorboard:
        sets = (*sets, "train.tensorboard=true")
    checked = cfg = None
    if config is not None:
        checked = check_config(config, sets=sets)
        for line in checked.warnings:     # strides that drop rows: once per layer
            if not mpi.is_follower():     # (rank 0 speaks for every rank)
                click.echo(f"cnncli: warning: {printable(line)}", err=True)
        cfg = checked.run
    elif sets or data:                    # --resume RUN --set ...: the run's own config, changed
        from cnncli.training.checkpoint import load_checkpoint
        from cnncli.training.trainer import resolve_resume_path

        ckpt_path = resolve_resume_path(resume)
        cfg = check_data(load_checkpoint(ckpt_path).config, file=str(ckpt_path), sets=sets).run
    if data is not None:
        import dataclasses

        from cnncli.data.checkpoint_split import data_config

        cfg = dataclasses.replace(cfg, data=data_config(cfg, data))
    if cfg is not None and cfg.train.tensorboard:
        summary_writer_class()            # a missing extra stops here, before any work
    return checked, cfg


def _interrupted(stop, epochs) -> None:
    """Ctrl-C: where the state is and the command that resumes it; exit 130."""
    if mpi.is_follower():  # rank 0 says it
        mpi.stop_together(130)
    # No CONFIG: the run's stored config keeps this run's --lr/--batch-size overrides; the
    # file may also have been edited since.
    again = ["cnncli", "train", "--resume", str(stop.run_dir)] + \
        (["--epochs", str(epochs)] if epochs else [])
    click.echo("\n" + printable(f"interrupted: state after epoch {stop.epoch} saved to "
                                f"{stop.run_dir / 'last.npz'}"), err=True)
    click.echo(printable(f"resume with: {shlex.join(again)}"), err=True)
    mpi.stop_together(130)
    sys.exit(130)


def _report_run(run, quiet: bool) -> None:
    """The end of a run: the epoch table, early stopping, the best epoch and the test score."""
    from cnncli.inspect.render import metrics_table, percent

    if not quiet and run.metrics:
        _console().print(metrics_table(run.metrics, run.best_epoch))
    if run.stopped_early:
        click.echo(f"early stopping after epoch {run.metrics[-1]['epoch']}")
    if run.best_epoch is not None:
        click.echo(printable(f"best {run.best_by} {percent(run.best_metric)} at epoch "
                             f"{run.best_epoch} -> {run.best_path}"))
    if run.test is not None:
        click.echo(f"test accuracy {percent(run.test['accuracy'])} (loss {run.test['loss']:.4f}, "
                   f"{run.test['num_samples']} images, best.npz)")


def _initial_weights(cfg, init_from, freeze, reinit, resume, seed, quiet):
    """Check --init-from against the model now (nothing is written on a mismatch), print what
    it loads, record it in the config (train.init_from: the optimizer freezes from there) and
    return (config, the call that loads the weights into the trainer's fresh model)."""
    import dataclasses

    from cnncli.config import InitFromConfig
    from cnncli.interop.init_from import apply_initial_weights, record
    from cnncli.nn.model import model_from_entries

    if init_from is None:
        raise click.UsageError("--freeze and --reinit need --init-from")
    if resume is not None or cfg is None:
        raise click.UsageError("--init-from starts a new run from a CONFIG; it does not combine "
                               "with --resume")
    model = model_from_entries(cfg.model.input_shape, cfg.model.entries(),
                               seed=cfg.seed if seed is None else seed)
    report = apply_initial_weights(model, init_from, reinit=reinit, freeze=freeze)
    if not quiet:
        counts = [f"{len(report.loaded)} loaded", f"{len(report.fresh)} new",
                  f"{len(report.reinit) + len(report.mismatched)} re-initialised"]
        click.echo(f"initial weights from {init_from}: {', '.join(counts)} parameters"
                   + (f"; frozen: {', '.join(report.frozen)}" if report.frozen else ""))
        _console().print(_init_table(report))
    cfg = cfg.replace(train=dataclasses.replace(
        cfg.train, init_from=InitFromConfig(**record(init_from, report.frozen, reinit))))
    return cfg, lambda fresh: apply_initial_weights(fresh, init_from, reinit=reinit,
                                                    freeze=freeze)


def _init_table(report):
    from rich.table import Table

    table = Table()
    for name in ("parameter", "weights", "trained"):
        table.add_column(name)
    for name, what in report.rows():
        table.add_row(name, what, report.trained(name))
    return table


# ---------------------------------------------------------------- eval

@main.command("eval")
@click.argument("checkpoint", type=click.Path(path_type=Path), shell_complete=complete_run)
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
@click.option("--set", "sets", multiple=True, metavar="KEY.PATH=VALUE",
              help="Override a data.* value of the run's config, e.g. --set data.cache_dir=DIR "
                   "(repeatable).")
@click.option("--plot", "plot_png", type=click.Path(dir_okay=False, path_type=Path),
              metavar="FILE.png", help="Draw the confusion matrix into this PNG.")
@click.option("--errors", "errors_png", type=click.Path(dir_okay=False, path_type=Path),
              metavar="FILE.png",
              help="Draw the most confidently misclassified images into this PNG.")
def eval_command(checkpoint, data, split, as_json, top_k, sets, plot_png, errors_png):
    """Loss, accuracy, per-class precision/recall/F1 and the confusion matrix of a checkpoint.

    By default on the test split of the run's own data, re-split as in training.

    \b
    Examples:
      cnncli eval runs/digits/best.npz
      cnncli eval runs/digits --split val --json
      cnncli eval runs/digits/best.npz --data my_images/ --split all
      cnncli eval runs/digits/best.npz --plot confusion.png --errors errors.png
    """
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
    where = "on every image (train, val and test)" if split == "all" else \
        f"on the {split} split"
    click.echo(printable(f"{ckpt.path} (epoch {ckpt.epoch}) {where}: "
                         f"{report['num_samples']} images"))
    absent = len(report["per_class"]) - report["macro_f1_classes"]
    click.echo(f"loss {report['loss']:.4f}   accuracy {percent(report['accuracy'])}   "
               f"top-{report['top_k']} accuracy {percent(report['top_k_accuracy'])}   "
               f"macro F1 {report['macro_f1']:.3f}"
               + (f" (over the {report['macro_f1_classes']} classes present; {absent} "
                  f"never occur)" if absent else ""))
    for table in report_tables(report):
        console.print(table)


# ---------------------------------------------------------------- predict

def _expand_inputs(inputs) -> list[str]:
    """Folders become their image files and globs their matches, each sorted by name."""
    import glob

    from cnncli.data.sources import is_image
    from cnncli.errors import DataError

    paths = []
    for text in inputs:
        p = Path(text)
        if p.is_dir():
            found = sorted(str(q) for q in p.iterdir() if q.is_file() and is_image(q))
            if not found:
                raise DataError(f"input folder {text!r} holds no image files (.png, .jpg, ...)")
            paths.extend(found)
        elif not p.exists() and glob.has_magic(text):
            found = sorted(q for q in glob.glob(text) if Path(q).is_file())
            if not found:
                raise DataError(f"no file matches {text!r}")
            paths.extend(found)
        else:
            paths.append(text)
    return paths


@main.command("predict")
@click.argument("checkpoint", type=click.Path(path_type=Path))
@click.argument("inputs", nargs=-1, required=True)
@click.option("--top", "--top-k", "top", type=click.IntRange(min=1), default=3,
              show_default=True, help="How many classes to list per input.")
@click.option("--out", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the predictions to this file instead of a table: JSON for a .json "
                   "name, else CSV.")
@click.option("--resize", type=click.Choice(["fit", "crop", "none"]), default="fit",
              show_default=True,
              help="Image files of another size: stretch to the model's input (fit), scale "
                   "and cut the centre (crop), or refuse (none).")
def predict_command(checkpoint, inputs, top, out, resize):
    """Predicted class and top probabilities for images, .npy or .npz INPUTS (files, folders of
    images, or quoted globs such as 'photos/*.png').

    \b
    Examples:
      cnncli predict runs/digits/best.npz digit.png
      cnncli predict runs/digits/best.npz batch.npy --top 2 --out preds.csv
      cnncli predict runs/digits/best.npz 'photos/*.png' --resize crop --output preds.json
    """
    from cnncli.data import load_inputs
    from cnncli.inspect.render import predictions_csv, predictions_table
    from cnncli.training.checkpoint import load_checkpoint
    from cnncli.training.evaluate import top_predictions

    ckpt = load_checkpoint(checkpoint)
    model = ckpt.model()
    if not ckpt.normalization:
        raise CheckpointError(f"{ckpt.path} stores no normalisation statistics",
                              hint="use a checkpoint written by 'cnncli train'")
    x, labels = load_inputs(_expand_inputs(inputs), tuple(model.input_shape),
                            ckpt.normalization, resize=resize)
    rows = top_predictions(model, x, labels, ckpt.class_names, top)
    if out is not None and out.suffix.lower() == ".json":
        text = json.dumps([{"input": label, "predicted": ranked[0][0],
                            "top": [{"class": c, "probability": p} for c, p in ranked]}
                           for label, ranked in rows], indent=2) + "\n"
        try:
            atomic_write(out, lambda f: f.write(text.encode("utf-8")))
        except OSError as err:
            raise CnncliError(f"cannot write --out {out}: {err.strerror or err}") from None
        click.echo(printable(f"wrote {len(rows)} predictions to {out}"))
        return
    if out is not None:
        text = predictions_csv(rows)
        try:  # creates missing parent folders, as train --out does
            atomic_write(out, lambda f: f.write(text.encode("utf-8")))
        except OSError as err:
            raise CnncliError(f"cannot write --out {out}: {err.strerror or err}") from None
        click.echo(printable(f"wrote {len(rows)} predictions to {out}"))
        return
    _console().print(predictions_table(rows))
