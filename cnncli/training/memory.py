"""The memory guard of training and inference: the estimate of nn/memory.py for a run's config
or a built model, checked against this machine before anything big is allocated."""

from __future__ import annotations

from cnncli.config import RunConfig
from cnncli.data.footprint import dataset_bytes
from cnncli.nn.memory import (
    MemoryEstimate,
    check_memory,
    does_not_fit,
    estimate_memory,
    optimizer_label,
    unbuilt_layers,
)


def check_training_memory(config: RunConfig, *, root=None) -> None:
    """Refuse (MemoryLimitError) a run whose weights, optimizer state, activations for
    train.batch_size and dataset would not fit; nothing is allocated or read but headers."""
    model = config.model
    layers, labels, shapes, sources = unbuilt_layers(model.input_shape, model.entries())
    train = config.train
    estimate = estimate_memory(layers, shapes, batch_size=train.batch_size, labels=labels,
                               sources=sources,
                               optimizer=optimizer_label(train.optimizer, train.momentum),
                               data_bytes=dataset_bytes(config.data, model.input_shape, root,
                                                          train.batch_size))
    check_memory(estimate)


def still_needed(model, batch_size: int, optimizer: str | None) -> MemoryEstimate:
    """What a step of the built ``model`` at ``batch_size`` allocates beyond its weights and
    gradients, which exist already (``optimizer=None``: inference)."""
    return estimate_memory(model.layers, model.shapes, batch_size=batch_size, dtype=model.dtype,
                           optimizer=optimizer, labels=model.labels,
                           sources=model.sources).beyond_weights()


def inference_batch_size(model, batch_size: int) -> int:
    """The largest inference batch up to ``batch_size`` whose activations fit next to the
    built ``model`` (results do not depend on it); MemoryLimitError if not even one image does."""
    while batch_size > 1 and does_not_fit(still_needed(model, batch_size, None).total):
        batch_size //= 2
    check_memory(still_needed(model, batch_size, None), what="inference of one image",
                 batch_key=None)
    return batch_size
