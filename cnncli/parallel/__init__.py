"""The speed boundary: everything cnncli does to run faster than the layers' plain math.

``plan.py`` decides and applies it (``ExecutionPlan``); ``threads.py`` and ``processes.py``
are its machinery; ``thresholds.py`` holds every size where a speed-up starts to pay. One
switch turns it all off: ``CNNCLI_SPEEDUPS=off`` or ``speedups=False`` (docs/speed.md).

Must not import NumPy at package level: ``cnncli.parallel.threads`` sets BLAS threads before
NumPy loads.
"""

from __future__ import annotations

import os

#: The environment variable that turns every speed-up off (``off``) or on (``on``, default).
SPEEDUPS_VAR = "CNNCLI_SPEEDUPS"
ON_VALUES = ("", "on", "1", "true", "yes")
OFF_VALUES = ("off", "0", "false", "no")


def speedups_on(requested: bool | None = None) -> bool:
    """``requested`` if given, else what CNNCLI_SPEEDUPS says (on unless set to off).

    Raises ConfigError for a value that is neither on nor off."""
    if requested is not None:
        return bool(requested)
    value = os.environ.get(SPEEDUPS_VAR, "").strip().lower()
    if value in ON_VALUES:
        return True
    if value in OFF_VALUES:
        return False
    from cnncli.errors import ConfigError

    raise ConfigError(f"{SPEEDUPS_VAR} must be on or off, got {value!r}",
                      hint=f"unset it, or set {SPEEDUPS_VAR}=off for the plain math")
