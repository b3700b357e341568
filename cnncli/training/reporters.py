"""Reporters that combine: several ``Callbacks`` heard as one (the CLI's progress and, say, a
TensorBoard writer)."""

from __future__ import annotations

from cnncli.training.trainer import Callbacks


class Reporters(Callbacks):
    """Passes every callback to each reporter in order; ``close()`` closes those that can."""

    def __init__(self, *reporters: Callbacks):
        self.reporters = [r for r in reporters if r is not None]

    def on_start(self, run) -> None:
        for r in self.reporters:
            r.on_start(run)

    def on_epoch_start(self, epoch, epochs, num_batches, lr) -> None:
        for r in self.reporters:
            r.on_epoch_start(epoch, epochs, num_batches, lr)

    def on_batch(self, batch, size, loss, correct) -> None:
        for r in self.reporters:
            r.on_batch(batch, size, loss, correct)

    def on_epoch_end(self, row, improved) -> None:
        for r in self.reporters:
            r.on_epoch_end(row, improved)

    def close(self) -> None:
        for r in self.reporters:
            if hasattr(r, "close"):
                r.close()
