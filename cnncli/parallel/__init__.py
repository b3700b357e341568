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


#: Environment variables an MPI launcher sets in every rank's environment, holding the number
#: of ranks: MPICH/Hydra and Intel MPI (PMI_SIZE), Open MPI (OMPI_COMM_WORLD_SIZE), PMIx
#: launchers such as Slurm's srun (PMIX_SIZE is not always set; SLURM_NTASKS with PMIX_RANK).
MPI_SIZE_VARS = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_SIZE")
MPI_RANK_VARS = ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "PMIX_RANK")


def mpi_launched() -> bool:
    """Whether an MPI launcher started this process as one of several ranks, read from the
    environment alone: a plain run never imports mpi4py (``parallel.mpi``)."""
    for var in MPI_SIZE_VARS:
        value = os.environ.get(var, "").strip()
        if value.isdigit():
            return int(value) > 1
    return any(var in os.environ for var in MPI_RANK_VARS) and \
        os.environ.get("SLURM_NTASKS", "1").strip() not in ("", "0", "1")
