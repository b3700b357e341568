"""The training loop: a ``Trainer`` runs epochs of steps over a ``RunState``.

Its collaborators each own one job: ``RunDirectory`` (files, lock, checkpoint writes),
``BestTracker`` and ``EarlyStopper`` (run_state.py), ``DivergenceGuard``, and a reporter
(``Callbacks``) that renders progress; the library never prints. Reproducible: the seed drives
weight init; a separate generator drives shuffling and augmentation; layer-owned generators
(dropout) are saved with it in every checkpoint, so a resumed run is bitwise identical to an
uninterrupted one.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cnncli.config import RunConfig, check_data, dump_config, resolve_config
from cnncli.errors import ConfigError
from cnncli.nn.model import forward_backward, model_from_entries
from cnncli.parallel import mpi
from cnncli.parallel.plan import apply_plan, plan_training
from cnncli.training.checkpoint import load_checkpoint
from cnncli.training.evaluate import evaluate, loss_and_accuracy
from cnncli.training.memory import check_training_memory
from cnncli.training.metrics import write_metrics_csv
from cnncli.training.optim import clip_grad_norm, make_optimizer
from cnncli.training.run_dir import FollowerRunDirectory, RunDirectory, same_file
from cnncli.training.run_state import (
    BestTracker,
    Diverged,
    EarlyStopper,
    RunState,
    layer_generators,
)
from cnncli.training.schedules import make_schedule

# A lone final sample joins the batch before it: batch norm cannot train on one sample.
MIN_LAST_BATCH = 2
TrainingDiverged = Diverged  # the name the Python API has always raised


class TrainingInterrupted(Exception):
    """Ctrl-C: ``last.npz`` holds the state after ``epoch`` completed epochs."""

    def __init__(self, run_dir: Path, epoch: int):
        super().__init__(f"interrupted; state after epoch {epoch} saved in {run_dir}/last.npz")
        self.run_dir = run_dir
        self.epoch = epoch


class Callbacks:
    """Progress hooks (the reporter); the default does nothing."""

    def on_start(self, run: Run) -> None: ...

    def on_epoch_start(self, epoch: int, epochs: int, num_batches: int, lr: float) -> None: ...

    def on_batch(self, batch: int, size: int, loss: float, correct: int) -> None: ...

    def on_epoch_end(self, row: dict, improved: bool) -> None: ...


@dataclass
class Run:
    """What a training run reports: its config, files, data, model and results so far."""

    config: RunConfig
    run_dir: Path
    model: object
    dataset: object
    epochs: int
    start_epoch: int
    best: BestTracker = field(default_factory=BestTracker)
    metrics: list[dict] = field(default_factory=list)
    stopped_early: bool = False
    test: dict | None = None
    ranks: int = 1  # MPI ranks training it (parallel/mpi.py)

    best_by = property(lambda self: self.best.by)
    best_metric = property(lambda self: self.best.metric)
    best_epoch = property(lambda self: self.best.epoch)

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
    model.zero_grad()
    if hasattr(model, "train_batch"):  # a SplitBatchModel: its halves run whole steps
        logits, loss = model.train_batch(x, y, label_smoothing)
    else:
        logits, loss = forward_backward(model, x, y, label_smoothing)
    loss = float(loss)
    correct = int((logits.argmax(axis=1) == y).sum())
    if not math.isfinite(loss):
        return loss, correct
    if clip_norm:
        clip_grad_norm([g for _, _, g in model.parameters()], clip_norm)
    optimizer.step(model.parameters())
    return loss, correct


# ------------------------------------------------------------------ the trainer

class Trainer:
    """Trains the model a RunConfig describes into a run directory, from scratch or a checkpoint.

    Construction builds the model, the data, the optimizer and the run state (restored from
    ``resume_from`` if given) and checks the run directory; ``fit()`` runs the epochs.
    """

    def __init__(self, config: RunConfig, run_dir, *, resume_from=None, reporter=None,
                 root=None, overwrite: bool = False, progress=None, init_weights=None):
        from cnncli.data import load_dataset

        check_training_memory(config, root=root)  # before any weight or image is allocated
        self.config = config
        # Under MPI every rank trains; rank 0 alone reports and writes files.
        self.world = mpi.world()
        self.lead = self.world is None or self.world.rank == 0
        self.reporter = (reporter or Callbacks()) if self.lead else Callbacks()
        self.ckpt = resume_from
        self.overwrite = overwrite
        self.dir = (RunDirectory if self.lead else FollowerRunDirectory)(Path(run_dir))
        model = model_from_entries(config.model.input_shape, config.model.entries(),
                                   seed=config.seed)
        if init_weights is not None and resume_from is None:
            init_weights(model)  # weights trained elsewhere (train.init_from)
        num_classes = _class_count(model)
        self.data = load_dataset(config.data, tuple(model.input_shape), num_classes, config.seed,
                                 root=root, training=True, progress=progress,
                                 decoded_cache=self._decoded_cache())
        self.has_val = len(self.data.y_val) > 0
        early = config.train.early_stopping
        if early is not None and not self.has_val:
            raise ConfigError(f"early_stopping on {early.metric} needs a validation split",
                              key="early_stopping", hint="set data.val_split > 0")
        optimizer = make_optimizer(config.train)
        self.schedule = make_schedule(config.train.lr_schedule, optimizer.lr, config.train.epochs)
        self.batch_rng = np.random.default_rng([config.seed, 1])
        self.state = RunState(
            model=model, optimizer=optimizer,
            generators={"batches": self.batch_rng, **layer_generators(model)},
            best=BestTracker(by="val_accuracy" if self.has_val else "train_accuracy"),
            early=EarlyStopper(early))
        if resume_from is not None:
            self.state.restore(resume_from)

    @property
    def run(self) -> Run:
        state = self.state
        return Run(config=self.config, run_dir=self.dir.path, model=state.model,
                   dataset=self.data, epochs=self.config.train.epochs,
                   start_epoch=self.start_epoch, best=state.best, metrics=state.metrics,
                   ranks=1 if self.world is None else self.world.size)

    def snapshot(self) -> dict:
        """Everything a checkpoint holds, copied now."""
        return dict(self.state.snapshot(), config=self.config.to_dict(),
                    normalization=self.data.normalization, class_names=self.data.class_names)

    # -- the run
    def fit(self) -> Run:
        """Train the remaining epochs; returns the finished Run. Raises TrainingInterrupted
        on Ctrl-C after saving ``last.npz``, and TrainingDiverged on divergence."""
        with self.dir.locked():
            self.start_epoch = self.state.epoch
            self._prepare_directory()
            run = self.run
            self.reporter.on_start(run)
            stopped = self._epochs()
            run.metrics, run.stopped_early = self.state.metrics, stopped
            if run.metrics and self.lead and not self.dir.metrics.exists():
                write_metrics_csv(self.dir.metrics, run.metrics)
            run.test = self._test_best()
            if run.test is not None:  # what `cnncli runs` and `cnncli report` read
                self.dir.write_test_scores(run.test)
        return run

    def _prepare_directory(self) -> None:
        self.dir.remove_stale_temporaries()
        resuming_here = self.ckpt is not None and same_file(self.dir.path, self.ckpt.path.parent)
        if resuming_here:
            self.dir.refuse_rollback(self.ckpt)
            self.dir.disk_epoch = self.ckpt.epoch
            self.dir.best_disk_epoch = self.state.best.epoch
        self.dir.claim()
        if not resuming_here:
            self.dir.refuse_overwrite(self.overwrite)
        self.dir.write_config(dump_config(self.config))
        if self._decoded_cache() is not None and self.lead:  # the run directory is now ours
            from cnncli.data import keep_decoded
            keep_decoded(self.data, self._decoded_cache())
        if self.ckpt is not None and not same_file(self.dir.last, self.ckpt.path):
            self.dir.start_from(self.ckpt, self.snapshot(), self.state.best.epoch)

    def _decoded_cache(self) -> Path | None:
        """Where an image folder's decoded images are kept (``data.cache``). Rank 0 alone
        writes them; the other ranks read the finished file from the epoch after (when they
        share the run directory's file system)."""
        from cnncli.data.decoded_cache import CACHE_FOLDER

        return self.dir.path / CACHE_FOLDER if self.config.data.cache else None

    def _epochs(self) -> bool:
        """Run epochs until the last one or early stopping (True)."""
        train = self.config.train
        # The speed-ups (docs/speed.md); maybe half of each batch in a worker process.
        split = (plan_training(self.state.model, train.batch_size) if self.world is None
                 else mpi.RankSliceModel(apply_plan(self.state.model), self.world))
        self._trained = split or self.state.model
        consistent = self.snapshot()
        try:
            for epoch in range(self.state.epoch, train.epochs):
                row = self._epoch(epoch)
                improved = self.state.best.update(row)
                stop = self.state.early.update(row)
                self.state.epoch = epoch + 1
                self.state.metrics.append(row)
                consistent = self.snapshot()
                self.dir.save(consistent, best=improved)
                self.reporter.on_epoch_end(row, improved)
                if stop:
                    return True
        except KeyboardInterrupt:
            self.dir.finish_interrupted(consistent)
            raise TrainingInterrupted(self.dir.path, consistent["epoch"]) from None
        finally:
            if split is not None:
                split.close()
        return False

    def _epoch(self, epoch: int) -> dict:
        """One pass over the training split and the validation; returns its metrics row."""
        from cnncli.data import iterate_batches
        from cnncli.data.batching import batch_starts

        train, state = self.config.train, self.state
        optimizer = state.optimizer
        optimizer.lr = self.schedule(epoch)
        x, y = self.data.x_train, self.data.y_train
        num_batches = len(batch_starts(len(y), train.batch_size, MIN_LAST_BATCH))
        self.reporter.on_epoch_start(epoch + 1, train.epochs, num_batches, optimizer.lr)
        started = time.perf_counter()
        loss_sum, correct_sum, seen = 0.0, 0, 0
        batches = iterate_batches(x, y, train.batch_size, self.batch_rng, shuffle=True,
                                  augment=self.config.data.augment, min_last_batch=MIN_LAST_BATCH)
        for index, (xb, yb) in enumerate(batches, start=1):
            with np.errstate(over="ignore", invalid="ignore"):  # divergence checked below
                loss, correct = train_step(self._trained, optimizer, xb, yb,
                                           label_smoothing=train.label_smoothing,
                                           clip_norm=train.grad_clip_norm)
            problem = state.divergence.check(loss)
            if problem:
                raise self._diverged(problem, f"epoch {epoch + 1}, batch {index}/{num_batches}")
            state.step += 1
            loss_sum, correct_sum, seen = loss_sum + loss * len(yb), correct_sum + correct, \
                seen + len(yb)
            self.reporter.on_batch(index, len(yb), loss, correct)
        val_loss, val_acc = self._validate(epoch)
        return {"epoch": epoch + 1, "train_loss": loss_sum / seen,
                "train_accuracy": correct_sum / seen,
                "val_loss": val_loss if self.has_val else None,
                "val_accuracy": val_acc if self.has_val else None,
                "lr": optimizer.lr, "seconds": round(time.perf_counter() - started, 3)}

    def _validate(self, epoch: int) -> tuple[float, float]:
        model = self.state.model
        # The epoch's last update is not followed by a loss check: check what it left.
        if not all(np.isfinite(v).all() for _, v, _ in model.parameters()):
            raise self._diverged("the weights became NaN or infinite",
                                 f"the end of epoch {epoch + 1}")
        with np.errstate(over="ignore", invalid="ignore"):
            val_loss, val_acc = loss_and_accuracy(model, self.data.x_val, self.data.y_val)
        if self.has_val and not math.isfinite(val_loss):
            raise self._diverged(f"validation loss became {val_loss}",
                                 f"the end of epoch {epoch + 1}")
        return val_loss, val_acc

    def _diverged(self, what: str, where: str) -> Diverged:
        kept = (f"; last good checkpoint: {self.dir.last} (epoch {self.dir.disk_epoch})"
                if self.dir.disk_epoch is not None else "; no checkpoint was written")
        return Diverged(f"{what} at {where}{kept}",
                        hint=f"lower train.lr (now {self.state.optimizer.lr:g}) or set "
                             "train.grad_clip_norm, e.g. 1.0")

    def _test_best(self) -> dict | None:
        """Test-split scores of best.npz (the run's model keeps the last weights)."""
        if not len(self.data.y_test) or not self.lead or not self.dir.best.exists():
            return None
        best_model = load_checkpoint(self.dir.best).model()
        report = evaluate(best_model, self.data.x_test, self.data.y_test, self.data.class_names)
        report["checkpoint"] = str(self.dir.best)
        return report


def _class_count(model) -> int:
    if len(model.output_shape) != 1:
        raise ConfigError(f"the model must end in class scores (N, classes), but it outputs "
                          f"{list(model.output_shape)} per sample", hint="end with flatten + dense",
                          key="layers")
    num_classes = model.output_shape[0]
    if num_classes < 2:  # softmax over one score: loss 0 and "100%" whatever the weights
        raise ConfigError(f"the model outputs {num_classes} class score per sample; a "
                          "classifier needs at least 2", key="layers",
                          hint="make the last layer output one unit per class")
    return num_classes


# ------------------------------------------------------------------ the entry point

def train(config, *, out_dir=None, resume=None, epochs=None, batch_size=None, lr=None,
          seed=None, callbacks: Callbacks | None = None, root=None,
          overwrite: bool = False, progress=None, init_weights=None) -> Run:
    """Train the model a config describes (a RunConfig, a resolved dict, or None to resume with
    the checkpoint's own); returns the finished Run.

    ``resume`` is a run directory or checkpoint; training continues from its last epoch up to
    train.epochs (``epochs`` may raise it). ``epochs``, ``batch_size``, ``lr`` and ``seed``
    override the config and are checked like it. A run directory that already holds another
    run is refused unless ``overwrite``, which deletes that run's checkpoints, metrics, test
    scores and TensorBoard events.
    ``progress(url, done, total)`` hears about first-use downloads; ``init_weights(model)``
    loads a fresh run's starting weights (``interop.init_from``).
    """
    ckpt = load_checkpoint(resolve_resume_path(resume)) if resume is not None else None
    if config is None and ckpt is None:
        raise ConfigError("no config to train: give a config file or a run to resume")
    config = ckpt.run if config is None else resolve_config(config)
    config = with_overrides(config, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed)
    if ckpt is not None:
        _check_resume(config, ckpt, epochs_given=epochs is not None)
    if out_dir is None:
        out_dir = ckpt.path.parent if ckpt is not None else Path("runs") / config.name
    trainer = Trainer(config, out_dir, resume_from=ckpt, reporter=callbacks, root=root,
                      overwrite=overwrite, progress=progress, init_weights=init_weights)
    return trainer.fit()


def resolve_resume_path(resume) -> Path:
    path = Path(resume)
    return path / "last.npz" if path.is_dir() else path


def with_overrides(config: RunConfig, **overrides) -> RunConfig:
    """``config`` with train.epochs/batch_size/lr and seed replaced, checked like the file.

    An error names the override as ``key=value`` and has no file position: the value came
    from the caller, not from a line of the config file.
    """
    given = {k: v for k, v in overrides.items() if v is not None}
    if not given:
        return config
    data = config.to_dict()
    for key, value in given.items():
        (data if key == "seed" else data["train"])[key] = value
    try:
        return check_data(data).run
    except ConfigError as err:
        culprit = {err.key: given[err.key]} if err.key in given else given
        said = " ".join(f"{k}={v}" for k, v in culprit.items())
        raise ConfigError(f"with {said}: {err.message}", layer=err.layer,
                          hint=err.hint) from None


# What may not change when a run resumes: it would silently change the experiment.
RESUME_FIXED = (("seed", lambda c: c.seed), ("data.val_split", lambda c: c.data.val_split),
                ("data.normalize", lambda c: c.data.normalize),
                ("data.dataset", lambda c: c.data.dataset), ("data.path", lambda c: c.data.path))


def _check_resume(config: RunConfig, ckpt, *, epochs_given: bool) -> None:
    stored = ckpt.run
    for key, read in RESUME_FIXED:
        if read(config) != read(stored):
            raise ConfigError(f"{key} {read(config)!r} differs from the resumed run's "
                              f"{read(stored)!r}; it would change the experiment",
                              key=key.split(".")[-1],
                              hint=f"keep {key}: {read(stored)!r} to resume, or start a new run")
    if epochs_given and config.train.epochs < ckpt.epoch:
        raise ConfigError(f"train.epochs {config.train.epochs} is fewer than the {ckpt.epoch} "
                          f"epochs {ckpt.path} has already trained",
                          hint=f"set epochs=N with N > {ckpt.epoch} to continue")


__all__ = ["Callbacks", "Run", "Trainer", "TrainingDiverged", "TrainingInterrupted", "train",
           "train_step", "with_overrides"]
