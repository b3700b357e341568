"""The one set of value checks: ints, numbers, booleans, choices and strings within a range.

Each check returns the value (normalised: ``int``/``float``) or raises ConfigError whose
message names the setting and quotes the value as YAML spells it, with ``key`` set so that the
config loader can point at the line. Layers check their hyperparameters with these; the config
loader checks its sections with them.
"""

from __future__ import annotations

import difflib
import math
import numbers

from cnncli.errors import ConfigError

#: Larger ints are typos (or fuzz) and would overflow NumPy shapes.
MAX_INT = 2**31 - 1


def shown(value) -> str:
    """A received value as the YAML file spells it (null, true), cut short if long."""
    text = ("null" if value is None else str(value).lower() if isinstance(value, bool)
            else repr(value))
    return text if len(text) <= 60 else text[:57] + "..."


def is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def describe_range(low=None, high=None, *, low_open=False, high_open=False) -> str:
    """`` in [0, 1)``, `` > 0``, `` >= 1`` or nothing: the range text of an error message."""
    if low is not None and high is not None:
        return f" in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
    if low is not None:
        return f" {'>' if low_open else '>='} {low}"
    if high is not None:
        return f" {'<' if high_open else '<='} {high}"
    return ""


def in_range(value, low=None, high=None, *, low_open=False, high_open=False) -> bool:
    if low is not None and not (value > low if low_open else value >= low):
        return False
    return high is None or (value < high if high_open else value <= high)


def _null_text(null: bool) -> str:
    return " or null" if null else ""


def check_int(name: str, value, *, low=None, high=None, null=False, what=None, key=None):
    """An int in [low, high] (``high`` defaults to MAX_INT, unmentioned in the message)."""
    if value is None and null:
        return None
    limit = MAX_INT if high is None else high
    if not (is_int(value) and in_range(value, low, limit)):
        what = what or f"an int{describe_range(low, high)}"
        raise ConfigError(f"{name} must be {what}{_null_text(null)}, got {shown(value)}",
                          key=key or name)
    return int(value)


def check_number(name: str, value, *, low=None, high=None, low_open=False, high_open=False,
                 null=False, key=None):
    """A finite real number in the given (half-)open or closed range."""
    if value is None and null:
        return None
    ok = (isinstance(value, numbers.Real) and not isinstance(value, bool)
          and math.isfinite(value))
    if not (ok and in_range(value, low, high, low_open=low_open, high_open=high_open)):
        rng = describe_range(low, high, low_open=low_open, high_open=high_open)
        raise ConfigError(f"{name} must be a finite number{rng}{_null_text(null)}, "
                          f"got {shown(value)}", key=key or name, hint=_number_text_hint(value))
    return float(value)


def _number_text_hint(value) -> str | None:
    """YAML 1.1 reads a number in e-notation as text unless its mantissa has a dot and its
    exponent a sign (1e-3, 1.0e6); say how to write it (1.0e-3, 1.0e+6)."""
    if not isinstance(value, str):
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    mantissa, _, exponent = value.strip().lower().partition("e")
    if not exponent or not math.isfinite(number):
        return None
    written = (mantissa if "." in mantissa else mantissa + ".0") + "e" + (
        exponent if exponent[0] in "+-" else "+" + exponent)
    return f"YAML reads {value} as text; write {written}" if written != value else None


def check_bool(name: str, value, *, key=None) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{name} must be true or false, got {shown(value)}", key=key or name)
    return value


def check_choice(name: str, value, options, *, null=False, key=None):
    """One of ``options`` (with a did-you-mean hint for a near miss)."""
    if value is None and null:
        return None
    if isinstance(value, bool) or value not in options:
        close = (difflib.get_close_matches(value, [str(o) for o in options], n=1)
                 if isinstance(value, str) else [])
        opts = ", ".join(map(str, options)) + (", null" if null else "")
        raise ConfigError(f"{name} must be one of {opts}; got {shown(value)}", key=key or name,
                          hint=f"did you mean '{close[0]}'?" if close else None)
    return value


def check_string(name: str, value, *, null=False, key=None):
    """A non-empty string."""
    if value is None and null:
        return None
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{name} must be a non-empty string{_null_text(null)}, "
                          f"got {shown(value)}", key=key or name)
    return value
