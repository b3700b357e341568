"""What changes while a run trains, and the small trackers that decide on it.

A ``RunState`` is everything a checkpoint must hold to continue bit for bit: completed epochs
and steps, the metric rows, the best epoch so far, the early-stopping counters, the model's
weights, the optimizer's state and every random stream. Resume = a RunState restored from a
checkpoint.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

import numpy as np

from cnncli.config.schema import EarlyStoppingConfig
from cnncli.errors import CheckpointError, CnncliError

#: The loss at which a run is called diverged, as a multiple of its first batch's loss: far
#: beyond any plateau or noisy batch, long before float32 overflows.
DIVERGENCE_RATIO = 1000.0


def _improved(value, best, *, higher_is_better: bool, min_delta: float = 0.0) -> bool:
    if value is None or not math.isfinite(value):
        return False
    if best is None:
        return True
    return value > best + min_delta if higher_is_better else value < best - min_delta


@dataclass
class BestTracker:
    """The best epoch (for best.npz): highest accuracy; at equal accuracy, the lower loss."""

    by: str = "val_accuracy"
    metric: float | None = None
    loss: float | None = None
    epoch: int | None = None

    def update(self, row: dict) -> bool:
        score, score_loss = row[self.by], row[self.by.replace("accuracy", "loss")]
        improved = _improved(score, self.metric, higher_is_better=True) or (
            score == self.metric and _improved(score_loss, self.loss, higher_is_better=False))
        if improved:
            self.metric, self.loss, self.epoch = score, score_loss, row["epoch"]
        return improved


@dataclass
class EarlyStopper:
    """Counts epochs without improvement of the watched metric (train.early_stopping)."""

    config: EarlyStoppingConfig | None
    best: float | None = None
    bad_epochs: int = 0

    def update(self, row: dict) -> bool:
        """Record an epoch; True when the run should stop."""
        if self.config is None:
            return False
        value = row[self.config.metric]
        if _improved(value, self.best, higher_is_better=self.config.higher_is_better,
                     min_delta=self.config.min_delta):
            self.best, self.bad_epochs = value, 0
        else:
            self.bad_epochs += 1
        return self.bad_epochs >= self.config.patience


class Diverged(CnncliError):
    """The loss became NaN, infinite, or far above where it started."""

    exit_code = 1


@dataclass
class DivergenceGuard:
    """Calls a run diverged at a non-finite loss, or one DIVERGENCE_RATIO times its start."""

    initial_loss: float | None = None

    def check(self, loss: float) -> str | None:
        """What went wrong with this batch's loss, or None."""
        if not math.isfinite(loss):
            return f"loss became {loss}"
        if self.initial_loss is None:
            self.initial_loss = loss
        elif loss > DIVERGENCE_RATIO * max(self.initial_loss, 1e-3):
            return (f"loss became {loss:.4g}, over {DIVERGENCE_RATIO:g} times its starting "
                    f"value {self.initial_loss:.4g}")
        return None


@dataclass
class RunState:
    """The state of a run after ``epoch`` completed epochs (see the module docstring)."""

    model: object
    optimizer: object
    generators: dict[str, np.random.Generator]
    best: BestTracker
    early: EarlyStopper
    divergence: DivergenceGuard = field(default_factory=DivergenceGuard)
    epoch: int = 0
    step: int = 0
    metrics: list[dict] = field(default_factory=list)

    def snapshot(self) -> dict:
        """The checkpoint fields of this state, copied now (``save_checkpoint`` keywords)."""
        return dict(model_state=self.model.state_dict(),
                    optimizer_state=self.optimizer.state_dict(), epoch=self.epoch,
                    step=self.step,
                    rng_state={k: g.bit_generator.state for k, g in self.generators.items()},
                    best_metric=self.best.metric, metrics=copy.deepcopy(self.metrics),
                    run_state={"best_epoch": self.best.epoch, "best_loss": self.best.loss,
                               "bad_epochs": self.early.bad_epochs,
                               "early_best": self.early.best, "best_by": self.best.by,
                               "initial_loss": self.divergence.initial_loss})

    def restore(self, ckpt) -> None:
        """Continue from a checkpoint: weights, optimizer, streams, counters and rows."""
        ckpt.check_finite()
        try:
            self.model.load_state_dict(ckpt.state)
            self.optimizer.load_state_dict(ckpt.optimizer_state)
        except CnncliError as err:  # the config given on resume describes another network
            raise CheckpointError(
                f"cannot resume {ckpt.path}: {err.message}",
                hint=(err.hint + "; " if err.hint else "") + "or resume without a config to "
                "use the run's own") from None
        for name, gen in self.generators.items():
            if name in ckpt.rng_state:
                gen.bit_generator.state = ckpt.rng_state[name]
        saved = ckpt.run_state
        self.epoch, self.step = ckpt.epoch, ckpt.step
        self.metrics = list(ckpt.metrics)
        self.best.metric, self.best.epoch = ckpt.best_metric, saved.get("best_epoch")
        self.best.loss = saved.get("best_loss")
        self.early.bad_epochs = saved.get("bad_epochs", 0)
        self.early.best = saved.get("early_best")
        self.divergence.initial_loss = saved.get("initial_loss")


def layer_generators(model) -> dict[str, np.random.Generator]:
    """Generators owned by layers (dropout masks), by ``<layer>.<attribute>``."""
    found = {}
    for layer in model.layers:
        for attr, value in vars(layer).items():
            if isinstance(value, np.random.Generator):
                found[f"{layer.name}.{attr}"] = value
    return found
