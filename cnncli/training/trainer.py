"""The training loop: epochs of SGD-style steps, validation, checkpoints, resume, early stopping.

No printing: progress goes to a ``Callbacks`` object that the CLI renders. Reproducible: the
seed drives weight init (``model_from_entries``); a separate generator drives shuffling and
augmentation; layer-owned generators (dropout) are saved with it in every checkpoint, so a
resumed run is bitwise identical to an uninterrupted one.
"""

from __future__ import annotations

import copy
import csv
import io
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cnncli.errors import CheckpointError, CnncliError, ConfigError
from cnncli.nn.model import model_from_entries
from cnncli.parallel.plan import plan_training
from cnncli.training.checkpoint import (
    atomic_write,
    config_to_text,
    load_checkpoint,
    make_folder,
    save_checkpoint,
)
from cnncli.training.evaluate import evaluate, loss_and_accuracy
from cnncli.training.optim import clip_grad_norm, make_optimizer
from cnncli.training.schedules import make_schedule

# A lone final sample joins the batch before it: batch norm cannot train on one sample.
MIN_LAST_BATCH = 2
METRIC_COLUMNS = ("epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr",
                  "seconds")


class TrainingDiverged(CnncliError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""

    exit_code = 1


class TrainingInterrupted(Exception):
    """Ctrl-C: ``last.npz`` holds the state after ``epoch`` completed epochs."""

    def __init__(self, run_dir: Path, epoch: int):
        super().__init__(f"interrupted; state after epoch {epoch} saved in {run_dir}/last.npz")
        self.run_dir = run_dir
        self.epoch = epoch


class Callbacks:
    """Progress hooks; the default does nothing."""

    def on_start(self, run: Run) -> None: ...

    def on_epoch_start(self, epoch: int, epochs: int, num_batches: int, lr: float) -> None: ...

    def on_batch(self, batch: int, size: int, loss: float, correct: int) -> None: ...

    def on_epoch_end(self, row: dict, improved: bool) -> None: ...


@dataclass
class Run:
    """Everything a training run knows; ``result`` fields fill in as it goes."""

    config: dict
    run_dir: Path
    model: object
    dataset: object
    epochs: int
    start_epoch: int
    metrics: list[dict] = field(default_factory=list)
    best_metric: float | None = None
    best_epoch: int | None = None
    best_by: str = "val_accuracy"
    best_loss: float | None = None
    stopped_early: bool = False
    test: dict | None = None

    @property
    def last_path(self) -> Path:
        return self.run_dir / "last.npz"

    @property
    def best_path(self) -> Path:
        return self.run_dir / "best.npz"


# ------------------------------------------------------------------ one step

def train_step(model, optimizer, x, y, *, label_smoothing: float = 0.0,
               clip_norm: float | None = None) -> tuple[float, int]:
    """Forward, loss, backward, (clip), update. Returns (batch loss, correct predictions).

    ``model`` is a Model or a ``processes.SplitBatchModel`` standing in for one. A non-finite
    loss is returned without updating anything; the caller decides.
    """
    from cnncli.nn.losses import softmax_cross_entropy

    model.zero_grad()
    logits = model.forward(x, train=True)
    loss, dlogits = softmax_cross_entropy(logits, y, label_smoothing)
    loss = float(loss)
    correct = int((logits.argmax(axis=1) == y).sum())
    if not math.isfinite(loss):
        return loss, correct
    model.backward(dlogits, need_input_grad=False)
    if clip_norm:
        clip_grad_norm([g for _, _, g in model.parameters()], clip_norm)
    optimizer.step(model.parameters())
    return loss, correct


# ------------------------------------------------------------------ helpers

def _layer_generators(model) -> dict[str, np.random.Generator]:
    """Generators owned by layers (dropout masks), by ``<layer>.<attribute>``."""
    found = {}
    for layer in model.layers:
        for attr, value in vars(layer).items():
            if isinstance(value, np.random.Generator):
                found[f"{layer.name}.{attr}"] = value
    return found


def _generators(model, batch_rng) -> dict[str, np.random.Generator]:
    return {"batches": batch_rng, **_layer_generators(model)}


def apply_overrides(config: dict, *, epochs=None, batch_size=None, lr=None, seed=None) -> dict:
    """Copy of ``config`` with command-line overrides written in (config.yaml shows them)."""
    cfg = copy.deepcopy(config)
    train = cfg.setdefault("train", {}) or {}
    cfg["train"] = train
    for key, value in (("epochs", epochs), ("batch_size", batch_size), ("lr", lr)):
        if value is not None:
            train[key] = value
    if seed is not None:
        cfg["seed"] = seed
    return cfg


def _check_overrides(cfg: dict, **overrides) -> None:
    """Overrides obey the config's own rules (ranges, warmup < epochs): the run's config.yaml
    must stay a valid config."""
    given = {k: v for k, v in overrides.items() if v is not None}
    if not given:
        return
    from cnncli.config.loader import check_data

    try:
        check_data(cfg)
    except ConfigError as err:
        culprit = {err.key: given[err.key]} if err.key in given else given
        flags = " ".join(f"--{k.replace('_', '-')} {v}" for k, v in culprit.items())
        # No key: the value came from the command line, not from a line of the config file.
        raise ConfigError(f"with {flags}: {err.message}", layer=err.layer,
                          hint=err.hint) from None


def _train_settings(cfg: dict) -> dict:
    train = cfg.get("train") or {}
    epochs = train.get("epochs", 10)
    batch_size = train.get("batch_size", 64)
    for key, value in (("epochs", epochs), ("batch_size", batch_size)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ConfigError(f"train.{key} must be a positive int, got {value!r}", key=key)
    early = train.get("early_stopping")
    if early is not None:
        metric = early.get("metric", "val_accuracy")
        if metric not in ("val_accuracy", "val_loss"):
            raise ConfigError(f"early_stopping.metric must be val_accuracy or val_loss, got "
                              f"{metric!r}", key="metric")
        early = {"metric": metric, "patience": int(early.get("patience", 5)),
                 "min_delta": float(early.get("min_delta", 0.0) or 0.0)}
    return {"epochs": epochs, "batch_size": batch_size, "early": early,
            "label_smoothing": float(train.get("label_smoothing") or 0.0),
            "clip": train.get("grad_clip_norm"),
            "augment": (cfg.get("data") or {}).get("augment")}


def resolve_resume_path(resume) -> Path:
    path = Path(resume)
    return path / "last.npz" if path.is_dir() else path


def _write_metrics_csv(path: Path, rows: list[dict]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=METRIC_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if row.get(k) is None else row[k]) for k in METRIC_COLUMNS})
    atomic_write(path, lambda f: f.write(buf.getvalue().encode()))


def _improved(value, best, *, higher_is_better: bool, min_delta: float = 0.0) -> bool:
    if value is None or not math.isfinite(value):
        return False
    if best is None:
        return True
    return value > best + min_delta if higher_is_better else value < best - min_delta


# ------------------------------------------------------------------ the loop

def train(config: dict, *, out_dir=None, resume=None, epochs=None, batch_size=None, lr=None,
          seed=None, callbacks: Callbacks | None = None, root=None,
          overwrite: bool = False) -> Run:
    """Train the model a resolved config describes; returns the finished Run.

    ``resume`` is a run directory or checkpoint; training continues from its last epoch
    (up to ``epochs``, which may exceed the original count). A run directory that already
    holds another run is refused unless ``overwrite``, which deletes that run's checkpoints
    and metrics first. Raises TrainingInterrupted on
    Ctrl-C after saving ``last.npz``, and TrainingDiverged on a non-finite loss.
    """
    from cnncli.data import iterate_batches, load_dataset
    from cnncli.data.batching import batch_starts

    callbacks = callbacks or Callbacks()
    ckpt = None
    if resume is not None:
        ckpt = load_checkpoint(resolve_resume_path(resume))
        if config is None:
            config = ckpt.config
    if config is None:
        raise ConfigError("no config to train: give a config file or a run to resume")
    if ckpt is not None and seed is not None and seed != ckpt.config.get("seed"):
        raise ConfigError(f"--seed {seed} differs from the resumed run's seed "
                          f"{ckpt.config.get('seed')!r}; it would change the data split",
                          key="seed", hint="drop --seed when resuming")
    if ckpt is not None and epochs is not None and epochs < ckpt.epoch:
        raise ConfigError(f"--epochs {epochs} is fewer than the {ckpt.epoch} epochs "
                          f"{ckpt.path} has already trained",
                          hint=f"pass --epochs N with N > {ckpt.epoch} to continue")
    cfg = apply_overrides(config, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed)
    _check_overrides(cfg, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed)
    settings = _train_settings(cfg)
    run_seed = int(cfg.get("seed") or 0)
    section = cfg["model"]
    model = model_from_entries(section["input_shape"], section["layers"], seed=run_seed)
    if len(model.output_shape) != 1:
        raise ConfigError(f"the model must end in class scores (N, classes), but it outputs "
                          f"{list(model.output_shape)} per sample", hint="end with flatten + dense",
                          key="layers")
    num_classes = model.output_shape[0]
    if num_classes < 2:  # softmax over one score: loss 0 and "100%" whatever the weights
        raise ConfigError(f"the model outputs {num_classes} class score per sample; a "
                          "classifier needs at least 2", key="layers",
                          hint="make the last layer output one unit per class")
    dataset = load_dataset(cfg.get("data") or {}, tuple(model.input_shape), num_classes,
                           run_seed, root=root, training=True)
    has_val = len(dataset.y_val) > 0
    if settings["early"] and not has_val:
        raise ConfigError(f"early_stopping on {settings['early']['metric']} needs a validation "
                          f"split", key="early_stopping", hint="set data.val_split > 0")
    optimizer = make_optimizer(cfg["train"])
    schedule = make_schedule(cfg["train"].get("lr_schedule"), optimizer.lr, settings["epochs"])
    batch_rng = np.random.default_rng([run_seed, 1])
    generators = _generators(model, batch_rng)

    if out_dir is None:
        out_dir = ckpt.path.parent if ckpt is not None else Path("runs") / str(cfg.get("name")
                                                                              or "run")
    run = Run(config=cfg, run_dir=Path(out_dir), model=model, dataset=dataset,
              epochs=settings["epochs"], start_epoch=0,
              best_by="val_accuracy" if has_val else "train_accuracy")
    step, bad_epochs, early_best = 0, 0, None
    if ckpt is not None:
        ckpt.check_finite()
        try:
            model.load_state_dict(ckpt.state)
            optimizer.load_state_dict(ckpt.optimizer_state)
        except CnncliError as err:  # CONFIG given on resume describes another model/optimizer
            raise CheckpointError(
                f"cannot resume {ckpt.path}: {err.message}",
                hint=(err.hint + "; " if err.hint else "") + "or resume without CONFIG to "
                "use the run's own config") from None
        for name, gen in generators.items():
            if name in ckpt.rng_state:
                gen.bit_generator.state = ckpt.rng_state[name]
        run.start_epoch, step = ckpt.epoch, ckpt.step
        run.metrics = list(ckpt.metrics)
        run.best_metric = ckpt.best_metric
        run.best_epoch = ckpt.run_state.get("best_epoch")
        run.best_loss = ckpt.run_state.get("best_loss")
        bad_epochs = ckpt.run_state.get("bad_epochs", 0)
        early_best = ckpt.run_state.get("early_best")

    if ckpt is not None and _same_file(run.run_dir, ckpt.path.parent):
        _refuse_rollback(run.last_path, ckpt)  # continuing the run in its own directory
    else:
        _refuse_overwrite(run.run_dir, overwrite)
    make_folder(run.run_dir)
    atomic_write(run.run_dir / "config.yaml", lambda f: f.write(config_to_text(cfg).encode()))
    callbacks.on_start(run)

    def snapshot(epoch: int) -> dict:
        """Everything a checkpoint holds, copied now (epoch = completed epochs)."""
        return dict(config=cfg, model_state=model.state_dict(),
                    optimizer_state=optimizer.state_dict(), epoch=epoch, step=step,
                    rng_state={k: g.bit_generator.state for k, g in generators.items()},
                    normalization=dataset.normalization, class_names=dataset.class_names,
                    best_metric=run.best_metric, metrics=copy.deepcopy(run.metrics),
                    run_state={"best_epoch": run.best_epoch, "best_loss": run.best_loss,
                               "bad_epochs": bad_epochs,
                               "early_best": early_best, "best_by": run.best_by})

    consistent = snapshot(run.start_epoch)
    disk_epoch = ckpt.epoch if ckpt is not None else None
    best_disk_epoch = run.best_epoch  # the epoch best.npz holds
    if ckpt is not None and not _same_file(run.last_path, ckpt.path):
        # A new run directory (--out, or resuming from best.npz): it starts with the resumed
        # state, so a Ctrl-C, a later --resume and the final report find the files they name.
        save_checkpoint(run.last_path, **consistent)
        best_disk_epoch = _carry_best(ckpt, run, consistent)
    x_tr, y_tr = dataset.x_train, dataset.y_train
    num_batches = len(batch_starts(len(y_tr), settings["batch_size"], MIN_LAST_BATCH))
    epoch = run.start_epoch
    split = plan_training(model, settings["batch_size"])  # speed-ups; maybe a worker process
    trained = split or model
    try:
        for epoch in range(run.start_epoch, run.epochs):
            optimizer.lr = schedule(epoch)
            callbacks.on_epoch_start(epoch + 1, run.epochs, num_batches, optimizer.lr)
            started = time.perf_counter()
            loss_sum, correct_sum, seen = 0.0, 0, 0
            batches = iterate_batches(x_tr, y_tr, settings["batch_size"], batch_rng,
                                      shuffle=True, augment=settings["augment"],
                                      min_last_batch=MIN_LAST_BATCH)
            for index, (xb, yb) in enumerate(batches, start=1):
                with np.errstate(over="ignore", invalid="ignore"):  # divergence checked below
                    loss, correct = train_step(trained, optimizer, xb, yb,
                                               label_smoothing=settings["label_smoothing"],
                                               clip_norm=settings["clip"])
                if not math.isfinite(loss):
                    raise _diverged(f"loss became {loss}", f"epoch {epoch + 1}, batch "
                                    f"{index}/{num_batches}", run, optimizer.lr, disk_epoch)
                step += 1
                loss_sum += loss * len(yb)
                correct_sum += correct
                seen += len(yb)
                callbacks.on_batch(index, len(yb), loss, correct)
            # The epoch's last update is not followed by a loss check: check what it left.
            if not all(np.isfinite(v).all() for _, v, _ in model.parameters()):
                raise _diverged("the weights became NaN or infinite",
                                f"the end of epoch {epoch + 1}", run, optimizer.lr, disk_epoch)
            with np.errstate(over="ignore", invalid="ignore"):
                val_loss, val_acc = loss_and_accuracy(model, dataset.x_val, dataset.y_val)
            if has_val and not math.isfinite(val_loss):
                raise _diverged(f"validation loss became {val_loss}",
                                f"the end of epoch {epoch + 1}", run, optimizer.lr, disk_epoch)
            row = {"epoch": epoch + 1, "train_loss": loss_sum / seen,
                   "train_accuracy": correct_sum / seen,
                   "val_loss": val_loss if has_val else None,
                   "val_accuracy": val_acc if has_val else None,
                   "lr": optimizer.lr, "seconds": round(time.perf_counter() - started, 3)}
            run.metrics.append(row)
            # best.npz: highest accuracy; at equal accuracy, the lower loss
            score, score_loss = row[run.best_by], row[run.best_by.replace("accuracy", "loss")]
            improved = _improved(score, run.best_metric, higher_is_better=True) or (
                score == run.best_metric
                and _improved(score_loss, run.best_loss, higher_is_better=False))
            if improved:
                run.best_metric, run.best_loss, run.best_epoch = score, score_loss, epoch + 1
            if settings["early"]:
                es = settings["early"]
                value = row[es["metric"]]
                if _improved(value, early_best, higher_is_better=es["metric"] == "val_accuracy",
                             min_delta=es["min_delta"]):
                    early_best, bad_epochs = value, 0
                else:
                    bad_epochs += 1
            consistent = snapshot(epoch + 1)
            save_checkpoint(run.last_path, **consistent)
            disk_epoch = consistent["epoch"]
            if improved:
                save_checkpoint(run.best_path, **consistent)
                best_disk_epoch = run.best_epoch
            _write_metrics_csv(run.run_dir / "metrics.csv", run.metrics)
            callbacks.on_epoch_end(row, improved)
            if settings["early"] and bad_epochs >= settings["early"]["patience"]:
                run.stopped_early = True
                break
    except KeyboardInterrupt:
        # Ctrl-C may land between the epoch's writes: finish the ones it skipped.
        if disk_epoch != consistent["epoch"]:
            save_checkpoint(run.last_path, **consistent)
        best_epoch = consistent["run_state"]["best_epoch"]
        if best_epoch == consistent["epoch"] and best_disk_epoch != best_epoch:
            save_checkpoint(run.best_path, **consistent)
        if consistent["metrics"]:
            _write_metrics_csv(run.run_dir / "metrics.csv", consistent["metrics"])
        raise TrainingInterrupted(run.run_dir, consistent["epoch"]) from None
    finally:
        if split is not None:
            split.close()
    if run.metrics and not (run.run_dir / "metrics.csv").exists():
        _write_metrics_csv(run.run_dir / "metrics.csv", run.metrics)
    if len(dataset.y_test) and run.best_path.exists():
        best_model = load_checkpoint(run.best_path).model()  # run.model keeps the last weights
        run.test = evaluate(best_model, dataset.x_test, dataset.y_test, dataset.class_names)
        run.test["checkpoint"] = str(run.best_path)
    return run


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and a.samefile(b)
    except OSError:
        return False


def _stored_epoch(path: Path) -> int | None:
    """The ``epoch`` of a checkpoint, without loading its arrays (None if unreadable)."""
    try:
        with np.load(path, allow_pickle=False) as data:
            return int(data["epoch"])
    except Exception:  # a corrupt file holds nothing worth keeping
        return None


def _refuse_rollback(last_path: Path, ckpt) -> None:
    """Resuming from an older checkpoint (best.npz) into its own run directory would overwrite
    the later epochs of last.npz and metrics.csv."""
    if not last_path.exists() or _same_file(last_path, ckpt.path):
        return
    later = _stored_epoch(last_path)
    if later is not None and later > ckpt.epoch:
        raise CheckpointError(
            f"{last_path} holds epoch {later}, later than {ckpt.path} (epoch {ckpt.epoch}); "
            f"resuming into {last_path.parent} would overwrite it",
            hint=f"continue the run with --resume {last_path.parent}, or branch off from "
                 f"epoch {ckpt.epoch} with --out NEW_DIR")


#: What makes a directory hold a run that a new one would overwrite.
RUN_FILES = ("last.npz", "best.npz", "metrics.csv")


def _refuse_overwrite(run_dir: Path, overwrite: bool) -> None:
    """A new run (or a branch resumed into another directory) must not silently replace the
    checkpoints of a run already in ``run_dir``; with ``overwrite`` they are deleted first, so
    no file of the old run is mistaken for the new one's."""
    found = [name for name in RUN_FILES if (run_dir / name).exists()]
    if not found:
        return
    if overwrite:
        for name in found:
            (run_dir / name).unlink()
        return
    epoch = _stored_epoch(run_dir / "last.npz")
    held = f"{', '.join(found)}" + (f"; last.npz at epoch {epoch}" if epoch is not None else "")
    raise ConfigError(f"{run_dir} already holds a run ({held}); training there would "
                      "overwrite it",
                      hint=f"continue it with --resume {run_dir}, train into another --out "
                           f"DIR, or pass --overwrite to replace it")


def _carry_best(ckpt, run: Run, state: dict) -> int | None:
    """Give a new run directory the best.npz of the run it continues; returns its epoch."""
    if run.best_epoch is None:
        return None
    source = ckpt.path.parent / "best.npz"
    if _same_file(source, run.best_path):
        return _stored_epoch(source)
    if source.exists() and _stored_epoch(source) == run.best_epoch:
        atomic_write(run.best_path, lambda f: f.write(source.read_bytes()))
        return run.best_epoch
    if ckpt.epoch == run.best_epoch:  # the resumed checkpoint is itself the best one
        save_checkpoint(run.best_path, **state)
        return run.best_epoch
    return None


def _diverged(what, where, run, lr, disk_epoch) -> TrainingDiverged:
    kept = (f"; last good checkpoint: {run.last_path} (epoch {disk_epoch})"
            if disk_epoch is not None else "; no checkpoint was written")
    return TrainingDiverged(
        f"{what} at {where}{kept}",
        hint=f"lower train.lr (now {lr:g}) or set train.grad_clip_norm, e.g. 1.0")

