"""Element-wise activations (no parameters, any shape), matching torch.nn semantics."""

from __future__ import annotations

import math

import numpy as np

from cnncli.checks import check_choice as choice
from cnncli.checks import check_number as real_number
from cnncli.nn.layers.base import Layer
from cnncli.nn.registry import register


class Activation(Layer):
    """Base for activations: identity shape, no parameters; ``activation:`` may name one."""

    per_sample = True

    is_activation = True

    def __init__(self, name: str | None = None):
        super().__init__(name)
        self._cache: np.ndarray | None = None


@register("relu")
class ReLU(Activation):
    """max(x, 0); the gradient at 0 is 0, as in PyTorch."""

    fresh_input_grad = True

    def _forward(self, x, train=False):
        # In place when allowed (an execution plan allows it where the previous layer hands
        # its output over): no new array, half the memory traffic.
        # Training keeps only where x > 0, a bool mask a quarter the size of y, so y is freed
        # once the next layer has used it (the mask also makes backward one pass).
        y = x if self.may_overwrite_input else np.empty_like(x)
        mask = np.empty(x.shape, bool) if train else None

        def part(lo, hi):
            if mask is not None:
                np.greater(x[lo:hi], 0, out=mask[lo:hi])
            np.maximum(x[lo:hi], 0, out=y[lo:hi])

        self.splitter.split(part, x.shape[0], x.size)
        self._cache = y if mask is None else mask
        return y

    def _backward(self, dy, need_dx=True):
        if not need_dx:
            return None
        dx = dy if self.may_overwrite_grad else np.empty_like(dy)
        cache = self._cache
        positive = cache.dtype == bool

        def part(lo, hi):
            np.multiply(dy[lo:hi], cache[lo:hi] if positive else cache[lo:hi] > 0,
                        out=dx[lo:hi])

        self.splitter.split(part, dy.shape[0], dy.size)
        return dx


@register("leaky_relu")
class LeakyReLU(Activation):
    """x if x > 0 else negative_slope * x."""

    def __init__(self, negative_slope=0.01, name: str | None = None):
        super().__init__(name)
        self.negative_slope = real_number("negative_slope", negative_slope)

    def _forward(self, x, train=False):
        # The local slope (1 or negative_slope) serves both passes; arithmetic on the mask
        # is several times faster than np.where on large arrays.
        slope = x.dtype.type(self.negative_slope)
        factor = (x > 0).astype(x.dtype)
        factor *= 1 - slope
        factor += slope
        self._cache = factor
        return x * factor

    def _backward(self, dy, need_dx=True):
        return dy * self._cache if need_dx else None

    def describe(self):
        return f"slope={self.negative_slope:g}"


@register("elu")
class ELU(Activation):
    """x if x > 0 else alpha * (exp(x) - 1)."""

    def __init__(self, alpha=1.0, name: str | None = None):
        super().__init__(name)
        self.alpha = real_number("alpha", alpha)

    def _forward(self, x, train=False):
        self._cache = x
        alpha = x.dtype.type(self.alpha)
        # Each term is zero on the other side of 0, so their sum is the piecewise function
        # (and exp never sees a positive argument).
        return np.maximum(x, 0) + alpha * np.expm1(np.minimum(x, 0))

    def _backward(self, dy, need_dx=True):
        if not need_dx:
            return None
        x = self._cache
        alpha = dy.dtype.type(self.alpha)
        slope = alpha * np.exp(np.minimum(x, 0))  # alpha for x > 0: corrected to 1 below
        slope += (x > 0) * (1 - alpha)
        return dy * slope

    def describe(self):
        return f"alpha={self.alpha:g}"


@register("gelu")
class GELU(Activation):
    """x * Phi(x); ``approximate: tanh`` uses PyTorch's tanh formula instead of erf."""

    _BETA = math.sqrt(2.0 / math.pi)
    _KAPPA = 0.044715

    def __init__(self, approximate="none", name: str | None = None):
        super().__init__(name)
        self.approximate = choice("approximate", approximate, ("none", "tanh"))

    def _forward(self, x, train=False):
        self._cache = x
        t = x.dtype.type
        if self.approximate == "tanh":
            # The same operation order as PyTorch's kernel, so results agree to the ulp.
            x_sq = x * x
            tanh_inner = np.tanh(t(self._BETA) * (x + t(self._KAPPA) * (x_sq * x)))
            self._aux = (x_sq, tanh_inner)
            return t(0.5) * x * (1 + tanh_inner)
        cdf = t(0.5) * (1 + erf(x * t(1 / math.sqrt(2.0))))
        self._aux = cdf
        return x * cdf

    def _backward(self, dy, need_dx=True):
        if not need_dx:
            return None
        x = self._cache
        t = x.dtype.type
        if self.approximate == "tanh":
            x_sq, tanh_inner = self._aux
            right_derivative = (1 - tanh_inner * tanh_inner) * (
                t(self._BETA) * (1 + t(3 * self._KAPPA) * x_sq))
            return dy * (t(0.5) * (1 + tanh_inner) + t(0.5) * x * right_derivative)
        pdf = np.exp(t(-0.5) * x * x) * t(1 / math.sqrt(2 * math.pi))
        return dy * (self._aux + x * pdf)

    def describe(self):
        return "" if self.approximate == "none" else "approximate=tanh"


@register("tanh")
class Tanh(Activation):
    """Hyperbolic tangent."""

    def _forward(self, x, train=False):
        y = np.tanh(x)
        self._cache = y
        return y

    def _backward(self, dy, need_dx=True):
        if not need_dx:
            return None
        y = self._cache
        return dy * (1 - y * y)


@register("sigmoid")
class Sigmoid(Activation):
    """1 / (1 + exp(-x)), computed without overflow for any |x|."""

    def _forward(self, x, train=False):
        y = sigmoid(x)
        self._cache = y
        return y

    def _backward(self, dy, need_dx=True):
        if not need_dx:
            return None
        y = self._cache
        return dy * (y * (1 - y))


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Logistic function: exp(min(x, 0)) / (1 + exp(-|x|)); exp never overflows."""
    return np.exp(np.minimum(x, 0)) / (1 + np.exp(-np.abs(x)))


# ---------------------------------------------------------------- erf
# W. J. Cody, "Rational Chebyshev approximations for the error function",
# Math. Comp. 23 (1969), 631-638: the coefficient sets of netlib specfun CALERF.
# NumPy has no erf and scipy is only a test dependency.

_A = (3.16112374387056560e00, 1.13864154151050156e02, 3.77485237685302021e02,
      3.20937758913846947e03, 1.85777706184603153e-1)
_B = (2.36012909523441209e01, 2.44024637934444173e02, 1.28261652607737228e03,
      2.84423683343917062e03)
_C = (5.64188496988670089e-1, 8.88314979438837594e00, 6.61191906371416295e01,
      2.98635138197400131e02, 8.81952221241769090e02, 1.71204761263407058e03,
      2.05107837782607147e03, 1.23033935479799725e03, 2.15311535474403846e-8)
_D = (1.57449261107098347e01, 1.17693950891312499e02, 5.37181101862009858e02,
      1.62138957456669019e03, 3.29079923573345963e03, 4.36261909014324716e03,
      3.43936767414372164e03, 1.23033935480374942e03)
_P = (3.05326634961232344e-1, 3.60344899949804439e-1, 1.25781726111229246e-1,
      1.60837851487422766e-2, 6.58749161529837803e-4, 1.63153871373020978e-2)
_Q = (2.56852019228982242e00, 1.87295284992346047e00, 5.27905102951428412e-1,
      6.05183413124413191e-2, 2.33520497626869185e-3)
_SQRPI = 5.6418958354775628695e-1  # 1/sqrt(pi)
_THRESH = 0.46875


def erf(x) -> np.ndarray:
    """The error function, element-wise: Cody's rational approximations (about 1e-16
    relative error) in float64, a faster branch-free rational (a few ulp) in float32."""
    x = np.asarray(x)
    if not np.issubdtype(x.dtype, np.floating):
        x = x.astype(np.float64)
    if x.dtype == np.float32:
        return _erf_float32(x)
    y = np.abs(x)
    out = np.empty_like(x)

    small = y <= _THRESH
    if small.any():
        xs = x[small]
        z = xs * xs
        num, den = _A[4] * z, z
        for i in range(3):
            num = (num + _A[i]) * z
            den = (den + _B[i]) * z
        out[small] = xs * (num + _A[3]) / (den + _B[3])

    mid = (y > _THRESH) & (y <= 4.0)
    if mid.any():
        ym = y[mid]
        num, den = _C[8] * ym, ym
        for i in range(7):
            num = (num + _C[i]) * ym
            den = (den + _D[i]) * ym
        erfc = (num + _C[7]) / (den + _D[7]) * _exp_minus_square(ym)
        out[mid] = np.copysign(1 - erfc, x[mid])

    big = y > 4.0
    if big.any():
        yb = np.minimum(y[big], 27.0)  # erfc(27) underflows: erf is +-1 from here on
        z = 1 / (yb * yb)
        num, den = _P[5] * z, z
        for i in range(4):
            num = (num + _P[i]) * z
            den = (den + _Q[i]) * z
        r = z * (num + _P[4]) / (den + _Q[4])
        erfc = (_SQRPI - r) / yb * _exp_minus_square(yb)
        out[big] = np.copysign(1 - erfc, x[big])

    nan = np.isnan(x)
    if nan.any():
        out[nan] = np.nan
    return out


def _exp_minus_square(y: np.ndarray) -> np.ndarray:
    """exp(-y*y) with y*y split as Cody does, so rounding of y*y is not amplified."""
    y = np.minimum(y, 27.0)  # erfc(27) underflows anyway; keeps the split finite
    ysq = np.trunc(y * 16) / 16
    delta = (y - ysq) * (y + ysq)
    return np.exp(-ysq * ysq) * np.exp(-delta)


# Eigen's generic_fast_erf_float (also used by XLA and TVM): erf(x) = x P(x^2) / Q(x^2) on
# x clamped to [-4, 4], where float32 erf is already +-1. No masks, so it vectorises well.
_ALPHA = (-2.72614225801306e-10, 2.77068142495902e-08, -2.10102402082508e-06,
          -5.69250639462346e-05, -7.34990630326855e-04, -2.95459980854025e-03,
          -1.60960333262415e-02)
_BETA = (-1.45660718464996e-05, -2.13374055278905e-04, -1.68282697438203e-03,
         -7.37332916720468e-03, -1.42647390514189e-02)


def _erf_float32(x: np.ndarray) -> np.ndarray:
    f = np.float32
    x = np.clip(x, f(-4.0), f(4.0))
    x2 = x * x
    p = np.full_like(x, f(_ALPHA[0]))
    for c in _ALPHA[1:]:
        p *= x2
        p += f(c)
    q = np.full_like(x, f(_BETA[0]))
    for c in _BETA[1:]:
        q *= x2
        q += f(c)
    p *= x
    p /= q
    return np.clip(p, f(-1.0), f(1.0), out=p)
