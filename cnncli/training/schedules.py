"""Per-epoch learning-rate schedules as pure functions ``lr(epoch)`` (epoch counts from 0).

Each matches the torch.optim.lr_scheduler class stepped once per epoch. Linear warmup over
W epochs is torch's ``SequentialLR([LinearLR(start_factor=1/(W+1), total_iters=W), main],
milestones=[W])``: epoch e < W uses ``lr * (e + 1) / (W + 1)``, and the main schedule then
runs on ``e - W`` (so cosine anneals over the remaining ``epochs - W`` epochs).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable

from cnncli.config.schema import ScheduleConfig


def _main_schedule(spec: ScheduleConfig, base_lr: float, epochs: int) -> Callable[[int], float]:
    kind, gamma = spec.type, spec.gamma
    if kind == "step":
        return lambda t: base_lr * gamma ** (t // spec.step_size)
    if kind == "multistep":
        return lambda t: base_lr * gamma ** bisect.bisect_right(spec.milestones, t)
    if kind == "exponential":
        return lambda t: base_lr * gamma ** t
    if kind == "cosine":
        t_max = max(1, epochs)
        return lambda t: spec.eta_min + (base_lr - spec.eta_min) * (
            1 + math.cos(math.pi * t / t_max)) / 2
    return lambda t: base_lr


def make_schedule(spec: ScheduleConfig, base_lr: float, epochs: int) -> Callable[[int], float]:
    """A resolved ``train.lr_schedule`` -> ``lr(epoch)``."""
    warmup = spec.warmup_epochs
    main = _main_schedule(spec, float(base_lr), epochs - warmup)

    def lr(epoch: int) -> float:
        if epoch < warmup:
            return float(base_lr) * (epoch + 1) / (warmup + 1)
        return float(main(epoch - warmup))

    return lr
