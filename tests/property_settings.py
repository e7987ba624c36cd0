"""Hypothesis settings shared by the property tests whose every example is costly (a
materialization, a training set, two stores written)."""

from hypothesis import HealthCheck, Phase, settings

# Derandomized, so a run is repeatable; no shrinking, since a failure is readable as found
# and each shrink step would cost as much as an example.
COSTLY_EXAMPLES = settings(
    deadline=None,
    derandomize=True,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
