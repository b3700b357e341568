import os

from hypothesis import HealthCheck, settings

# Shared machines are noisy: no per-example deadline; keep example counts modest so the
# whole suite stays well under the CI budget.
settings.register_profile("ci", deadline=None, max_examples=25,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("thorough", deadline=None, max_examples=300,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
