import os

import pytest
from hypothesis import HealthCheck, settings

# Shared machines are noisy: no per-example deadline; keep example counts modest so the
# whole suite stays well under the CI budget. The default profile draws the same examples on
# every run, so a pass or a failure repeats; "thorough" draws new ones each time, to hunt.
settings.register_profile("ci", deadline=None, max_examples=25, derandomize=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("thorough", deadline=None, max_examples=300,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture
def two_threads():
    """cnncli on two threads for one test, whatever the machine's default."""
    from cnncli.parallel import (
        threads,  # not at the top: importing cnncli before NumPy sets BLAS threads
    )

    before = threads.get_threads()
    threads.set_threads(2)
    yield
    threads.set_threads(before)
