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

from cnncli.errors import ConfigError

KINDS = ("constant", "step", "multistep", "cosine", "exponential")


def _main_schedule(kind: str, base_lr: float, spec: dict, epochs: int) -> Callable[[int], float]:
    gamma = spec.get("gamma")
    if kind == "constant":
        return lambda t: base_lr
    if kind == "step":
        step_size = spec.get("step_size")
        if not isinstance(step_size, int) or isinstance(step_size, bool) or step_size < 1:
            raise ConfigError(f"lr_schedule step needs step_size: a positive int, got "
                              f"{step_size!r}", key="step_size")
        g = 0.1 if gamma is None else float(gamma)
        return lambda t: base_lr * g ** (t // step_size)
    if kind == "multistep":
        milestones = spec.get("milestones")
        if (not isinstance(milestones, (list, tuple)) or not milestones
                or not all(isinstance(m, int) and not isinstance(m, bool) for m in milestones)):
            raise ConfigError(f"lr_schedule multistep needs milestones: a list of epochs, got "
                              f"{milestones!r}", key="milestones")
        ordered = sorted(milestones)
        g = 0.1 if gamma is None else float(gamma)
        return lambda t: base_lr * g ** bisect.bisect_right(ordered, t)
    if kind == "exponential":
        if gamma is None:
            raise ConfigError("lr_schedule exponential needs gamma, e.g. gamma: 0.9",
                              key="gamma")
        g = float(gamma)
        return lambda t: base_lr * g ** t
    if kind == "cosine":
        eta_min = float(spec.get("eta_min") or 0.0)
        t_max = max(1, epochs)
        return lambda t: eta_min + (base_lr - eta_min) * (1 + math.cos(math.pi * t / t_max)) / 2
    raise ConfigError(f"lr_schedule type must be one of {', '.join(KINDS)}; got {kind!r}",
                      key="type")


def make_schedule(spec, base_lr: float, epochs: int) -> Callable[[int], float]:
    """``lr_schedule`` config (a name or a mapping) -> ``lr(epoch)``."""
    if spec is None:
        spec = "constant"
    if isinstance(spec, str):
        spec = {"type": spec}
    if not isinstance(spec, dict):
        raise ConfigError(f"lr_schedule must be a name or a mapping, got {spec!r}",
                          key="lr_schedule")
    warmup = spec.get("warmup_epochs") or 0
    if not isinstance(warmup, int) or isinstance(warmup, bool) or warmup < 0:
        raise ConfigError(f"warmup_epochs must be an int >= 0, got {warmup!r}",
                          key="warmup_epochs")
    main = _main_schedule(spec.get("type", "constant"), float(base_lr), spec, epochs - warmup)

    def lr(epoch: int) -> float:
        if epoch < warmup:
            return float(base_lr) * (epoch + 1) / (warmup + 1)
        return float(main(epoch - warmup))

    return lr
