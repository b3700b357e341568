"""Optimizers with torch.optim's exact update rules, and global-norm gradient clipping.

An optimizer keeps per-parameter state keyed by parameter name; ``step(params)`` takes
the (name, value, grad) triples of ``Model.parameters()`` and updates values in place.
The learning rate is the attribute ``lr`` (the schedule sets it once per epoch). Parameters
of the layers in ``frozen`` (layer names) get no update and no state, as with PyTorch's
``requires_grad=False``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np

from cnncli.config.schema import TrainConfig
from cnncli.errors import CheckpointError, ConfigError

Params = Iterable[tuple[str, np.ndarray, np.ndarray]]


class Optimizer:
    """Shared bookkeeping: a step counter and named state arrays."""

    kind = "optimizer"
    slots: tuple[str, ...] = ()   # the state arrays kept per parameter

    def __init__(self, lr: float, weight_decay: float = 0.0):
        self.lr = float(lr)
        self.weight_decay = float(weight_decay)
        self.steps = 0
        self.state: dict[str, dict[str, np.ndarray]] = {}
        self.frozen: frozenset[str] = frozenset()

    def freeze(self, layers: Iterable[str]) -> None:
        """Leave the parameters of these layers (``<layer>.<param>``) untouched from now on."""
        self.frozen = frozenset(layers)

    def step(self, params: Params) -> None:
        self.steps += 1
        for name, value, grad in params:
            if self.frozen and name.rsplit(".", 1)[0] in self.frozen:
                continue
            self._update(name, value, grad, self.state.setdefault(name, {}))

    def _update(self, name, value, grad, state) -> None:
        raise NotImplementedError

    def state_dict(self) -> dict[str, np.ndarray]:
        """Plain named arrays: ``kind``, ``steps`` and ``<slot>/<param name>``."""
        out = {"kind": np.array(self.kind), "steps": np.array(self.steps, dtype=np.int64)}
        for name, slots in self.state.items():
            for slot, arr in slots.items():
                out[f"{slot}/{name}"] = arr.copy()
        return out

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        kind = str(state.get("kind", ""))
        if kind != self.kind:
            raise CheckpointError(f"checkpoint holds {kind or 'no'} optimizer state, but the "
                                  f"config asks for {self.kind}",
                                  hint="resume with the optimizer the run was started with")
        self.steps = int(state["steps"])
        self.state = {}
        for key, arr in state.items():
            if "/" in key:
                slot, name = key.split("/", 1)
                self.state.setdefault(name, {})[slot] = np.array(arr)
        for name, slots in self.state.items():  # a half-stored Adam state would KeyError
            if set(slots) != set(self.slots):
                raise CheckpointError(f"the {self.kind} state of {name} holds "
                                      f"{', '.join(sorted(slots))}, expected "
                                      f"{', '.join(self.slots)}")


class SGD(Optimizer):
    """torch.optim.SGD with dampening 0: buffer = first grad, then momentum * buf + grad."""

    kind = "sgd"
    slots = ("momentum",)

    def __init__(self, lr: float = 0.01, momentum: float = 0.0, nesterov: bool = False,
                 weight_decay: float = 0.0):
        super().__init__(lr, weight_decay)
        if nesterov and momentum <= 0:
            raise ConfigError(f"nesterov needs momentum > 0, got momentum {momentum!r}",
                              key="nesterov")
        self.momentum = float(momentum)
        self.nesterov = bool(nesterov)

    def _update(self, name, value, grad, state) -> None:
        g = grad + self.weight_decay * value if self.weight_decay else grad
        if self.momentum:
            buf = state.get("momentum")
            if buf is None:
                buf = state["momentum"] = np.array(g, dtype=value.dtype, copy=True)
            else:
                buf *= self.momentum
                buf += g
            g = g + self.momentum * buf if self.nesterov else buf
        value -= (self.lr * g).astype(value.dtype, copy=False)


class Adam(Optimizer):
    """torch.optim.Adam: bias-corrected moments, eps added after dividing sqrt(v) by sqrt(bc2)."""

    kind = "adam"
    slots = ("exp_avg", "exp_avg_sq")
    decoupled = False

    def __init__(self, lr: float = 0.001, betas=(0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0):
        super().__init__(lr, weight_decay)
        self.beta1, self.beta2 = (float(b) for b in betas)
        self.eps = float(eps)

    def _update(self, name, value, grad, state) -> None:
        if self.decoupled:
            value *= 1.0 - self.lr * self.weight_decay
            g = grad
        else:
            g = grad + self.weight_decay * value if self.weight_decay else grad
        if "exp_avg" not in state:
            state["exp_avg"] = np.zeros_like(value)
            state["exp_avg_sq"] = np.zeros_like(value)
        m, v = state["exp_avg"], state["exp_avg_sq"]
        m += (1.0 - self.beta1) * (g - m)          # torch's lerp_(grad, 1 - beta1)
        v *= self.beta2
        v += (1.0 - self.beta2) * g * g
        step_size = self.lr / (1.0 - self.beta1 ** self.steps)
        bias_correction2_sqrt = math.sqrt(1.0 - self.beta2 ** self.steps)
        denom = np.sqrt(v) / bias_correction2_sqrt + self.eps
        value -= (step_size * m / denom).astype(value.dtype, copy=False)


class AdamW(Adam):
    """torch.optim.AdamW: Adam plus decoupled decay ``p *= 1 - lr * weight_decay``."""

    kind = "adamw"
    decoupled = True

    def __init__(self, lr: float = 0.001, betas=(0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.01):
        super().__init__(lr, betas, eps, weight_decay)


def make_optimizer(train: TrainConfig) -> Optimizer:
    """The optimizer a resolved ``train:`` section asks for; the layers
    ``train.init_from.freeze`` names are frozen."""
    if train.optimizer == "sgd":
        optimizer = SGD(train.lr, momentum=train.momentum, nesterov=train.nesterov,
                        weight_decay=train.weight_decay)
    else:
        kind = Adam if train.optimizer == "adam" else AdamW
        optimizer = kind(train.lr, tuple(train.betas), train.eps, train.weight_decay)
    if train.init_from is not None:
        optimizer.freeze(train.init_from.freeze)
    return optimizer


def clip_grad_norm(grads: list[np.ndarray], max_norm: float, eps: float = 1e-6) -> float:
    """torch.nn.utils.clip_grad_norm_: scale all grads in place by min(1, max/(norm+eps)).

    Returns the total norm before clipping.
    """
    total = math.sqrt(sum(float(np.vdot(g, g)) for g in grads))
    coef = min(1.0, max_norm / (total + eps))
    if coef < 1.0:
        for g in grads:
            g *= coef
    return total
